// Package relay is the pass-through SMTP client: for each transaction the
// gateway relays MAIL, RCPT and DATA to a downstream server in the same
// session, so the downstream's verdict (a 550 5.1.1 for an unknown user, a
// 250 after it took the message) reaches the original client at once.
//
// Connections to a downstream are pooled: after a completed DATA the SMTP
// session is back in its initial state (RFC 5321 §4.1.4) and is reused for
// the next transaction, which saves a TCP handshake, a greeting and an EHLO
// per message.
//
// The delivery manager (health.go) keeps the state of every downstream
// server: active checks and the failures of real traffic mark a server
// down, Begin skips down servers, and the transitions raise the
// mail_server_down and org_down events. See README.md.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"mxguard/internal/address"
	"mxguard/internal/metrics"
)

// Server is one downstream server as configured.
type Server struct {
	Address string // host:port exactly as configured; also the source of its mail_server_down event
	Role    string // "primary" or "failover"
}

// Options configures a Relay.
type Options struct {
	// Servers are tried in order, primaries first, then failovers, each in
	// configured order; servers that are down are skipped.
	Servers  []Server
	Hostname string // EHLO name; also the source of the org_down event
	// Dial opens a TCP connection; nil uses a net.Dialer with DialTimeout.
	Dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	DialTimeout time.Duration // default 10s
	// CommandTimeout bounds each command round trip; DataTimeout the wait
	// for the reply after the final dot (RFC 5321 §4.5.3.2 suggests 5 and
	// 10 minutes; a LAN downstream answers much faster).
	CommandTimeout time.Duration // default 2m
	DataTimeout    time.Duration // default 10m
	MaxIdle        int           // idle connections kept per server, default 64
	IdleTimeout    time.Duration // idle connections older than this are closed, default 30s
	Logger         *slog.Logger

	// CheckInterval is the period of the active health checks run by Run
	// (delivery.check_interval), default 5s.
	CheckInterval time.Duration
	// CheckTimeout bounds one check from connect to QUIT, default 5s but
	// never more than CheckInterval, so rounds do not pile up.
	CheckTimeout time.Duration
	// DownAfter consecutive failures (checks or real traffic) mark a server
	// down (delivery.down_after), default 3.
	DownAfter int
	Clock     Clock            // stamps state changes; nil: wall clock
	Events    EventSink        // records mail_server_down and org_down; nil: none
	Metrics   *metrics.Metrics // mxguard_server_up; may be nil
	// OnOrgDown is called once when every server is down, with the time the
	// last one went down; OnOrgUp once when a server is up again after
	// that. They are called in order, one at a time, and must return
	// quickly without calling back into the Relay on the same goroutine.
	OnOrgDown func(since time.Time)
	OnOrgUp   func()
}

// Relay hands transactions to downstream servers.
type Relay struct {
	o      Options
	clock  Clock
	dials  func(ctx context.Context, network, addr string) (net.Conn, error)
	orgSrc string // source of the org_down event

	mu sync.Mutex
	// servers is replaced as a whole by SetServers and never modified in
	// place, so it can be iterated after the lock is released; the
	// *server values it points to are guarded by mu.
	servers []*server
	// retired are removed servers whose event is still open.
	retired  []*server
	orgDown  bool      // every server is down
	orgSince time.Time // when the last one went down
	// What sync has made the outside world see: the open org_down event
	// and whether OnOrgDown was called without OnOrgUp since.
	orgEvent    int64
	orgNotified bool

	// syncMu serialises sync, so events and callbacks happen one at a
	// time and in the order of the state changes.
	syncMu   sync.Mutex
	initOnce sync.Once
}

type pooled struct {
	c      *client
	s      *server
	idleAt time.Time
}

// ErrUnavailable means no downstream server could be reached.
var ErrUnavailable = errors.New("relay: no downstream server available")

// New returns a Relay.
func New(o Options) *Relay {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = 2 * time.Minute
	}
	if o.DataTimeout <= 0 {
		o.DataTimeout = 10 * time.Minute
	}
	if o.MaxIdle <= 0 {
		o.MaxIdle = 64
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	orgSrc := o.Hostname
	if o.Hostname == "" {
		o.Hostname, orgSrc = "localhost", OrgSourceDefault
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = 5 * time.Second
	}
	if o.CheckTimeout <= 0 {
		o.CheckTimeout = min(5*time.Second, o.CheckInterval)
	}
	if o.DownAfter <= 0 {
		o.DownAfter = 3
	}
	r := &Relay{o: o, clock: o.Clock, dials: o.Dial, orgSrc: orgSrc}
	if r.clock == nil {
		r.clock = systemClock{}
	}
	if r.dials == nil {
		d := &net.Dialer{Timeout: o.DialTimeout}
		r.dials = d.DialContext
	}
	r.mu.Lock()
	r.setServersLocked(o.Servers)
	r.mu.Unlock()
	return r
}

