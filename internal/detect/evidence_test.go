package detect

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	prom "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/config"
	"mxguard/internal/events"
	"mxguard/internal/metrics"
)

// evidenceOf returns the evidence of an event as (what, text) lines and
// checks its times: RFC 3339 with milliseconds, oldest first.
func evidenceOf(t *testing.T, ev events.Event) (whats, texts []string) {
	t.Helper()
	list, ok := ev.Detail["evidence"].([]any)
	if !ok {
		t.Fatalf("detail.evidence = %#v, want a list", ev.Detail["evidence"])
	}
	var prev time.Time
	for i, o := range list {
		m := o.(map[string]any)
		at, err := time.Parse(evidenceTime, m["at"].(string))
		if err != nil || len(m["at"].(string)) != len("2026-11-25T09:59:58.120Z") {
			t.Errorf("evidence[%d].at = %q: %v", i, m["at"], err)
		}
		if at.Before(prev) {
			t.Errorf("evidence[%d] at %v is before the one above it", i, at)
		}
		prev = at
		whats = append(whats, m["what"].(string))
		texts = append(texts, m["text"].(string))
	}
	return whats, texts
}

// Every rule type records why it fired: threshold, window, the count and
// the observations that made it fire, with their time, kind and what the
// front end saw. Observations come a second apart on the fake clock.
func TestEvidenceOfEveryRuleType(t *testing.T) {
	src := addr("203.0.113.7")
	tests := []struct {
		typ       string
		threshold int
		obs       func(i int) Observation
		what      string
		text      func(i int) string // the evidence text of observation i
	}{
		{"dos", 5, func(int) Observation {
			return Observation{Kind: KindConnect, Addr: src, Service: "smtp", Text: "connection opened"}
		}, "connect", func(int) string { return "connection opened" }},
		{"bad_sessions", 4, func(i int) Observation {
			return Observation{Kind: KindBadSession, Addr: src, Service: "smtp", Text: fmt.Sprintf("session ended without a message after %d commands", i)}
		}, "bad_session", func(i int) string { return fmt.Sprintf("session ended without a message after %d commands", i) }},
		{"directory_harvest", 20, func(i int) Observation {
			return Observation{Kind: KindUnknownRecipient, Addr: src, Service: "smtp", Refused: true,
				Text: fmt.Sprintf("RCPT TO:<guess%d@example.test>: 550 5.1.1 user unknown", i)}
		}, "rcpt_unknown", func(i int) string { return fmt.Sprintf("RCPT TO:<guess%d@example.test>: 550 5.1.1 user unknown", i) }},
		{"spam_attack", 3, func(i int) Observation {
			return Observation{Kind: KindSpam, Addr: src, Service: "smtp", Refused: true, Text: fmt.Sprintf("message from <s%d@spam.example>: 554 5.7.1 spam", i)}
		}, "spam", func(i int) string { return fmt.Sprintf("message from <s%d@spam.example>: 554 5.7.1 spam", i) }},
		{"virus_outbreak", 2, func(int) Observation {
			return Observation{Kind: KindVirus, Addr: src, Service: "smtp", Refused: true, Text: "message from <x@bad.example>: 554 5.7.1 virus Eicar-Signature"}
		}, "virus", func(int) string { return "message from <x@bad.example>: 554 5.7.1 virus Eicar-Signature" }},
		{"mailbomb", 3, func(i int) Observation {
			return Observation{Kind: KindMessage, Addr: src, Service: "smtp", Size: int64(600_000 + i), Text: "from <bomb@example.net>, relayed"}
		}, "large_message", func(i int) string {
			return fmt.Sprintf("message of %d bytes: from <bomb@example.net>, relayed", 600_000+i)
		}},
		{"brute_force", 6, func(i int) Observation {
			return Observation{Kind: KindAuthFailure, Addr: src, Account: "bob", Service: "imap", Password: uint64(i + 1), Refused: true,
				Text: "imap login bob: authentication failed"}
		}, "auth_failed", func(int) string { return "imap login bob: authentication failed" }},
		// Password spraying: one account from many sources; each line
		// names its source.
		{"account_brute_force", 5, func(i int) Observation {
			return Observation{Kind: KindAuthFailure, Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}), Account: "Alice", Service: "imap",
				Password: uint64(i + 1), Refused: true, Text: "imap login alice: authentication failed"}
		}, "auth_failed", func(i int) string {
			return fmt.Sprintf("from 192.0.2.%d: imap login alice: authentication failed", i+1)
		}},
		{"internal_spammer", 8, func(i int) Observation {
			return Observation{Kind: KindAccountMessage, Addr: src, Account: "carol", Service: "submission", Text: fmt.Sprintf("message from <carol@example.test> to <r%d@example.net>", i)}
		}, "account_message", func(i int) string {
			return fmt.Sprintf("from 203.0.113.7: message from <carol@example.test> to <r%d@example.net>", i)
		}},
		{"bounce_spammer", 4, func(i int) Observation {
			return Observation{Kind: KindBounce, Addr: addr("198.51.100.25"), Account: "dave", Service: "smtp", Text: fmt.Sprintf("bounce to <dave+%d@example.test> (valid BATV tag)", i)}
		}, "bounce", func(i int) string {
			return fmt.Sprintf("from 198.51.100.25: bounce to <dave+%d@example.test> (valid BATV tag)", i)
		}},
		{"backscatter", 3, func(i int) Observation {
			return Observation{Kind: KindBackscatter, Addr: src, Service: "smtp", Refused: true, Text: fmt.Sprintf("bounce to <u%d@example.test>: 550 5.7.1 (no BATV tag)", i)}
		}, "backscatter", func(i int) string { return fmt.Sprintf("bounce to <u%d@example.test>: 550 5.7.1 (no BATV tag)", i) }},
	}
	for _, tt := range tests {
		t.Run(tt.typ, func(t *testing.T) {
			rl := rule("r", tt.typ, 10*time.Minute, tt.threshold)
			rl.MinSize = 500_000
			r := newRig(t, Options{Rules: []config.Rule{rl}})
			start := r.clock.Now()
			for i := range tt.threshold {
				r.clock.Advance(time.Second)
				r.Observe(tt.obs(i))
			}
			evs := r.eventsOf(t, "r")
			if len(evs) != 1 {
				t.Fatalf("%d events, want 1", len(evs))
			}
			ev := evs[0]
			if ev.Detail["threshold"] != tt.threshold || ev.Detail["window"] != "10m" || ev.Detail["count"] != tt.threshold {
				t.Errorf("detail = %v, want threshold and count %d, window 10m", ev.Detail, tt.threshold)
			}
			whats, texts := evidenceOf(t, ev)
			// The ring starts at the near mark: the observations from it
			// to the one that fired, at most evidenceMax.
			first := int(nearMark(uint32(tt.threshold))) - 1
			var want []string
			for i := first; i < tt.threshold; i++ {
				want = append(want, tt.text(i))
			}
			if !slices.Equal(texts, want) {
				t.Errorf("evidence texts:\n%s\nwant:\n%s", strings.Join(texts, "\n"), strings.Join(want, "\n"))
			}
			for _, w := range whats {
				if w != tt.what {
					t.Errorf("evidence what = %q, want %q", w, tt.what)
				}
			}
			list := ev.Detail["evidence"].([]any)
			if got, want := list[len(list)-1].(map[string]any)["at"], start.Add(time.Duration(tt.threshold)*time.Second).UTC().Format(evidenceTime); got != want {
				t.Errorf("the firing observation is at %v, want %v", got, want)
			}
		})
	}
}

