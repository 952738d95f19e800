package events

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// t0 has nanoseconds so that every round trip checks sub-second precision.
var t0 = time.Date(2026, 11, 25, 10, 0, 0, 123456789, time.UTC)

func timePtr(t time.Time) *time.Time { return &t }

func TestStoreRoundTrip(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx := context.Background()
		s := openTestStore(t, k)
		berlin := time.FixedZone("CET", 3600)
		tests := []struct {
			name   string
			insert Event
			update *Event // fields Update rewrites; nil: no update
			want   Event  // without ID
		}{
			{
				name:   "nil actions and detail read back empty",
				insert: Event{Type: "dos", Rule: "dos", Status: StatusActive, StartedAt: t0, Source: "192.0.2.1", Service: "smtp", Impact: 1},
				want: Event{Type: "dos", Rule: "dos", Status: StatusActive, StartedAt: t0, Source: "192.0.2.1", Service: "smtp", Impact: 1,
					Actions: []string{}, Detail: map[string]any{}},
			},
			{
				name: "local times come back in UTC",
				insert: Event{Type: "directory_harvest", Rule: "harvest", Status: StatusEnded, StartedAt: t0.In(berlin),
					EndedAt: timePtr(t0.Add(90*time.Second + 1).In(berlin)), Source: "2001:db8:1:2::/64", Impact: 137,
					Actions: []string{"alert", "block"}, Detail: map[string]any{"recipients": []any{"a@example.test"}, "count": 137.0}},
				want: Event{Type: "directory_harvest", Rule: "harvest", Status: StatusEnded, StartedAt: t0, EndedAt: timePtr(t0.Add(90*time.Second + 1)),
					Source: "2001:db8:1:2::/64", Impact: 137, Actions: []string{"alert", "block"},
					Detail: map[string]any{"recipients": []any{"a@example.test"}, "count": 137.0}},
			},
			{
				name:   "shadow mode and node are kept",
				insert: Event{Type: "dos", Rule: "flood", Mode: ModeShadow, Status: StatusActive, StartedAt: t0, Source: "192.0.2.1", Node: "mx2", Actions: []string{"block"}},
				update: &Event{Type: "ignored", Mode: ModeEnforce, Node: "ignored", Status: StatusActive, Impact: 3, Actions: []string{"block"}},
				want:   Event{Type: "dos", Rule: "flood", Mode: ModeShadow, Status: StatusActive, StartedAt: t0, Source: "192.0.2.1", Node: "mx2", Impact: 3, Actions: []string{"block"}, Detail: map[string]any{}},
			},
			{
				name:   "update ends the event",
				insert: Event{Type: "spam_attack", Rule: "spam", Status: StatusActive, StartedAt: t0, Source: "198.51.100.2", Impact: 5, Actions: []string{"alert"}},
				update: &Event{Type: "ignored", Status: StatusEnded, EndedAt: timePtr(t0.Add(10 * time.Minute)), Impact: 42,
					Actions: []string{"alert", "block"}, Detail: map[string]any{"last": "spam"}},
				want: Event{Type: "spam_attack", Rule: "spam", Status: StatusEnded, StartedAt: t0, EndedAt: timePtr(t0.Add(10 * time.Minute)),
					Source: "198.51.100.2", Impact: 42, Actions: []string{"alert", "block"}, Detail: map[string]any{"last": "spam"}},
			},
			{
				name:   "update clears ended_at, actions and detail",
				insert: Event{Type: "dos", Status: StatusEnded, StartedAt: t0, EndedAt: timePtr(t0), Actions: []string{"block"}, Detail: map[string]any{"x": "y"}},
				update: &Event{Status: StatusActive},
				want:   Event{Type: "dos", Status: StatusActive, StartedAt: t0, Actions: []string{}, Detail: map[string]any{}},
			},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := tt.insert
				if err := s.Insert(ctx, &e); err != nil {
					t.Fatal(err)
				}
				if e.ID == 0 {
					t.Fatal("Insert did not set the ID")
				}
				if tt.update != nil {
					u := *tt.update
					u.ID = e.ID
					if err := s.Update(ctx, u); err != nil {
						t.Fatal(err)
					}
				}
				got, err := s.Get(ctx, e.ID)
				if err != nil {
					t.Fatal(err)
				}
				want := tt.want
				want.ID = e.ID
				assertEvent(t, got, want)
			})
		}
	})
}

