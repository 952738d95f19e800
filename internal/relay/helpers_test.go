package relay_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"mxguard/internal/address"
	"mxguard/internal/relay"
)

// route is a fixed relay.Router that records what the relay reports, as
// "ok ADDR" and "failed ADDR: ERROR".
type route struct {
	addrs []string
	mu    sync.Mutex
	log   []string
}

var _ relay.Router = (*route)(nil)

func newRoute(addrs ...string) *route { return &route{addrs: addrs} }

func (r *route) Route() []string { return r.addrs }

func (r *route) Succeeded(_ context.Context, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, "ok "+addr)
}

func (r *route) Failed(_ context.Context, addr string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, "failed "+addr+": "+err.Error())
}

// failures returns the failures reported so far.
func (r *route) failures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var f []string
	for _, l := range r.log {
		if l[0] == 'f' {
			f = append(f, l)
		}
	}
	return f
}

// send relays one message through rt and returns the server that took it.
func send(t *testing.T, r *relay.Relay, rt relay.Router) (string, error) {
	t.Helper()
	server, _, err := transact(t, r, rt)
	return server, err
}

// transact relays one message through rt and returns the server that
// took it, or the stage that failed ("connect", "RCPT" or "DATA") and its
// error.
func transact(t *testing.T, r *relay.Relay, rt relay.Router) (server, stage string, err error) {
	t.Helper()
	ctx := t.Context()
	txn, err := r.Begin(ctx, rt, address.MustParse("sender@remote.test"), relay.MailOptions{})
	if err != nil {
		return "", "connect", err
	}
	if err := txn.Rcpt(ctx, address.MustParse("alice@example.test")); err != nil {
		txn.Abort()
		return "", "RCPT", err
	}
	if _, err := txn.Data(ctx, []byte("Received: test\r\n"), strings.NewReader("Subject: test\r\n\r\nHello.\r\n")); err != nil {
		return "", "DATA", err
	}
	return txn.Server(), "", nil
}