// The near mark: a quarter of the threshold, or the last 20 before it.
func TestNearMark(t *testing.T) {
	for _, tt := range []struct{ threshold, near uint32 }{
		{1, 1}, {2, 1}, {5, 1}, {8, 2}, {20, 5}, {40, 21}, {300, 281},
	} {
		if got := nearMark(tt.threshold); got != tt.near {
			t.Errorf("nearMark(%d) = %d, want %d", tt.threshold, got, tt.near)
		}
	}
}

// A threshold of 300: the evidence is the last 20 observations, those
// that made it fire; the ones before are not kept. An event's evidence is
// the why: observations after it fired do not change it.
func TestEvidenceLastTwenty(t *testing.T) {
	r := newRig(t, Options{Rules: []config.Rule{rule("dos", "dos", time.Minute, 300, "block")}})
	src := addr("203.0.113.7")
	for i := range 300 {
		r.clock.Advance(10 * time.Millisecond)
		r.Observe(Observation{Kind: KindConnect, Addr: src, Text: fmt.Sprintf("connection %d", i)})
	}
	for range 5 {
		r.Refused(src)
	}
	evs := r.eventsOf(t, "dos")
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	_, texts := evidenceOf(t, evs[0])
	if len(texts) != evidenceMax || texts[0] != "connection 280" || texts[19] != "connection 299" {
		t.Errorf("evidence = %q, want connection 280 to 299", texts)
	}
	if evs[0].Detail["count"] != 300 || evs[0].Impact != 5 {
		t.Errorf("count %v impact %d, want 300 and 5", evs[0].Detail["count"], evs[0].Impact)
	}
}

