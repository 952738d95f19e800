package smtpd

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/checks"
	"mxguard/internal/config"
	"mxguard/internal/delivery"
	"mxguard/internal/detect"
	"mxguard/internal/mailsink"
	"mxguard/internal/metrics"
	"mxguard/internal/msgbuf"
	"mxguard/internal/pipeline"
	"mxguard/internal/relay"
	"mxguard/internal/testutil"
)

// startServer runs a bare Server (no detection engine) relaying to an
// in-process sink, with an optional extra data check.
func startServer(t testing.TB, extra pipeline.DataCheck, adjust ...func(*Options, *Settings)) (string, *metrics.Metrics) {
	t.Helper()
	addr, _, m := startOpts(t, serverOpts{extra: extra, adjust: adjust})
	return addr, m
}

// startServerTo is startServer in front of any downstream; with adjust
// the test changes options and settings (a spooler, trusted networks,
// message buffers: by default a store in a temporary directory) before
// the start.
func startServerTo(t testing.TB, downstream string, extra pipeline.DataCheck, adjust ...func(*Options, *Settings)) (string, *metrics.Metrics) {
	t.Helper()
	addr, _, m := startOpts(t, serverOpts{downstream: downstream, extra: extra, adjust: adjust})
	return addr, m
}

// serverOpts vary the test server; zero values give the defaults noted.
type serverOpts struct {
	downstream string             // "": an in-process sink where alice@example.test exists
	extra      pipeline.DataCheck // an extra data check
	detector   Detector           // nil: none
	timeouts   config.Timeouts    // zero: greeting 1s, command 1s, DATA 2s
	stress     config.Timeouts    // stress mode's timeouts; zero: the defaults
	maxConns   int                // limits.max_connections; zero: 100
	tls        bool               // offer STARTTLS with a self-signed certificate
	// wrap, if set, wraps the listening socket (to watch the raw conns).
	wrap func(net.Listener) net.Listener
	// adjust change options and settings last (a spooler, trusted networks).
	adjust []func(*Options, *Settings)
	// relay configures the relay (a dialer, delivery.tls); its Hostname
	// and Metrics are set here.
	relay relay.Options
	// downAfter is the delivery manager's down_after; zero: its default.
	downAfter int
}

// testServer is a running test server and what tests look into.
type testServer struct {
	addr string
	srv  *Server
	m    *metrics.Metrics
	dm   *delivery.Manager // routes the transactions to o.downstream
}

func startOpts(t testing.TB, o serverOpts) (string, *Server, *metrics.Metrics) {
	t.Helper()
	ts := startTestServer(t, o)
	return ts.addr, ts.srv, ts.m
}

