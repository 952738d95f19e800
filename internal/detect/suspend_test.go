package detect

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"mxguard/internal/config"
	"mxguard/internal/events"
)

// A rule's suspension is in force at once, then stored with its event and
// reported; it survives a restart, expires by itself and is deleted from
// the store then.
func TestRuleSuspensionLifecycle(t *testing.T) {
	ctx := context.Background()
	rl := rule("spam", "internal_spammer", time.Hour, 3, "suspend")
	rl.BlockFor = 2 * time.Hour
	r := newRig(t, Options{Rules: []config.Rule{rl}})
	o := Observation{Kind: KindAccountMessage, Addr: addr("192.0.2.50"), Account: "Mallory@Example.TEST", Service: "submission"}
	r.observeN(3, o)
	if !r.Suspended("mallory@example.test") || !r.Suspended("MALLORY@example.test") {
		t.Fatal("not suspended at the threshold (any spelling of the login)")
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	evs := r.eventsOf(t, "spam")
	stored, ok := r.store.suspension("mallory@example.test")
	if len(evs) != 1 || !ok || stored.EventID != evs[0].ID || stored.Rule != "spam" || stored.Manual ||
		stored.Reason != "internal_spammer: 3 messages in 1h0m0s" || !stored.ExpiresAt.Equal(r.clock.Now().Add(2*time.Hour)) {
		t.Fatalf("stored %+v (ok %v), events %+v", stored, ok, evs)
	}
	if !slices.Contains(r.changes.types(), ChangeSuspensionAdded) {
		t.Errorf("changes %v", r.changes.types())
	}
	if got := r.Suspensions(); len(got) != 1 || got[0].Account != "mallory@example.test" || got[0].EventID != evs[0].ID {
		t.Errorf("Suspensions() = %+v", got)
	}

	// A restart keeps it.
	e2, err := New(ctx, Options{Rules: []config.Rule{rl}, Store: r.store, Clock: r.clock})
	if err != nil {
		t.Fatal(err)
	}
	if !e2.Suspended("mallory@example.test") {
		t.Fatal("suspension lost at restart")
	}
	r.clock.Advance(2 * time.Hour)
	if e2.Suspended("mallory@example.test") {
		t.Fatal("not expired")
	}
	log := &changeLog{}
	e2.onChange = log.add
	e2.Tick(ctx)
	if _, ok := r.store.suspension("mallory@example.test"); ok {
		t.Error("expired suspension still stored")
	}
	if !slices.Contains(log.types(), ChangeSuspensionRemoved) {
		t.Errorf("changes %v", log.types())
	}
}

func TestManualSuspensions(t *testing.T) {
	ctx := context.Background()
	rl := rule("spam", "internal_spammer", time.Hour, 2, "suspend")
	rl.BlockFor = time.Hour
	r := newRig(t, Options{Rules: []config.Rule{rl}})
	su, err := r.AddSuspension(ctx, " Bob@Example.test ", 24*time.Hour, "phished")
	if err != nil || su.Account != "bob@example.test" || !su.Manual || su.Reason != "phished" {
		t.Fatalf("AddSuspension = %+v, %v", su, err)
	}
	if stored, ok := r.store.suspension("bob@example.test"); !ok || !stored.Manual {
		t.Error("manual suspension not stored before it took effect")
	}
	if !r.Suspended("bob@example.test") {
		t.Fatal("not in force")
	}
	// A rule's shorter suspension does not shorten the operator's.
	r.observeN(2, Observation{Kind: KindAccountMessage, Account: "bob@example.test"})
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := r.Suspensions(); len(got) != 1 || !got[0].Manual || !got[0].ExpiresAt.Equal(su.ExpiresAt) {
		t.Errorf("after the rule fired: %+v, want the manual one unchanged", got)
	}
	// The event lists only actions it took: the operator suspended bob,
	// the rule did not (INTERFACE.md §3, like a block already in force).
	if evs := r.eventsOf(t, "spam"); len(evs) != 1 || len(evs[0].Actions) != 0 {
		t.Errorf("events %+v, want one without actions", evs)
	}
	if err := r.RemoveSuspension(ctx, "BOB@example.test"); err != nil {
		t.Fatal(err)
	}
	if r.Suspended("bob@example.test") {
		t.Error("still suspended after removal")
	}
	if err := r.RemoveSuspension(ctx, "bob@example.test"); !errors.Is(err, events.ErrNotFound) {
		t.Errorf("second removal: %v, want ErrNotFound", err)
	}
	for _, bad := range []struct {
		account string
		d       time.Duration
	}{{"", time.Hour}, {"  ", time.Hour}, {"carol", 0}, {"carol", -time.Second}} {
		if _, err := r.AddSuspension(ctx, bad.account, bad.d, ""); err == nil {
			t.Errorf("AddSuspension(%q, %v) accepted", bad.account, bad.d)
		}
	}
	// Without a store that keeps suspensions they hold in memory.
	e3, err := New(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e3.AddSuspension(ctx, "dave", time.Hour, ""); err != nil || !e3.Suspended("dave") {
		t.Errorf("memory-only suspension: %v", err)
	}
}

// An operator who lifts a rule's suspension is not overruled by the same
// event at the account's next message; a new event (after a quiet
// window) suspends again.
func TestLiftedSuspensionStaysLifted(t *testing.T) {
	ctx := context.Background()
	rl := rule("spam", "internal_spammer", 10*time.Minute, 3, "suspend")
	r := newRig(t, Options{Rules: []config.Rule{rl}})
	o := Observation{Kind: KindAccountMessage, Account: "alice"}
	r.observeN(3, o)
	if !r.Suspended("alice") {
		t.Fatal("not suspended")
	}
	if err := r.RemoveSuspension(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	r.observeN(5, o)
	if r.Suspended("alice") {
		t.Fatal("the event suspended again what the operator lifted")
	}
	r.clock.Advance(11 * time.Minute)
	r.Tick(ctx)
	r.observeN(3, o)
	if !r.Suspended("alice") {
		t.Error("a new event after a quiet window did not suspend")
	}
}