// Observations that left the window are no evidence: a slow harvest
// whose early guesses aged out shows those still counted.
func TestEvidenceWithinWindow(t *testing.T) {
	r := newRig(t, Options{Rules: []config.Rule{rule("h", "directory_harvest", 16*time.Minute, 8, "block")}})
	src := addr("203.0.113.7")
	// Count 2 (the near mark) after the first two, at 0 and 1 minute;
	// then nothing for 16 minutes: both leave the window, and the count
	// starts again from 1.
	r.Observe(Observation{Kind: KindUnknownRecipient, Addr: src, Text: "old 0"})
	r.clock.Advance(time.Minute)
	r.Observe(Observation{Kind: KindUnknownRecipient, Addr: src, Text: "old 1"})
	r.clock.Advance(16 * time.Minute)
	for i := range 8 {
		r.clock.Advance(time.Second)
		r.Observe(Observation{Kind: KindUnknownRecipient, Addr: src, Text: fmt.Sprintf("new %d", i)})
	}
	evs := r.eventsOf(t, "h")
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	_, texts := evidenceOf(t, evs[0])
	// "old 1" is still in the ring but left the window; "new 0" counted 1,
	// below the near mark.
	if want := []string{"new 1", "new 2", "new 3", "new 4", "new 5", "new 6", "new 7"}; !slices.Equal(texts, want) {
		t.Errorf("evidence = %q, want %q", texts, want)
	}
}

// Hostile text from a client is made safe before it is stored: valid
// UTF-8, no control or bidi characters, at most 300 bytes.
func TestEvidenceSanitized(t *testing.T) {
	r := newRig(t, Options{Rules: []config.Rule{rule("h", "directory_harvest", time.Minute, 2, "block")}})
	src := addr("203.0.113.7")
	hostile := []string{
		"RCPT TO:<a\x1b[31m@example.test>\r\nFAKE LOG LINE\x00",
		"RCPT TO:<\xff\xfe\u202egnp.exe@example.test>" + strings.Repeat("é", 400),
	}
	for _, s := range hostile {
		r.Observe(Observation{Kind: KindUnknownRecipient, Addr: src, Text: s})
	}
	_, texts := evidenceOf(t, r.eventsOf(t, "h")[0])
	if len(texts) != 2 {
		t.Fatalf("evidence = %q", texts)
	}
	if texts[0] != "RCPT TO:<a?[31m@example.test>??FAKE LOG LINE?" {
		t.Errorf("controls: %q", texts[0])
	}
	if !utf8.ValidString(texts[1]) || len(texts[1]) > evidenceTextMax || !strings.HasSuffix(texts[1], "…") ||
		!strings.HasPrefix(texts[1], "RCPT TO:<\uFFFD?gnp.exe@example.test>éé") {
		t.Errorf("long and invalid: %d bytes %q", len(texts[1]), texts[1])
	}
	if got := Sanitize("plain text", 300); got != "plain text" {
		t.Errorf("Sanitize changed clean text: %q", got)
	}
}