// assertEvent compares events with time.Equal and checks that times are
// UTC and that actions and detail are never nil.
func assertEvent(t *testing.T, got, want Event) {
	t.Helper()
	if got.StartedAt.Location() != time.UTC || !got.StartedAt.Equal(want.StartedAt) {
		t.Errorf("started_at = %v, want %v in UTC", got.StartedAt, want.StartedAt)
	}
	switch {
	case (got.EndedAt == nil) != (want.EndedAt == nil):
		t.Errorf("ended_at = %v, want %v", got.EndedAt, want.EndedAt)
	case got.EndedAt != nil && (got.EndedAt.Location() != time.UTC || !got.EndedAt.Equal(*want.EndedAt)):
		t.Errorf("ended_at = %v, want %v in UTC", *got.EndedAt, *want.EndedAt)
	}
	if got.Actions == nil || got.Detail == nil {
		t.Errorf("actions %#v or detail %#v is nil", got.Actions, got.Detail)
	}
	if want.Mode == "" {
		want.Mode = ModeEnforce // what the store records for an event without one
	}
	got.StartedAt, got.EndedAt, want.StartedAt, want.EndedAt = time.Time{}, nil, time.Time{}, nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("event\n got %+v\nwant %+v", got, want)
	}
}

func TestStoreJSONShape(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx := context.Background()
		s := openTestStore(t, k)
		res, err := s.Query(ctx, Query{})
		if err != nil {
			t.Fatal(err)
		}
		if b, _ := json.Marshal(res); string(b) != `{"total":0,"events":[]}` {
			t.Errorf("empty result = %s", b)
		}
		e := Event{Type: "org_down", Status: StatusActive, StartedAt: t0, Source: "example"}
		if err := s.Insert(ctx, &e); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(got)
		want := fmt.Sprintf(`{"id":%d,"type":"org_down","rule":"","mode":"enforce","status":"active","started_at":"2026-11-25T10:00:00.123456789Z",`+
			`"ended_at":null,"source":"example","service":"","impact":0,"actions":[],"node":"","detail":{}}`, e.ID)
		if string(b) != want {
			t.Errorf("event JSON\n got %s\nwant %s", b, want)
		}
	})
}

func TestStoreNotFound(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx := context.Background()
		s := openTestStore(t, k)
		if _, err := s.Get(ctx, 404); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(404) error = %v, want ErrNotFound", err)
		}
		if err := s.Update(ctx, Event{ID: 404, Status: StatusEnded}); !errors.Is(err, ErrNotFound) {
			t.Errorf("Update(404) error = %v, want ErrNotFound", err)
		}
		if err := s.DeleteBlock(ctx, "192.0.2.1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("DeleteBlock error = %v, want ErrNotFound", err)
		}
	})
}

func TestStoreInsertRefuses(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx := context.Background()
		s := openTestStore(t, k)
		tests := []struct {
			name string
			e    Event
		}{
			{"no type", Event{Status: StatusActive, StartedAt: t0}},
			{"no started_at", Event{Type: "dos", Status: StatusActive}},
			{"no status", Event{Type: "dos", StartedAt: t0}},
			{"unknown status", Event{Type: "dos", Status: "paused", StartedAt: t0}},
			{"unknown mode", Event{Type: "dos", Mode: "audit", Status: StatusActive, StartedAt: t0}},
			{"started_at beyond int64 nanoseconds", Event{Type: "dos", Status: StatusActive, StartedAt: time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)}},
			{"ended_at before int64 nanoseconds", Event{Type: "dos", Status: StatusEnded, StartedAt: t0, EndedAt: timePtr(time.Date(1600, 1, 1, 0, 0, 0, 0, time.UTC))}},
			{"detail not JSON", Event{Type: "dos", Status: StatusActive, StartedAt: t0, Detail: map[string]any{"f": func() {}}}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e := tt.e
				if err := s.Insert(ctx, &e); err == nil {
					t.Errorf("Insert(%+v) succeeded with id %d", tt.e, e.ID)
				}
			})
		}
		if res, err := s.Query(ctx, Query{}); err != nil || res.Total != 0 {
			t.Errorf("after refused inserts: total %d, err %v; want 0 events", res.Total, err)
		}
		if err := s.Update(ctx, Event{ID: 1, Status: "paused"}); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("Update with unknown status: error %v, want a validation error", err)
		}
	})
}

