package detect

import (
	"context"
	"net/netip"
	"sort"
	"sync"
	"testing"
	"time"

	"mxguard/internal/config"
	"mxguard/internal/events"
	"mxguard/internal/testutil"
)

// fakeClock is the shared settable test clock.
type fakeClock = testutil.FakeClock

func newFakeClock() *fakeClock { return testutil.NewFakeClock() }

var _ Clock = (*fakeClock)(nil)

// memStore is an in-memory events.Store that also counts writes.
type memStore struct {
	mu      sync.Mutex
	evs     map[int64]events.Event
	blocks  map[string]events.Block
	sus     map[string]events.Suspension
	nextID  int64
	updates int
}

func newMemStore() *memStore {
	return &memStore{evs: make(map[int64]events.Event), blocks: make(map[string]events.Block), sus: make(map[string]events.Suspension)}
}

var (
	_ events.Store           = (*memStore)(nil)
	_ events.SuspensionStore = (*memStore)(nil)
)

func (s *memStore) PutSuspension(_ context.Context, su events.Suspension) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sus[su.Account] = su
	return nil
}

func (s *memStore) DeleteSuspension(_ context.Context, account string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sus[account]; !ok {
		return events.ErrNotFound
	}
	delete(s.sus, account)
	return nil
}

func (s *memStore) Suspensions(context.Context) ([]events.Suspension, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []events.Suspension{}
	for _, su := range s.sus {
		out = append(out, su)
	}
	return out, nil
}

func (s *memStore) suspension(account string) (events.Suspension, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	su, ok := s.sus[account]
	return su, ok
}

func (s *memStore) Insert(_ context.Context, e *events.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextID++
	e.ID = s.nextID
	s.evs[e.ID] = *e
	return nil
}

func (s *memStore) Update(_ context.Context, e events.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.evs[e.ID]; !ok {
		return events.ErrNotFound
	}
	s.evs[e.ID] = e
	s.updates++
	return nil
}

func (s *memStore) Get(_ context.Context, id int64) (events.Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.evs[id]
	if !ok {
		return events.Event{}, events.ErrNotFound
	}
	return e, nil
}

// Query honours only what the engine uses: Status, Limit and Offset, in
// ID order.
func (s *memStore) Query(_ context.Context, q events.Query) (events.Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []events.Event
	for _, e := range s.evs {
		if q.Status == "" || e.Status == q.Status {
			all = append(all, e)
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	res := events.Result{Total: len(all)}
	if q.Offset < len(all) {
		all = all[q.Offset:]
		res.Events = all[:min(len(all), q.Limit)]
	}
	return res, nil
}

func (s *memStore) PutBlock(_ context.Context, b events.Block) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.blocks[b.Source] = b
	return nil
}

func (s *memStore) DeleteBlock(_ context.Context, source string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.blocks[source]; !ok {
		return events.ErrNotFound
	}
	delete(s.blocks, source)
	return nil
}

func (s *memStore) Blocks(context.Context) ([]events.Block, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var bs []events.Block
	for _, b := range s.blocks {
		bs = append(bs, b)
	}
	return bs, nil
}

func (s *memStore) Close() error { return nil }

func (s *memStore) events() []events.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []events.Event
	for _, e := range s.evs {
		all = append(all, e)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
	return all
}

func (s *memStore) block(source string) (events.Block, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blocks[source]
	return b, ok
}

// changeLog records OnChange calls.
type changeLog struct {
	mu sync.Mutex
	cs []Change
}

func (l *changeLog) add(c Change) {
	l.mu.Lock()
	l.cs = append(l.cs, c)
	l.mu.Unlock()
}

func (l *changeLog) types() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ts []string
	for _, c := range l.cs {
		ts = append(ts, c.Type)
	}
	return ts
}

// rig is an engine with a fake clock, a memStore and a change log.
type rig struct {
	*Engine
	clock   *fakeClock
	store   *memStore
	changes *changeLog
}

func newRig(t testing.TB, o Options) *rig {
	t.Helper()
	r := &rig{clock: newFakeClock(), store: newMemStore(), changes: &changeLog{}}
	if o.Store == nil {
		o.Store = r.store
	}
	o.Clock = r.clock
	o.OnChange = r.changes.add
	e, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	r.Engine = e
	return r
}

func rule(name, typ string, window time.Duration, threshold int, actions ...string) config.Rule {
	return config.Rule{Name: name, Type: typ, Window: window, Threshold: threshold, Actions: actions, BlockFor: time.Hour}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// observeN sends n observations like o and returns Observe's last answer.
func (r *rig) observeN(n int, o Observation) bool {
	var blocked bool
	for range n {
		blocked = r.Observe(o)
	}
	return blocked
}

func (r *rig) eventsOf(t *testing.T, ruleName string) []events.Event {
	t.Helper()
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	var out []events.Event
	for _, e := range r.store.events() {
		if e.Rule == ruleName {
			out = append(out, e)
		}
	}
	return out
}
