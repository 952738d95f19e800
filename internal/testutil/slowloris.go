package testutil

import (
	"io"
	"net"
	"testing"
	"time"
)

// Slowloris plays the slowloris attack on the HTTP server at addr: it opens
// a connection and sends a request head one byte every interval, never
// finishing it, so a server without a header timeout holds the connection
// (and its goroutine) for as long as the client likes. It returns how long
// the server took to close the connection, and fails the test if the
// server still held it after limit.
func Slowloris(t testing.TB, addr string, interval, limit time.Duration) time.Duration {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if err := conn.SetReadDeadline(start.Add(limit)); err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		// Ends when the server closes the connection, or at limit. A
		// server may answer 408 first; whatever it sends is not read.
		_, _ = io.Copy(io.Discard, conn)
	}()
	head := "GET /healthz HTTP/1.1\r\nHost: " + addr + "\r\nX-Slow: "
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-closed:
			d := time.Since(start)
			if d >= limit {
				t.Fatalf("slowloris: the server still held the connection after %v", limit)
			}
			return d
		case <-tick.C:
			b := byte('a') // past the head: one endless header value
			if i < len(head) {
				b = head[i]
			}
			// A write to a closed connection fails; the reader sees the
			// close too, so the error is not needed.
			_, _ = conn.Write([]byte{b})
		}
	}
}
