package smtpd

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/config"
	"mxguard/internal/detect"
	"mxguard/internal/metrics"
	"mxguard/internal/testutil"
)

// fakeDetector records observations and blocks the sources a test tells
// it to, like the engine's manual block.
type fakeDetector struct {
	mu      sync.Mutex
	blocked map[netip.Addr]bool
	obs     []detect.Observation
	refused int
	gen     atomic.Uint64
}

func newFakeDetector() *fakeDetector { return &fakeDetector{blocked: map[netip.Addr]bool{}} }

func (d *fakeDetector) Observe(o detect.Observation) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.obs = append(d.obs, o)
	return d.blocked[o.Addr]
}

func (d *fakeDetector) Blocked(a netip.Addr) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.blocked[a]
}

func (d *fakeDetector) BlockGeneration() uint64 { return d.gen.Load() }

func (d *fakeDetector) Refused(netip.Addr) {
	d.mu.Lock()
	d.refused++
	d.mu.Unlock()
}

func (d *fakeDetector) block(ip string) {
	d.mu.Lock()
	d.blocked[netip.MustParseAddr(ip)] = true
	d.mu.Unlock()
	d.gen.Add(1)
}

// count is how many observations of kind came from ip.
func (d *fakeDetector) count(kind detect.Kind, ip string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, o := range d.obs {
		if o.Kind == kind && o.Addr == netip.MustParseAddr(ip) {
			n++
		}
	}
	return n
}

// waitUntil polls cond (the server works on its own goroutines).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.WaitUntil(t, what, cond)
}

func limitCount(m *metrics.Metrics, name string) float64 {
	return promtest.ToFloat64(m.SessionLimits.WithLabelValues("smtp", name))
}

var insecure = &tls.Config{InsecureSkipVerify: true}

// noops pipelines n NOOPs and returns how many were answered 250 before
// the reply that ended the run, whose code and text it returns too.
func noops(t *testing.T, c *testutil.SMTPClient, n int) (ok, code int, text string) {
	t.Helper()
	c.Send(strings.Repeat("NOOP\r\n", n))
	for i := 0; i < n; i++ {
		code, text, err := c.ReadReply()
		if err != nil {
			t.Fatalf("after %d NOOPs answered: %v", ok, err)
		}
		if code != 250 {
			return ok, code, text
		}
		ok++
	}
	return ok, 250, ""
}

// TestJunkCommandLimit: a NOOP loop ends after junkLimit commands with
// 421 4.7.0 (Postfix's smtpd_junk_command_limit), in plaintext and over
// TLS alike; the session counts as a bad session.
func TestJunkCommandLimit(t *testing.T) {
	d := newFakeDetector()
	addr, _, m := startOpts(t, serverOpts{detector: d, tls: true})
	for _, useTLS := range []bool{false, true} {
		ip := "127.0.1.1"
		if useTLS {
			ip = "127.0.1.2"
		}
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: ip})
			c.Expect(220)
			c.Cmd("EHLO junk.test", 250)
			if useTLS {
				c.StartTLS(insecure)
				c.Cmd("EHLO junk.test", 250)
			}
			ok, code, text := noops(t, c, 2*junkLimit)
			if ok != junkLimit || code != 421 || !strings.HasPrefix(text, "4.7.0 ") {
				t.Fatalf("got %d NOOPs answered then %d %s; want %d then 421 4.7.0", ok, code, text, junkLimit)
			}
			c.ExpectClosed()
			waitUntil(t, "bad session observed", func() bool { return d.count(detect.KindBadSession, ip) == 1 })
		})
	}
	if n := limitCount(m, "junk"); n != 2 {
		t.Errorf("mxguard_session_limits_total{limit=junk} = %v, want 2", n)
	}
}

