package detect

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"mxguard/internal/config"
	"mxguard/internal/events"
	"mxguard/internal/ruletype"
)

func TestKindString(t *testing.T) {
	tests := []struct {
		k    Kind
		want string
	}{
		{KindConnect, "dos"},
		{KindBadSession, "bad_sessions"},
		{KindUnknownRecipient, "directory_harvest"},
		{KindMessage, "mailbomb"},
		{KindSpam, "spam_attack"},
		{KindVirus, "virus_outbreak"},
		{KindAuthFailure, "brute_force"},
		{KindAccountMessage, "internal_spammer"},
		{KindBounce, "bounce_spammer"},
		{KindBackscatter, "backscatter"},
		{0, "Kind(0)"},
		{kindEnd, fmt.Sprintf("Kind(%d)", kindEnd)},
	}
	for _, tt := range tests {
		if got := tt.k.String(); got != tt.want {
			t.Errorf("Kind(%d).String() = %q, want %q", tt.k, got, tt.want)
		}
	}
}

// The observation that makes the count reach threshold fires the rule,
// not one before; the block is in force at once.
func TestThresholdFiresAtNth(t *testing.T) {
	tests := []struct {
		typ       string
		threshold int
		obs       Observation
		source    string
	}{
		{"dos", 1, Observation{Kind: KindConnect, Addr: addr("203.0.113.7"), Service: "smtp"}, "203.0.113.7"},
		{"dos", 50, Observation{Kind: KindConnect, Addr: addr("203.0.113.7"), Service: "smtp"}, "203.0.113.7"},
		{"directory_harvest", 20, Observation{Kind: KindUnknownRecipient, Addr: addr("198.51.100.1"), Service: "smtp", Refused: true}, "198.51.100.1"},
		{"bad_sessions", 5, Observation{Kind: KindBadSession, Addr: addr("::ffff:192.0.2.9"), Service: "smtp"}, "192.0.2.9"},
		{"spam_attack", 3, Observation{Kind: KindSpam, Addr: addr("2001:db8:1:2::7"), Service: "smtp"}, "2001:db8:1:2::/64"},
		{"virus_outbreak", 2, Observation{Kind: KindVirus, Addr: addr("192.0.2.10"), Service: "smtp", Refused: true}, "192.0.2.10"},
		{"brute_force", 10, Observation{Kind: KindAuthFailure, Addr: addr("192.0.2.11"), Service: "imap", Refused: true}, "192.0.2.11"},
		{"backscatter", 4, Observation{Kind: KindBackscatter, Addr: addr("192.0.2.12"), Service: "smtp"}, "192.0.2.12"},
		{"mailbomb", 3, Observation{Kind: KindMessage, Addr: addr("192.0.2.13"), Service: "smtp", Size: 1}, "192.0.2.13"},
		{"internal_spammer", 100, Observation{Kind: KindAccountMessage, Addr: addr("192.0.2.14"), Account: "bob@example.test", Service: "submission"}, "bob@example.test"},
		{"bounce_spammer", 7, Observation{Kind: KindBounce, Account: "carol@example.test", Service: "smtp"}, "carol@example.test"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.typ, tt.threshold), func(t *testing.T) {
			r := newRig(t, Options{Rules: []config.Rule{rule("r", tt.typ, 10*time.Minute, tt.threshold, "block")}})
			r.observeN(tt.threshold-1, tt.obs)
			if got := r.eventsOf(t, "r"); len(got) != 0 {
				t.Fatalf("after %d observations: %d events, want none", tt.threshold-1, len(got))
			}
			if tt.obs.Addr.IsValid() && r.Blocked(tt.obs.Addr) {
				t.Fatal("blocked before threshold")
			}
			blocked := r.Observe(tt.obs)
			evs := r.eventsOf(t, "r")
			if len(evs) != 1 {
				t.Fatalf("after %d observations: %d events, want 1", tt.threshold, len(evs))
			}
			ev := evs[0]
			if ev.Type != tt.typ || ev.Source != tt.source || ev.Status != events.StatusActive || ev.Service != tt.obs.Service {
				t.Errorf("event = %+v", ev)
			}
			if wantImpact := map[bool]int64{true: 1}[tt.obs.Refused]; ev.Impact != wantImpact {
				t.Errorf("impact = %d, want %d", ev.Impact, wantImpact)
			}
			wantBlocked := tt.obs.Addr.IsValid()
			if blocked != wantBlocked || (wantBlocked && !r.Blocked(tt.obs.Addr)) {
				t.Errorf("Observe returned %v, want %v", blocked, wantBlocked)
			}
			wantActions := []string{} // an event lists only what was done
			if wantBlocked {
				wantActions = []string{"block"}
			}
			if !slices.Equal(ev.Actions, wantActions) {
				t.Errorf("actions = %v, want %v", ev.Actions, wantActions)
			}
			// More observations in the same burst do not start another event.
			r.observeN(tt.threshold, tt.obs)
			if got := r.eventsOf(t, "r"); len(got) != 1 {
				t.Errorf("%d events after the burst went on, want 1", len(got))
			}
		})
	}
}

