package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"mxguard/internal/detect"
	"mxguard/internal/events"
	"mxguard/internal/metrics"
	"mxguard/internal/testutil"
)

// fakeEngine records what the cluster hands the engine.
type fakeEngine struct {
	mu      sync.Mutex
	reached []detect.Count
	applied []detect.Change
	impact  map[string]int64
	blocks  []events.Block
}

var _ Engine = (*fakeEngine)(nil)

func (f *fakeEngine) CountKey(c detect.Count) string { return c.Addr.String() }
func (f *fakeEngine) ReachedElsewhere(c detect.Count) {
	f.mu.Lock()
	f.reached = append(f.reached, c)
	f.mu.Unlock()
}
func (f *fakeEngine) ApplyRemote(c detect.Change) {
	f.mu.Lock()
	f.applied = append(f.applied, c)
	f.mu.Unlock()
}
func (f *fakeEngine) AddImpact(rule, source string, n int64) {
	f.mu.Lock()
	if f.impact == nil {
		f.impact = make(map[string]int64)
	}
	f.impact[rule+" "+source] += n
	f.mu.Unlock()
}
func (f *fakeEngine) Blocks() []events.Block {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]events.Block(nil), f.blocks...)
}
func (f *fakeEngine) Suspensions() []events.Suspension { return nil }

func (f *fakeEngine) nReached() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reached)
}

func (f *fakeEngine) appliedSources(typ string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.applied {
		if c.Type == typ && c.Block != nil {
			out = append(out, c.Block.Source)
		}
	}
	return out
}

// node runs a Cluster for a fake engine until the test ends.
func node(t testing.TB, url, name string) (*Cluster, *fakeEngine) {
	t.Helper()
	c, err := New(Options{URL: url, Node: name, Heartbeat: 20 * time.Millisecond, Metrics: metrics.New()})
	if err != nil {
		t.Fatal(err)
	}
	eng := &fakeEngine{}
	runUntilCleanup(t, c, eng)
	return c, eng
}

// runUntilCleanup runs c for eng until the test ends.
func runUntilCleanup(tb testing.TB, c *Cluster, eng Engine) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		c.Run(ctx, eng)
		close(done)
	}()
	tb.Cleanup(func() {
		cancel()
		<-done
	})
}

func waitUp(t testing.TB, cs ...*Cluster) {
	t.Helper()
	for _, c := range cs {
		testutil.WaitUntil(t, "redis up", func() bool { return c.Status().Redis == StateUp })
	}
}

func count(ip string, at time.Time) detect.Count {
	return detect.Count{Rule: "harvest", Kind: detect.KindUnknownRecipient, Threshold: 10, Window: 10 * time.Minute,
		At: at.UnixNano(), Addr: netip.MustParseAddr(ip), Service: "smtp"}
}

// Counts of one key on two nodes add up in Redis: the node whose flush
// makes the sum reach the threshold is told; a key below it is not.
func TestCountsAddUpAcrossNodes(t *testing.T) {
	r := testutil.StartRedis(t)
	a, ea := node(t, r.URL(), "mx1")
	b, eb := node(t, r.URL(), "mx2")
	waitUp(t, a, b)
	now := time.Now()
	for range 5 {
		a.Count(count("192.0.2.1", now))
		a.Count(count("192.0.2.2", now)) // 5 in all: stays below
	}
	testutil.WaitUntil(t, "mx1's counts flushed", func() bool {
		return stored(t, a, "192.0.2.1") == 5 && stored(t, a, "192.0.2.2") == 5
	})
	for range 5 {
		b.Count(count("192.0.2.1", now))
	}
	testutil.WaitUntil(t, "mx2 told the threshold is reached", func() bool { return eb.nReached() == 1 })
	if n := ea.nReached(); n != 0 {
		t.Errorf("mx1 told %d times; its counts were below the threshold", n)
	}
	eb.mu.Lock()
	got := eb.reached[0]
	eb.mu.Unlock()
	if got.Addr.String() != "192.0.2.1" || got.Rule != "harvest" {
		t.Errorf("reached %+v", got)
	}
	// Counts older than the window are not counted.
	for range 9 {
		a.Count(count("192.0.2.3", now.Add(-11*time.Minute)))
	}
	testutil.WaitUntil(t, "old counts flushed", func() bool { return stored(t, a, "192.0.2.3") == 9 })
	b.Count(count("192.0.2.3", now))
	// The flush of the new count drops the slots past the window.
	testutil.WaitUntil(t, "mx2's count flushed", func() bool { return stored(t, b, "192.0.2.3") == 1 })
	if n := eb.nReached(); n != 1 {
		t.Errorf("counts older than the window reached the threshold (%d)", n)
	}
}

