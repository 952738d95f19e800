package smtpd

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/relay"
	"mxguard/internal/testutil"
)

// TestDownstreamProtocolErrors: whatever a broken downstream answers at
// any stage, the client hears 451 4.4.1, never a 2xx or 3xx the
// downstream sent where it does not belong. The DATA case is the one
// that once answered 250 for a message that was never sent on.
func TestDownstreamProtocolErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script testutil.Script
		atData bool // the client hears it at the end of DATA, not at RCPT
	}{
		{"greeting 250", testutil.Script{"greeting": "250 hello"}, false},
		{"EHLO 354", testutil.Script{"EHLO": "354 go"}, false},
		{"MAIL 354", testutil.Script{"MAIL": "354 go"}, false},
		{"RCPT 354", testutil.Script{"RCPT": "354 go"}, false},
		{"RCPT closed", testutil.Script{"RCPT": testutil.Hangup}, false},
		{"RCPT then an unasked 250", testutil.Script{"RCPT": "250 2.1.5 Ok\n250 2.0.0 Ok: queued"}, true},
		{"DATA 250", testutil.Script{"DATA": "250 2.0.0 Ok"}, true},
		{"final 354", testutil.Script{".": "354 more"}, true},
		{"final garbled", testutil.Script{".": "2.0.0 Ok queued"}, true},
		{"closed before the final reply", testutil.Script{".": testutil.Hangup}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			down := testutil.ScriptedSMTP(t, tc.script)
			ts := startTestServer(t, serverOpts{downstream: down.Addr(), downAfter: 1})
			c := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: "127.0.0.7"})
			c.Expect(220)
			c.Cmd("EHLO client.test", 250)
			c.Cmd("MAIL FROM:<a@remote.test>", 250)
			var text string
			if tc.atData {
				c.Cmd("RCPT TO:<alice@example.test>", 250)
				text = c.Data("Subject: x\r\n\r\nx\r\n", 451)
			} else {
				text = c.Cmd("RCPT TO:<alice@example.test>", 451)
			}
			if !strings.HasPrefix(text, "4.4.1 ") {
				t.Errorf("want 451 4.4.1, got 451 %s", text)
			}
			if st := ts.dm.Servers()[0]; st.State != "down" {
				t.Errorf("the broken downstream was not counted as failing: %+v", st)
			}
			if tc.name == "DATA 250" && slices.Contains(down.Lines(), "Subject: x") {
				t.Errorf("the message was sent after a 250 to DATA: %q", down.Lines())
			}
		})
	}
}

// TestDownstreamLocalError: out of file descriptors (or ports) here, the
// client gets 451 4.3.0 — our problem, not the servers', which stay up.
func TestDownstreamLocalError(t *testing.T) {
	dial := func(context.Context, string, string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", syscall.EMFILE)}
	}
	ts := startTestServer(t, serverOpts{downstream: "127.0.0.1:1", relay: relay.Options{Dial: dial}, downAfter: 1})
	c := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: "127.0.0.8"})
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<a@remote.test>", 250)
	for range 2 {
		if text := c.Cmd("RCPT TO:<alice@example.test>", 451); !strings.HasPrefix(text, "4.3.0 ") {
			t.Errorf("want 451 4.3.0, got 451 %s", text)
		}
	}
	if st := ts.dm.Servers()[0]; st.State != "up" {
		t.Errorf("server blamed for a local error: %+v", st)
	}
	if n := promtest.ToFloat64(ts.m.RelayLocalErrors.WithLabelValues("EMFILE")); n != 2 {
		t.Errorf("mxguard_relay_local_errors_total{errno=EMFILE} = %v, want 2", n)
	}
}

// stalledRcpt starts a server whose downstream never answers RCPT, and a
// client from ip whose RCPT is now waiting for it.
func stalledRcpt(t *testing.T, ip string) (*testServer, *testutil.FakeServer, *testutil.SMTPClient) {
	t.Helper()
	down := testutil.ScriptedSMTP(t, testutil.Script{"RCPT": testutil.Silence})
	ts := startTestServer(t, serverOpts{downstream: down.Addr(), downAfter: 1})
	c := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: ip})
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<a@remote.test>", 250)
	c.Send("RCPT TO:<alice@example.test>\r\n")
	down.WaitLine(t, "RCPT TO:<alice@example.test>", 10*time.Second)
	return ts, down, c
}

// TestClientHangupCancelsDownstream: a client that hangs up while the
// downstream stalls on its RCPT takes the downstream call with it: the
// downstream connection is closed at once (not after the 2-minute
// command timeout), and the server is not blamed. Closing the server
// does the same.
func TestClientHangupCancelsDownstream(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(*testServer, *testutil.SMTPClient)
	}{
		{"client hangs up", func(_ *testServer, c *testutil.SMTPClient) { c.Close() }},
		{"server closes", func(ts *testServer, _ *testutil.SMTPClient) { ts.srv.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, down, c := stalledRcpt(t, "127.0.0.9")
			tc.end(ts, c)
			down.WaitHangups(t, 1, 10*time.Second)
			if st := ts.dm.Servers()[0]; st.State != "up" || st.LastError != "" {
				t.Errorf("server blamed: %+v", st)
			}
		})
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

// What a pipelining client sends while the session waits is kept, in
// order, for the session's next reads; its hangup cancels the context and
// shows after that input.
func TestWatchHangupKeepsInput(t *testing.T) {
	raw, client := tcpPair(t)
	c := &conn{Conn: raw}
	c.ctx, c.cancel = context.WithCancel(t.Context())
	c.watchHangupAfter(0)
	client.Write([]byte("RCPT TO:<bob@example.test>\r\nDATA\r\n"))
	client.Close()
	select {
	case <-c.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the hangup did not cancel the connection's context")
	}
	c.unwatchHangup()
	got, err := io.ReadAll(readFunc(c.readAhead))
	if string(got) != "RCPT TO:<bob@example.test>\r\nDATA\r\n" || err != nil {
		t.Errorf("read after the watch: %q, %v", got, err)
	}
}

// Stopping the watch is quiet: no cancellation, and the connection reads
// on as before.
func TestWatchHangupStops(t *testing.T) {
	raw, client := tcpPair(t)
	c := &conn{Conn: raw}
	c.ctx, c.cancel = context.WithCancel(t.Context())
	for range 3 {
		c.watchHangupAfter(0)
		c.unwatchHangup()
	}
	if c.ctx.Err() != nil {
		t.Fatal("stopping the watch cancelled the context")
	}
	// Already sent: a read with no deadline returns it at once, one with
	// a deadline in the past fails.
	client.Write([]byte("QUIT\r\n"))
	buf := make([]byte, 16)
	n, err := c.readAhead(buf)
	if string(buf[:n]) != "QUIT\r\n" || err != nil {
		t.Errorf("read after the watch: %q, %v", buf[:n], err)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Error("the watch left a deadline in the past")
	}
}