// Old observations leave the window; the count drops below threshold.
func TestWindowSliding(t *testing.T) {
	const window = 10 * time.Minute
	src := Observation{Kind: KindUnknownRecipient, Addr: addr("203.0.113.7")}
	tests := []struct {
		name  string
		steps []time.Duration // clock advance before each observation
		fire  bool
	}{
		{"burst", []time.Duration{0, 0, 0, 0, 0}, true},
		{"spread within window", []time.Duration{0, 2 * time.Minute, 2 * time.Minute, 2 * time.Minute, time.Minute}, true},
		{"oldest expired", []time.Duration{0, 2 * time.Minute, 0, 0, 9 * time.Minute}, false},
		{"oldest still inside", []time.Duration{0, 2 * time.Minute, 0, 0, 7 * time.Minute}, true},
		{"all expired", []time.Duration{0, 0, 0, 0, window}, false},
		{"long gaps", []time.Duration{0, window, window, window, window}, false},
		{"just under window from oldest in same slot", []time.Duration{0, 0, 0, 0, window*15/16 - time.Second}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, Options{Rules: []config.Rule{rule("h", "directory_harvest", window, len(tt.steps), "block")}})
			// Align to a slot boundary so the test is about the window, not
			// about where in a slot the clock starts.
			r.clock.Advance(time.Duration(window/nSlots - time.Duration(r.clock.Now().UnixNano())%(window/nSlots)))
			var blocked bool
			for _, d := range tt.steps {
				r.clock.Advance(d)
				blocked = r.Observe(src)
			}
			if blocked != tt.fire {
				t.Errorf("blocked = %v, want %v", blocked, tt.fire)
			}
		})
	}
}

func TestIPv6Aggregation(t *testing.T) {
	tests := []struct {
		name   string
		prefix int
		a, b   string
		shared bool
		source string // SourceKey(a)
	}{
		{"same /64", 64, "2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true, "2001:db8:1:2::/64"},
		{"different /64", 64, "2001:db8:1:2::1", "2001:db8:1:3::1", false, "2001:db8:1:2::/64"},
		{"default prefix", 0, "2001:db8:1:2::1", "2001:db8:1:2::2", true, "2001:db8:1:2::/64"},
		{"/48 joins /64s", 48, "2001:db8:1:2::1", "2001:db8:1:3::1", true, "2001:db8:1::/48"},
		{"/48 keeps /48s apart", 48, "2001:db8:1::1", "2001:db8:2::1", false, "2001:db8:1::/48"},
		{"/128 keeps addresses apart", 128, "2001:db8::1", "2001:db8::2", false, "2001:db8::1"},
		{"/56 boundary", 56, "2001:db8:0:aa00::1", "2001:db8:0:aaff::1", true, "2001:db8:0:aa00::/56"},
		{"IPv4 never aggregated", 64, "192.0.2.1", "192.0.2.2", false, "192.0.2.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, Options{IPv6Prefix: tt.prefix, Rules: []config.Rule{rule("s", "spam_attack", time.Minute, 2, "block")}})
			if got := r.SourceKey(addr(tt.a)); got != tt.source {
				t.Errorf("SourceKey(%s) = %q, want %q", tt.a, got, tt.source)
			}
			r.Observe(Observation{Kind: KindSpam, Addr: addr(tt.a)})
			blocked := r.Observe(Observation{Kind: KindSpam, Addr: addr(tt.b)})
			if blocked != tt.shared {
				t.Errorf("second source blocked = %v, want %v", blocked, tt.shared)
			}
			if tt.shared {
				if !r.Blocked(addr(tt.a)) {
					t.Error("first address not blocked by the shared prefix block")
				}
				if bs := r.Blocks(); len(bs) != 1 || bs[0].Source != tt.source {
					t.Errorf("blocks = %+v, want one of %s", bs, tt.source)
				}
			}
		})
	}
}

