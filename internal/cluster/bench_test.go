package cluster

import (
	"context"
	"net/netip"

	"slices"
	"strconv"
	"testing"
	"time"

	"mxguard/internal/detect"
	"mxguard/internal/testutil"
)

// BenchmarkBlockPropagation measures how long a change made on one node
// takes to be enforced by another: from AddBlock (an operator's block; a
// rule's takes the same path), RemoveBlock, AddSuspension or
// RemoveSuspension on node A until node B's Blocked or Suspended says so.
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
	ctx := context.Background()
	ipOf := func(i int) string { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String() }
	account := func(i int) string { return "user" + strconv.Itoa(i) }
	// Each case makes a change on node A and waits until node B has it;
	// unblock and lift first make (untimed) what they remove. Every
	// iteration of every run takes a fresh address or account.
	seq := 0
	block := func(i int) error { _, err := a.AddBlock(ctx, ipOf(i), time.Hour, "bench"); return err }
	blocked := func(i int) bool { return bn.Blocked(netip.MustParseAddr(ipOf(i))) }
	suspend := func(i int) error { _, err := a.AddSuspension(ctx, account(i), time.Hour, "bench"); return err }
	suspended := func(i int) bool { return bn.Suspended(account(i)) }
	not := func(f func(int) bool) func(int) bool { return func(i int) bool { return !f(i) } }
	for _, tc := range []struct {
		name       string
		before     func(i int) error // what must be in force on B first, or nil
		beforeSeen func(i int) bool
		change     func(i int) error
		seen       func(i int) bool
	}{
		{"block", nil, nil, block, blocked},
		{"unblock", block, blocked, func(i int) error { return a.RemoveBlock(ctx, ipOf(i)) }, not(blocked)},
		{"suspend", nil, nil, suspend, suspended},
		{"lift", suspend, suspended, func(i int) error { return a.RemoveSuspension(ctx, account(i)) }, not(suspended)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for range b.N {
				i := seq
				seq++
				if tc.before != nil {
					b.StopTimer()
					if err := tc.before(i); err != nil {
						b.Fatal(err)
					}
					propagated(b, tc.name+" setup", i, time.Now(), func() bool { return tc.beforeSeen(i) })
					b.StartTimer()
				}
				t0 := time.Now()
				if err := tc.change(i); err != nil {
					b.Fatal(err)
				}
				propagated(b, tc.name, i, t0, func() bool { return tc.seen(i) })
				lat = append(lat, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(q(0.5), "p50-ms")
			b.ReportMetric(q(0.99), "p99-ms")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
		})
	}
}

// propagated polls seen until it is true, failing after 10s.
func propagated(b *testing.B, what string, i int, t0 time.Time, seen func() bool) {
	for !seen() {
		if time.Since(t0) > 10*time.Second {
			b.Fatalf("%s %d not on the other node after 10s", what, i)
		}
		time.Sleep(50 * time.Microsecond) // poll; leave the CPU to the nodes
	}
}