// queryFixture inserts seven events with ties in every sort field; their
// IDs are 1..7 in this order.
func queryFixture(t *testing.T, k storeKind) testStore {
	t.Helper()
	s := openTestStore(t, k)
	events := []Event{
		{Type: "dos", Source: "203.0.113.7", Status: StatusEnded, StartedAt: t0, Impact: 10},
		{Type: "directory_harvest", Source: "203.0.113.7", Status: StatusActive, StartedAt: t0.Add(1 * time.Second), Impact: 137},
		{Type: "spam_attack", Source: "198.51.100.2", Status: StatusEnded, StartedAt: t0.Add(2 * time.Second), Impact: 10},
		{Type: "dos", Source: "198.51.100.2", Status: StatusActive, StartedAt: t0.Add(2 * time.Second), Impact: 50},
		{Type: "mailbomb", Source: "2001:db8:1:2::/64", Status: StatusEnded, StartedAt: t0.Add(3 * time.Second), Impact: 0},
		{Type: "directory_harvest", Source: "192.0.2.1", Status: StatusEnded, StartedAt: t0.Add(4 * time.Second), Impact: 137},
		{Type: "brute_force", Source: "203.0.113.7", Status: StatusActive, StartedAt: t0.Add(5*time.Second + 500*time.Millisecond), Impact: 3},
	}
	for i := range events {
		if err := s.Insert(context.Background(), &events[i]); err != nil {
			t.Fatal(err)
		}
		if events[i].ID != int64(i+1) {
			t.Fatalf("event %d got ID %d", i+1, events[i].ID)
		}
	}
	return s
}

func TestStoreQuery(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		s := queryFixture(t, k)
		late := t0.Add(5*time.Second + 500*time.Millisecond)
		tests := []struct {
			name      string
			q         Query
			wantIDs   []int64
			wantTotal int // 0: len(wantIDs)
		}{
			{name: "default: started_at desc, ties by id desc", q: Query{}, wantIDs: []int64{7, 6, 5, 4, 3, 2, 1}},
			{name: "started_at asc", q: Query{Sort: "started_at", Order: "asc"}, wantIDs: []int64{1, 2, 3, 4, 5, 6, 7}},
			{name: "type asc", q: Query{Sort: "type", Order: "asc"}, wantIDs: []int64{7, 2, 6, 1, 4, 5, 3}},
			{name: "type desc", q: Query{Sort: "type", Order: "desc"}, wantIDs: []int64{3, 5, 4, 1, 6, 2, 7}},
			{name: "source asc", q: Query{Sort: "source", Order: "asc"}, wantIDs: []int64{6, 3, 4, 5, 1, 2, 7}},
			{name: "source desc", q: Query{Sort: "source"}, wantIDs: []int64{7, 2, 1, 5, 4, 3, 6}},
			{name: "impact asc", q: Query{Sort: "impact", Order: "asc"}, wantIDs: []int64{5, 7, 1, 3, 4, 2, 6}},
			{name: "impact desc", q: Query{Sort: "impact"}, wantIDs: []int64{6, 2, 4, 3, 1, 7, 5}},
			{name: "type", q: Query{Type: "dos"}, wantIDs: []int64{4, 1}},
			{name: "source", q: Query{Source: "203.0.113.7"}, wantIDs: []int64{7, 2, 1}},
			{name: "source is exact", q: Query{Source: "203.0.113"}, wantIDs: []int64{}},
			{name: "status active", q: Query{Status: StatusActive}, wantIDs: []int64{7, 4, 2}},
			{name: "status ended", q: Query{Status: StatusEnded, Order: "asc"}, wantIDs: []int64{1, 3, 5, 6}},
			{name: "min_impact", q: Query{MinImpact: 50}, wantIDs: []int64{6, 4, 2}},
			{name: "since is inclusive", q: Query{Since: t0.Add(2 * time.Second)}, wantIDs: []int64{7, 6, 5, 4, 3}},
			{name: "until is exclusive", q: Query{Until: t0.Add(2 * time.Second)}, wantIDs: []int64{2, 1}},
			{name: "since and until", q: Query{Since: t0.Add(2 * time.Second), Until: t0.Add(3 * time.Second)}, wantIDs: []int64{4, 3}},
			{name: "since to the nanosecond", q: Query{Since: late}, wantIDs: []int64{7}},
			{name: "since one nanosecond later", q: Query{Since: late.Add(1)}, wantIDs: []int64{}},
			{name: "until far future", q: Query{Until: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), Order: "asc"}, wantIDs: []int64{1, 2, 3, 4, 5, 6, 7}},
			{name: "filters combine", q: Query{Type: "directory_harvest", MinImpact: 100, Sort: "impact", Order: "asc"}, wantIDs: []int64{2, 6}},
			{name: "every filter", q: Query{Type: "dos", Source: "198.51.100.2", Status: StatusActive, MinImpact: 50,
				Since: t0, Until: late}, wantIDs: []int64{4}},
			{name: "page", q: Query{Limit: 2, Offset: 1}, wantIDs: []int64{6, 5}, wantTotal: 7},
			{name: "last page", q: Query{Limit: 2, Offset: 6}, wantIDs: []int64{1}, wantTotal: 7},
			{name: "past the end", q: Query{Offset: 10}, wantIDs: []int64{}, wantTotal: 7},
			{name: "page of a filter", q: Query{Source: "203.0.113.7", Sort: "impact", Limit: 1, Offset: 1}, wantIDs: []int64{1}, wantTotal: 3},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				res, err := s.Query(context.Background(), tt.q)
				if err != nil {
					t.Fatal(err)
				}
				if res.Events == nil {
					t.Fatal("Events is nil, want a non-nil slice")
				}
				wantTotal := tt.wantTotal
				if wantTotal == 0 {
					wantTotal = len(tt.wantIDs)
				}
				if got := eventIDs(res.Events); !reflect.DeepEqual(got, tt.wantIDs) || res.Total != wantTotal {
					t.Errorf("Query(%+v) = total %d, ids %v; want total %d, ids %v", tt.q, res.Total, got, wantTotal, tt.wantIDs)
				}
			})
		}
	})
}

