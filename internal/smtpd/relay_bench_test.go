package smtpd

import (
	"fmt"
	"io"
	"strings"
	"syscall"
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
			cpu0 := processCPU(b)
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
					if err := relayOne(c, msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			// CPU per message (clients, server and sink together) moves
			// less than the rate on a machine shared with other jobs.
			b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/msg")
		})
	}
}

func relayOne(c *smtp.Client, msg string) error {
	if err := c.Mail("a@remote.test", nil); err != nil {
		return err
	}
	if err := c.Rcpt("alice@example.test", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, strings.NewReader(msg)); err != nil {
		return err
	}
	return w.Close()
}

// processCPU is the user and system CPU time of this process so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