// Bounded memory: a flood of sources that stay below the near mark costs
// no evidence ring at all; sources near the threshold get one each, at
// most ringsPerShard per shard whatever their number; firing takes the
// key's ring.
func TestEvidenceRingsOnlyNearThreshold(t *testing.T) {
	r := newRig(t, Options{Rules: []config.Rule{rule("h", "directory_harvest", time.Hour, 40, "block")}}) // near mark 21
	st := r.setup.Load().bound[0].st
	observe := func(a netip.Addr, n int) {
		for range n {
			r.Observe(Observation{Kind: KindUnknownRecipient, Addr: a, Text: "RCPT TO:<x@example.test>: 550 5.1.1"})
		}
	}
	const far = 100_000
	for i := range far {
		observe(v4(0x0a000000+uint32(i)), 1)
	}
	for i := range 500 {
		observe(v4(0x0b000000+uint32(i)), 20) // one below the mark
	}
	if n := st.rings(); n != 0 {
		t.Fatalf("%d rings for sources below the near mark, want 0", n)
	}
	near := addr("203.0.113.7")
	observe(near, 21)
	if n := st.rings(); n != 1 {
		t.Fatalf("%d rings after one source reached the mark, want 1", n)
	}
	observe(near, 19)
	if n := st.rings(); n != 0 || !r.Blocked(near) {
		t.Fatalf("after firing: %d rings, blocked %v; want 0 and blocked", n, r.Blocked(near))
	}
	// Many sources near the threshold: the rings are capped.
	for i := range 10_000 {
		observe(v4(0x0c000000+uint32(i)), 21)
	}
	if n, max := st.rings(), ringsPerShard*len(st.shards); n > max || n < max/2 {
		t.Errorf("%d rings for 10000 near sources, want at most %d and not far below", n, max)
	}
	// A ring handed to another key leaves no stale flag behind: every
	// near key fires with evidence, at least its firing observation.
	a := v4(0x0c000000 + 7)
	observe(a, 19)
	for _, ev := range r.eventsOf(t, "h") {
		if ev.Source == a.String() {
			if _, texts := evidenceOf(t, ev); len(texts) == 0 || len(texts) > evidenceMax {
				t.Errorf("evidence of a key whose ring may have been taken: %q", texts)
			}
		}
	}
}

// Observe does not allocate for a key below the near mark, nor for one
// near it that has its ring already.
func TestObserveAllocations(t *testing.T) {
	r := newRig(t, Options{Rules: []config.Rule{rule("h", "directory_harvest", time.Hour, 1<<20, "block")}})
	far := Observation{Kind: KindUnknownRecipient, Addr: addr("203.0.113.7"), Text: "RCPT TO:<x@example.test>: 550 5.1.1"}
	r.Observe(far)
	if n := testing.AllocsPerRun(1000, func() { r.Observe(far) }); n != 0 {
		t.Errorf("far from threshold: %v allocations per Observe", n)
	}
	near := far
	near.Addr = addr("203.0.113.8")
	r.setup.Load().bound[0].near = 2
	r.observeN(3, near)
	if n := testing.AllocsPerRun(1000, func() { r.Observe(near) }); n != 0 {
		t.Errorf("near the threshold, ring allocated: %v allocations per Observe", n)
	}
}