func eventIDs(events []Event) []int64 {
	ids := make([]int64, 0, len(events))
	for _, e := range events {
		ids = append(ids, e.ID)
	}
	return ids
}

func TestStoreQueryBad(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		s := queryFixture(t, k)
		for _, q := range []Query{{Sort: "id"}, {Sort: "started_at; DROP TABLE events"}, {Order: "sideways"}, {Limit: -1}, {Offset: -1}, {Status: "x"}} {
			if _, err := s.Query(context.Background(), q); !errors.Is(err, ErrBadQuery) {
				t.Errorf("Query(%+v) error = %v, want ErrBadQuery", q, err)
			}
		}
	})
}

func TestStoreQueryLimits(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx := context.Background()
		s := openTestStore(t, k)
		const n = 600
		for i := range n {
			e := Event{Type: "dos", Status: StatusEnded, StartedAt: t0.Add(time.Duration(i) * time.Second), Source: "192.0.2.1"}
			if err := s.Insert(ctx, &e); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			limit, want int
		}{
			{0, DefaultLimit}, {1, 1}, {500, 500}, {501, MaxLimit}, {100000, MaxLimit},
		}
		for _, tt := range tests {
			res, err := s.Query(ctx, Query{Limit: tt.limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Events) != tt.want || res.Total != n {
				t.Errorf("limit %d: %d events, total %d; want %d events, total %d", tt.limit, len(res.Events), res.Total, tt.want, n)
			}
		}
	})
}

