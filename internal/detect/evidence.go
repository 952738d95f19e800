package detect

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Evidence (DESIGN.md "Detection": every block answers "why"). When a rule
// fires, its event records in detail the threshold, window, the count in
// the window and the observations that made it fire: at most the last
// evidenceMax, oldest first, each {at, what, text} (INTERFACE.md §3).
//
// Keeping the last observations of every key would cost a ring per
// tracked source, a million of them under a flood. A key gets its ring
// only once its count reaches the rule's near mark (nearMark): sources far
// from the threshold cost nothing beyond their 64-byte counter, and the
// Observe path for them is one comparison more. A shard holds at most
// ringsPerShard rings; past that a new near key takes the ring of a random
// other one (an attacker who keeps many sources near the threshold can
// thin the evidence of others, never hide them from the count).
const (
	evidenceMax = 20
	// evidenceTextMax bounds the text of one observation: hostile SMTP
	// lines must not grow an event record.
	evidenceTextMax = 300
	ringsPerShard   = 64
	// flagRing: the key has a ring in its table's rings map.
	flagRing = 2
)

// nearMark is the count from which a key keeps its observations: a
// quarter of the way to the threshold, or the last evidenceMax before it,
// whichever comes later. A threshold of 20 keeps the last 16 observations
// (5th to 20th), one of 300 the last 20.
func nearMark(threshold uint32) uint32 {
	m := max(threshold/4, 1)
	if threshold > evidenceMax {
		m = max(m, threshold-(evidenceMax-1))
	}
	return m
}

// clue is one observation kept as evidence, as it came: formatting
// (address, size, sanitizing) waits until the rule fires.
type clue struct {
	at   int64 // unix ns
	addr netip.Addr
	size int64
	text string
}

func clueOf(o *Observation, now int64) clue {
	return clue{at: now, addr: o.Addr, size: o.Size, text: o.Text}
}

// ring holds the last evidenceMax clues of one key.
type ring struct {
	n, next int
	c       [evidenceMax]clue
}

func (r *ring) add(c clue) {
	r.c[r.next] = c
	r.next = (r.next + 1) % evidenceMax
	r.n = min(r.n+1, evidenceMax)
}

// clues returns the clues oldest first, with last appended.
func (r *ring) clues(last ...clue) []clue {
	out := make([]clue, 0, r.n+len(last))
	for i := range r.n {
		out = append(out, r.c[(r.next-r.n+i+evidenceMax)%evidenceMax])
	}
	return append(out, last...)
}

// keep records c for the counter cn of key k, giving the key a ring if it
// has none. Caller holds the shard lock.
func (t *table) keep(cn *counter, c clue) {
	if cn.flags&flagRing != 0 {
		if r := t.rings[cn.k]; r != nil {
			r.add(c)
			return
		}
	}
	var r *ring
	if len(t.rings) >= ringsPerShard {
		// Take the ring of a random other key (map iteration order).
		for k, old := range t.rings {
			if oc := t.lookup(k, t.h.sum(k)); oc != nil {
				oc.flags &^= flagRing
			}
			delete(t.rings, k)
			*old, r = ring{}, old
			break
		}
	} else {
		r = new(ring)
		if t.rings == nil {
			t.rings = make(map[key]*ring)
		}
	}
	r.add(c)
	t.rings[cn.k] = r
	cn.flags |= flagRing
}

// take removes and returns the ring of cn, nil if it has none. Caller
// holds the shard lock.
func (t *table) take(cn *counter) *ring {
	if cn.flags&flagRing == 0 {
		return nil
	}
	cn.flags &^= flagRing
	r := t.rings[cn.k]
	delete(t.rings, cn.k)
	return r
}

// drop forgets the ring of a counter that leaves the table.
func (t *table) drop(cn *counter) {
	if cn.flags&flagRing != 0 {
		delete(t.rings, cn.k)
	}
}