func TestProtectedSources(t *testing.T) {
	tests := []struct {
		name    string
		actions []string
		want    []string
	}{
		// Nothing is done to a protected source, and its event says so.
		{"blocking rule", []string{"block"}, []string{}},
		{"rule without actions", nil, []string{}},
	}
	for _, tt := range tests {
		for _, src := range []string{"10.1.2.3", "192.0.2.77", "2001:db8:aaaa::5"} {
			t.Run(tt.name+"/"+src, func(t *testing.T) {
				r := newRig(t, Options{
					Trusted:   []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:aaaa::/48")},
					Allowlist: []netip.Prefix{netip.MustParsePrefix("192.0.2.64/26")},
					Rules:     []config.Rule{rule("h", "directory_harvest", time.Minute, 3, tt.actions...)},
				})
				if !r.Protected(addr(src)) {
					t.Fatalf("%s not protected", src)
				}
				if blocked := r.observeN(10, Observation{Kind: KindUnknownRecipient, Addr: addr(src), Refused: true}); blocked {
					t.Error("protected source blocked")
				}
				if len(r.Blocks()) != 0 {
					t.Errorf("blocks = %v", r.Blocks())
				}
				evs := r.eventsOf(t, "h")
				if len(evs) != 1 || !slices.Equal(evs[0].Actions, tt.want) {
					t.Fatalf("events = %+v, want one with actions %v", evs, tt.want)
				}
				if _, err := r.AddBlock(context.Background(), src, time.Hour, "manual"); !errors.Is(err, ErrProtected) {
					t.Errorf("AddBlock(%s) error = %v, want ErrProtected", src, err)
				}
			})
		}
	}
	r := newRig(t, Options{Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Allowlist: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	for src, want := range map[string]bool{"10.9.9.9": true, "192.0.2.1": false, "::ffff:10.0.0.1": true} {
		if got := r.Trusted(addr(src)); got != want {
			t.Errorf("Trusted(%s) = %v, want %v", src, got, want)
		}
	}
	if _, err := r.AddBlock(context.Background(), "0.0.0.0/0", time.Hour, ""); !errors.Is(err, ErrProtected) {
		t.Errorf("AddBlock(0.0.0.0/0) = %v, want ErrProtected (overlaps trusted)", err)
	}
}

func TestBlockExpires(t *testing.T) {
	const blockFor = 30 * time.Minute
	rl := rule("d", "dos", time.Minute, 3, "block")
	rl.BlockFor = blockFor
	r := newRig(t, Options{Rules: []config.Rule{rl}})
	src := addr("203.0.113.7")
	gen0 := r.BlockGeneration()
	if !r.observeN(3, Observation{Kind: KindConnect, Addr: src}) {
		t.Fatal("not blocked at threshold")
	}
	if r.BlockGeneration() == gen0 {
		t.Error("block generation unchanged by a block")
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	stored, ok := r.store.block("203.0.113.7")
	if !ok || stored.Rule != "d" || stored.EventID == 0 || stored.Manual || !stored.ExpiresAt.Equal(r.clock.Now().Add(blockFor)) {
		t.Fatalf("stored block = %+v, %v", stored, ok)
	}
	if want := "dos: 3 connections in 1m0s"; stored.Reason != want {
		t.Errorf("reason = %q, want %q", stored.Reason, want)
	}
	r.clock.Advance(blockFor - time.Nanosecond)
	if !r.Blocked(src) {
		t.Fatal("block lifted early")
	}
	r.clock.Advance(time.Nanosecond)
	if r.Blocked(src) {
		t.Fatal("expired block still blocks before the sweep")
	}
	gen1 := r.BlockGeneration()
	r.Tick(context.Background())
	if r.BlockGeneration() == gen1 {
		t.Error("block generation unchanged by expiry")
	}
	if len(r.Blocks()) != 0 {
		t.Errorf("Blocks() = %v after expiry", r.Blocks())
	}
	if _, ok := r.store.block("203.0.113.7"); ok {
		t.Error("expired block still in the store")
	}
	if ts := r.changes.types(); !slices.Contains(ts, ChangeBlockRemoved) {
		t.Errorf("changes %v lack %s", ts, ChangeBlockRemoved)
	}
}

func TestManualBlocks(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, Options{})
	adds := []struct {
		source, canonical string
	}{
		{"203.0.113.7", "203.0.113.7"},
		{"198.51.100.9/24", "198.51.100.0/24"},
		{"2001:db8::1", "2001:db8::1"},
		{"2001:db8:5::/48", "2001:db8:5::/48"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8:9:9::/64", "2001:db8:9:9::/64"},
	}
	for i, a := range adds {
		b, err := r.AddBlock(ctx, a.source, time.Duration(i+1)*time.Hour, "test")
		if err != nil {
			t.Fatalf("AddBlock(%s): %v", a.source, err)
		}
		if b.Source != a.canonical || !b.Manual || b.Reason != "test" {
			t.Errorf("AddBlock(%s) = %+v, want source %s manual", a.source, b, a.canonical)
		}
		if _, ok := r.store.block(a.canonical); !ok {
			t.Errorf("%s not persisted", a.canonical)
		}
		r.clock.Advance(time.Second) // distinct created_at for the order check
	}
	checks := map[string]bool{
		"203.0.113.7": true, "203.0.113.8": false,
		"198.51.100.200": true, "198.51.101.1": false,
		"2001:db8::1": true, "2001:db8::2": false, // a manual IPv6 address is a /128
		"2001:db8:5:ffff::1": true, "2001:db8:6::1": false,
		"192.0.2.1": true, "::ffff:203.0.113.7": true,
		"2001:db8:9:9::abcd": true,
	}
	for a, want := range checks {
		if got := r.Blocked(addr(a)); got != want {
			t.Errorf("Blocked(%s) = %v, want %v", a, got, want)
		}
	}
	var order []string
	for _, b := range r.Blocks() {
		order = append(order, b.Source)
	}
	var want []string
	for _, a := range adds {
		want = append(want, a.canonical)
	}
	if !slices.Equal(order, want) {
		t.Errorf("Blocks() order = %v, want %v", order, want)
	}

	for _, bad := range []string{"", "not-an-ip", "203.0.113.0/33", "2001:db8::/129"} {
		if _, err := r.AddBlock(ctx, bad, time.Hour, ""); err == nil {
			t.Errorf("AddBlock(%q) accepted", bad)
		}
	}
	if _, err := r.AddBlock(ctx, "192.0.2.99", 0, ""); err == nil {
		t.Error("AddBlock with zero duration accepted")
	}

	removes := []struct {
		source  string
		lifts   string
		wantErr error
	}{
		{"203.0.113.7/32", "203.0.113.7", nil},
		{"198.51.100.77/24", "198.51.100.1", nil},
		{"2001:db8:0::1", "2001:db8::1", nil},
		{"203.0.113.7", "", events.ErrNotFound},
		{"2001:db8:9:9::5", "", events.ErrNotFound}, // the /128, not the /64
	}
	for _, rm := range removes {
		err := r.RemoveBlock(ctx, rm.source)
		if !errors.Is(err, rm.wantErr) || (rm.wantErr == nil && err != nil) {
			t.Errorf("RemoveBlock(%s) = %v, want %v", rm.source, err, rm.wantErr)
		}
		if rm.lifts != "" && r.Blocked(addr(rm.lifts)) {
			t.Errorf("%s still blocked after RemoveBlock(%s)", rm.lifts, rm.source)
		}
	}
	if err := r.RemoveBlock(ctx, "bogus"); err == nil || errors.Is(err, events.ErrNotFound) {
		t.Errorf("RemoveBlock(bogus) = %v, want a parse error", err)
	}
	if len(r.Blocks()) != 3 {
		t.Errorf("blocks left = %v, want 3", r.Blocks())
	}
}

// A manual block refuses; a rule's block is not stacked on it.
func TestManualBlockNotReplacedByRule(t *testing.T) {
	r := newRig(t, Options{Rules: []config.Rule{rule("d", "dos", time.Minute, 2, "block")}})
	if _, err := r.AddBlock(context.Background(), "203.0.113.0/24", 24*time.Hour, "neighbourhood"); err != nil {
		t.Fatal(err)
	}
	r.observeN(2, Observation{Kind: KindConnect, Addr: addr("203.0.113.7")})
	bs := r.Blocks()
	if len(bs) != 1 || !bs[0].Manual {
		t.Fatalf("blocks = %+v, want only the manual one", bs)
	}
	evs := r.eventsOf(t, "d")
	if len(evs) != 1 || !slices.Equal(evs[0].Actions, []string{}) {
		t.Errorf("events = %+v, want one that took no action", evs)
	}
}

func TestBlocksSurviveRestart(t *testing.T) {
	ctx := context.Background()
	rules := []config.Rule{rule("h", "directory_harvest", 10*time.Minute, 5, "block")}
	r := newRig(t, Options{Rules: rules})
	src := addr("203.0.113.7")
	r.observeN(5, Observation{Kind: KindUnknownRecipient, Addr: src, Refused: true})
	if _, err := r.AddBlock(ctx, "198.51.100.0/24", time.Hour, "manual"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddBlock(ctx, "192.0.2.1", time.Minute, "short"); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r.clock.Advance(2 * time.Minute) // the short block expires while we are down

	// A new engine on the same store: what the old one knew is back.
	clock := r.clock
	e2, err := New(ctx, Options{Rules: rules, Store: r.store, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	for a, want := range map[string]bool{"203.0.113.7": true, "198.51.100.5": true, "192.0.2.1": false} {
		if got := e2.Blocked(addr(a)); got != want {
			t.Errorf("after restart Blocked(%s) = %v, want %v", a, got, want)
		}
	}
	if _, ok := r.store.block("192.0.2.1"); ok {
		t.Error("expired block not deleted from the store at load")
	}
	// The restored event keeps counting impact through its block...
	e2.Refused(src)
	e2.Refused(src)
	if err := e2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	evs := r.store.events()
	if len(evs) != 1 || evs[0].Impact != 1+2 || evs[0].Status != events.StatusActive {
		t.Fatalf("events = %+v, want one active with impact 3", evs)
	}
	// ...and is not started twice by observations going on.
	e2.Observe(Observation{Kind: KindUnknownRecipient, Addr: src, Refused: true})
	_ = e2.Flush(ctx)
	if evs := r.store.events(); len(evs) != 1 || evs[0].Impact != 4 {
		t.Fatalf("events = %+v, want one with impact 4", evs)
	}
	// It ends after a quiet window like any other.
	clock.Advance(10 * time.Minute)
	e2.Tick(ctx)
	if evs := r.store.events(); evs[0].Status != events.StatusEnded {
		t.Errorf("restored event not ended after a quiet window: %+v", evs[0])
	}
}

// An event left active whose rule is gone at restart is ended at once.
func TestRestartEndsOrphanedEvents(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, Options{Rules: []config.Rule{rule("old", "spam_attack", time.Minute, 1)}})
	r.Observe(Observation{Kind: KindSpam, Addr: addr("192.0.2.1")})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.store.Insert(ctx, &events.Event{Type: "org_down", Rule: "", Status: events.StatusActive, Source: "org"}); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, Options{Store: r.store, Clock: r.clock}); err != nil {
		t.Fatal(err)
	}
	for _, ev := range r.store.events() {
		want := events.StatusEnded
		if ev.Type == "org_down" {
			want = events.StatusActive // not ours to end
		}
		if ev.Status != want {
			t.Errorf("%s event status %s, want %s", ev.Type, ev.Status, want)
		}
	}
}

// start → impact grows with refusals → ends after one quiet window → a new
// burst is a new event.
func TestEventLifecycle(t *testing.T) {
	ctx := context.Background()
	const window = 10 * time.Minute
	r := newRig(t, Options{Rules: []config.Rule{rule("h", "directory_harvest", window, 20, "block")}, Node: "mx2"})
	src := addr("203.0.113.7")
	o := Observation{Kind: KindUnknownRecipient, Addr: src, Service: "smtp", Refused: true}
	r.observeN(20, o)
	evs := r.eventsOf(t, "h")
	if len(evs) != 1 || evs[0].Impact != 1 {
		t.Fatalf("events = %+v, want one with impact 1", evs)
	}
	if evs[0].Mode != events.ModeEnforce || evs[0].Node != "mx2" {
		t.Errorf("mode %q node %q, want enforce on mx2", evs[0].Mode, evs[0].Node)
	}
	first := evs[0]
	if !first.StartedAt.Equal(r.clock.Now()) || first.EndedAt != nil {
		t.Errorf("started_at %v ended_at %v", first.StartedAt, first.EndedAt)
	}

	// Recipients refused in the open session and connections refused at
	// connect both count; writes are batched until Flush.
	updates := r.store.updates
	r.observeN(4, o)
	for range 100 {
		r.Refused(src)
	}
	r.Observe(Observation{Kind: KindUnknownRecipient, Addr: src}) // not refused: no impact
	if r.store.updates != updates {
		t.Errorf("%d store updates before Flush, want none", r.store.updates-updates)
	}
	if evs := r.eventsOf(t, "h"); evs[0].Impact != 105 {
		t.Errorf("impact = %d, want 105", evs[0].Impact)
	}

	// Refusals keep it alive past a window after the last observation.
	r.clock.Advance(window - time.Second)
	r.Refused(src)
	r.clock.Advance(window - time.Second)
	r.Tick(ctx)
	if evs := r.eventsOf(t, "h"); evs[0].Status != events.StatusActive {
		t.Fatalf("ended while refusals went on: %+v", evs[0])
	}
	r.clock.Advance(time.Second)
	r.Tick(ctx)
	evs = r.eventsOf(t, "h")
	if evs[0].Status != events.StatusEnded || evs[0].EndedAt == nil || !evs[0].EndedAt.Equal(r.clock.Now()) || evs[0].Impact != 106 {
		t.Fatalf("after a quiet window: %+v", evs[0])
	}

	// A refusal after the end does not touch the ended event.
	r.Refused(src)
	if evs := r.eventsOf(t, "h"); evs[0].Impact != 106 {
		t.Errorf("ended event impact changed to %d", evs[0].Impact)
	}

	// A new burst (block expired meanwhile) is a new event.
	r.clock.Advance(time.Hour)
	r.Tick(ctx)
	r.observeN(19, o)
	if len(r.eventsOf(t, "h")) != 1 {
		t.Fatal("new event before threshold")
	}
	if !r.Observe(o) {
		t.Error("not blocked again")
	}
	evs = r.eventsOf(t, "h")
	if len(evs) != 2 || evs[1].ID == first.ID || evs[1].Status != events.StatusActive || evs[1].Impact != 1 {
		t.Fatalf("events = %+v, want a second active one", evs)
	}
	if b, _ := r.store.block("203.0.113.7"); b.EventID != evs[1].ID {
		t.Errorf("block event_id = %d, want %d", b.EventID, evs[1].ID)
	}
	want := []string{ChangeEventStarted, ChangeBlockAdded, ChangeEventEnded, ChangeBlockRemoved, ChangeEventStarted, ChangeBlockAdded}
	if got := r.changes.types(); !slices.Equal(got, want) {
		t.Errorf("changes = %v, want %v", got, want)
	}
}

// A source whose refusals keep its event active past block_for is blocked
// again when it reaches the threshold again, without a new event.
func TestReblockWhileEventActive(t *testing.T) {
	ctx := context.Background()
	rl := rule("h", "directory_harvest", 10*time.Minute, 5, "block")
	rl.BlockFor = 15 * time.Minute
	r := newRig(t, Options{Rules: []config.Rule{rl}})
	src := addr("203.0.113.7")
	o := Observation{Kind: KindUnknownRecipient, Addr: src, Refused: true}
	r.observeN(5, o)
	for range 3 {
		r.clock.Advance(5 * time.Minute)
		r.Refused(src)
		r.Tick(ctx)
	}
	if r.Blocked(src) {
		t.Fatal("block did not expire")
	}
	if r.observeN(4, o) {
		t.Fatal("blocked again below threshold")
	}
	if !r.Observe(o) {
		t.Fatal("not blocked again at threshold")
	}
	// 1 at the start, 2 refusals while blocked (the third came as the
	// block expired), 5 refused recipients.
	if evs := r.eventsOf(t, "h"); len(evs) != 1 || evs[0].Impact != 1+2+5 {
		t.Errorf("events = %+v, want one with impact 8", evs)
	}
}

func TestMailbombMinSize(t *testing.T) {
	tests := []struct {
		size int64
		fire bool
	}{{0, false}, {499_999, false}, {500_000, true}, {50 << 20, true}}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.size), func(t *testing.T) {
			rl := rule("m", "mailbomb", time.Hour, 3, "block")
			rl.MinSize = 500_000
			r := newRig(t, Options{Rules: []config.Rule{rl}})
			if got := r.observeN(3, Observation{Kind: KindMessage, Addr: addr("192.0.2.1"), Size: tt.size}); got != tt.fire {
				t.Errorf("blocked = %v, want %v", got, tt.fire)
			}
		})
	}
	// Small messages between large ones do not count.
	rl := rule("m", "mailbomb", time.Hour, 3, "block")
	rl.MinSize = 1000
	r := newRig(t, Options{Rules: []config.Rule{rl}})
	for _, size := range []int64{1000, 10, 10, 5000, 10} {
		if r.Observe(Observation{Kind: KindMessage, Addr: addr("192.0.2.1"), Size: size}) {
			t.Fatal("blocked by small messages")
		}
	}
	if !r.Observe(Observation{Kind: KindMessage, Addr: addr("192.0.2.1"), Size: 1000}) {
		t.Error("third large message did not fire")
	}
}

// brute_force counts per source and service: a rule without service
// covers every service, each counted apart; with service, only that one.
func TestBruteForceService(t *testing.T) {
	tests := []struct {
		ruleService string
		services    []string
		fire        bool
	}{
		{"imap", []string{"imap", "imap", "imap"}, true},
		{"imap", []string{"imap", "pop3", "imap"}, false},
		{"imap", []string{"smtp", "submission", "pop3"}, false},
		{"", []string{"imap", "pop3", "submission"}, false},
		{"", []string{"pop3", "imap", "pop3", "imap", "pop3"}, true},
		{"", []string{"sieve", "sieve", "sieve"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.ruleService+"/"+fmt.Sprint(tt.services), func(t *testing.T) {
			rl := rule("b", "brute_force", time.Minute, 3, "block")
			rl.Service = tt.ruleService
			r := newRig(t, Options{Rules: []config.Rule{rl}})
			var blocked bool
			for _, svc := range tt.services {
				blocked = r.Observe(Observation{Kind: KindAuthFailure, Addr: addr("192.0.2.1"), Service: svc, Refused: true})
			}
			if blocked != tt.fire {
				t.Errorf("blocked = %v, want %v", blocked, tt.fire)
			}
		})
	}
	// Two rules on different services count separately.
	imap, pop := rule("imap", "brute_force", time.Minute, 2), rule("pop", "brute_force", time.Minute, 2)
	imap.Service, pop.Service = "imap", "pop3"
	r := newRig(t, Options{Rules: []config.Rule{imap, pop}})
	r.observeN(2, Observation{Kind: KindAuthFailure, Addr: addr("192.0.2.1"), Service: "imap"})
	if len(r.eventsOf(t, "imap")) != 1 || len(r.eventsOf(t, "pop")) != 0 {
		t.Error("service rules not separate")
	}
	// The event names the service; the block covers every service.
	ev := r.eventsOf(t, "imap")[0]
	if ev.Service != "imap" || ev.Source != "192.0.2.1" {
		t.Errorf("event %+v", ev)
	}
}

func TestAccountRuleSuspends(t *testing.T) {
	ctx := context.Background()
	rl := rule("out", "internal_spammer", time.Hour, 10, "suspend")
	rl.BlockFor = 2 * time.Hour
	r := newRig(t, Options{Rules: []config.Rule{rl}})
	o := Observation{Kind: KindAccountMessage, Addr: addr("192.0.2.50"), Account: "bob@example.test", Service: "submission"}
	r.observeN(9, o)
	r.Observe(Observation{Kind: KindAccountMessage, Account: "alice@example.test"})
	if r.Suspended("bob@example.test") {
		t.Fatal("suspended before threshold")
	}
	if blocked := r.Observe(o); blocked {
		t.Error("suspend-only rule blocked the client address")
	}
	if !r.Suspended("bob@example.test") || r.Suspended("alice@example.test") {
		t.Fatal("wrong suspension")
	}
	// The front end refuses the suspended account's messages and says so.
	r.observeN(3, Observation{Kind: KindAccountMessage, Account: "bob@example.test", Refused: true})
	evs := r.eventsOf(t, "out")
	if len(evs) != 1 || evs[0].Source != "bob@example.test" || !slices.Equal(evs[0].Actions, []string{"suspend"}) || evs[0].Impact != 3 {
		t.Fatalf("events = %+v", evs)
	}
	r.clock.Advance(2*time.Hour - time.Nanosecond)
	if !r.Suspended("bob@example.test") {
		t.Error("suspension lifted early")
	}
	r.clock.Advance(time.Nanosecond)
	if r.Suspended("bob@example.test") {
		t.Error("suspension did not expire")
	}
	r.Tick(ctx)
	if evs := r.eventsOf(t, "out"); evs[0].Status != events.StatusEnded {
		t.Errorf("event not ended: %+v", evs[0])
	}
}

// A block action on an account rule blocks the client address it came
// from; accounts count per account whatever the address.
func TestAccountRuleBlocksClient(t *testing.T) {
	r := newRig(t, Options{Rules: []config.Rule{rule("bounce", "bounce_spammer", time.Hour, 3, "block")}})
	for i, a := range []string{"192.0.2.1", "192.0.2.2", "192.0.2.3"} {
		blocked := r.Observe(Observation{Kind: KindBounce, Addr: addr(a), Account: "eve"})
		if blocked != (i == 2) {
			t.Errorf("observation %d blocked = %v", i, blocked)
		}
	}
	if r.Blocked(addr("192.0.2.1")) || !r.Blocked(addr("192.0.2.3")) {
		t.Error("wrong address blocked")
	}
}

// Tracked keys never exceed MaxKeys per rule, however many sources come.
func TestBoundedMemory(t *testing.T) {
	n := 1_500_000
	if testing.Short() || raceEnabled {
		n = 200_000
	}
	const maxKeys = 1000
	r := newRig(t, Options{MaxKeys: maxKeys, Rules: []config.Rule{
		rule("d", "dos", time.Minute, 100, "block"),
		rule("d6", "bad_sessions", time.Minute, 100, "block"),
	}})
	var b [16]byte
	b[0], b[1] = 0x20, 0x01
	for i := range n {
		r.Observe(Observation{Kind: KindConnect, Addr: netip.AddrFrom4([4]byte{10 + byte(i>>24), byte(i >> 16), byte(i >> 8), byte(i)})})
		b[4], b[5], b[6], b[7] = byte(i>>24), byte(i>>16), byte(i>>8), byte(i)
		r.Observe(Observation{Kind: KindBadSession, Addr: netip.AddrFrom16(b)})
		if i%100_000 == 0 {
			for name, k := range r.trackedKeys() {
				if k > maxKeys {
					t.Fatalf("rule %s tracks %d keys after %d sources, max %d", name, k, i, maxKeys)
				}
			}
		}
	}
	for name, k := range r.trackedKeys() {
		if k > maxKeys || k < maxKeys/2 {
			t.Errorf("rule %s tracks %d keys, want ≤ %d and not far below", name, k, maxKeys)
		}
	}
	// A source working its way up to the threshold survives a flood of
	// sources seen once in the same slot: eviction goes by count first.
	hot := addr("203.0.113.7")
	for i := range 50_000 {
		if i%100 == 0 {
			r.Observe(Observation{Kind: KindConnect, Addr: hot})
		}
		r.Observe(Observation{Kind: KindConnect, Addr: netip.AddrFrom4([4]byte{100, byte(i >> 16), byte(i >> 8), byte(i)})})
	}
	if !r.Blocked(hot) {
		t.Error("hot source was evicted and never reached its threshold")
	}
}

// Stale keys go away in Tick, a bounded amount per call.
func TestTickDropsStaleKeys(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, Options{Rules: []config.Rule{rule("d", "dos", time.Minute, 100, "block")}})
	for i := range 10_000 {
		r.Observe(Observation{Kind: KindConnect, Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})})
	}
	r.clock.Advance(59 * time.Second)
	r.Tick(ctx)
	if k := r.trackedKeys()["d"]; k != 10_000 {
		t.Fatalf("%d keys inside the window, want 10000", k)
	}
	r.Observe(Observation{Kind: KindConnect, Addr: addr("192.0.2.1")})
	r.clock.Advance(time.Second)
	for range 10 {
		r.Tick(ctx)
	}
	if k := r.trackedKeys()["d"]; k != 1 {
		t.Errorf("%d keys after the window passed, want 1 (the fresh one)", k)
	}
}