func startTestServer(t testing.TB, o serverOpts) *testServer {
	t.Helper()
	if o.downstream == "" {
		sink, err := mailsink.Start(context.Background(), mailsink.Options{Mailboxes: []string{"alice@example.test"}, MaxStored: 10})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sink.Close() })
		o.downstream = sink.Addr()
	}
	if o.timeouts == (config.Timeouts{}) {
		o.timeouts = config.Timeouts{Greeting: time.Second, Command: time.Second, Data: 2 * time.Second}
	}
	if o.maxConns == 0 {
		o.maxConns = 100
	}
	m := metrics.New()
	chain := testChain(t, checks.Deps{Metrics: m})
	if o.extra != nil {
		chain.Data = append(chain.Data, o.extra)
	}
	set := &Settings{
		Hostname: "mx.test",
		Limits:   config.Limits{MaxConnections: o.maxConns, MaxConnectionsPerSource: 50, MaxMessageSize: 1 << 20, MaxRecipients: 10},
		Timeouts: o.timeouts,
		Chain:    chain,
	}
	if o.tls {
		cfg, err := LoadTLS("", "", t.TempDir(), "mx.test")
		if err != nil {
			t.Fatal(err)
		}
		set.TLS = cfg
	}
	o.relay.Hostname, o.relay.Metrics = "mx.test", m
	rl := relay.New(o.relay)
	t.Cleanup(func() { rl.Close() })
	dm := delivery.New(delivery.Options{Servers: []delivery.Server{{Address: o.downstream, Role: "primary"}}, Relay: rl, DownAfter: o.downAfter, Metrics: m})
	so := Options{Relay: dm, Metrics: m, Detector: o.detector, Stress: o.stress}
	for _, f := range o.adjust {
		f(&so, set)
	}
	if so.Buffers == nil {
		var err error
		if so.Buffers, err = msgbuf.New(msgbuf.Options{Dir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
	}
	srv := New(so, set)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if o.wrap != nil {
		ln = o.wrap(ln)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &testServer{addr: addr, srv: srv, m: m, dm: dm}
}

// panicCheck crashes on a marker, standing in for any bug in a check.
type panicCheck struct{}

func (panicCheck) Name() string { return "panic" }
func (panicCheck) CheckData(_ context.Context, _ *pipeline.Session, m *pipeline.Message) pipeline.Verdict {
	if hdr, _, _ := m.Header(4096); strings.Contains(string(hdr), "X-Crash: yes") {
		panic("check bug")
	}
	return pipeline.Verdict{}
}

// TestPanicIsolated: a panic in a content check defers that message
// (451 4.3.0: never passed unchecked) and is counted; the session goes
// on, and a concurrent session completes its transaction.
func TestPanicIsolated(t *testing.T) {
	addr, m := startServer(t, panicCheck{})
	good := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.0.2"})
	good.Expect(220)
	good.Cmd("EHLO good.test", 250)
	good.Cmd("MAIL FROM:<a@remote.test>", 250)
	good.Cmd("RCPT TO:<alice@example.test>", 250)

	bad := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.0.3"})
	bad.Expect(220)
	bad.Cmd("EHLO bad.test", 250)
	bad.Cmd("MAIL FROM:<a@remote.test>", 250)
	bad.Cmd("RCPT TO:<alice@example.test>", 250)
	if text := bad.Data("X-Crash: yes\r\n\r\nboom\r\n", 451); !strings.HasPrefix(text, "4.3.0 ") {
		t.Errorf("panicking check: 451 %s, want 4.3.0", text)
	}
	bad.Cmd("MAIL FROM:<a@remote.test>", 250)
	bad.Cmd("RCPT TO:<alice@example.test>", 250)
	bad.Data("Subject: fine\r\n\r\nfine\r\n", 250)

	good.Data("Subject: fine\r\n\r\nfine\r\n", 250)
	if n := promtest.ToFloat64(m.Panics); n != 1 {
		t.Errorf("panics counted = %v, want 1", n)
	}
}

var replyLine = regexp.MustCompile(`^[2-5][0-9][0-9][ -]`)

// FuzzSession feeds arbitrary client bytes to a real listener: every line
// the server writes must be a well-formed reply, and the server must keep
// serving other clients.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\nQUIT\r\n",
		"HELO\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nRSET\r\nNOOP\r\nVRFY x\r\nQUIT\r\n",
		"EHLO a\r\nMAIL FROM:<a@b> SIZE=99999999999\r\nRCPT TO:<x@elsewhere>\r\nBDAT 5 LAST\r\nhello",
		"EHLO a\r\nAUTH PLAIN AGFAYg==\r\nSTARTTLS\r\n\x00\x01\xff\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<\"a b\"@x.>\r\nRCPT TO:<\"v@e> NOTIFY=NEVER\"@example.test>\r\nRCPT TO:<v%p@EXAMPLE.test.>\r\nRCPT TO:<@r:b!v@[127.0.0.1]>\r\nRCPT TO:<v\xc3\xafctim@example.test>\r\n",
		// Junk and slowloris-like input (limits.go): command loops past
		// the junk limit, nested MAILs, empty BDAT chunks, refusals past
		// the error limit, STARTTLS without EHLO, a truncated chunk and
		// an unterminated line.
		"EHLO a\r\n" + strings.Repeat("NOOP\r\n", 150),
		"EHLO a\r\n" + strings.Repeat("RSET\r\nVRFY x\r\nHELP\r\nETRN x\r\n", 40),
		"EHLO a\r\n" + strings.Repeat("MAIL FROM:<a@b>\r\n", 120),
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\n" + strings.Repeat("BDAT 0\r\n", 120) + "BDAT 0 LAST\r\n",
		"EHLO a\r\nMAIL FROM:<a@b>\r\n" + strings.Repeat("RCPT TO:<x@elsewhere.test>\r\n", 25) + "NOOP\r\n",
		"STARTTLS\r\n\x16\x03\x01\x00\x05hello",
		"EHLO a\r\nMAIL FROM:<a@b>\r\nRCPT TO:<alice@example.test>\r\nBDAT 3\r\nabcBDAT 99999\r\nxyz",
		"EHLO a\r\nNOOP\r\nMAIL FROM:<a@b",
	} {
		f.Add([]byte(s))
	}
	addr, _ := startServer(f, nil)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 64<<10 {
			return
		}
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		go func() {
			conn.Write(in)
			conn.(*net.TCPConn).CloseWrite()
		}()
		r := bufio.NewReader(conn)
		first := true
		for {
			line, err := r.ReadString('\n')
			if err == io.EOF || (err != nil && strings.Contains(err.Error(), "reset")) {
				break
			}
			if err != nil {
				t.Fatalf("reading replies: %v", err)
			}
			if first && !strings.HasPrefix(line, "220 ") {
				t.Fatalf("no greeting: %q", line)
			}
			first = false
			if !replyLine.MatchString(line) {
				t.Fatalf("malformed reply line %q", line)
			}
		}
		// The server still serves a fresh client.
		c2, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		c2.SetDeadline(time.Now().Add(5 * time.Second))
		if l, err := bufio.NewReader(c2).ReadString('\n'); err != nil || !strings.HasPrefix(l, "220 ") {
			t.Fatalf("server stopped serving: %q %v", l, err)
		}
	})
}