// MailOptions are the MAIL FROM parameters passed on.
type MailOptions struct {
	Size     int64
	EightBit bool
	UTF8     bool
}

// Txn is one mail transaction on one downstream connection. MAIL FROM is
// sent with the first RCPT TO (pipelined when the server allows), so a
// transaction costs the downstream one round trip less.
type Txn struct {
	r      *Relay
	p      *pooled
	reused bool // p came from the pool: a failure may be staleness
	from   address.Mailbox
	opts   MailOptions
	mailed bool // the server accepted MAIL FROM
	done   bool
}

// Begin takes a downstream connection for a transaction from sender from.
// When no server is reachable the error wraps ErrUnavailable.
func (r *Relay) Begin(ctx context.Context, from address.Mailbox, o MailOptions) (*Txn, error) {
	p, reused, err := r.get(ctx)
	if err != nil {
		return nil, err
	}
	return &Txn{r: r, p: p, reused: reused, from: from, opts: o}, nil
}

// Server is the address of the downstream carrying this transaction.
func (t *Txn) Server() string { return t.p.s.Address }

// Rcpt relays one recipient (with MAIL FROM, the first time). A downstream
// refusal of the recipient, or of the sender, is a *smtp.SMTPError; any
// other error means the connection broke and the transaction is lost (it
// wraps ErrUnavailable when no server could take it).
func (t *Txn) Rcpt(ctx context.Context, to address.Mailbox) error {
	if t.mailed {
		err := t.p.c.rcpt(to)
		if err != nil && !isReply(err) {
			t.fail(ctx, fmt.Errorf("RCPT: %w", err))
		}
		return err
	}
	for {
		mailErr, rcptErr := t.p.c.mailRcpt(t.from, t.opts, to)
		if mailErr == nil {
			t.mailed = true
			if rcptErr != nil && !isReply(rcptErr) {
				t.fail(ctx, fmt.Errorf("RCPT: %w", rcptErr))
			}
			return rcptErr
		}
		if isReply(mailErr) && !(t.reused && mailErr.(*smtp.SMTPError).Code == 503) {
			// The server answered: the connection is healthy, the
			// verdict is about this sender. (A 503 "bad sequence" on
			// a reused connection says the connection was left in a
			// transaction: treat it as stale.)
			return mailErr
		}
		t.p.c.close()
		if !t.reused {
			t.done = true
			t.r.failed(ctx, t.p.s, fmt.Errorf("MAIL: %w", mailErr))
			return fmt.Errorf("%w: MAIL to %s: %v", ErrUnavailable, t.p.s.Address, mailErr)
		}
		// A pooled connection may have been closed by the server while
		// idle (every one of them, if it restarted): not the sender's
		// fault, nor the server's; retry on the next one, then a fresh
		// one.
		p, reused, err := t.r.get(ctx)
		if err != nil {
			t.done = true
			return err
		}
		t.p, t.reused = p, reused
	}
}

// isReply tells a downstream verdict from a broken connection. 421 is the
// server closing the channel (RFC 5321 §3.8), not a verdict.
func isReply(err error) bool {
	se, ok := err.(*smtp.SMTPError)
	return ok && se.Code != 421
}

// Data sends the message (header is written first, typically our Received
// line) and returns the downstream's final reply text. The transaction is
// over afterwards, whatever the outcome.
func (t *Txn) Data(ctx context.Context, header, body []byte) (string, error) {
	text, err := t.p.c.data(t.r.o.DataTimeout, header, body)
	if err != nil {
		t.end(ctx, "DATA", err)
		return "", err
	}
	t.finish()
	return text, nil
}

// Abort ends an unfinished transaction (client sent RSET, or left). The
// connection goes back to the pool after a successful RSET; one that never
// sent MAIL needs none.
func (t *Txn) Abort() {
	if t == nil || t.done {
		return
	}
	if !t.mailed {
		t.finish()
		return
	}
	t.done = true
	if err := t.p.c.reset(); err != nil {
		t.p.c.close()
		t.r.failed(context.Background(), t.p.s, fmt.Errorf("RSET: %w", err))
		return
	}
	t.r.put(t.p)
}

