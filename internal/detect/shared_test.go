package detect

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"mxguard/internal/config"
	"mxguard/internal/events"
)

// fakeShared records what the engine shares and answers claims as told.
type fakeShared struct {
	mu       sync.Mutex
	counts   []Count
	changes  changeLog
	claims   []events.Event
	refused  []string
	claimAns bool
}

var _ Shared = (*fakeShared)(nil)

func (f *fakeShared) Count(c Count)    { f.mu.Lock(); f.counts = append(f.counts, c); f.mu.Unlock() }
func (f *fakeShared) Publish(c Change) { f.changes.add(c) }
func (f *fakeShared) Claim(_ context.Context, ev events.Event) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claims = append(f.claims, ev)
	return f.claimAns
}
func (f *fakeShared) Refused(rule, source string) {
	f.mu.Lock()
	f.refused = append(f.refused, rule+" "+source)
	f.mu.Unlock()
}

func (f *fakeShared) published() []string { return f.changes.types() }

func sharedRig(t *testing.T, claim bool) (*rig, *fakeShared) {
	sh := &fakeShared{claimAns: claim}
	r := newRig(t, Options{Shared: sh, Trusted: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Rules: []config.Rule{
		rule("harvest", "directory_harvest", 10*time.Minute, 3, "block"),
	}})
	return r, sh
}

// Every counted observation is shared with its rule, key and time; the
// local count still fires on its own.
func TestSharedCounts(t *testing.T) {
	r, sh := sharedRig(t, true)
	o := Observation{Kind: KindUnknownRecipient, Addr: addr("203.0.113.7"), Service: "smtp"}
	if r.observeN(3, o) != true {
		t.Fatal("the local count did not block at the threshold")
	}
	if len(sh.counts) != 3 {
		t.Fatalf("counts shared: %d, want 3", len(sh.counts))
	}
	c := sh.counts[0]
	if c.Rule != "harvest" || c.Threshold != 3 || c.Window != 10*time.Minute || c.At != r.clock.Now().UnixNano() || r.CountKey(c) != "203.0.113.7" {
		t.Errorf("count = %+v key %q", c, r.CountKey(c))
	}
	if got := sh.published(); !slices.Equal(got, []string{ChangeBlockAdded}) {
		t.Errorf("published %v, want the rule's block", got)
	}
	if evs := r.eventsOf(t, "harvest"); len(evs) != 1 {
		t.Fatalf("events: %+v", evs)
	}
	if got := sh.published(); !slices.Equal(got, []string{ChangeBlockAdded, ChangeEventStarted}) {
		t.Errorf("published %v, want the block, then the stored event", got)
	}
}

// The cluster's count reaching the threshold fires the rule here, once.
func TestReachedElsewhereFires(t *testing.T) {
	r, sh := sharedRig(t, true)
	o := Observation{Kind: KindUnknownRecipient, Addr: addr("203.0.113.8"), Service: "smtp"}
	r.Observe(o) // 1 of 3 here
	c := sh.counts[0]
	r.ReachedElsewhere(c)
	r.ReachedElsewhere(c) // the event is active: nothing more
	if !r.Blocked(o.Addr) {
		t.Fatal("not blocked after the cluster count reached the threshold")
	}
	if evs := r.eventsOf(t, "harvest"); len(evs) != 1 || evs[0].Source != "203.0.113.8" {
		t.Fatalf("events: %+v", evs)
	}
	// A rule that is gone is ignored.
	c.Rule = "gone"
	c.Addr = addr("203.0.113.9")
	r.ReachedElsewhere(c)
	if r.Blocked(c.Addr) {
		t.Error("a count of an unknown rule blocked")
	}
}

// When another node claimed the attack, the event here is joined: never
// stored, never reported, its block in force; its refusals go to the
// recording node.
func TestJoinedEvent(t *testing.T) {
	r, sh := sharedRig(t, false)
	o := Observation{Kind: KindUnknownRecipient, Addr: addr("203.0.113.10"), Service: "smtp"}
	r.observeN(3, o)
	if evs := r.eventsOf(t, "harvest"); len(evs) != 0 {
		t.Fatalf("a joined event was stored: %+v", evs)
	}
	if len(sh.claims) != 1 || sh.claims[0].Source != "203.0.113.10" || sh.claims[0].Rule != "harvest" {
		t.Fatalf("claims: %+v", sh.claims)
	}
	if !r.Blocked(o.Addr) {
		t.Fatal("the joined event's block is not in force")
	}
	if _, ok := r.store.block("203.0.113.10"); ok {
		t.Error("the block of a joined event is stored here; the recording node stores it")
	}
	r.Refused(o.Addr)
	if !slices.Equal(sh.refused, []string{"harvest 203.0.113.10"}) {
		t.Errorf("refused: %v", sh.refused)
	}
	// Quiet for a window: it ends without a word.
	r.clock.Advance(11 * time.Minute)
	r.Tick(context.Background())
	for _, c := range r.changes.types() {
		if c == ChangeEventStarted || c == ChangeEventEnded {
			t.Errorf("a joined event was reported: %v", r.changes.types())
		}
	}
	if n := len(r.trackedEvents()); n != 0 {
		t.Errorf("%d events still tracked", n)
	}
}