// TestJunkResetByMessage: the junk count starts again after an accepted
// message, and a session closed for junk after it sent mail is still a
// bad session.
func TestJunkResetByMessage(t *testing.T) {
	d := newFakeDetector()
	addr, _, _ := startOpts(t, serverOpts{detector: d})
	c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.1.3"})
	c.Expect(220)
	c.Cmd("EHLO legit.test", 250)
	for round := 0; round < 3; round++ {
		// RSET, repeated MAIL and VRFY are junk too.
		c.Cmd("RSET", 250)
		c.Cmd("VRFY alice", 252)
		c.Cmd("MAIL FROM:<a@remote.test>", 250)
		c.Cmd("MAIL FROM:<a@remote.test>", 250)
		if ok, code, _ := noops(t, c, junkLimit-4); ok != junkLimit-4 {
			t.Fatalf("round %d: closed after %d NOOPs (%d)", round, ok, code)
		}
		c.Cmd("RCPT TO:<alice@example.test>", 250)
		c.Data("Subject: between the NOOPs\r\n\r\nhi\r\n", 250)
	}
	if ok, code, _ := noops(t, c, 2*junkLimit); ok != junkLimit || code != 421 {
		t.Fatalf("after the messages: %d NOOPs then %d, want %d then 421", ok, code, junkLimit)
	}
	c.ExpectClosed()
	waitUntil(t, "bad session observed", func() bool { return d.count(detect.KindBadSession, "127.0.1.3") == 1 })
}

// TestErrorLimit: errorLimit refused recipients end the session with
// 421 4.7.0 after the last refusal (Postfix's smtpd_hard_error_limit).
func TestErrorLimit(t *testing.T) {
	addr, _, m := startOpts(t, serverOpts{})
	c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.1.4"})
	c.Expect(220)
	c.Cmd("EHLO relay.test", 250)
	c.Cmd("MAIL FROM:<a@remote.test>", 250)
	for i := 1; i < errorLimit; i++ {
		c.Cmd(fmt.Sprintf("RCPT TO:<victim%d@elsewhere.test>", i), 554)
	}
	c.Cmd("RCPT TO:<last@elsewhere.test>", 554)
	if text := c.Expect(421); !strings.HasPrefix(text, "4.7.0 ") {
		t.Errorf("want 421 4.7.0 after %d errors, got 421 %s", errorLimit, text)
	}
	c.ExpectClosed()
	if n := limitCount(m, "errors"); n != 1 {
		t.Errorf("mxguard_session_limits_total{limit=errors} = %v, want 1", n)
	}
}

// TestOwnFailuresAreNoErrors: mxguard's own temporary failures (451 4.4.1
// while the downstream is gone) count toward no limit.
func TestOwnFailuresAreNoErrors(t *testing.T) {
	down := testutil.ScriptedSMTP(t, testutil.Script{"RCPT": "421 4.3.2 shutting down"}).Addr()
	addr, _, _ := startOpts(t, serverOpts{downstream: down})
	c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.1.5"})
	c.Expect(220)
	c.Cmd("EHLO patient.test", 250)
	c.Cmd("MAIL FROM:<a@remote.test>", 250)
	for i := 0; i < 2*errorLimit; i++ {
		c.Cmd(fmt.Sprintf("RCPT TO:<alice+%d@example.test>", i), 451)
	}
	c.Cmd("NOOP", 250)
}

// trickle sends cmd up to max times, pause after each 250, like a
// slowloris client; it returns how many were answered 250 and whether a
// 421 4.4.2 ended the session before max.
func trickle(t *testing.T, c *testutil.SMTPClient, max int, pause time.Duration, cmd string) (int, bool) {
	t.Helper()
	for i := 0; i < max; i++ {
		c.Send(cmd)
		code, text, err := c.ReadReply()
		switch {
		case err != nil:
			t.Fatalf("after %d answered: %v", i, err)
		case code == 421:
			if !strings.HasPrefix(text, "4.4.2 ") {
				t.Errorf("want 421 4.4.2, got 421 %s", text)
			}
			return i, true
		case code != 250:
			t.Fatalf("after %d answered: %d %s", i, code, text)
		}
		time.Sleep(pause)
	}
	return max, false
}

