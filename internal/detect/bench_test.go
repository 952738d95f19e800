package detect

import (
	"context"
	"net/netip"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"mxguard/internal/config"
	"mxguard/internal/events"
)

// benchRules are the dos and harvest rules, with thresholds high enough
// that benchmarks measure counting, not firing.
var benchRules = []config.Rule{
	rule("dos", "dos", time.Minute, 1<<30, "block"),
	rule("harvest", "directory_harvest", 10*time.Minute, 1<<30, "block"),
}

// benchEngine returns a running engine with rules (benchRules if none).
func benchEngine(b *testing.B, rules ...config.Rule) *Engine {
	b.Helper()
	if rules == nil {
		rules = benchRules
	}
	e, err := New(context.Background(), Options{Rules: rules})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(startRun(e))
	return e
}

// startRun runs the engine as the gateway does, so the hot paths use the
// coarse clock, and returns what stops it.
func startRun(e *Engine) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.Run(ctx); close(done) }()
	for e.coarse.Load() == 0 {
		runtime.Gosched()
	}
	return func() { cancel(); <-done }
}

func v4(i uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
}

func BenchmarkObserve(b *testing.B) {
	repeated := []struct {
		name  string
		rules []config.Rule
		o     Observation
	}{
		{"same_key", nil, Observation{Kind: KindConnect, Addr: addr("203.0.113.7"), Service: "smtp"}},
		{"ipv6", nil, Observation{Kind: KindConnect, Addr: addr("2001:db8:1:2::7"), Service: "smtp"}},
		// A source that already has an event and a block.
		{"while_blocked", []config.Rule{rule("h", "directory_harvest", time.Minute, 1, "block")},
			Observation{Kind: KindUnknownRecipient, Addr: addr("203.0.113.7"), Refused: true}},
	}
	for _, bc := range repeated {
		b.Run(bc.name, func(b *testing.B) {
			e := benchEngine(b, bc.rules...)
			b.ReportAllocs()
			for b.Loop() {
				e.Observe(bc.o)
			}
		})
	}
	b.Run("near_threshold", func(b *testing.B) {
		// A key that keeps its evidence ring: every observation also
		// goes into the ring (the near mark moved down to 1 so the key
		// stays there, below the threshold, whatever b.N is).
		e := benchEngine(b)
		for _, r := range e.setup.Load().bound {
			r.near = 1
		}
		o := Observation{Kind: KindUnknownRecipient, Addr: addr("203.0.113.7"), Service: "smtp", Refused: true,
			Text: "RCPT TO:<guess17@example.test>: 550 5.1.1 <guess17@example.test>: Recipient address rejected: user unknown"}
		b.ReportAllocs()
		for b.Loop() {
			e.Observe(o)
		}
	})
	b.Run("many_keys", func(b *testing.B) {
		// 64k sources: the working set of a busy MX.
		e := benchEngine(b)
		addrs := make([]netip.Addr, 1<<16)
		for i := range addrs {
			addrs[i] = v4(0x0a000000 + uint32(i)*2654435761)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			e.Observe(Observation{Kind: KindConnect, Addr: addrs[i&(len(addrs)-1)], Service: "smtp"})
			i++
		}
	})
}

func BenchmarkObserveParallel(b *testing.B) {
	e := benchEngine(b)
	var seq atomic.Uint32
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		base := seq.Add(1) << 20
		i := uint32(0)
		for pb.Next() {
			e.Observe(Observation{Kind: KindConnect, Addr: v4(base + i&0xffff), Service: "smtp"})
			i++
		}
	})
}

func BenchmarkBlocked(b *testing.B) {
	for _, tt := range []struct {
		name   string
		blocks int
		cidrs  int
	}{
		{"no_blocks", 0, 0},
		{"10k_blocks", 10_000, 0},
		{"10k_blocks_10_cidrs", 10_000, 10},
	} {
		b.Run(tt.name, func(b *testing.B) {
			e := benchEngine(b)
			ctx := context.Background()
			for i := range tt.blocks {
				if _, err := e.AddBlock(ctx, v4(0xc6000000+uint32(i)).String(), time.Hour, ""); err != nil {
					b.Fatal(err)
				}
			}
			for i := range tt.cidrs {
				if _, err := e.AddBlock(ctx, netip.PrefixFrom(v4(0x64000000+uint32(i)<<8), 24).String(), time.Hour, ""); err != nil {
					b.Fatal(err)
				}
			}
			hit, miss := v4(0xc6000000+7), addr("203.0.113.7")
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i&1 == 0 {
					e.Blocked(hit)
				} else {
					e.Blocked(miss)
				}
				i++
			}
		})
	}
}

// BenchmarkDistinctSourcesFlood feeds 1M distinct sources (one Observe
// each) to an engine with one rule at the default MaxKeys and reports the
// heap held per tracked key.
func BenchmarkDistinctSourcesFlood(b *testing.B) {
	const sources = 1 << 20
	for b.Loop() {
		b.StopTimer()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		e, err := New(context.Background(), Options{Rules: []config.Rule{rule("dos", "dos", time.Minute, 1<<30, "block")}})
		if err != nil {
			b.Fatal(err)
		}
		stop := startRun(e)
		b.StartTimer()
		start := time.Now()
		for i := range uint32(sources) {
			e.Observe(Observation{Kind: KindConnect, Addr: v4(0x0a000000 + i*2654435761)})
		}
		elapsed := time.Since(start)
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		keys := e.trackedKeys()["dos"]
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(keys), "bytes/key")
		b.ReportMetric(float64(elapsed.Nanoseconds())/sources, "ns/obs")
		b.ReportMetric(float64(keys), "keys")
		stop()
		b.StartTimer()
	}
}

// BenchmarkObserveFiring measures an observation that fires a rule and
// blocks its source (every observation is a new source reaching a
// threshold of 1), with the writer storing the events in the background
// as in the gateway: in memory, and in SQLite (whose rows cost about 65 µs
// each on this machine, see events.BenchmarkWrite, and no longer on the
// observing goroutine).
func BenchmarkObserveFiring(b *testing.B) {
	for _, bc := range []struct {
		name  string
		store func(b *testing.B) events.Store
	}{
		{"memstore", func(*testing.B) events.Store { return newMemStore() }},
		{"sqlite", func(b *testing.B) events.Store {
			s, err := events.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "events.db"))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			// A fresh engine every perEngine fires keeps memory bounded
			// whatever b.N is.
			const perEngine = 4096
			var e *Engine
			stop := func() {}
			defer func() { stop() }()
			b.ReportAllocs()
			for i := range b.N {
				if i%perEngine == 0 {
					b.StopTimer()
					stop()
					var err error
					e, err = New(context.Background(), Options{Store: bc.store(b), Rules: []config.Rule{rule("d", "dos", time.Minute, 1, "block")}})
					if err != nil {
						b.Fatal(err)
					}
					stop = startRun(e)
					b.StartTimer()
				}
				if !e.Observe(Observation{Kind: KindConnect, Addr: v4(0x0a000000 + uint32(i))}) {
					b.Fatal("not blocked")
				}
			}
		})
	}
}