// stored is the sum of the counter of ip in Redis, over all its slots.
func stored(t testing.TB, c *Cluster, ip string) int64 {
	t.Helper()
	m, err := c.rdb.HGetAll(t.Context(), counterKey+"harvest:"+ip).Result()
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, v := range m {
		var x int64
		if err := json.Unmarshal([]byte(v), &x); err != nil {
			t.Fatal(err)
		}
		n += x
	}
	return n
}

// The first node to claim an attack records it; the claim is released
// when its event ends; refusals on the other node reach it.
func TestClaimOneEventPerAttack(t *testing.T) {
	r := testutil.StartRedis(t)
	a, ea := node(t, r.URL(), "mx1")
	b, _ := node(t, r.URL(), "mx2")
	waitUp(t, a, b)
	ev := events.Event{Type: "directory_harvest", Rule: "harvest", Source: "192.0.2.5", Service: "smtp",
		Detail: map[string]any{"window": "10m"}}
	if !a.Claim(t.Context(), ev) {
		t.Fatal("mx1 lost the first claim")
	}
	if b.Claim(t.Context(), ev) {
		t.Fatal("mx2 won a claim mx1 holds")
	}
	other := ev
	other.Source = "192.0.2.6"
	if !b.Claim(t.Context(), other) {
		t.Fatal("mx2 lost the claim of another source")
	}
	b.Refused("harvest", "192.0.2.5")
	b.Refused("harvest", "192.0.2.5")
	testutil.WaitUntil(t, "mx2's refusals counted on mx1", func() bool {
		ea.mu.Lock()
		defer ea.mu.Unlock()
		return ea.impact["harvest 192.0.2.5"] == 2
	})
	a.Publish(detect.Change{Type: detect.ChangeEventEnded, Event: &ev})
	testutil.WaitUntil(t, "claim released", func() bool {
		ok := b.Claim(t.Context(), ev)
		return ok
	})
}