// Another node's changes apply here without being published again; a
// shorter copy never shortens a block in force.
func TestApplyRemote(t *testing.T) {
	r, sh := sharedRig(t, true)
	now := r.clock.Now()
	rec := events.Block{Source: "198.51.100.0/24", Reason: "elsewhere", CreatedAt: now, ExpiresAt: now.Add(time.Hour), Manual: true}
	r.ApplyRemote(Change{Type: ChangeBlockAdded, Block: &rec})
	if !r.Blocked(addr("198.51.100.77")) {
		t.Fatal("remote block not in force")
	}
	short := rec
	short.ExpiresAt = now.Add(time.Minute)
	r.ApplyRemote(Change{Type: ChangeBlockAdded, Block: &short})
	if bs := r.Blocks(); len(bs) != 1 || !bs[0].ExpiresAt.Equal(rec.ExpiresAt) {
		t.Errorf("blocks after a shorter copy: %+v", bs)
	}
	trusted := rec
	trusted.Source = "10.1.2.3"
	r.ApplyRemote(Change{Type: ChangeBlockAdded, Block: &trusted})
	if r.Blocked(addr("10.1.2.3")) {
		t.Error("a remote block of a trusted address is in force")
	}
	expired := rec
	expired.Source, expired.ExpiresAt = "192.0.2.1", now
	r.ApplyRemote(Change{Type: ChangeBlockAdded, Block: &expired})
	if r.Blocked(addr("192.0.2.1")) {
		t.Error("an expired remote block is in force")
	}
	r.ApplyRemote(Change{Type: ChangeBlockRemoved, Block: &events.Block{Source: "198.51.100.0/24"}})
	if r.Blocked(addr("198.51.100.77")) {
		t.Error("remote removal not applied")
	}
	su := events.Suspension{Account: "Bob", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	r.ApplyRemote(Change{Type: ChangeSuspensionAdded, Suspension: &su})
	if !r.Suspended("bob") {
		t.Error("remote suspension not in force")
	}
	r.ApplyRemote(Change{Type: ChangeSuspensionRemoved, Suspension: &events.Suspension{Account: "bob"}})
	if r.Suspended("bob") {
		t.Error("remote lift not applied")
	}
	if got := sh.published(); len(got) != 0 {
		t.Errorf("remote changes published again: %v", got)
	}
	if _, ok := r.store.block("198.51.100.0/24"); ok {
		t.Error("a remote block was stored here")
	}
	// The operator's own changes are published.
	if _, err := r.AddBlock(context.Background(), "192.0.2.9", time.Hour, "x"); err != nil {
		t.Fatal(err)
	}
	if err := r.RemoveBlock(context.Background(), "192.0.2.9"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddSuspension(context.Background(), "carol", time.Hour, "x"); err != nil {
		t.Fatal(err)
	}
	if err := r.RemoveSuspension(context.Background(), "carol"); err != nil {
		t.Fatal(err)
	}
	want := []string{ChangeBlockAdded, ChangeBlockRemoved, ChangeSuspensionAdded, ChangeSuspensionRemoved}
	if got := sh.published(); !slices.Equal(got, want) {
		t.Errorf("published %v, want %v", got, want)
	}
}

// AddImpact counts other nodes' refusals toward the event recorded here.
func TestAddImpact(t *testing.T) {
	r, _ := sharedRig(t, true)
	o := Observation{Kind: KindUnknownRecipient, Addr: addr("203.0.113.11"), Service: "smtp"}
	r.observeN(3, o)
	r.AddImpact("harvest", "203.0.113.11", 5)
	r.AddImpact("harvest", "203.0.113.12", 7) // no such event
	evs := r.eventsOf(t, "harvest")
	if len(evs) != 1 || evs[0].Impact != 5 {
		t.Fatalf("events: %+v", evs)
	}
}

// With a shared store a node takes over only its own active events at
// start; another node's stay with it.
func TestRestoreOnlyOwnEvents(t *testing.T) {
	store := newMemStore()
	for _, node := range []string{"mx1", "mx2", ""} {
		ev := events.Event{Type: "directory_harvest", Rule: "harvest", Mode: events.ModeEnforce, Status: events.StatusActive,
			StartedAt: time.Now(), Source: "203.0.113.20", Service: "smtp", Actions: []string{}, Node: node}
		if err := store.Insert(context.Background(), &ev); err != nil {
			t.Fatal(err)
		}
	}
	r := newRig(t, Options{Store: store, Node: "mx1", Shared: &fakeShared{claimAns: true}, Rules: []config.Rule{
		rule("harvest", "directory_harvest", 10*time.Minute, 3, "block"),
	}})
	var nodes []string
	for _, ev := range r.trackedEvents() {
		nodes = append(nodes, ev.node)
	}
	slices.Sort(nodes)
	if !slices.Equal(nodes, []string{"", "mx1"}) {
		t.Errorf("took over the events of nodes %q, want mx1's and the one without a node", nodes)
	}
}
