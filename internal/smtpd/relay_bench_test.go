package smtpd

import (
	"fmt"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mxguard/internal/config"
	"mxguard/internal/testutil"
)

// BenchmarkRelay relays messages from 8 clients, each on its own
// connection, through a Server to an in-process sink: DATA into the
// message buffer, the checks, and the streamed, dot-stuffed write
// downstream. The small size is the relay-throughput floor of
// docs/benchmarks.md (a 4 KiB message must stay in memory and go out in
// one write); the large one spills to disk.
//
// go test -run '^$' -bench Relay ./internal/smtpd/
func BenchmarkRelay(b *testing.B) {
	for _, size := range []int{4 << 10, 512 << 10} {
		b.Run(fmt.Sprintf("size=%dK", size>>10), func(b *testing.B) {
			// Timeouts of a real configuration: a loaded machine (or
			// -race) takes seconds per large message.
			addr, _ := startServer(b, nil, func(_ *Options, s *Settings) {
				s.Timeouts = config.Timeouts{Greeting: time.Minute, Command: time.Minute, Data: 10 * time.Minute}
			})
			msg := testutil.LargeMessageString("bench", size)
			b.SetBytes(int64(len(msg)))
			b.SetParallelism(4) // 8 clients on 2 cores
			cpu0 := testutil.ProcessCPU(b)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				c, err := smtp.Dial(addr)
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				if err := c.Hello("bench.test"); err != nil {
					b.Error(err)
					return
				}
				for pb.Next() {
					if err := testutil.RelayOne(c, msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			// CPU per message (clients, server and sink together) moves
			// less than the rate on a machine shared with other jobs.
			b.ReportMetric(float64((testutil.ProcessCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
		})
	}
}