func TestReconfigure(t *testing.T) {
	ctx := context.Background()
	harvest := rule("h", "directory_harvest", 10*time.Minute, 5, "block")
	spam := rule("s", "spam_attack", time.Minute, 3, "block")
	r := newRig(t, Options{Rules: []config.Rule{harvest, spam}})
	blockedSrc, countedSrc, spamSrc := addr("203.0.113.7"), addr("198.51.100.1"), addr("198.51.100.2")
	r.observeN(5, Observation{Kind: KindUnknownRecipient, Addr: blockedSrc, Refused: true})
	r.observeN(2, Observation{Kind: KindSpam, Addr: spamSrc})
	r.observeN(2, Observation{Kind: KindUnknownRecipient, Addr: countedSrc})
	if _, err := r.AddBlock(ctx, "2001:db8:1:2::/64", time.Hour, "manual"); err != nil {
		t.Fatal(err)
	}

	// h changes threshold only (counters kept); s changes window (counters
	// reset); the IPv6 prefix changes to /48.
	harvest2 := harvest
	harvest2.Threshold = 3
	spam2 := spam
	spam2.Window = 2 * time.Minute
	if err := r.Reconfigure(Options{IPv6Prefix: 48, Rules: []config.Rule{harvest2, spam2}}); err != nil {
		t.Fatal(err)
	}
	if !r.Blocked(blockedSrc) || !r.Blocked(addr("2001:db8:1:2::99")) || r.Blocked(addr("2001:db8:1:3::1")) {
		t.Error("blocks not kept across Reconfigure")
	}
	if len(r.Blocks()) != 2 {
		t.Errorf("blocks = %v", r.Blocks())
	}
	if got := r.Rules(); !slices.EqualFunc(got, []config.Rule{harvest2, spam2}, func(a, b config.Rule) bool {
		return a.Name == b.Name && a.Threshold == b.Threshold && a.Window == b.Window
	}) {
		t.Errorf("Rules() = %+v", got)
	}
	if !r.Observe(Observation{Kind: KindUnknownRecipient, Addr: countedSrc}) {
		t.Error("kept counter + new threshold 3 did not fire")
	}
	if r.Observe(Observation{Kind: KindSpam, Addr: spamSrc}) {
		t.Error("counter of a rule whose window changed was kept")
	}
	// The active event of h is still the same event.
	r.Refused(blockedSrc)
	r.Observe(Observation{Kind: KindUnknownRecipient, Addr: blockedSrc, Refused: true})
	evs := r.eventsOf(t, "h")
	if len(evs) != 2 || evs[0].Impact != 3 {
		t.Errorf("events = %+v, want the first with impact 3", evs)
	}

	bad := []Options{
		{Rules: []config.Rule{harvest, harvest}},
		{Rules: []config.Rule{rule("x", "dos", 0, 1, "block")}},
		{Rules: []config.Rule{rule("x", "dos", time.Minute, 0, "block")}},
		{Rules: []config.Rule{rule("x", "dos", time.Minute, 1, "explode")}},
		{IPv6Prefix: 129},
	}
	for _, o := range bad {
		if err := r.Reconfigure(o); err == nil {
			t.Errorf("Reconfigure(%+v) accepted", o)
		}
	}
	if len(r.Rules()) != 2 {
		t.Error("a refused Reconfigure changed the rules")
	}
}