// TestSQLiteQueryModel checks random queries over random events against a
// plain Go reading of the query semantics.
func TestStoreQueryModel(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx := context.Background()
		s := openTestStore(t, k)
		rng := rand.New(rand.NewPCG(1, 2))
		types := []string{"dos", "spam_attack", "mailbomb"}
		sources := []string{"192.0.2.1", "192.0.2.2", "2001:db8::/64"}
		var all []Event
		for range 300 {
			e := Event{Type: types[rng.IntN(3)], Source: sources[rng.IntN(3)], Status: []string{StatusActive, StatusEnded}[rng.IntN(2)],
				StartedAt: t0.Add(time.Duration(rng.IntN(50)) * time.Second), Impact: rng.Int64N(20)}
			if err := s.Insert(ctx, &e); err != nil {
				t.Fatal(err)
			}
			all = append(all, e)
		}
		plans := map[bool]int{} // hideSort: how often each page plan ran
		for i := range 200 {
			q := Query{Sort: []string{"started_at", "type", "source", "impact"}[rng.IntN(4)], Order: []string{"asc", "desc"}[rng.IntN(2)],
				Limit: 1 + rng.IntN(60), Offset: rng.IntN(120)}
			if rng.IntN(2) == 0 {
				q.Type = types[rng.IntN(3)]
			}
			if rng.IntN(3) == 0 {
				q.Source = sources[rng.IntN(3)]
			}
			if rng.IntN(3) == 0 {
				q.MinImpact = rng.Int64N(20)
			}
			if rng.IntN(3) == 0 {
				q.Since = t0.Add(time.Duration(rng.IntN(50)) * time.Second)
			}
			if rng.IntN(3) == 0 {
				q.Until = t0.Add(time.Duration(25+rng.IntN(50)) * time.Second)
			}
			if q.Until.Before(q.Since) {
				q.Until = time.Time{}
			}
			res, err := s.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			total, want := modelQuery(all, q)
			if nq, err := q.Normalize(); err == nil {
				if k.name == "sqlite" {
					plans[sqlitePageOptions(nq, total, int64(len(all))).hideSort]++
				}
			}
			if got := eventIDs(res.Events); res.Total != total || !reflect.DeepEqual(got, want) {
				t.Fatalf("query %d %+v:\n got total %d %v\nwant total %d %v", i, q, res.Total, got, total, want)
			}
		}
		if k.name == "sqlite" && (plans[true] < 20 || plans[false] < 20) {
			t.Errorf("page plans ran %v times; the model should cover both", plans)
		}
	})
}

// modelQuery is the query semantics spelled out in Go: filter, sort by the
// field then by id in the same direction, cut the page.
func modelQuery(all []Event, q Query) (total int, ids []int64) {
	var match []Event
	for _, e := range all {
		if (q.Type == "" || e.Type == q.Type) && (q.Source == "" || e.Source == q.Source) && e.Impact >= q.MinImpact &&
			(q.Since.IsZero() || !e.StartedAt.Before(q.Since)) && (q.Until.IsZero() || e.StartedAt.Before(q.Until)) {
			match = append(match, e)
		}
	}
	order := func(a, b Event) int {
		var c int
		switch q.Sort {
		case "started_at":
			c = a.StartedAt.Compare(b.StartedAt)
		case "type":
			c = cmp.Compare(a.Type, b.Type)
		case "source":
			c = cmp.Compare(a.Source, b.Source)
		case "impact":
			c = cmp.Compare(a.Impact, b.Impact)
		}
		if c == 0 {
			c = cmp.Compare(a.ID, b.ID)
		}
		if q.Order == "desc" {
			c = -c
		}
		return c
	}
	slices.SortFunc(match, order)
	ids = []int64{}
	for i := q.Offset; i < len(match) && i < q.Offset+q.Limit; i++ {
		ids = append(ids, match[i].ID)
	}
	return len(match), ids
}

func TestStoreBlocks(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		s := openTestStore(t, k)
		a := Block{Source: "203.0.113.7", Reason: "harvest", Rule: "harvest", EventID: 2, CreatedAt: t0.Add(time.Second), ExpiresAt: t0.Add(time.Hour)}
		b := Block{Source: "198.51.100.0/24", Reason: "manual", CreatedAt: t0, Manual: true} // zero ExpiresAt: never
		a2 := a
		a2.Reason, a2.Rule, a2.EventID, a2.ExpiresAt = "dos", "dos", 9, t0.Add(2*time.Hour)
		checkHolds(t, holdOps[Block]{what: "Blocks", put: s.PutBlock, list: s.Blocks, del: s.DeleteBlock,
			key: func(b Block) string { return b.Source }, asBlock: func(b Block) Block { return b }}, a, b, a2)
	})
}

// holdOps are the store methods of one kind of hold (blocks,
// suspensions), and how to compare it as a Block.
type holdOps[T any] struct {
	what    string
	put     func(context.Context, T) error
	list    func(context.Context) ([]T, error)
	del     func(context.Context, string) error
	key     func(T) string
	asBlock func(T) Block
}

