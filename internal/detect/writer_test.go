package detect

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"mxguard/internal/config"
	"mxguard/internal/events"
	"mxguard/internal/testutil"
)

// stuckStore is a memStore whose writes wait until released: a store that
// hangs (a locked database file, a slow disk).
type stuckStore struct {
	*memStore
	release chan struct{}
	entered chan struct{} // one receive per write that started waiting
	writes  atomic.Int64
}

func newStuckStore() *stuckStore {
	return &stuckStore{memStore: newMemStore(), release: make(chan struct{}), entered: make(chan struct{}, 1024)}
}

func (s *stuckStore) wait(ctx context.Context) error {
	s.writes.Add(1)
	s.entered <- struct{}{}
	select {
	case <-s.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *stuckStore) Insert(ctx context.Context, e *events.Event) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.memStore.Insert(ctx, e)
}

func (s *stuckStore) Update(ctx context.Context, e events.Event) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.memStore.Update(ctx, e)
}

func (s *stuckStore) PutBlock(ctx context.Context, b events.Block) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	return s.memStore.PutBlock(ctx, b)
}

// The hot path never waits on the store: while the writer is stuck inside
// a store write, an Observe that fires a rule returns, and the source is
// blocked at once (the connection after the threshold is refused). Once
// the store answers, the events and their blocks are all stored, each
// block naming its event.
func TestObserveDoesNotWaitForTheStore(t *testing.T) {
	store := newStuckStore()
	r := newRig(t, Options{Store: store, Rules: []config.Rule{rule("d", "dos", time.Minute, 3, "block")}})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { r.Run(ctx); close(ran) }()
	defer func() { cancel(); <-ran }()

	first, second := addr("203.0.113.7"), addr("198.51.100.9")
	if !r.observeN(3, Observation{Kind: KindConnect, Addr: first}) {
		t.Fatal("first source not blocked at its threshold")
	}
	<-store.entered // the writer is now stuck storing the first event

	observed := make(chan bool)
	go func() { observed <- r.observeN(3, Observation{Kind: KindConnect, Addr: second}) }()
	select {
	case blocked := <-observed:
		if !blocked || !r.Blocked(second) || !r.Blocked(first) {
			t.Errorf("blocked: Observe %v, first %v, second %v; want all true", blocked, r.Blocked(first), r.Blocked(second))
		}
	case <-time.After(30 * time.Second): // a guard against a hang, not a measurement
		t.Fatal("Observe waited for the stuck store")
	}
	if n := len(store.events()); n != 0 {
		t.Fatalf("%d events stored while the store hangs", n)
	}

	close(store.release)
	if err := r.Flush(context.Background()); err != nil { // waits for the writer's batch, then writes the rest
		t.Fatal(err)
	}
	evs := store.events()
	if len(evs) != 2 {
		t.Fatalf("events = %+v, want two", evs)
	}
	for _, ev := range evs {
		b, ok := store.block(ev.Source)
		if !ok || b.EventID != ev.ID || ev.ID == 0 {
			t.Errorf("event %+v: stored block %+v, %v; want one naming the event", ev, b, ok)
		}
	}
	want := []string{ChangeEventStarted, ChangeBlockAdded, ChangeEventStarted, ChangeBlockAdded}
	// The writer may still be telling OnChange what it stored when Flush
	// returns (one caller tells at a time, in order).
	testutil.WaitUntil(t, "four changes told", func() bool { return len(r.changes.types()) >= len(want) })
	if got := r.changes.types(); !slices.Equal(got, want) {
		t.Errorf("changes = %v, want events told before their blocks: %v", got, want)
	}
}

// A store that fails loses nothing: the block holds in memory, and the
// event and block are written once the store works again.
func TestFailedWritesAreRetried(t *testing.T) {
	store := &failingStore{memStore: newMemStore()}
	store.fail.Store(true)
	r := newRig(t, Options{Store: store, Rules: []config.Rule{rule("d", "dos", time.Minute, 1, "block")}})
	src := addr("203.0.113.7")
	if !r.Observe(Observation{Kind: KindConnect, Addr: src}) {
		t.Fatal("not blocked")
	}
	if err := r.Flush(context.Background()); err == nil {
		t.Fatal("Flush to a failing store reported no error")
	}
	if !r.Blocked(src) || len(r.changes.types()) != 0 {
		t.Fatalf("after a failed write: blocked %v, changes %v; want blocked and nothing told yet", r.Blocked(src), r.changes.types())
	}
	store.fail.Store(false)
	r.Tick(context.Background())
	evs := store.events()
	if b, ok := store.block("203.0.113.7"); len(evs) != 1 || !ok || b.EventID != evs[0].ID {
		t.Errorf("after the store recovered: events %+v, block %+v %v", evs, b, ok)
	}
}

type failingStore struct {
	*memStore
	fail atomic.Bool
}

var errDown = errors.New("database is down")

func (s *failingStore) Insert(ctx context.Context, e *events.Event) error {
	if s.fail.Load() {
		return errDown
	}
	return s.memStore.Insert(ctx, e)
}

func (s *failingStore) PutBlock(ctx context.Context, b events.Block) error {
	if s.fail.Load() {
		return errDown
	}
	return s.memStore.PutBlock(ctx, b)
}