// A rule that is removed leaves its event to end on its own.
func TestReconfigureRemovedRuleEventEnds(t *testing.T) {
	ctx := context.Background()
	r := newRig(t, Options{Rules: []config.Rule{rule("s", "spam_attack", time.Minute, 1)}})
	r.Observe(Observation{Kind: KindSpam, Addr: addr("192.0.2.1")})
	if err := r.Reconfigure(Options{}); err != nil {
		t.Fatal(err)
	}
	r.Observe(Observation{Kind: KindSpam, Addr: addr("192.0.2.1")})
	r.clock.Advance(time.Minute)
	r.Tick(ctx)
	evs := r.eventsOf(t, "s")
	if len(evs) != 1 || evs[0].Status != events.StatusEnded {
		t.Errorf("events = %+v, want one ended", evs)
	}
}

// Many goroutines on shared and distinct keys: one event per key, each
// fired exactly at the threshold.
func TestConcurrentObserve(t *testing.T) {
	const (
		workers   = 8
		perWorker = 2000
		threshold = 1000
	)
	var fired sync.Map
	r := newRig(t, Options{Rules: []config.Rule{rule("d", "dos", time.Hour, threshold, "block")}})
	r.changes = nil
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				// Four shared sources, plus one per worker.
				r.Observe(Observation{Kind: KindConnect, Addr: netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 4)})})
				r.Observe(Observation{Kind: KindConnect, Addr: netip.AddrFrom4([4]byte{198, 51, 100, byte(w)})})
				r.Blocked(netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 4)}))
				r.Refused(netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 4)}))
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			r.Tick(context.Background())
			_ = r.Flush(context.Background())
			r.Blocks()
		}
	})
	wg.Wait()
	for _, ev := range r.eventsOf(t, "d") {
		if _, dup := fired.LoadOrStore(ev.Source, true); dup {
			t.Errorf("two events for %s", ev.Source)
		}
	}
	n := 0
	fired.Range(func(any, any) bool { n++; return true })
	if n != 4+workers {
		t.Errorf("%d sources fired, want %d", n, 4+workers)
	}
}

