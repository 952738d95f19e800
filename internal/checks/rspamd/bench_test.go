package rspamd

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"mxguard/internal/checks/scanner"
	"mxguard/internal/pipeline"
	"mxguard/internal/testutil"
)

// BenchmarkRspamd compares a scan through the check (client, gate,
// verdict, headers) with rspamd's own time: the same POST /checkv2 sent
// by a bare HTTP client, as rspamc does, with the same number of scans in
// flight (content.max_concurrency, 8). The difference is what mxguard adds
// to rspamd's time per message (docs/benchmarks.md). Reported: messages
// per second, p50 and p99 per message.
func BenchmarkRspamd(b *testing.B) {
	rs := testutil.StartRspamd(b, testutil.RspamdOptions{})
	msg := testutil.Message("quarterly report", string(bytes.Repeat([]byte("The figures are attached, see the summary below.\r\n"), 60)))
	c, err := NewClient(rs.URL, Options{})
	if err != nil {
		b.Fatal(err)
	}
	ch := New(c, scanner.Options{Timeout: 30 * time.Second})
	bare := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: scanner.DefaultMaxConcurrency}}
	runs := map[string]func() error{
		"direct": func() error {
			req, _ := http.NewRequest(http.MethodPost, rs.URL+"/checkv2", bytes.NewReader(msg))
			req.Header.Set("IP", "192.0.2.10")
			req.Header.Set("From", "alice@example.org")
			req.Header.Set("Rcpt", "bob@example.test")
			resp, err := bare.Do(req)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			return resp.Body.Close()
		},
		"mxguard": func() error {
			if v := ch.CheckData(context.Background(), session, &pipeline.Message{Content: bytes.NewReader(msg)}); v.Reply != nil {
				return v.Reply
			}
			return nil
		},
	}
	for _, name := range []string{"direct", "mxguard"} {
		run := runs[name]
		b.Run(name, func(b *testing.B) {
			run() // the first scan after a start is slow (content-scanners.md)
			var mu sync.Mutex
			var lat []time.Duration
			start := time.Now()
			b.SetParallelism(scanner.DefaultMaxConcurrency / runtime.GOMAXPROCS(0))
			b.RunParallel(func(pb *testing.PB) {
				var mine []time.Duration
				for pb.Next() {
					t0 := time.Now()
					if err := run(); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(t0))
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			})
			elapsed := time.Since(start)
			slices.Sort(lat)
			b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "msg/s")
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
		})
	}
}
