package policyd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"testing"

	"mxguard/internal/config"
	"mxguard/internal/detect"
	"mxguard/internal/testutil"
)

// BenchmarkPolicy measures the policy server over loopback as Postfix
// uses it: conns persistent connections (one per smtpd process), each
// sending one request at a time and waiting for the answer. The requests
// are Postfix 3.7's 29 attributes, in SMTP sessions of 256 clients of two
// known recipients and an END-OF-MESSAGE each (a new session every three
// requests: a dos count), judged by the real engine with the built-in
// rules' types (thresholds out of reach) and the real recipients
// directory. Reported: requests per second and the 99th percentile
// latency.
//
//	go test -run - -bench Policy -benchtime 200000x ./internal/policyd/
//
// The bare sub-benchmarks answer the same traffic with a server that only
// reads lines up to the empty one and writes DUNNO: the ceiling of this
// machine's loopback round trips, in the same run.
func BenchmarkPolicy(b *testing.B) {
	for _, conns := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) { benchPolicy(b, conns, "") })
	}
	for _, conns := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("bare/conns=%d", conns), func(b *testing.B) { benchPolicy(b, conns, bareServer(b)) })
	}
}

// bareServer answers every request DUNNO without judging it.
func bareServer(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						return
					}
					if len(line) == 1 {
						if _, err := c.Write([]byte("action=DUNNO\n\n")); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func benchPolicy(b *testing.B, conns int, addr string) {
	var rules []config.Rule
	for _, typ := range []string{"dos", "bad_sessions", "directory_harvest", "mailbomb"} {
		rules = append(rules, rule(typ, typ, 1<<30))
	}
	eng := newEngine(b, detect.Options{Rules: rules, Clock: detect.SystemClock{}})
	// Run keeps the coarse clock, as in the gateway.
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { eng.Run(ctx); close(ran) }()
	defer func() { cancel(); <-ran }()
	s, err := New(Options{Engine: eng, Directory: directory(b)})
	if err != nil {
		b.Fatal(err)
	}
	if addr == "" {
		addr = serve(b, s)
	}
	var reqs [][]byte
	for i := range 256 {
		client := "10.0." + strconv.Itoa(i) + ".1"
		port := strconv.Itoa(40000 + i)
		reqs = append(reqs,
			[]byte(pf{client: client, port: port, rcpt: "alice@example.test", size: 2000}.text()),
			[]byte(pf{client: client, port: port, rcpt: "bob@example.test", size: 2000}.text()),
			[]byte(pf{client: client, port: port, state: "END-OF-MESSAGE", size: 2345, count: 2}.text()))
	}
	testutil.RoundTrips(b, addr, conns, reqs, readDunno)
}

// readDunno reads one answer, which must be DUNNO.
func readDunno(r *bufio.Reader) error {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.Equal(line, []byte("action=DUNNO\n")) {
		return fmt.Errorf("answer %q", line)
	}
	_, err = r.ReadByte()
	return err
}

// BenchmarkReadRequest is the parser alone on a captured-shape request.
func BenchmarkReadRequest(b *testing.B) {
	raw := []byte(pf{client: "203.0.113.7", rcpt: "alice@example.test", size: 2000}.text())
	rd := bytes.NewReader(raw)
	br := NewReader(rd)
	var r Request
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		rd.Reset(raw)
		br.Reset(rd)
		if err := ReadRequest(br, &r); err != nil {
			b.Fatal(err)
		}
	}
}