// OnChange may call back into the engine: it is never called under a lock.
func TestOnChangeMayReenter(t *testing.T) {
	var e *Engine
	var seen []bool
	clock := newFakeClock()
	e, err := New(context.Background(), Options{
		Clock: clock,
		Rules: []config.Rule{rule("d", "dos", time.Minute, 1, "block")},
		OnChange: func(c Change) {
			if c.Block != nil {
				seen = append(seen, e.Blocked(addr("192.0.2.1")))
				e.Blocks()
				e.Refused(addr("192.0.2.1"))
				if err := e.Flush(context.Background()); err != nil {
					t.Error(err)
				}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Observe(Observation{Kind: KindConnect, Addr: addr("192.0.2.1")})
	if err := e.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	e.Tick(context.Background())
	if !slices.Equal(seen, []bool{true, false}) {
		t.Errorf("Blocked inside OnChange = %v, want [true false]", seen)
	}
}

func TestNoStore(t *testing.T) {
	var ids []int64
	clock := newFakeClock()
	e, err := New(context.Background(), Options{
		Clock:    clock,
		Rules:    []config.Rule{rule("d", "dos", time.Minute, 1, "block")},
		OnChange: func(c Change) { ids = append(ids, eventID(c)) },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.Observe(Observation{Kind: KindConnect, Addr: addr("192.0.2.1")})
	e.Observe(Observation{Kind: KindConnect, Addr: addr("192.0.2.2")})
	if err := e.Flush(context.Background()); err != nil {
		t.Error(err)
	}
	// Both events are told before their blocks, each block naming its event.
	if !slices.Equal(ids, []int64{1, 2, 1, 2}) {
		t.Errorf("event IDs in changes = %v, want [1 2] then the blocks of 1 and 2", ids)
	}
	if _, err := e.AddBlock(context.Background(), "198.51.100.1", time.Hour, ""); err != nil {
		t.Error(err)
	}
	if err := e.RemoveBlock(context.Background(), "198.51.100.1"); err != nil {
		t.Error(err)
	}
}

func eventID(c Change) int64 {
	if c.Event != nil {
		return c.Event.ID
	}
	return c.Block.EventID
}

func TestUnhandledRuleTypesKept(t *testing.T) {
	rules := []config.Rule{rule("q", "outbound_queue", time.Minute, 100), rule("d", "dos", time.Minute, 5, "block")}
	r := newRig(t, Options{Rules: rules})
	if got := r.Rules(); len(got) != 2 || got[0].Name != "q" {
		t.Errorf("Rules() = %+v", got)
	}
}

// Run keeps the coarse clock while it runs and flushes impact when it stops.
func TestRunFlushesOnStop(t *testing.T) {
	store := newMemStore()
	e, err := New(context.Background(), Options{Store: store, Rules: []config.Rule{rule("d", "dos", time.Minute, 1, "block")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	src := addr("192.0.2.1")
	if !e.Observe(Observation{Kind: KindConnect, Addr: src}) {
		t.Fatal("not blocked")
	}
	for range 5 {
		e.Refused(src)
	}
	cancel()
	<-done
	if e.coarse.Load() != 0 {
		t.Error("coarse clock left running after Run returned")
	}
	evs := store.events()
	if len(evs) != 1 || evs[0].Impact != 5 {
		t.Errorf("events after Run stopped = %+v, want one with impact 5", evs)
	}
}

// The observation kinds agree with the one table of types: every rule
// type this build counts per source or account has a kind, and every kind
// counts what the table says.
func TestKindsMatchTheTable(t *testing.T) {
	for _, ty := range ruletype.All() {
		k, ok := kindOf(ty.Name)
		switch {
		case ty.Rule && ty.Built && !ok && ty.Per != ruletype.PerQueue:
			// outbound_queue is judged by the queue monitor (internal/queuemon).
			t.Errorf("%s is built but no observation kind counts it", ty.Name)
		case ok && kinds[k].perAccount != (ty.Per == ruletype.PerAccount):
			t.Errorf("%s counts per %s, its kind per account %v", ty.Name, ty.Per, kinds[k].perAccount)
		case ok && (!ty.Rule || kinds[k].noun != ty.Noun):
			t.Errorf("kind %v does not match the table's %+v", k, ty)
		}
	}
}
