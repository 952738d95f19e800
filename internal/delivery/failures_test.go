package delivery_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/address"
	"mxguard/internal/delivery"
	"mxguard/internal/relay"
	"mxguard/internal/testutil"
)

// A downstream that breaks the protocol is failing: with down_after 1, a
// 250 to DATA takes the server down with the reason in last_error and a
// mail_server_down event, and the message is not taken for delivered.
func TestProtocolErrorIsServerFailure(t *testing.T) {
	srv := testutil.ScriptedSMTP(t, testutil.Script{"DATA": "250 2.0.0 Ok"})
	h := newHarness(t, 1, delivery.Server{Address: srv.Addr(), Role: "primary"})
	if _, err := send(t, h.r); err == nil {
		t.Fatal("a message whose DATA got 250 was taken for delivered")
	}
	st := h.state(t, srv.Addr())
	if st.State != "down" || !strings.Contains(st.LastError, "250 where 354 was expected") {
		t.Errorf("after a protocol error: %+v", st)
	}
	wantLog(t, "events", h.sink.take(), "start mail_server_down "+srv.Addr(), "start org_down mx.example.test")
}

// localDialer fails every dial with errno, as connect(2) does when this
// host is out of file descriptors or ports.
func localDialer(errno syscall.Errno) func(context.Context, string, string) (net.Conn, error) {
	return func(context.Context, string, string) (net.Conn, error) {
		return nil, &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("socket", errno)}
	}
}

// A dial that fails for a local reason (EMFILE, ENFILE, EADDRNOTAVAIL,
// ENOBUFS) blames no server: real traffic gets ErrLocal (the client a
// 451 4.3.0), health checks count neither way, no event opens, and
// mxguard_relay_local_errors_total counts it.
func TestLocalResourceErrors(t *testing.T) {
	for _, tc := range []struct {
		errno syscall.Errno
		name  string
	}{{syscall.EMFILE, "EMFILE"}, {syscall.ENFILE, "ENFILE"}, {syscall.EADDRNOTAVAIL, "EADDRNOTAVAIL"}, {syscall.ENOBUFS, "ENOBUFS"}} {
		t.Run(tc.name, func(t *testing.T) {
			sink := startSink(t)
			h := newHarnessWith(t, relay.Options{Dial: localDialer(tc.errno)}, 1, delivery.Server{Address: sink.Addr(), Role: "primary"})
			for range 3 {
				if _, err := send(t, h.r); !errors.Is(err, relay.ErrLocal) || errors.Is(err, relay.ErrUnavailable) {
					t.Fatalf("send: %v, want ErrLocal", err)
				}
			}
			h.checks(t, 3)
			if st := h.state(t, sink.Addr()); st.State != "up" || st.LastError != "" {
				t.Errorf("server blamed for a local error: %+v", st)
			}
			wantLog(t, "events", h.sink.take())
			wantLog(t, "org callbacks", h.orgCalls())
			if n := promtest.ToFloat64(h.m.RelayLocalErrors.WithLabelValues(tc.name)); n != 6 {
				t.Errorf("mxguard_relay_local_errors_total{errno=%q} = %v, want 6 (3 sends, 3 checks)", tc.name, n)
			}
		})
	}
}

// A transaction whose session ends (the client hung up) while the
// downstream stalls on RCPT returns at once, its connection is closed,
// and the server is not blamed: with down_after 1 it stays up.
func TestCancelledTransactionIsNoFailure(t *testing.T) {
	srv := testutil.ScriptedSMTP(t, testutil.Script{"RCPT": testutil.Silence})
	h := newHarness(t, 1, delivery.Server{Address: srv.Addr(), Role: "primary"})
	ctx, cancel := context.WithCancel(t.Context())
	txn, err := h.r.Begin(ctx, address.MustParse("sender@remote.test"), relay.MailOptions{})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- txn.Rcpt(ctx, address.MustParse("alice@example.test")) }()
	// The RCPT reached the server and got no answer: now the client goes.
	srv.WaitLine(t, "RCPT TO:<alice@example.test>", 10*time.Second)
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("RCPT: %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("RCPT did not return after the cancellation")
	}
	srv.WaitHangups(t, 1, 10*time.Second)
	txn.Abort()
	if st := h.state(t, srv.Addr()); st.State != "up" || st.LastError != "" {
		t.Errorf("server blamed for a cancellation: %+v", st)
	}
	wantLog(t, "events", h.sink.take())
}

// With delivery.tls: require, the health checks make STARTTLS too: a
// server that does not offer it goes down, and last_error says why.
func TestRequireTLSCheck(t *testing.T) {
	srv := testutil.ScriptedSMTP(t, testutil.Script{})
	h := newHarnessWith(t, relay.Options{TLS: relay.TLSRequire}, 1, delivery.Server{Address: srv.Addr(), Role: "primary"})
	h.checks(t, 1)
	if st := h.state(t, srv.Addr()); st.State != "down" || !strings.Contains(st.LastError, "STARTTLS not offered, and delivery.tls is require") {
		t.Errorf("after a check of a server without STARTTLS: %+v", st)
	}
}