// A shadow rule records its events with mode shadow and the actions it
// would take, and takes none: no block (Observe says false, the next
// connection is not refused), no suspension. What it would have refused
// is its impact and mxguard_shadow_would_block_total. An enforcing rule
// of the same type on the same source works beside it.
func TestShadowRule(t *testing.T) {
	m := metrics.New()
	try := rule("try", "directory_harvest", 10*time.Minute, 3, "block")
	try.Mode = events.ModeShadow
	enforced := rule("harvest", "directory_harvest", 10*time.Minute, 6, "block")
	sus := rule("sender", "internal_spammer", time.Hour, 2, "suspend")
	sus.Mode = events.ModeShadow
	r := newRig(t, Options{Metrics: m, Rules: []config.Rule{try, enforced, sus}, Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	src := addr("203.0.113.7")
	o := Observation{Kind: KindUnknownRecipient, Addr: src, Service: "smtp", Refused: true, Text: "RCPT TO:<guess@example.test>: 550 5.1.1"}
	for i := range 5 {
		if r.Observe(o) {
			t.Fatalf("observation %d: blocked by a shadow rule", i+1)
		}
	}
	if r.Blocked(src) || len(r.Blocks()) != 0 {
		t.Fatal("a shadow rule blocked")
	}
	shadow := r.eventsOf(t, "try")
	if len(shadow) != 1 {
		t.Fatalf("%d shadow events, want 1", len(shadow))
	}
	ev := shadow[0]
	if ev.Mode != events.ModeShadow || !slices.Equal(ev.Actions, []string{"block"}) || ev.Status != events.StatusActive {
		t.Errorf("shadow event = %+v, want mode shadow, actions [block]", ev)
	}
	// Observations 3 (fired), 4 and 5: what a block would have refused.
	if ev.Impact != 3 {
		t.Errorf("shadow impact = %d, want 3", ev.Impact)
	}
	if _, texts := evidenceOf(t, ev); len(texts) != 3 {
		t.Errorf("shadow evidence = %q, want the 3 observations", texts)
	}
	if got := prom.ToFloat64(m.ShadowWouldBlock.WithLabelValues("try")); got != 3 {
		t.Errorf("mxguard_shadow_would_block_total{rule=try} = %v, want 3", got)
	}
	// The enforcing rule of the same type fires on its own threshold.
	if !r.Observe(o) || !r.Blocked(src) {
		t.Fatal("the enforcing rule did not block at its threshold")
	}
	if evs := r.eventsOf(t, "harvest"); len(evs) != 1 || evs[0].Mode != events.ModeEnforce || !slices.Equal(evs[0].Actions, []string{"block"}) {
		t.Errorf("enforcing event = %+v", evs)
	}
	if b := r.Blocks(); len(b) != 1 || b[0].Rule != "harvest" {
		t.Errorf("blocks = %+v, want harvest's only", b)
	}

	// A shadow suspend rule suspends nothing.
	acct := Observation{Kind: KindAccountMessage, Addr: addr("198.51.100.9"), Account: "bob", Service: "submission"}
	r.observeN(4, acct)
	if r.Suspended("bob") || len(r.Suspensions()) != 0 {
		t.Error("a shadow rule suspended the account")
	}
	if evs := r.eventsOf(t, "sender"); len(evs) != 1 || evs[0].Mode != events.ModeShadow || !slices.Equal(evs[0].Actions, []string{"suspend"}) || evs[0].Impact != 3 {
		t.Errorf("shadow suspend event = %+v, want mode shadow, actions [suspend], impact 3", evs)
	}

	// A trusted source would not have been blocked either: no action.
	r.observeN(3, Observation{Kind: KindUnknownRecipient, Addr: addr("10.1.2.3"), Service: "smtp", Refused: true})
	for _, ev := range r.eventsOf(t, "try") {
		if ev.Source == "10.1.2.3" && (len(ev.Actions) != 0 || ev.Impact != 1) {
			t.Errorf("shadow event of a trusted source = %+v, want no action, impact of its refusal only", ev)
		}
	}
}

// A shadow rule lists the actions the same rule enforcing takes, by the
// same names: notify (alert's synonym) and alert together are one alert.
func TestShadowActionsAsEnforced(t *testing.T) {
	var got [][]string
	for _, mode := range []string{events.ModeEnforce, events.ModeShadow} {
		rl := rule("warn", "directory_harvest", 10*time.Minute, 2, "notify", "alert", "block")
		rl.BlockFor = time.Hour
		rl.Mode = mode
		r := newRig(t, Options{Rules: []config.Rule{rl}})
		r.observeN(2, Observation{Kind: KindUnknownRecipient, Addr: addr("203.0.113.8"), Service: "smtp", Refused: true})
		evs := r.eventsOf(t, "warn")
		if len(evs) != 1 || evs[0].Mode != mode {
			t.Fatalf("%s: events %+v, want one of mode %s", mode, evs, mode)
		}
		got = append(got, evs[0].Actions)
	}
	if want := []string{"alert", "block"}; !slices.Equal(got[0], want) || !slices.Equal(got[1], want) {
		t.Errorf("actions enforced %q, shadow %q; want both %q", got[0], got[1], want)
	}
}

// Reload from shadow to enforce: the active shadow event ends at the
// reload and blocks nothing by itself; the source's next observation
// over the threshold fires an enforcing event that blocks. From enforce
// to shadow: the block taken stays, none is renewed.
func TestShadowReconfigure(t *testing.T) {
	try := rule("h", "directory_harvest", 10*time.Minute, 3, "block")
	try.Mode = events.ModeShadow
	r := newRig(t, Options{Rules: []config.Rule{try}})
	src := addr("203.0.113.7")
	o := Observation{Kind: KindUnknownRecipient, Addr: src, Refused: true}
	r.observeN(4, o)
	enforce := try
	enforce.Mode = events.ModeEnforce
	if err := r.Reconfigure(Options{Rules: []config.Rule{enforce}}); err != nil {
		t.Fatal(err)
	}
	evs := r.eventsOf(t, "h")
	if r.Blocked(src) || len(evs) != 1 || evs[0].Status != events.StatusEnded || evs[0].Mode != events.ModeShadow {
		t.Fatalf("after the reload: blocked %v, events %+v; want the shadow event ended, no block", r.Blocked(src), evs)
	}
	if !r.Observe(o) {
		t.Fatal("the next observation over the threshold did not block")
	}
	// The same with a new window: the counters start again, the shadow
	// event ends all the same.
	r2 := newRig(t, Options{Rules: []config.Rule{try}})
	r2.observeN(3, o)
	wider := enforce
	wider.Window = 20 * time.Minute
	if err := r2.Reconfigure(Options{Rules: []config.Rule{wider}}); err != nil {
		t.Fatal(err)
	}
	if evs := r2.eventsOf(t, "h"); len(evs) != 1 || evs[0].Status != events.StatusEnded {
		t.Fatalf("after a reload to enforce with a new window: %+v, want the shadow event ended", evs)
	}
	if r2.observeN(3, o); !r2.Blocked(src) {
		t.Fatal("the enforcing rule with a new window did not block at its threshold")
	}
	evs = r.eventsOf(t, "h")
	if len(evs) != 2 || evs[1].Mode != events.ModeEnforce || !slices.Equal(evs[1].Actions, []string{"block"}) {
		t.Fatalf("events = %+v, want a second, enforcing one", evs)
	}

	// Back to shadow: the block holds until it expires; the source's
	// refused connections keep the event active past it, and reaching
	// the threshold again then renews nothing.
	if err := r.Reconfigure(Options{Rules: []config.Rule{try}}); err != nil {
		t.Fatal(err)
	}
	if !r.Blocked(src) {
		t.Fatal("switching to shadow lifted the block")
	}
	for range 12 { // to block_for, 1h
		r.clock.Advance(5 * time.Minute)
		r.Refused(src)
		r.Tick(context.Background())
	}
	if r.Blocked(src) {
		t.Fatal("the block outlived block_for")
	}
	r.observeN(3, o)
	if r.Blocked(src) {
		t.Error("a rule in shadow mode renewed a block")
	}
	if evs := r.eventsOf(t, "h"); len(evs) != 2 || evs[1].Status != events.StatusActive {
		t.Errorf("events = %+v, want the enforcing event still active", evs)
	}
}

// Whatever a client sends, the evidence text is valid UTF-8 of at most
// the limit, with no control or bidi character, and clean text is kept.
func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"RCPT TO:<a@example.test>: 550 5.1.1", "\x1b[2J\r\n\x00", "\xff\xfe\u202e", strings.Repeat("é", 200), "a\u0085b\u2028c"} {
		f.Add(s, 300)
		f.Add(s, 5)
	}
	f.Fuzz(func(t *testing.T, s string, max int) {
		max = 4 + int(uint(max)%400)
		out := Sanitize(s, max)
		if !utf8.ValidString(out) || len(out) > max {
			t.Fatalf("Sanitize(%q, %d) = %q: invalid or too long", s, max, out)
		}
		for _, r := range out {
			if unicode.IsControl(r) || unicode.In(r, unicode.Bidi_Control, unicode.Zl, unicode.Zp) {
				t.Fatalf("Sanitize(%q) = %q keeps %U", s, out, r)
			}
		}
		if len(s) <= max && clean(s) && out != s {
			t.Fatalf("clean %q changed to %q", s, out)
		}
	})
}

// An IPv6 source is a prefix: each line names the address it came from.
func TestEvidenceIPv6Addresses(t *testing.T) {
	r := newRig(t, Options{Rules: []config.Rule{rule("h", "directory_harvest", time.Minute, 2, "block")}})
	r.Observe(Observation{Kind: KindUnknownRecipient, Addr: addr("2001:db8:1:2::7"), Text: "RCPT TO:<a@example.test>: 550 5.1.1"})
	r.Observe(Observation{Kind: KindUnknownRecipient, Addr: addr("2001:db8:1:2::8"), Text: "RCPT TO:<b@example.test>: 550 5.1.1"})
	evs := r.eventsOf(t, "h")
	if len(evs) != 1 || evs[0].Source != "2001:db8:1:2::/64" {
		t.Fatalf("events = %+v", evs)
	}
	_, texts := evidenceOf(t, evs[0])
	if want := []string{"from 2001:db8:1:2::7: RCPT TO:<a@example.test>: 550 5.1.1", "from 2001:db8:1:2::8: RCPT TO:<b@example.test>: 550 5.1.1"}; !slices.Equal(texts, want) {
		t.Errorf("evidence = %q, want %q", texts, want)
	}
}