// A node's blocks and removals reach the other node, not itself; a node
// that joins later loads the blocks in force.
func TestBlocksFanOut(t *testing.T) {
	r := testutil.StartRedis(t)
	a, ea := node(t, r.URL(), "mx1")
	_, eb := node(t, r.URL(), "mx2")
	waitUp(t, a)
	testutil.WaitUntil(t, "both nodes listed", func() bool { return len(a.Status().Nodes) == 2 })
	now := time.Now()
	blk := events.Block{Source: "192.0.2.7", Rule: "harvest", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	a.Publish(detect.Change{Type: detect.ChangeBlockAdded, Block: &blk})
	testutil.WaitUntil(t, "block on mx2", func() bool { return len(eb.appliedSources(detect.ChangeBlockAdded)) == 1 })
	_, ec := node(t, r.URL(), "mx3")
	testutil.WaitUntil(t, "mx3 loads the block in force", func() bool {
		s := ec.appliedSources(detect.ChangeBlockAdded)
		return len(s) == 1 && s[0] == "192.0.2.7"
	})
	a.Publish(detect.Change{Type: detect.ChangeBlockRemoved, Block: &events.Block{Source: "192.0.2.7"}})
	testutil.WaitUntil(t, "removal on mx2", func() bool { return len(eb.appliedSources(detect.ChangeBlockRemoved)) == 1 })
	if s := ea.appliedSources(detect.ChangeBlockAdded); len(s) != 0 {
		t.Errorf("mx1 applied its own changes: %v", s)
	}
}

// With Redis unreachable nothing waits: counts and changes are queued or
// dropped, claims are won locally, the state says down, and stopping
// leaves no goroutine behind.
func TestRedisUnreachable(t *testing.T) {
	before := runtime.NumGoroutine()
	c, err := New(Options{URL: "redis://" + testutil.FreeAddr(t) + "/0", Node: "mx1", Heartbeat: 10 * time.Millisecond, Metrics: metrics.New()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		c.Run(ctx, &fakeEngine{})
		close(done)
	}()
	testutil.WaitUntil(t, "state down", func() bool { return c.seen.Load() == seenDown })
	if s := c.Status(); s.Redis != StateDown || len(s.Nodes) != 0 {
		t.Errorf("status %+v", s)
	}
	now := time.Now()
	for i := range 3 * countQueue { // past the queue: dropped, never blocking
		c.Count(count("192.0.2.9", now))
		if i < 2*publishQueue {
			c.Publish(detect.Change{Type: detect.ChangeBlockAdded, Block: &events.Block{Source: "192.0.2.9", ExpiresAt: now.Add(time.Hour)}})
		}
	}
	if !c.Claim(t.Context(), events.Event{Rule: "harvest", Source: "192.0.2.9"}) {
		t.Error("claim lost while redis is down: every node must record its own")
	}
	cancel()
	<-done
	testutil.WaitUntil(t, "goroutines gone", func() bool { return runtime.NumGoroutine() <= before })
}

func FuzzDecodeMessage(f *testing.F) {
	now := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, m := range []message{
		{From: "a", Node: "mx1", Type: detect.ChangeBlockAdded, Block: &events.Block{Source: "192.0.2.1", ExpiresAt: now}},
		{From: "a", Node: "mx1", Type: detect.ChangeSuspensionRemoved, Suspension: &events.Suspension{Account: "bob"}},
	} {
		b, _ := json.Marshal(m)
		f.Add(b)
	}
	f.Add([]byte(`{"type":"block_added"}`))
	f.Add([]byte(`{"type":"event_started","block":{"source":"x"}}`))
	f.Add([]byte("\x00\xff"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		ch := m.change()
		switch ch.Type {
		case detect.ChangeBlockAdded, detect.ChangeBlockRemoved:
			if ch.Block == nil || ch.Block.Source == "" || ch.Suspension != nil {
				t.Fatalf("accepted %q as %+v", b, m)
			}
		case detect.ChangeSuspensionAdded, detect.ChangeSuspensionRemoved:
			if ch.Suspension == nil || ch.Suspension.Account == "" || ch.Block != nil {
				t.Fatalf("accepted %q as %+v", b, m)
			}
		default:
			t.Fatalf("accepted type %q", ch.Type)
		}
	})
}

// go-redis' messages are passed on at most once an interval, counting
// those left out.
func TestLibraryLogRateLimited(t *testing.T) {
	var buf testutil.LockedBuffer
	g := &libraryLog{log: slog.New(slog.NewTextHandler(&buf, nil)), every: time.Hour}
	for range 5 {
		g.Printf(t.Context(), "dial %s: refused", "127.0.0.1:1")
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Fatalf("%d lines logged, want 1:\n%s", n, buf.String())
	}
	g.last = time.Now().Add(-2 * time.Hour)
	g.Printf(t.Context(), "dial again")
	if out := buf.String(); !strings.Contains(out, "dial again") || !strings.Contains(out, "withheld=4") {
		t.Errorf("second line lacks the withheld count:\n%s", out)
	}
}
