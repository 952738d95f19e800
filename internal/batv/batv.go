// Package batv signs outbound envelope senders and verifies the
// recipients of inbound bounces with BATV's "simple private signature"
// (prvs, draft-levine-smtp-batv-01 §4): a bounce (null reverse-path) is
// only ever owed to an address we used as a sender, so a bounce to a local
// address that carries no valid tag is backscatter from mail we never
// sent. See README.md.
package batv

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"mxguard/internal/address"
)

// Clock gives the signer its notion of now; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// MinKey is the shortest secret batv.key_file may hold (INTERFACE.md §2).
const MinKey = 16

// DefaultValidDays is how long a tag is accepted: bounces come back within
// Postfix's and Sendmail's 5 day queue lifetime (maximal_queue_lifetime,
// bounce_queue_lifetime), Exim's usual 4 days of retries, and delay
// notices within hours; 7 days covers them with margin, and a tag older
// than that is more likely a replay than a bounce.
const DefaultValidDays = 7

// Result is what Verify found.
type Result int

// Results of Verify.
const (
	Untagged Result = iota // no prvs= tag
	Valid                  // our tag, not expired: the original address is returned
	Expired                // our tag, but older than the validity
	Forged                 // a prvs= tag that is not ours (bad form, key number or hash)
)

func (r Result) String() string {
	switch r {
	case Untagged:
		return "untagged"
	case Valid:
		return "valid"
	case Expired:
		return "expired"
	case Forged:
		return "forged"
	}
	return fmt.Sprintf("Result(%d)", int(r))
}

// Options configure a Signer.
type Options struct {
	ValidDays int   // default DefaultValidDays
	Clock     Clock // nil: the system clock
}

// Signer makes and checks tags with one secret.
type Signer struct {
	key   []byte
	days  int
	clock Clock
}

// LoadKey reads batv.key_file: its content, whitespace trimmed, is the
// secret, at least MinKey bytes.
func LoadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("batv: %w", err)
	}
	k := []byte(strings.TrimSpace(string(b)))
	if len(k) < MinKey {
		return nil, fmt.Errorf("batv: %s: the key is %d bytes, at least %d (openssl rand -hex 32 > %s)", path, len(k), MinKey, path)
	}
	return k, nil
}

// New returns a Signer for key.
func New(key []byte, o Options) (*Signer, error) {
	if len(key) < MinKey {
		return nil, fmt.Errorf("batv: key of %d bytes, at least %d", len(key), MinKey)
	}
	s := &Signer{key: append([]byte(nil), key...), days: o.ValidDays, clock: o.Clock}
	if s.days <= 0 {
		s.days = DefaultValidDays
	}
	if s.days >= 999 {
		return nil, errors.New("batv: validity of 999 days or more: DDD is a day number mod 1000")
	}
	if s.clock == nil {
		s.clock = systemClock{}
	}
	return s, nil
}

// The tag: prvs=KDDDSSSSSS=local@domain (draft-levine-smtp-batv-01 §4.1):
// K the key number (always 0: one key), DDD the day the tag expires
// (days since 1970-01-01 UTC, mod 1000), SSSSSS the first three bytes, in
// hex, of HMAC-SHA1(key, K DDD address).
const (
	prefix    = "prvs="
	tagLen    = len(prefix) + 10 + 1 // "prvs=" KDDDSSSSSS "="
	keyNumber = '0'
)

// Sign returns m with a tag valid from now for the validity. The null
// sender, an address that already has a tag, and a local part too long to
// take one (RFC 5321 §4.5.3.1.1: 64 octets) are returned unchanged, with
// ok false.
func (s *Signer) Sign(m address.Mailbox) (address.Mailbox, bool) {
	if m.IsNull() || m.Domain == "" || hasPrefix(m.Local) || len(m.Local)+tagLen > address.MaxLocal {
		return m, false
	}
	ddd := (day(s.clock.Now()) + s.days) % 1000
	tag := s.tag(keyNumber, ddd, m.Local, m.Domain)
	signed := address.Mailbox{Local: prefix + tag + "=" + m.Local, Domain: m.Domain}
	// A quoted local part grows by its quotes and escapes: what goes on the
	// wire must still parse, or the bounce could not come back to it.
	if _, err := address.Parse(signed.String(), address.Options{UTF8: true}); err != nil {
		return m, false
	}
	return signed, true
}

// Verify checks a recipient's tag and returns the address without it when
// it is Valid (or Expired: the address is ours, the tag stale).
func (s *Signer) Verify(m address.Mailbox) (address.Mailbox, Result) {
	if !hasPrefix(m.Local) {
		return m, Untagged
	}
	v := m.Local[len(prefix):]
	if len(v) < 12 || v[10] != '=' || v[0] != keyNumber || !digits(v[1:4]) || !hexDigits(v[4:10]) {
		return m, Forged
	}
	orig := address.Mailbox{Local: v[11:], Domain: m.Domain}
	ddd := int(v[1]-'0')*100 + int(v[2]-'0')*10 + int(v[3]-'0')
	want := s.tag(v[0], ddd, orig.Local, orig.Domain)
	if !hmac.Equal([]byte(want), []byte(strings.ToLower(v[:10]))) {
		return m, Forged
	}
	// Days until the expiry day, mod 1000. One day of grace beyond the
	// validity covers a signing node whose clock is a little ahead around
	// midnight; an expiry day in the past wraps to a large number.
	if left := ((ddd-day(s.clock.Now()))%1000 + 1000) % 1000; left > s.days+1 {
		return orig, Expired
	}
	return orig, Valid
}

// tag is K DDD SSSSSS for local@domain. The address is hashed lowercased:
// an MTA on the way back may change the case of what it hands back, and
// the tag must still match.
func (s *Signer) tag(k byte, ddd int, local, domain string) string {
	kd := fmt.Sprintf("%c%03d", k, ddd)
	h := hmac.New(sha1.New, s.key)
	h.Write([]byte(kd))
	h.Write([]byte(strings.ToLower(local + "@" + domain)))
	return kd + hex.EncodeToString(h.Sum(nil)[:3])
}

func day(t time.Time) int { return int(t.Unix() / 86400) }

func hasPrefix(local string) bool {
	return len(local) >= len(prefix) && strings.EqualFold(local[:len(prefix)], prefix)
}

func digits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func hexDigits(s string) bool {
	for i := range len(s) {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') && (c < 'A' || c > 'F') {
			return false
		}
	}
	return true
}
