// Command refuseload measures how fast a gateway refuses a blocked source:
// workers bound to one source address connect, read the 421 and close, for
// a fixed time. Used by bench/refuse.sh; loopback only.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:2525", "gateway SMTP address")
	src := flag.String("src", "127.0.0.77", "source address to bind (the blocked one)")
	dur := flag.Duration("duration", 5*time.Second, "how long to run")
	workers := flag.Int("workers", 16, "concurrent connections")
	flag.Parse()

	var ok, bad atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(*src)}, Timeout: 5 * time.Second}
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < *workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256)
			for ctx.Err() == nil {
				c, err := d.DialContext(ctx, "tcp", *addr)
				if err != nil {
					bad.Add(1)
					continue
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				n, _ := io.ReadAtLeast(c, buf, 4)
				if n >= 4 && string(buf[:4]) == "421 " {
					ok.Add(1)
				} else {
					bad.Add(1)
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	fmt.Printf("refused=%d other=%d seconds=%.2f refused_per_s=%.0f\n", ok.Load(), bad.Load(), el, float64(ok.Load())/el)
	if ok.Load() == 0 {
		os.Exit(1)
	}
}