// checkHolds is the test every kind of hold passes in an empty store: the
// listing is [] at first; a, b and a2 (a replaced) put list as b then a2
// (oldest first); a's key deleted twice is ErrNotFound the second time
// and leaves b; a hold without key is refused.
func checkHolds[T any](t *testing.T, ops holdOps[T], a, b, a2 T) {
	t.Helper()
	ctx := context.Background()
	none, err := ops.list(ctx)
	requireEmpty(t, ops.what, none, err)
	for _, h := range []T{a, b, a2} {
		if err := ops.put(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	asBlocks := func(hs []T) []Block {
		out := make([]Block, len(hs))
		for i, h := range hs {
			out[i] = ops.asBlock(h)
		}
		return out
	}
	got, err := ops.list(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []T{b, a2}; !blocksEqual(asBlocks(got), asBlocks(want)) {
		t.Errorf("%s\n got %+v\nwant %+v", ops.what, got, want)
	}
	if err := ops.del(ctx, ops.key(a)); err != nil {
		t.Fatal(err)
	}
	if err := ops.del(ctx, ops.key(a)); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete from %s: %v, want ErrNotFound", ops.what, err)
	}
	if got, err := ops.list(ctx); err != nil || !blocksEqual(asBlocks(got), asBlocks([]T{b})) {
		t.Errorf("%s after delete = %+v, %v; want only %+v", ops.what, got, err, b)
	}
	var zero T
	if err := ops.put(ctx, zero); err == nil {
		t.Errorf("put into %s without key succeeded", ops.what)
	}
}

// requireEmpty stops the test unless a listing of an empty store is an
// empty, non-nil slice (the API shows [] rather than null).
func requireEmpty[T any](t *testing.T, what string, got []T, err error) {
	t.Helper()
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("%s on an empty store = %#v, %v; want an empty non-nil slice", what, got, err)
	}
}

// blocksEqual compares blocks with time.Equal and requires UTC times.
func blocksEqual(got, want []Block) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		g, w := got[i], want[i]
		if !g.CreatedAt.Equal(w.CreatedAt) || !g.ExpiresAt.Equal(w.ExpiresAt) ||
			(!g.CreatedAt.IsZero() && g.CreatedAt.Location() != time.UTC) || (!g.ExpiresAt.IsZero() && g.ExpiresAt.Location() != time.UTC) {
			return false
		}
		g.CreatedAt, g.ExpiresAt, w.CreatedAt, w.ExpiresAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if g != w {
			return false
		}
	}
	return true
}

func TestStoreReopen(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx := context.Background()
		open := k.fresh(t)
		s, err := open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		e := Event{Type: "mailbomb", Status: StatusActive, StartedAt: t0, Source: "192.0.2.9", Actions: []string{"block"}}
		blk := Block{Source: "192.0.2.9", EventID: 1, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
		if err := s.Insert(ctx, &e); err != nil {
			t.Fatal(err)
		}
		if err := s.PutBlock(ctx, blk); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}

		s, err = open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		got, err := s.Get(ctx, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		assertEvent(t, got, Event{ID: e.ID, Type: "mailbomb", Status: StatusActive, StartedAt: t0, Source: "192.0.2.9",
			Actions: []string{"block"}, Detail: map[string]any{}})
		if blocks, err := s.Blocks(ctx); err != nil || !blocksEqual(blocks, []Block{blk}) {
			t.Errorf("Blocks after reopen = %+v, %v", blocks, err)
		}
		// IDs are never reused, even after the newest event is gone.
		if _, err := s.base().write.ExecContext(ctx, "DELETE FROM events"); err != nil {
			t.Fatal(err)
		}
		next := Event{Type: "dos", Status: StatusActive, StartedAt: t0}
		if err := s.Insert(ctx, &next); err != nil || next.ID <= e.ID {
			t.Errorf("insert after delete: id %d, err %v; want an id above %d", next.ID, err, e.ID)
		}
		read := s.base().read
		switch k.name {
		case "sqlite":
			var version int
			if err := read.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil || version != len(sqliteMigrations()) {
				t.Errorf("user_version = %d, %v; want %d", version, err, len(sqliteMigrations()))
			}
			var mode string
			if err := read.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
				t.Errorf("journal_mode = %q, %v; want wal", mode, err)
			}
		case "postgres":
			// One row per migration, run once although the store opened twice.
			var rows, version int
			if err := read.QueryRowContext(ctx, "SELECT count(*), max(version) FROM schema_version").Scan(&rows, &version); err != nil ||
				rows != len(postgresMigrations()) || version != len(postgresMigrations()) {
				t.Errorf("schema_version: %d rows, version %d, %v; want %d", rows, version, err, len(postgresMigrations()))
			}
		}
	})
}

