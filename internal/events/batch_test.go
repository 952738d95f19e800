package events

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

// A batch is one transaction: everything is there after it, IDs are set,
// and a delete of a block that is not there is no error.
func TestWriteBatch(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx := context.Background()
		s := openTestStore(t, k)
		old := Event{Type: "dos", Rule: "dos", Status: StatusActive, StartedAt: t0, Source: "192.0.2.1", Actions: []string{"block"}}
		if err := s.Insert(ctx, &old); err != nil {
			t.Fatal(err)
		}
		if err := s.PutBlock(ctx, Block{Source: "192.0.2.1", Rule: "dos", EventID: old.ID, CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		ended := t0.Add(time.Minute)
		old.Status, old.EndedAt, old.Impact = StatusEnded, &ended, 7
		fresh := []*Event{
			{Type: "directory_harvest", Rule: "h", Status: StatusActive, StartedAt: t0, Source: "198.51.100.1", Actions: []string{"block"}},
			{Type: "mailbomb", Rule: "m", Status: StatusActive, StartedAt: t0, Source: "198.51.100.2"},
		}
		b := &Batch{
			Insert: fresh,
			Update: []Event{old},
			Put:    []Block{{Source: "198.51.100.1", Rule: "h", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}},
			Delete: []string{"192.0.2.1", "203.0.113.9"},
		}
		if err := Apply(ctx, s, b); err != nil {
			t.Fatal(err)
		}
		for i, e := range fresh {
			if e.ID == 0 || b.InsertErr[i] != nil {
				t.Errorf("insert %d: ID %d, err %v", i, e.ID, b.InsertErr[i])
			}
			if got, err := s.Get(ctx, e.ID); err != nil || got.Source != e.Source {
				t.Errorf("Get(%d) = %+v, %v", e.ID, got, err)
			}
		}
		if got, _ := s.Get(ctx, old.ID); got.Status != StatusEnded || got.Impact != 7 {
			t.Errorf("updated event = %+v", got)
		}
		bs, _ := s.Blocks(ctx)
		if len(bs) != 1 || bs[0].Source != "198.51.100.1" {
			t.Errorf("blocks = %+v, want only the new one", bs)
		}
	})
}

// One bad item fails the transaction; Apply then writes the rest one by
// one and says which item failed. The failed transaction set no ID.
func TestApplyIsolatesABadItem(t *testing.T) {
	forEachStore(t, func(t *testing.T, k storeKind) {
		ctx := context.Background()
		s := openTestStore(t, k)
		good := &Event{Type: "dos", Rule: "dos", Status: StatusActive, StartedAt: t0, Source: "192.0.2.1"}
		b := &Batch{
			Insert: []*Event{good},
			Update: []Event{{ID: 999, Status: StatusEnded}},
			Put:    []Block{{Source: "192.0.2.1", Rule: "dos"}},
		}
		if err := s.WriteBatch(ctx, b); !errors.Is(err, ErrNotFound) || good.ID != 0 {
			t.Fatalf("WriteBatch = %v, ID %d; want ErrNotFound and no ID", err, good.ID)
		}
		if evs, _ := s.Query(ctx, Query{}); evs.Total != 0 {
			t.Fatalf("a failed transaction left %d events", evs.Total)
		}
		err := Apply(ctx, s, b)
		if !errors.Is(err, ErrNotFound) || !errors.Is(b.UpdateErr[0], ErrNotFound) {
			t.Errorf("Apply = %v, update error %v; want ErrNotFound for the update", err, b.UpdateErr[0])
		}
		if good.ID == 0 || b.InsertErr[0] != nil || b.PutErr[0] != nil {
			t.Errorf("good items not written: ID %d, errors %v %v", good.ID, b.InsertErr[0], b.PutErr[0])
		}
		if bs, _ := s.Blocks(ctx); len(bs) != 1 {
			t.Errorf("blocks = %+v", bs)
		}
	})
}

// BenchmarkWrite compares writing 100 events and their blocks row by row
// with one batch.
func BenchmarkWrite(b *testing.B) {
	const n = 100
	batch := func(i int) *Batch {
		bt := &Batch{}
		for j := range n {
			src := fmt.Sprintf("10.%d.%d.%d", i%256, j/256, j%256)
			bt.Insert = append(bt.Insert, &Event{Type: "dos", Rule: "dos", Status: StatusActive, StartedAt: t0, Source: src, Actions: []string{"block"}})
			bt.Put = append(bt.Put, Block{Source: src, Rule: "dos", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)})
		}
		return bt
	}
	ctx := context.Background()
	benchEachStore(b, func(b *testing.B, k storeKind) {
		b.Run("rows", func(b *testing.B) {
			s := openTestStore(b, k)
			for i := 0; b.Loop(); i++ {
				bt := batch(i)
				for j := range n {
					if err := s.Insert(ctx, bt.Insert[j]); err != nil {
						b.Fatal(err)
					}
					if err := s.PutBlock(ctx, bt.Put[j]); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run("batch", func(b *testing.B) {
			s := openTestStore(b, k)
			for i := 0; b.Loop(); i++ {
				if err := Apply(ctx, s, batch(i)); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}