// blockAll is a Detector that blocks every source.
type blockAll struct{}

func (blockAll) Observe(detect.Observation) bool { return true }
func (blockAll) Blocked(netip.Addr) bool         { return true }
func (blockAll) BlockGeneration() uint64         { return 1 }
func (blockAll) Refused(netip.Addr)              {}

// BenchmarkRefuseBlocked measures how fast a blocked source is refused at
// connect (connect, read the 421, see the close), the target being
// 20,000 connections per second (DESIGN.md).
func BenchmarkRefuseBlocked(b *testing.B) {
	m := metrics.New()
	srv := New(Options{Detector: blockAll{}, Metrics: m}, &Settings{
		Hostname: "mx.test",
		Limits:   config.Limits{MaxConnections: 10000, MaxConnectionsPerSource: 10000, MaxMessageSize: 1 << 20, MaxRecipients: 10},
		Timeouts: config.Timeouts{Greeting: time.Second, Command: time.Second, Data: time.Second},
		Chain:    testChain(b, checks.Deps{Blocker: blockAll{}, Metrics: m}),
	})
	ln, err := Listen(context.Background(), "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	addr := ln.Addr().String()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, 128)
		for pb.Next() {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Error(err)
				return
			}
			n, _ := io.ReadAtLeast(c, buf, 4)
			if string(buf[:4]) != "421 " {
				b.Errorf("got %q", buf[:n])
			}
			c.Close()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "conn/s")
}

// TestDownstream421IsDeferral: a downstream closing the channel with 421 is
// no verdict on the recipient; the client gets 451 4.4.1 and its session
// stays open.
func TestDownstream421IsDeferral(t *testing.T) {
	down := testutil.ScriptedSMTP(t, testutil.Script{"RCPT": "421 4.3.2 shutting down"}).Addr()
	addr, _ := startServerTo(t, down, nil)
	c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.0.4"})
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<a@remote.test>", 250)
	if text := c.Cmd("RCPT TO:<alice@example.test>", 451); !strings.HasPrefix(text, "4.4.1 ") {
		t.Errorf("want 451 4.4.1, got 451 %s", text)
	}
	c.Cmd("RSET", 250)
	c.Cmd("NOOP", 250)
}

// TestBDATResetRace: with CHUNKING, go-smtp runs Data on its own goroutine;
// an RSET between chunks must not race with it (run with -race), and the
// session goes on to a clean transaction.
func TestBDATResetRace(t *testing.T) {
	addr, _ := startServer(t, nil)
	for i := 0; i < 20; i++ {
		c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.0.5"})
		c.Expect(220)
		c.Cmd("EHLO chunky.test", 250)
		c.Cmd("MAIL FROM:<a@remote.test>", 250)
		c.Cmd("RCPT TO:<alice@example.test>", 250)
		c.Send("BDAT 10\r\n0123456789")
		c.Expect(250)
		c.Cmd("RSET", 250)
		c.Cmd("MAIL FROM:<a@remote.test>", 250)
		c.Cmd("RCPT TO:<alice@example.test>", 250)
		c.Data("Subject: after BDAT\r\n\r\nok\r\n", 250)
		c.Cmd("QUIT", 221)
	}
}

// TestLongLines: message lines beyond RFC 5321's 1000 octets are common in
// real mail and pass; a line beyond 64 KiB is refused permanently.
func TestLongLines(t *testing.T) {
	addr, _ := startServer(t, nil)
	c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.0.6"})
	c.Expect(220)
	c.Cmd("EHLO long.test", 250)
	c.Cmd("MAIL FROM:<a@remote.test>", 250)
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Data("Subject: newsletter\r\n\r\n<html>"+strings.Repeat("x", 10000)+"</html>\r\n", 250)
	c.Cmd("MAIL FROM:<a@remote.test>", 250)
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	if text := c.Data("Subject: absurd\r\n\r\n"+strings.Repeat("y", 70000)+"\r\n", 554); !strings.HasPrefix(text, "5.6.0 ") {
		t.Errorf("70 KB line: want 554 5.6.0, got 554 %s", text)
	}
}

// testChain builds the chain for domain example.test (d.Config, when nil).
func testChain(tb testing.TB, d checks.Deps) *pipeline.Chain {
	tb.Helper()
	if d.Config == nil {
		d.Config = &config.Config{Domains: []string{"example.test"}}
	}
	c, err := checks.Build(d)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}