// setSchemaVersion makes the database of s claim schema version v.
func setSchemaVersion(ctx context.Context, t *testing.T, k storeKind, s testStore, v int) {
	t.Helper()
	stmt := fmt.Sprintf("PRAGMA user_version = %d", v)
	if k.name == "postgres" {
		stmt = fmt.Sprintf("INSERT INTO schema_version (version) VALUES (%d)", v)
	}
	if _, err := s.base().write.ExecContext(ctx, stmt); err != nil {
		t.Fatal(err)
	}
}

func TestStoreRefusesNewerSchema(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx := context.Background()
		open := k.fresh(t)
		s, err := open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		setSchemaVersion(ctx, t, k, s, 99)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if s, err := open(ctx); err == nil || !strings.Contains(err.Error(), "newer") {
			if err == nil {
				s.Close()
			}
			t.Fatalf("open accepted a database of a newer schema: %v", err)
		}
	})
}

func TestSQLiteReadOnlyPool(t *testing.T) {
	s := openTestStore(t, storeKinds()[0]).(*SQLiteStore)
	if _, err := s.read.ExecContext(context.Background(), "DELETE FROM blocks"); err == nil {
		t.Error("the read pool accepted a write")
	}
}

func TestStoreConcurrent(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx := context.Background()
		s := openTestStore(t, k)
		const writers, perWriter, readers = 8, 25, 4
		var wg sync.WaitGroup
		errs := make(chan error, writers+readers)
		done := make(chan struct{})
		for w := range writers {
			wg.Go(func() {
				for i := range perWriter {
					e := Event{Type: "dos", Status: StatusActive, StartedAt: t0.Add(time.Duration(i) * time.Millisecond), Source: fmt.Sprintf("192.0.2.%d", w)}
					if err := s.Insert(ctx, &e); err != nil {
						errs <- err
						return
					}
					e.Status, e.Impact, e.EndedAt = StatusEnded, int64(i), timePtr(e.StartedAt.Add(time.Second))
					if err := s.Update(ctx, e); err != nil {
						errs <- err
						return
					}
					if err := s.PutBlock(ctx, Block{Source: e.Source, EventID: e.ID, CreatedAt: e.StartedAt}); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		var readerWG sync.WaitGroup
		for r := range readers {
			readerWG.Go(func() {
				for {
					select {
					case <-done:
						return
					default:
					}
					res, err := s.Query(ctx, Query{Sort: []string{"started_at", "type", "source", "impact"}[r], Limit: 50})
					if err == nil && len(res.Events) > 0 {
						_, err = s.Get(ctx, res.Events[0].ID)
					}
					if err == nil {
						_, err = s.Blocks(ctx)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(done)
		readerWG.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		res, err := s.Query(ctx, Query{Status: StatusEnded, Limit: MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int64]bool{}
		for _, e := range res.Events {
			seen[e.ID] = true
		}
		if res.Total != writers*perWriter || len(seen) != writers*perWriter {
			t.Errorf("after concurrent writes: total %d, %d distinct ids; want %d", res.Total, len(seen), writers*perWriter)
		}
		if blocks, err := s.Blocks(ctx); err != nil || len(blocks) != writers {
			t.Errorf("got %d blocks, %v; want %d", len(blocks), err, writers)
		}
	})
}

// seedEvents writes n random events in one transaction, straight through
// the write pool, so that benchmark setup stays in seconds.
func seedEvents(tb testing.TB, s testStore, n int) {
	tb.Helper()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	types := []string{"dos", "bad_sessions", "directory_harvest", "spam_attack", "virus_outbreak", "mailbomb", "brute_force",
		"internal_spammer", "bounce_spammer", "backscatter", "outbound_queue", "mail_server_down", "org_down"}
	base := s.base()
	tx, err := base.write.BeginTx(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, base.d.rebind(`INSERT INTO events (type, rule, status, started_at, ended_at, source, service, impact, actions, detail)
		VALUES (?, ?, ?, ?, ?, ?, '', ?, '["alert","block"]', '{}')`))
	if err != nil {
		tb.Fatal(err)
	}
	for i := range n {
		typ := types[rng.IntN(len(types))]
		started := t0.Add(time.Duration(i)*time.Minute + time.Duration(rng.IntN(60000))*time.Millisecond).UnixNano()
		source := fmt.Sprintf("198.51.%d.%d", rng.IntN(256), rng.IntN(256))
		if _, err := stmt.ExecContext(ctx, typ, typ, StatusEnded, started, started+int64(10*time.Minute), source, rng.Int64N(5000)); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
	if k, ok := s.(*PostgresStore); ok {
		// What autovacuum does soon after a bulk load: statistics for the
		// planner and the visibility map that lets count(*) and the
		// sort indexes skip the table, so the benchmark measures a live
		// database rather than one seconds after a bulk insert.
		if _, err := k.write.ExecContext(ctx, "VACUUM ANALYZE events"); err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkQuery runs the console's main views over 100,000 events.
func BenchmarkQuery(b *testing.B) {
	benchEachStore(b, func(b *testing.B, k storeKind) {
		s := openTestStore(b, k)
		seedEvents(b, s, 100_000)
		ctx := context.Background()
		queries := []struct {
			name string
			q    Query
		}{
			{"type by impact", Query{Type: "directory_harvest", Sort: "impact"}},
			{"min_impact by impact asc", Query{MinImpact: 2500, Sort: "impact", Order: "asc"}},
			{"newest", Query{}},
			{"by source", Query{Sort: "source", Offset: 1000}},
			{"last day by impact", Query{Since: t0.Add(99_000 * time.Minute), Sort: "impact"}},
			{"ended by impact", Query{Status: StatusEnded, Sort: "impact"}},
		}
		for _, bq := range queries {
			b.Run(bq.name, func(b *testing.B) {
				for b.Loop() {
					res, err := s.Query(ctx, bq.q)
					if err != nil {
						b.Fatal(err)
					}
					if len(res.Events) == 0 {
						b.Fatal("no events")
					}
				}
			})
		}
	})
}

func BenchmarkInsert(b *testing.B) {
	benchEachStore(b, func(b *testing.B, k storeKind) {
		s := openTestStore(b, k)
		ctx := context.Background()
		for b.Loop() {
			e := Event{Type: "dos", Rule: "dos", Status: StatusActive, StartedAt: t0, Source: "192.0.2.1",
				Actions: []string{"alert"}, Detail: map[string]any{"connections": 20}}
			if err := s.Insert(ctx, &e); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestStoreSuspensions(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		s := openTestStore(t, k)
		a := Suspension{Account: "alice@example.test", Reason: "internal_spammer: 500 messages in 1h0m0s", Rule: "internal_spammer", EventID: 3, CreatedAt: t0.Add(time.Second), ExpiresAt: t0.Add(time.Hour)}
		b := Suspension{Account: "bob", Reason: "left the company", CreatedAt: t0, ExpiresAt: t0.Add(24 * time.Hour), Manual: true}
		a2 := a
		a2.ExpiresAt, a2.EventID = t0.Add(2*time.Hour), 4
		checkHolds(t, holdOps[Suspension]{what: "Suspensions", put: s.PutSuspension, list: s.Suspensions, del: s.DeleteSuspension,
			key: func(su Suspension) string { return su.Account },
			asBlock: func(su Suspension) Block {
				return Block{su.Account, su.Reason, su.Rule, su.EventID, su.CreatedAt, su.ExpiresAt, su.Manual}
			}}, a, b, a2)
		// Blocks and suspensions are separate tables.
		if bs, _ := s.Blocks(context.Background()); len(bs) != 0 {
			t.Errorf("blocks %+v", bs)
		}
	})
}

// A database of schema version 1 (before suspensions) is migrated in
// place: its events and blocks stay, suspensions work.
func TestSQLiteMigratesV1(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "events.db")
	db, err := openSQLitePool(path, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, sqliteSchemaV1+"PRAGMA user_version = 1;"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `INSERT INTO blocks VALUES ('192.0.2.1', 'r', 'dos', 0, 1, 2, 1)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if bs, err := s.Blocks(ctx); err != nil || len(bs) != 1 || bs[0].Source != "192.0.2.1" {
		t.Errorf("blocks after migration: %+v %v", bs, err)
	}
	if err := s.PutSuspension(ctx, Suspension{Account: "a", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}); err != nil {
		t.Errorf("suspension after migration: %v", err)
	}
}
