package testutil

import (
	"bufio"
	"context"
	"net"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Serve runs serve (a server's Serve(ctx, ln) method) on a fresh
// 127.0.0.1 listener and returns its address; at cleanup the context is
// cancelled and serve must return nil.
func Serve(t testing.TB, serve func(ctx context.Context, ln net.Listener) error) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// RoundTrips benchmarks a request/answer server the way the policy
// clients use one (Postfix's smtpd, Dovecot's auth process): conns
// persistent connections to addr, each writing one request at a time
// (requests in turn, each connection starting at its own offset) and
// reading its answer with read before the next. b.N requests in all.
// It reports req/s, the 99th percentile latency (p99-ms), and the CPU
// time of the whole process per request (cpu-us/req: server and client
// together, what the rate would cost on idle cores).
func RoundTrips(b *testing.B, addr string, conns int, requests [][]byte, read func(*bufio.Reader) error) {
	b.Helper()
	per := max(1, b.N/conns)
	lat := make([][]time.Duration, conns)
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	b.ResetTimer()
	cpu0 := cpuTime(b)
	start := time.Now()
	for c := range conns {
		wg.Go(func() {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			r := bufio.NewReaderSize(conn, 4096)
			l := make([]time.Duration, 0, per)
			off := c * len(requests) / conns
			for i := range per {
				t0 := time.Now()
				if _, err := conn.Write(requests[(off+i)%len(requests)]); err != nil {
					errs <- err
					return
				}
				if err := read(r); err != nil {
					errs <- err
					return
				}
				l = append(l, time.Since(t0))
			}
			lat[c] = l
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(all)), "cpu-us/req")
}

// cpuTime is the user and system CPU time this process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