// end closes the transaction after a failed DATA step: a downstream reply
// leaves the connection usable, anything else broke it.
func (t *Txn) end(ctx context.Context, stage string, err error) {
	if isReply(err) {
		t.finish()
	} else {
		t.fail(ctx, fmt.Errorf("%s: %w", stage, err))
	}
}

// finish returns a connection whose transaction completed to the pool.
func (t *Txn) finish() {
	if t.done {
		return
	}
	t.done = true
	t.r.put(t.p)
}

// fail drops a connection that broke mid-transaction; the break counts
// as a failure of the server.
func (t *Txn) fail(ctx context.Context, err error) {
	if t.done {
		return
	}
	t.done = true
	t.p.c.close()
	t.r.failed(ctx, t.p.s, err)
}

// get returns a connection to the first server that is up and can be
// reached: its idle connection, or a new one. Servers are taken strictly in
// order (an idle connection to a failover is not preferred over dialing a
// primary), so traffic returns to the primary as soon as it is back up.
func (r *Relay) get(ctx context.Context) (*pooled, bool, error) {
	now := time.Now()
	r.mu.Lock()
	servers := r.servers
	r.mu.Unlock()
	var errs []error
	for _, s := range servers {
		r.mu.Lock()
		if !s.up || s.removed {
			r.mu.Unlock()
			continue
		}
		p := r.popIdleLocked(s, now)
		r.mu.Unlock()
		if p != nil {
			return p, true, nil
		}
		p, err := r.dial(ctx, s)
		if err == nil {
			r.succeeded(ctx, s)
			return p, false, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			// The client went away during the dial: that says
			// nothing about the server.
			break
		}
		r.o.Logger.Warn("downstream unavailable", "server", s.Address, "err", err)
		r.failed(ctx, s, err)
	}
	if len(errs) == 0 {
		// Fail fast: the health checks bring servers back.
		return nil, false, errAllDown
	}
	return nil, false, fmt.Errorf("%w: %v", ErrUnavailable, errors.Join(errs...))
}

// errAllDown is returned without dialing while every server is down.
var errAllDown = fmt.Errorf("%w: every delivery server is down", ErrUnavailable)

// popIdleLocked returns an idle connection of s that is not too old,
// closing the stale ones it passes.
func (r *Relay) popIdleLocked(s *server, now time.Time) *pooled {
	for len(s.idle) > 0 {
		p := s.idle[len(s.idle)-1]
		s.idle[len(s.idle)-1] = nil
		s.idle = s.idle[:len(s.idle)-1]
		if now.Sub(p.idleAt) < r.o.IdleTimeout {
			return p
		}
		go p.c.close()
	}
	return nil
}

func (r *Relay) dial(ctx context.Context, s *server) (*pooled, error) {
	dctx, cancel := context.WithTimeout(ctx, r.o.DialTimeout)
	defer cancel()
	conn, err := r.dials(dctx, "tcp", s.Address)
	if err != nil {
		return nil, err
	}
	c, err := newClient(conn, r.o.Hostname, r.o.CommandTimeout)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: %w", s.Address, err)
	}
	return &pooled{c: c, s: s}, nil
}

// put keeps a connection for the next transaction, unless its server went
// down or away meanwhile or the pool is full.
func (r *Relay) put(p *pooled) {
	p.idleAt = time.Now()
	r.mu.Lock()
	s := p.s
	if !p.c.broken && s.up && !s.removed && len(s.idle) < r.o.MaxIdle {
		s.idle = append(s.idle, p)
		p = nil
	}
	r.mu.Unlock()
	if p != nil {
		p.c.quit()
	}
}

// Close quits every idle connection. The health state and open events
// stay: an outage outlives a restart.
func (r *Relay) Close() error {
	r.mu.Lock()
	var idle []*pooled
	for _, s := range r.servers {
		idle = append(idle, s.idle...)
		s.idle = nil
	}
	r.mu.Unlock()
	for _, p := range idle {
		p.c.quit()
	}
	return nil
}

// SetServers replaces the server list (config reload). A server that
// stays keeps its state; a new one starts up; the open event of a removed
// one is ended.
func (r *Relay) SetServers(servers []Server) {
	r.mu.Lock()
	idle := r.setServersLocked(servers)
	r.mu.Unlock()
	closeAll(idle)
	r.sync(context.Background())
}
