package recipients

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"mxguard/internal/address"
	"mxguard/internal/testutil"
)

func benchDir(b *testing.B, n int) (*Directory, []address.Mailbox) {
	b.Helper()
	d := New(Options{
		Settings: Settings{Domains: []string{"example.test"}, TTL: 24 * time.Hour},
		MaxKnown: 2 * n, Clock: testutil.NewFakeClock(),
	})
	addrs := make([]address.Mailbox, n)
	for i := range addrs {
		addrs[i] = address.MustParse(fmt.Sprintf("firstname.lastname%d@example.test", i))
		d.Record(addrs[i], Known)
	}
	return d, addrs
}

// BenchmarkCheck is the outage path of every RCPT: canonical form, one
// shard lock, two map look-ups (unknown, then known).
func BenchmarkCheck(b *testing.B) {
	d, addrs := benchDir(b, 1<<16)
	b.Run("known", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			d.Check(addrs[i&(len(addrs)-1)], true)
		}
	})
	nobody := address.MustParse("nobody@example.test")
	b.Run("unseen", func(b *testing.B) {
		for b.Loop() {
			d.Check(nobody, true)
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				d.Check(addrs[i&(len(addrs)-1)], true)
				i++
			}
		})
	})
}

// BenchmarkRecord is the pass-through path: every accepted RCPT refreshes
// its entry.
func BenchmarkRecord(b *testing.B) {
	d, addrs := benchDir(b, 1<<16)
	for i := 0; b.Loop(); i++ {
		d.Record(addrs[i&(len(addrs)-1)], Known)
	}
}

// BenchmarkBytesPerEntry measures the heap a cached verdict costs, for
// addresses of 32 bytes ("firstname.lastnameNNNNN@example.test"-like).
func BenchmarkBytesPerEntry(b *testing.B) {
	const n = 1 << 18
	addrs := make([]address.Mailbox, n)
	for i := range addrs {
		addrs[i] = address.MustParse(fmt.Sprintf("user.name%07d@example.test", i))
	}
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		d := New(Options{Settings: Settings{Domains: []string{"example.test"}, TTL: time.Hour}, MaxKnown: n, Clock: testutil.NewFakeClock()})
		for _, a := range addrs {
			d.Record(a, Known)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		known, _ := d.Len()
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(known), "bytes/entry")
		runtime.KeepAlive(d)
	}
}
