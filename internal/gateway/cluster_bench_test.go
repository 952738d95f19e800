package gateway_test

import (
	"fmt"
	"testing"

	"github.com/emersion/go-smtp"

	"mxguard/internal/config"
	"mxguard/internal/gateway"
	"mxguard/internal/mailsink"
	"mxguard/internal/testutil"
)

// BenchmarkClusterRelay relays 4 KiB messages, one connection per message
// as smtp-source sends them, through a gateway with the built-in default
// rules, standalone and as a node of a cluster (a private redis-server),
// in the same run: what sharing the counters costs a node (DESIGN.md: a
// node with Redis keeps at least 0.9x its standalone rate). Compare the
// two within one run: three rounds alternate them, so the load of a
// shared machine falls on both alike.
//
// go test -run '^$' -bench ClusterRelay ./internal/gateway/
func BenchmarkClusterRelay(b *testing.B) {
	r := testutil.StartRedis(b)
	sink, err := mailsink.Start(b.Context(), mailsink.Options{Mailboxes: []string{"alice@example.test"}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sink.Close() })
	msg := testutil.LargeMessageString("bench", 4<<10)
	variants := []struct{ name, extra string }{
		{"standalone", ""},
		{"redis", fmt.Sprintf("cluster: {redis: %q, node: bench}\n", r.URL())},
	}
	for i := range 3 * len(variants) {
		variant := variants[i%len(variants)]
		b.Run(variant.name, func(b *testing.B) {
			dir := b.TempDir()
			yaml := testConfig(sink.Addr(), variant.extra+"limits: {max_connections_per_source: 500}\n", dir)
			cfg, err := config.Parse("bench.yaml", []byte(yaml))
			if err != nil {
				b.Fatal(err)
			}
			gw, err := gateway.Start(b.Context(), cfg, gateway.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer gw.Close()
			if gw.Cluster != nil {
				testutil.WaitUntil(b, "redis up", func() bool { return gw.Cluster.Status().Redis == "up" })
			}
			addr := gw.SMTPAddr()
			b.SetParallelism(4) // 8 clients on 2 cores
			cpu0 := testutil.ProcessCPU(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := sendOne(addr, msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			// CPU of this process (clients, gateway, sink; not Redis) per
			// message moves less than the rate on a shared machine.
			b.ReportMetric(float64((testutil.ProcessCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
		})
	}
}

func sendOne(addr, msg string) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("bench.test"); err != nil {
		return err
	}
	if err := testutil.RelayOne(c, msg); err != nil {
		return err
	}
	return c.Quit()
}
