package authpolicy

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"testing"
	"time"

	"mxguard/internal/config"
	"mxguard/internal/testutil"
)

// BenchmarkPolicy measures the auth policy server over loopback as
// Dovecot uses it: conns keep-alive connections (one per auth process),
// each sending one request at a time and waiting for the answer; the
// requests alternate allow and a failed-login report from 256 sources, and
// go to the real detection engine with the built-in brute_force rule shape.
// Reported: requests per second, the 99th percentile latency and the
// process's CPU per request (testutil.RoundTrips).
//
//	go test -run - -bench Policy -benchtime 200000x ./internal/authpolicy/
func BenchmarkPolicy(b *testing.B) {
	for _, conns := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) { benchPolicy(b, conns) })
	}
}

func benchPolicy(b *testing.B, conns int) {
	seen := &startedEvents{}
	eng := newEngine(b, []config.Rule{{Name: "brute_force", Type: "brute_force", Window: 10 * time.Minute,
		Threshold: 1 << 30, Actions: []string{"block"}, BlockFor: time.Hour}}, seen)
	s, err := New(Options{Engine: eng, APIKey: "testkey123"})
	if err != nil {
		b.Fatal(err)
	}
	addr := serve(b, s)
	var reqs [][]byte
	for i := range 256 {
		remote := "10.0." + strconv.Itoa(i) + ".1"
		reqs = append(reqs,
			[]byte(dovecotRequest("allow", "testkey123", `{"device_id":"","login":"alice","protocol":"imap","pwhash":"093a","remote":"`+remote+`","session_id":"P9XCZhhhbal/AAAG","tls":false}`)),
			[]byte(dovecotRequest("report", "testkey123", `{"device_id":"","login":"alice","protocol":"imap","pwhash":"093a","remote":"`+remote+`","session_id":"P9XCZhhhbal/AAAG","success":false,"policy_reject":false,"tls":false}`)))
	}
	testutil.RoundTrips(b, addr, conns, reqs, readResponse)
}

// readResponse reads one HTTP/1.1 response with a Content-Length body,
// as cheaply as Dovecot's client does, so the benchmark measures the
// server rather than net/http's client.
func readResponse(r *bufio.Reader) error {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("status line %q", line)
	}
	n := -1
	for {
		h, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(h) <= 2 {
			break
		}
		if v, ok := bytes.CutPrefix(h, []byte("Content-Length: ")); ok {
			n, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if n < 0 {
		return fmt.Errorf("no Content-Length")
	}
	_, err = r.Discard(n)
	return err
}