// whats names what each kind of observation is, the "what" of evidence.
var whats = [kindEnd]string{
	KindConnect:            "connect",
	KindBadSession:         "bad_session",
	KindUnknownRecipient:   "rcpt_unknown",
	KindMessage:            "large_message",
	KindSpam:               "spam",
	KindVirus:              "virus",
	KindAuthFailure:        "auth_failed",
	KindAccountMessage:     "account_message",
	KindBounce:             "bounce",
	KindBackscatter:        "backscatter",
	kindAccountAuthFailure: "auth_failed",
}

// plainTexts stand in for the text of an observation that came without
// one.
var plainTexts = [kindEnd]string{
	KindConnect:            "connection opened",
	KindBadSession:         "session ended without a message",
	KindUnknownRecipient:   "recipient unknown",
	KindMessage:            "message",
	KindSpam:               "message judged spam",
	KindVirus:              "message with a virus or blocked attachment",
	KindAuthFailure:        "authentication failed",
	KindAccountMessage:     "message sent",
	KindBounce:             "bounce",
	KindBackscatter:        "bounce without a valid BATV tag",
	kindAccountAuthFailure: "authentication failed",
}

// evidenceTime is RFC 3339 in UTC with milliseconds, as INTERFACE.md §3
// shows it.
const evidenceTime = "2006-01-02T15:04:05.000Z07:00"

// evidence formats the clues of an event of kind k into detail.evidence:
// those still inside the window at now, the last evidenceMax, oldest
// first. The shape is the one an event decoded from the store has
// ([]any of map[string]any), so every reader sees one shape. source is
// the address of the event's source, invalid for an account: a clue from
// another address (an account rule's client, an address within an IPv6
// prefix) names its address.
func evidence(k Kind, clues []clue, now, window int64, source netip.Addr) []any {
	out := make([]any, 0, min(len(clues), evidenceMax))
	for i, c := range clues {
		if now-c.at >= window || len(clues)-i > evidenceMax {
			continue
		}
		out = append(out, map[string]any{
			"at":   time.Unix(0, c.at).UTC().Format(evidenceTime),
			"what": whats[k],
			"text": clueText(k, c, source),
		})
	}
	return out
}

func clueText(k Kind, c clue, source netip.Addr) string {
	text := c.text
	if text == "" {
		text = plainTexts[k]
	}
	if k == KindMessage {
		text = "message of " + strconv.FormatInt(c.size, 10) + " bytes: " + text
	}
	if a := c.addr.Unmap().WithZone(""); a.IsValid() && a != source {
		text = "from " + a.String() + ": " + text
	}
	return Sanitize(text, evidenceTextMax)
}

// Sanitize makes hostile text fit to show and store: valid UTF-8,
// control, bidi-override and line-separator characters as '?' (a terminal or a
// page must not be steered by a client's bytes), at most max bytes (cut
// at a character, "…" marking the cut). Clean short text is returned as
// is.
func Sanitize(s string, max int) string {
	if len(s) <= max && clean(s) {
		return s
	}
	const cut = "…"
	var b strings.Builder
	b.Grow(min(len(s), max))
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		if unsafeRune(r) {
			r = '?'
		}
		if b.Len()+utf8.RuneLen(r) > max {
			// Make room for the mark.
			out := b.String()
			for len(out)+len(cut) > max && out != "" {
				_, n := utf8.DecodeLastRuneInString(out)
				out = out[:len(out)-n]
			}
			return out + cut
		}
		b.WriteRune(r)
	}
	return b.String()
}

// unsafeRune: a control character, a bidi override or a line or
// paragraph separator, each able to disguise what a reader sees.
func unsafeRune(r rune) bool {
	return unicode.IsControl(r) || unicode.In(r, unicode.Bidi_Control, unicode.Zl, unicode.Zp)
}

func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c >= 0x7f {
			return false // control, DEL, or non-ASCII to check rune by rune
		}
	}
	return true
}