// TestSessionTimeLimit: a client that keeps its session alive with a NOOP
// before every command timeout still ends at the session limit
// (2 × (command + DATA timeout)), with 421 4.4.2.
func TestSessionTimeLimit(t *testing.T) {
	// Limit 2 s; a NOOP every 100 ms stays far inside the command timeout.
	tmo := config.Timeouts{Greeting: 800 * time.Millisecond, Command: 800 * time.Millisecond, Data: 200 * time.Millisecond}
	addr, _, m := startOpts(t, serverOpts{timeouts: tmo})
	c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.1.6"})
	c.Expect(220)
	c.Cmd("EHLO slowloris.test", 250)
	// 6 s of NOOPs, 3 times the limit.
	if n, ok := trickle(t, c, 60, 100*time.Millisecond, "NOOP\r\n"); !ok {
		t.Fatalf("the session outlived %d NOOPs; limit %s", n, sessionLimit(tmo))
	}
	c.ExpectClosed()
	if n, to := limitCount(m, "session_time"), limitCount(m, "timeout"); n != 1 || to != 0 {
		t.Errorf("session limits: session_time %v, timeout %v; want 1, 0", n, to)
	}
}

// TestBDATObeysDataTimeout: BDAT chunks trickled in, each well within the
// command timeout, are bounded as a whole by the DATA timeout, as DATA is.
func TestBDATObeysDataTimeout(t *testing.T) {
	tmo := config.Timeouts{Greeting: 2 * time.Second, Command: 2 * time.Second, Data: time.Second}
	addr, _, m := startOpts(t, serverOpts{timeouts: tmo})
	c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.1.7"})
	c.Expect(220)
	c.Cmd("EHLO chunky.test", 250)
	c.Cmd("MAIL FROM:<a@remote.test>", 250)
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	// 4 s of chunks: past the session limit without the DATA bound.
	if n, ok := trickle(t, c, 20, 200*time.Millisecond, "BDAT 10\r\n0123456789"); !ok {
		t.Fatalf("%d slow BDAT chunks accepted; the DATA timeout is %s", n, tmo.Data)
	}
	c.ExpectClosed()
	if n := limitCount(m, "timeout"); n != 1 {
		t.Errorf("mxguard_session_limits_total{limit=timeout} = %v, want 1", n)
	}
}

// TestBlockedDuringTLS: a source blocked while its STARTTLS session is
// open reads 421 4.7.0 through TLS at its next command, then a clean TLS
// close.
func TestBlockedDuringTLS(t *testing.T) {
	d := newFakeDetector()
	addr, _, _ := startOpts(t, serverOpts{detector: d, tls: true})
	c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.1.8"})
	c.Expect(220)
	c.Cmd("EHLO tls.test", 250)
	c.StartTLS(insecure)
	c.Cmd("EHLO tls.test", 250)
	c.Cmd("MAIL FROM:<a@remote.test>", 250)
	d.block("127.0.1.8")
	if text := c.Cmd("RCPT TO:<alice@example.test>", 421); !strings.HasPrefix(text, "4.7.0 ") {
		t.Errorf("want 421 4.7.0, got 421 %s", text)
	}
	c.ExpectClosed()
}

// TestTimeoutDuringTLS: the command timeout's 421 4.4.2 is readable
// through TLS.
func TestTimeoutDuringTLS(t *testing.T) {
	addr, _, _ := startOpts(t, serverOpts{tls: true, timeouts: config.Timeouts{Greeting: time.Second, Command: time.Second, Data: time.Second}})
	c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.1.9"})
	c.Expect(220)
	c.Cmd("EHLO idle.test", 250)
	c.StartTLS(insecure)
	c.Cmd("EHLO idle.test", 250)
	if text := c.Expect(421); !strings.HasPrefix(text, "4.4.2 ") {
		t.Errorf("want 421 4.4.2, got 421 %s", text)
	}
	c.ExpectClosed()
}

