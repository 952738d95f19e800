package events

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"mxguard/internal/testutil"
)

// retentionFixture stores, around the cutoff t0: ended events that ended
// long before, just before, exactly at and after it, and active events
// that started long before (never deleted: they have not ended). It
// returns the IDs that must go, oldest end first, and those that stay.
func retentionFixture(t *testing.T, s testStore) (gone, kept []int64) {
	t.Helper()
	ctx := context.Background()
	add := func(status string, started time.Time, ended *time.Time) int64 {
		e := Event{Type: "dos", Rule: "dos", Status: status, StartedAt: started, EndedAt: ended, Source: "192.0.2.1"}
		if err := s.Insert(ctx, &e); err != nil {
			t.Fatal(err)
		}
		return e.ID
	}
	long := t0.Add(-200 * 24 * time.Hour)
	kept = append(kept, add(StatusActive, long, nil))
	b := add(StatusEnded, long, timePtr(t0.Add(-time.Nanosecond)))          // ended just before
	a := add(StatusEnded, long, timePtr(long.Add(time.Hour)))               // ended long before
	kept = append(kept, add(StatusEnded, long, timePtr(t0)))                // at the cutoff: not before it
	kept = append(kept, add(StatusEnded, t0, timePtr(t0.Add(time.Minute)))) // recent
	c := add(StatusEnded, long, timePtr(long.Add(2*time.Hour)))
	kept = append(kept, add(StatusActive, long.Add(time.Hour), nil))
	return []int64{a, c, b}, kept
}

func TestStoreDeleteEnded(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx := context.Background()
		s := openTestStore(t, k)
		gone, kept := retentionFixture(t, s)
		// Two per statement: the oldest ends go first.
		for i, want := range []int{2, 1, 0} {
			n, err := s.DeleteEnded(ctx, t0, 2)
			if err != nil || n != want {
				t.Fatalf("statement %d: deleted %d, %v; want %d", i, n, err, want)
			}
			if i == 0 {
				for _, id := range gone[:2] {
					if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
						t.Errorf("event %d (among the oldest) still there after the first batch: %v", id, err)
					}
				}
			}
		}
		for _, id := range gone {
			if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
				t.Errorf("event %d ended before the cutoff and is still there: %v", id, err)
			}
		}
		res, err := s.Query(ctx, Query{Sort: "started_at", Order: "asc"})
		if err != nil {
			t.Fatal(err)
		}
		if got := eventIDs(res.Events); len(got) != len(kept) {
			t.Errorf("left %v, want %v", got, kept)
		}
		for _, id := range kept {
			if _, err := s.Get(ctx, id); err != nil {
				t.Errorf("event %d must stay: %v", id, err)
			}
		}
	})
}

// countingPruner counts DeleteEnded statements.
type countingPruner struct {
	Pruner
	mu    sync.Mutex
	calls int
}

func (c *countingPruner) DeleteEnded(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	c.mu.Lock()
	c.calls++
	c.mu.Unlock()
	return c.Pruner.DeleteEnded(ctx, cutoff, limit)
}

// Prune runs batches until one comes back short: n old events take
// n/batch+1 statements, whatever the boundary.
func TestPruneBatches(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx := context.Background()
		for _, n := range []int{0, 1, 2, 3, 4, 6, 7} {
			s := openTestStore(t, k)
			for i := range n {
				e := Event{Type: "dos", Status: StatusEnded, StartedAt: t0, EndedAt: timePtr(t0.Add(time.Duration(i) * time.Second))}
				if err := s.Insert(ctx, &e); err != nil {
					t.Fatal(err)
				}
			}
			recent := Event{Type: "dos", Status: StatusEnded, StartedAt: t0, EndedAt: timePtr(t0.Add(100 * 24 * time.Hour))}
			if err := s.Insert(ctx, &recent); err != nil {
				t.Fatal(err)
			}
			p := &countingPruner{Pruner: s}
			counted := 0
			deleted, err := Prune(ctx, p, RetentionOptions{Retention: 90 * 24 * time.Hour, Batch: 3, Pause: -1,
				Now: func() time.Time { return t0.Add(100 * 24 * time.Hour) }, Deleted: func(d int) { counted += d }})
			if err != nil || deleted != n || counted != n || p.calls != n/3+1 {
				t.Errorf("%d old events: deleted %d (counted %d) in %d statements, %v; want %d in %d", n, deleted, counted, p.calls, err, n, n/3+1)
			}
			if res, err := s.Query(ctx, Query{}); err != nil || res.Total != 1 || res.Events[0].ID != recent.ID {
				t.Errorf("%d old events: left %+v, %v; want only the recent one", n, res, err)
			}
		}
	})
}

// A zero retention keeps everything and issues no statement.
func TestPruneZeroKeeps(t *testing.T) {
	p := &countingPruner{}
	if n, err := Prune(context.Background(), p, RetentionOptions{}); n != 0 || err != nil || p.calls != 0 {
		t.Errorf("Prune with no retention = %d, %v, %d statements", n, err, p.calls)
	}
}

// failingPruner fails its first calls, as a database that is down.
type failingPruner struct {
	Pruner
	mu    sync.Mutex
	fails int
}

func (f *failingPruner) DeleteEnded(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	f.mu.Lock()
	if f.fails > 0 {
		f.fails--
		f.mu.Unlock()
		return 0, errors.New("connection refused")
	}
	f.mu.Unlock()
	return f.Pruner.DeleteEnded(ctx, cutoff, limit)
}

// RunRetention prunes soon after it starts, survives a failing run and
// retries at the next interval, and stops with its context.
func TestRunRetention(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx, cancel := context.WithCancel(context.Background())
		s := openTestStore(t, k)
		gone, kept := retentionFixture(t, s)
		p := &failingPruner{Pruner: s, fails: 1}
		done := make(chan struct{})
		go func() {
			defer close(done)
			RunRetention(ctx, p, RetentionOptions{Retention: time.Hour, Now: func() time.Time { return t0.Add(time.Hour) },
				FirstRun: -1, Interval: 10 * time.Millisecond, Batch: 1, Pause: time.Millisecond})
		}()
		testutil.WaitUntil(t, "retention deletes the old ended events", func() bool {
			res, err := s.Query(ctx, Query{})
			return err == nil && res.Total == len(kept)
		})
		cancel()
		<-done
		for _, id := range gone {
			if _, err := s.Get(context.Background(), id); !errors.Is(err, ErrNotFound) {
				t.Errorf("event %d still there: %v", id, err)
			}
		}
	})
}

// BenchmarkDeleteEnded is one retention statement: 1000 ended events out
// of a table of 20,000, as long as SQLite's write lock (and the detection
// engine's writer) waits for it.
func BenchmarkDeleteEnded(b *testing.B) {
	benchEachStore(b, func(b *testing.B, k storeKind) {
		s := openTestStore(b, k)
		ctx := context.Background()
		const table, batch = 20_000, DefaultRetentionBatch
		left := 0
		far := t0.Add(1000 * 24 * time.Hour)
		for b.Loop() {
			if left < batch {
				b.StopTimer()
				seedEvents(b, s, table-left)
				left = table
				b.StartTimer()
			}
			n, err := s.DeleteEnded(ctx, far, batch)
			if err != nil || n != batch {
				b.Fatalf("deleted %d, %v", n, err)
			}
			left -= n
		}
	})
}
