package detect

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

func TestCounterAdd(t *testing.T) {
	tests := []struct {
		name  string
		slots []int64 // slot number of each observation
		want  uint32  // count after the last one
	}{
		{"one", []int64{100}, 1},
		{"burst in one slot", []int64{100, 100, 100, 100}, 4},
		{"spread over the window", []int64{100, 105, 110, 115}, 4},
		{"oldest slot leaves", []int64{100, 105, 110, 116}, 3},
		{"all leave", []int64{100, 100, 100, 116}, 1},
		{"long gap", []int64{100, 100, 1000}, 1},
		{"slot reused after wrap", []int64{100, 116, 132}, 1},
		{"clock stepped back", []int64{100, 99, 100}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c counter
			var got uint32
			for _, s := range tt.slots {
				got = c.add(s)
			}
			if got != tt.want {
				t.Errorf("count = %d, want %d", got, tt.want)
			}
			if live := c.live(tt.slots[len(tt.slots)-1]); live != tt.want {
				t.Errorf("live = %d, want %d", live, tt.want)
			}
		})
	}
	var c counter
	for range slotMax + 10 {
		c.add(7)
	}
	if n := c.add(8); n != slotMax+1 {
		t.Errorf("saturated count = %d, want %d", n, slotMax+1)
	}
	if c.live(8+nSlots) != 0 || !c.stale(8+nSlots) || c.stale(8+nSlots-1) || c.live(7+nSlots) != 1 {
		t.Error("live/stale wrong at the window edge")
	}
}

func TestAddrKey(t *testing.T) {
	tests := []struct {
		a, b string
		bits int
		same bool
	}{
		{"192.0.2.1", "::ffff:192.0.2.1", 64, true},
		{"192.0.2.1", "192.0.2.2", 1, false},
		{"2001:db8::1", "2001:db8::2", 64, true},
		{"2001:db8::1", "2001:db8::2", 126, true},
		{"2001:db8::2", "2001:db8::3", 127, true},
		{"2001:db8::1", "2001:db8::2", 128, false},
		{"2001:db8::1", "2001:db9::1", 31, true},
		{"2001:db8::1", "3001:db8::1", 1, true},
		{"2001:db8::1", "a001:db8::1", 1, false},
		{"2001:db8:0:1::1", "2001:db8:0:1:8000::", 65, false},
		{"fe80::1%eth0", "fe80::1", 64, true},
	}
	for _, tt := range tests {
		a, b := netip.MustParseAddr(tt.a), netip.MustParseAddr(tt.b)
		if got := addrKey(a, tt.bits) == addrKey(b, tt.bits); got != tt.same {
			t.Errorf("addrKey(%s, %d) == addrKey(%s, %d): %v, want %v", tt.a, tt.bits, tt.b, tt.bits, got, tt.same)
		}
	}
}

// The table agrees with a map under random inserts, evictions and sweeps,
// and its index stays consistent (every counter findable, no strays).
func TestTableMatchesModel(t *testing.T) {
	h := newHasher()
	for _, capacity := range []int{1, 7, 100, 1000} {
		tb := table{h: &h, max: capacity, rng: 1}
		model := make(map[key]uint32)
		rng := rand.New(rand.NewPCG(1, uint64(capacity)))
		slot := int64(1000)
		for step := range 50_000 {
			k := key{0, rng.Uint64N(uint64(capacity) * 2)}
			c, created := tb.get(k, h.sum(k), slot)
			if created {
				if len(model) >= capacity {
					// Someone was evicted; find who by checking the model.
					for mk := range model {
						if tb.lookup(mk, h.sum(mk)) == nil {
							delete(model, mk)
						}
					}
				}
				model[k] = 0
			}
			model[k] = c.add(slot)
			if step%997 == 0 {
				slot += nSlots / 2
			}
			if step%4999 == 0 {
				tb.sweep(0, 1<<30, slot)
				for mk := range model {
					if tb.lookup(mk, h.sum(mk)) == nil {
						delete(model, mk)
					}
				}
			}
			if tb.n != len(model) || tb.n > capacity {
				t.Fatalf("cap %d step %d: table has %d, model %d", capacity, step, tb.n, len(model))
			}
		}
		for mk, n := range model {
			c := tb.lookup(mk, h.sum(mk))
			if c == nil || c.live(slot) > n {
				t.Fatalf("cap %d: key %v lost or miscounted", capacity, mk)
			}
		}
		refs := 0
		for _, v := range tb.idx {
			if v != 0 {
				refs++
				if int(uint32(v))-1 >= tb.n {
					t.Fatalf("cap %d: index refers past the counters", capacity)
				}
			}
		}
		if refs != tb.n {
			t.Fatalf("cap %d: %d index entries for %d counters", capacity, refs, tb.n)
		}
	}
}

// Eviction prefers keys with lower counts, then older ones, and keeps
// keys with an active event.
func TestTableVictim(t *testing.T) {
	h := newHasher()
	tb := table{h: &h, max: 64, rng: 1}
	const slot = 100
	for i := range 64 {
		k := key{1, uint64(i)}
		c, _ := tb.get(k, h.sum(k), slot-1)
		c.add(slot - 1)
		switch {
		case i == 0:
			c.flags |= flagEvent // never chosen while others are there
		case i == 1:
			c.add(slot) // seen twice
		}
	}
	for i := range 200 {
		k := key{2, uint64(i)}
		c, _ := tb.get(k, h.sum(k), slot)
		c.add(slot)
	}
	for i, want := range map[uint64]bool{0: true, 1: true} {
		if got := tb.lookup(key{1, i}, h.sum(key{1, i})) != nil; got != want {
			t.Errorf("key %d present = %v, want %v", i, got, want)
		}
	}
}