// TestSTARTTLSBeforeEHLO: STARTTLS was never offered to a client that did
// not say EHLO; its handshake is refused.
func TestSTARTTLSBeforeEHLO(t *testing.T) {
	addr, _, _ := startOpts(t, serverOpts{tls: true})
	conn, _ := rawSession(t, addr, "STARTTLS")
	if err := tls.Client(conn, insecure).Handshake(); err == nil {
		t.Fatal("TLS handshake before EHLO succeeded")
	}
}

// rawSession dials addr without a transcript client (the test goes on
// below SMTP) and sends cmds, each answered by a positive reply; reading
// stops right after the last reply, so no TLS byte is read ahead.
func rawSession(t *testing.T, addr string, cmds ...string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn := testutil.DialTCP(t, addr, 5*time.Second)
	r := bufio.NewReader(conn)
	for _, cmd := range append([]string{""}, cmds...) {
		if cmd != "" {
			conn.Write([]byte(cmd + "\r\n"))
		}
		for {
			l, err := r.ReadString('\n')
			if err != nil || len(l) < 4 || l[0] > '3' {
				t.Fatalf("%q: %q %v", cmd, l, err)
			}
			if l[3] == ' ' {
				break
			}
		}
	}
	return conn, r
}

// countingListener counts the writes on every accepted connection.
type countingListener struct {
	net.Listener
	writes *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestTLSRepliesOneWrite: over TLS too, a reply of many lines (each its
// own TLS record) leaves in one write, as do pipelined replies.
func TestTLSRepliesOneWrite(t *testing.T) {
	var writes atomic.Int64
	addr, _, _ := startOpts(t, serverOpts{tls: true, wrap: func(l net.Listener) net.Listener { return countingListener{l, &writes} }})
	c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.1.10"})
	c.Expect(220)
	c.Cmd("EHLO batch.test", 250)
	c.StartTLS(insecure)
	before := writes.Load()
	if text := c.Cmd("EHLO batch.test", 250); strings.Count(text, "\n") < 4 {
		t.Fatalf("EHLO reply of %d lines; the test needs a multi-line one", strings.Count(text, "\n")+1)
	}
	if n := writes.Load() - before; n != 1 {
		t.Errorf("multi-line EHLO reply over TLS took %d writes, want 1", n)
	}
	before = writes.Load()
	c.Send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nNOOP\r\n")
	c.Expect(250)
	c.Expect(250)
	c.Expect(250)
	// The three commands may arrive in more than one segment; never more
	// writes than commands, and usually one.
	if n := writes.Load() - before; n > 3 || n < 1 {
		t.Errorf("3 pipelined replies over TLS took %d writes", n)
	}
}

// TestBusyObserved: connections refused because every slot is taken are
// connections for the dos rule (a flood that fills the slots is the
// attack) and are counted as busy.
func TestBusyObserved(t *testing.T) {
	d := newFakeDetector()
	addr, _, m := startOpts(t, serverOpts{detector: d, maxConns: 2})
	for _, ip := range []string{"127.0.1.11", "127.0.1.12"} {
		testutil.Dial(t, addr, testutil.DialOptions{LocalIP: ip}).Expect(220)
	}
	for i := 0; i < 3; i++ {
		c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.1.13"})
		if text := c.Expect(421); !strings.HasPrefix(text, "4.3.2 ") {
			t.Fatalf("want 421 4.3.2, got 421 %s", text)
		}
		c.ExpectClosed()
	}
	if n := d.count(detect.KindConnect, "127.0.1.13"); n != 3 {
		t.Errorf("busy refusals observed as connections: %d, want 3", n)
	}
	if n := promtest.ToFloat64(m.Connections.WithLabelValues("smtp", "busy")); n != 3 {
		t.Errorf("connections_total{result=busy} = %v, want 3", n)
	}
	// A blocked source's busy refusal is impact of its block, not evidence.
	d.block("127.0.1.13")
	testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.1.13"}).Expect(421)
	if n := d.count(detect.KindConnect, "127.0.1.13"); n != 3 {
		t.Errorf("a blocked source's busy refusal was observed as a connection")
	}
	d.mu.Lock()
	refused := d.refused
	d.mu.Unlock()
	if refused != 1 {
		t.Errorf("blocked source's busy refusal: Refused called %d times, want 1", refused)
	}
}

// TestStressMode: past 80% of max_connections the listener enters stress
// mode: a new session gets the stress timeouts from its greeting on, an
// open one from its next command; below 70% it leaves.
func TestStressMode(t *testing.T) {
	normal := config.Timeouts{Greeting: 20 * time.Second, Command: 20 * time.Second, Data: 20 * time.Second}
	stress := config.Timeouts{Greeting: 200 * time.Millisecond, Command: 200 * time.Millisecond, Data: 200 * time.Millisecond}
	addr, srv, m := startOpts(t, serverOpts{maxConns: 10, timeouts: normal, stress: stress})
	gauge := func() float64 { return promtest.ToFloat64(m.Stress.WithLabelValues("smtp")) }
	var open []*testutil.SMTPClient
	for i := 0; i < 8; i++ {
		c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: fmt.Sprintf("127.0.2.%d", i+1)})
		c.Expect(220)
		c.Cmd("EHLO calm.test", 250)
		open = append(open, c)
	}
	if gauge() != 0 {
		t.Fatal("stress mode at 80% of max_connections")
	}
	// The 9th session: stress. It gets the stress greeting timeout.
	ninth := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.2.9"})
	ninth.Expect(220)
	if gauge() != 1 {
		t.Fatal("no stress mode at 90% of max_connections")
	}
	if text := ninth.Expect(421); !strings.HasPrefix(text, "4.4.2 ") {
		t.Errorf("stressed greeting: want 421 4.4.2, got 421 %s", text)
	}
	ninth.ExpectClosed()
	// An open session answered under the normal timeout ...
	open[0].Cmd("NOOP", 250)
	// ... and waits for its next command under the stress timeout.
	if text := open[0].Expect(421); !strings.HasPrefix(text, "4.4.2 ") {
		t.Errorf("open session under stress: want 421 4.4.2, got 421 %s", text)
	}
	open[0].ExpectClosed()
	// 7 sessions left: 70%, stress mode ends.
	waitUntil(t, "stress mode ends", func() bool { return gauge() == 0 })
	if srv.stress.Load() {
		t.Error("gauge 0 but the server is in stress mode")
	}
	c := &conn{srv: srv, set: srv.cur.Load().set}
	if got := c.timeouts(); got != normal {
		t.Errorf("timeouts after stress: %+v, want %+v", got, normal)
	}
	open[1].Cmd("NOOP", 250)
}

// TestFailedHandshakeCloses: after a TLS handshake that failed (here: a
// client offering only TLS 1.1) the stream is in no state to go on, in
// TLS or in plaintext: the connection closes at once (RFC 3207 §4.1 asks
// the same of the client), with no timeout reply after the alert.
func TestFailedHandshakeCloses(t *testing.T) {
	addr, _, _ := startOpts(t, serverOpts{tls: true})
	conn, r := rawSession(t, addr, "EHLO old.test", "STARTTLS")
	old := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	if r.Buffered() != 0 {
		t.Fatal("read ahead past the 220 to STARTTLS")
	}
	err := tls.Client(conn, old).Handshake()
	if err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("a TLS 1.1 handshake: %v, want a protocol version alert", err)
	}
	// Closed, not waiting for commands: what a timeout would end with a
	// 421 ends with EOF and nothing more.
	out, err := io.ReadAll(r)
	if err != nil || len(out) != 0 {
		t.Errorf("after the failed handshake: %q, %v; want EOF at once", out, err)
	}
}
