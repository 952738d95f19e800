package cluster

import (
	"context"
	"net/netip"

	"slices"
	"testing"
	"time"

	"mxguard/internal/detect"
	"mxguard/internal/testutil"
)

// BenchmarkBlockPropagation measures how long a block made on one node
// takes to be enforced by another: from AddBlock on node A (an operator's
// block; a rule's takes the same path) until node B's Blocked says true.
// Two real engines, each with its Cluster, share a private redis-server.
// DESIGN.md: p99 at most 100 ms.
//
// go test -run '^$' -bench BlockPropagation -benchtime 2000x ./internal/cluster/
func BenchmarkBlockPropagation(b *testing.B) {
	r := testutil.StartRedis(b)
	engine := func(name string) (*detect.Engine, *Cluster) {
		c, err := New(Options{URL: r.URL(), Node: name})
		if err != nil {
			b.Fatal(err)
		}
		e, err := detect.New(context.Background(), detect.Options{Node: name, Shared: c})
		if err != nil {
			b.Fatal(err)
		}
		runUntilCleanup(b, c, e)
		testutil.WaitUntil(b, "redis up", func() bool { return c.Status().Redis == StateUp })
		return e, c
	}
	a, _ := engine("mx1")
	bn, _ := engine("mx2")
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		t0 := time.Now()
		if _, err := a.AddBlock(context.Background(), ip.String(), time.Hour, "bench"); err != nil {
			b.Fatal(err)
		}
		for !bn.Blocked(ip) {
			if time.Since(t0) > 10*time.Second {
				b.Fatalf("block %d not on the other node after 10s", i)
			}
			time.Sleep(50 * time.Microsecond) // poll; leave the CPU to the nodes
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
