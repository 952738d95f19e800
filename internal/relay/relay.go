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
// Which server a transaction goes to is not decided here: a Router (the
// delivery manager, internal/delivery) lists the servers to try and hears
// how each connection went. See README.md.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emersion/go-smtp"

	"mxguard/internal/address"
	"mxguard/internal/metrics"
)

// Router is what a transaction needs of the delivery manager: the servers
// to try, in order, and the outcome of each connection. Succeeded and
// Failed are not called for an attempt that ended because ctx did, nor for
// a local resource shortage (ErrLocal): neither says anything about the
// server.
type Router interface {
	// Route returns the addresses of the servers to try, in order; the
	// caller does not modify it. Empty: every server is down.
	Route() []string
	// Succeeded reports a new connection that greeted and answered EHLO.
	Succeeded(ctx context.Context, addr string)
	// Failed reports a server that could not be reached, or whose
	// connection broke or broke the protocol.
	Failed(ctx context.Context, addr string, err error)
}

// TLSMode is the STARTTLS policy towards the downstream servers
// (delivery.tls).
type TLSMode int

const (
	// TLSMay uses STARTTLS when the server offers it (the default).
	TLSMay TLSMode = iota
	// TLSNone never uses STARTTLS.
	TLSNone
	// TLSRequire sends no mail to a server without STARTTLS: it fails
	// with ErrNoTLS (a deferral for the client).
	TLSRequire
)

// ParseTLSMode reads delivery.tls: none, may or require.
func ParseTLSMode(s string) (TLSMode, error) {
	switch s {
	case "", "may":
		return TLSMay, nil
	case "none":
		return TLSNone, nil
	case "require":
		return TLSRequire, nil
	}
	return 0, fmt.Errorf("unknown delivery.tls %q (none, may or require)", s)
}

func (m TLSMode) String() string {
	switch m {
	case TLSNone:
		return "none"
	case TLSRequire:
		return "require"
	}
	return "may"
}

// Options configures a Relay.
type Options struct {
	Hostname string // EHLO name; default "localhost"
	// Dial opens a TCP connection; nil uses a net.Dialer with DialTimeout.
	Dial        func(ctx context.Context, network, addr string) (net.Conn, error)
	DialTimeout time.Duration // default 10s
	// CommandTimeout bounds each command round trip (RFC 5321 §4.5.3.2
	// suggests 5 minutes; a LAN downstream answers much faster), default
	// 2m. DataTimeout bounds DATA up to the reply to the final dot,
	// default 5m; see FinalReplyTimeout for why it must stay clearly
	// below the sending client's own timeout.
	CommandTimeout time.Duration
	DataTimeout    time.Duration
	MaxIdle        int           // idle connections kept per server, default 64
	IdleTimeout    time.Duration // idle connections older than this are closed, default 30s
	TLS            TLSMode       // STARTTLS to the servers (delivery.tls)
	Logger         *slog.Logger
	Metrics        *metrics.Metrics // mxguard_relay_local_errors_total; may be nil
}

// FinalReplyTimeout derives the wait for the downstream's reply to the
// final dot from clientData, the DATA timeout of our own clients
// (timeouts.data): half of it, and never more than 5 minutes.
//
// RFC 5321 §4.5.3.2.6 has a sending client wait 10 minutes for the reply
// to its dot; mxguard answers it only after the downstream answered us.
// If we waited as long as the sender does, a slow downstream would make
// the sender give up first and retry, while the downstream accepts the
// first copy a moment later: the message is delivered twice. Half the
// client's time leaves the other half for the content checks and for
// mxguard's own reply to arrive first.
func FinalReplyTimeout(clientData time.Duration) time.Duration {
	return min(clientData/2, 5*time.Minute)
}

// Relay hands transactions to downstream servers and keeps their
// connections.
type Relay struct {
	o           Options
	dials       func(ctx context.Context, network, addr string) (net.Conn, error)
	dataTimeout atomic.Int64 // Options.DataTimeout, changed by SetDataTimeout

	mu sync.Mutex
	// pools holds the idle connections per server address. CloseIdle
	// replaces a server's pool, so a connection dialed before never
	// rejoins it.
	pools map[string]*pool
}

type pool struct {
	addr string
	idle []*pooled
}

type pooled struct {
	c      *client
	pool   *pool // the pool it was dialed for
	idleAt time.Time
}

// ErrUnavailable means no downstream server could be reached.
var ErrUnavailable = errors.New("relay: no downstream server available")

// ErrLocal means a downstream connection failed for want of a local
// resource (file descriptors, ephemeral ports, buffers): a problem of
// this host, not of the server, which therefore counts no failure. The
// front end answers 451 4.3.0.
var ErrLocal = errors.New("relay: local resource shortage")

// localErrnos are the errors of connect(2) and socket(2) that describe
// this host, with their metric label.
var localErrnos = []struct {
	errno syscall.Errno
	name  string
}{
	{syscall.EMFILE, "EMFILE"},               // process out of file descriptors
	{syscall.ENFILE, "ENFILE"},               // system out of file descriptors
	{syscall.EADDRNOTAVAIL, "EADDRNOTAVAIL"}, // out of ephemeral ports
	{syscall.ENOBUFS, "ENOBUFS"},             // out of socket buffers
}

// New returns a Relay.
func New(o Options) *Relay {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.CommandTimeout <= 0 {
		o.CommandTimeout = 2 * time.Minute
	}
	if o.DataTimeout <= 0 {
		o.DataTimeout = FinalReplyTimeout(10 * time.Minute)
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
	if o.Hostname == "" {
		o.Hostname = "localhost"
	}
	r := &Relay{o: o, dials: o.Dial, pools: make(map[string]*pool)}
	r.dataTimeout.Store(int64(o.DataTimeout))
	if r.dials == nil {
		d := &net.Dialer{Timeout: o.DialTimeout}
		r.dials = d.DialContext
	}
	if m := o.Metrics; m != nil {
		for _, e := range localErrnos {
			m.RelayLocalErrors.WithLabelValues(e.name)
		}
	}
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
//
// Every call takes the session's context: when it ends (the client hung
// up, mxguard is stopping) a blocked call returns at once, the connection
// is dropped, and no server failure is counted.
type Txn struct {
	r      *Relay
	rt     Router
	p      *pooled
	reused bool // p came from the pool: a failure may be staleness
	from   address.Mailbox
	opts   MailOptions
	mailed bool // the server accepted MAIL FROM
	done   bool
}

// Begin takes a downstream connection for a transaction from sender from,
// to the first server of rt's route that can be reached. When none can,
// the error wraps ErrUnavailable, or ErrLocal when this host is short of
// resources.
func (r *Relay) Begin(ctx context.Context, rt Router, from address.Mailbox, o MailOptions) (*Txn, error) {
	p, reused, err := r.get(ctx, rt)
	if err != nil {
		return nil, err
	}
	return &Txn{r: r, rt: rt, p: p, reused: reused, from: from, opts: o}, nil
}

// Server is the address of the downstream carrying this transaction.
func (t *Txn) Server() string { return t.p.pool.addr }

// Rcpt relays one recipient (with MAIL FROM, the first time). A downstream
// refusal of the recipient, or of the sender, is a *smtp.SMTPError; any
// other error means the connection broke or broke the protocol, and the
// transaction is lost (it wraps ErrUnavailable when no server could take
// it).
func (t *Txn) Rcpt(ctx context.Context, to address.Mailbox) error {
	if t.mailed {
		stop := t.p.c.watch(ctx)
		err := t.p.c.rcpt(to)
		t.p.c.unwatch(stop)
		if err != nil && !isReply(err) {
			return t.fail(ctx, "RCPT", err)
		}
		return err
	}
	for {
		stop := t.p.c.watch(ctx)
		mailErr, rcptErr := t.p.c.mailRcpt(t.from, t.opts, to)
		t.p.c.unwatch(stop)
		if mailErr == nil {
			t.mailed = true
			if rcptErr != nil && !isReply(rcptErr) {
				return t.fail(ctx, "RCPT", rcptErr)
			}
			return rcptErr
		}
		if se, ok := Verdict(mailErr); ok && !(t.reused && se.Code == 503) {
			// The server answered: the connection is healthy, the
			// verdict is about this sender. (A 503 "bad sequence" on
			// a reused connection says the connection was left in a
			// transaction: treat it as stale.)
			return fmt.Errorf("%w: %w", ErrSenderRefused, mailErr)
		}
		if cause := cancelled(ctx, t.p.c); !t.reused || cause != nil {
			err := t.fail(ctx, "MAIL", mailErr)
			if cause != nil {
				return err
			}
			return fmt.Errorf("%w: %s: %v", ErrUnavailable, t.p.pool.addr, err)
		}
		// A pooled connection may have been closed by the server while
		// idle (every one of them, if it restarted): not the sender's
		// fault, nor the server's; retry on the next one, then a fresh
		// one.
		t.p.c.close()
		p, reused, err := t.r.get(ctx, t.rt)
		if err != nil {
			t.done = true
			return err
		}
		t.p, t.reused = p, reused
	}
}

// ErrSenderRefused wraps the downstream's refusal of MAIL FROM, which
// Rcpt returns because MAIL goes out with the first RCPT: it is a verdict
// on the sender, not on the recipient (the recipients directory must not
// learn from it). The *smtp.SMTPError is still in the chain.
var ErrSenderRefused = errors.New("downstream refused the sender")

// Verdict returns the downstream's verdict carried by err, telling it
// from a broken connection. 421 is the server closing the channel (RFC
// 5321 §3.8), not a verdict: passed through, a client would take it as
// ours and the lost transaction would look refused rather than deferred.
func Verdict(err error) (*smtp.SMTPError, bool) {
	se, ok := asReply(err)
	return se, ok && se.Code != 421
}

func isReply(err error) bool {
	_, ok := Verdict(err)
	return ok
}

// Data sends the message, header first (typically our Received line),
// then body streamed to its end, and returns the downstream's final reply
// text. The transaction is over afterwards, whatever the outcome. An error
// reading body wraps ErrBody and that error (the downstream got no final
// dot; the connection is dropped and not counted against the server).
func (t *Txn) Data(ctx context.Context, header []byte, body io.Reader) (string, error) {
	text, err := t.p.c.data(ctx, time.Duration(t.r.dataTimeout.Load()), header, body)
	if errors.Is(err, ErrBody) {
		t.done = true
		return "", err
	}
	if err != nil {
		return "", t.end(ctx, "DATA", err)
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
	if err := t.p.c.reset(); err != nil {
		t.fail(context.Background(), "RSET", err)
		return
	}
	t.done = true
	t.r.put(t.p)
}

// end closes the transaction after a failed DATA step: a downstream reply
// leaves the connection usable, anything else broke it.
func (t *Txn) end(ctx context.Context, stage string, err error) error {
	if isReply(err) {
		t.finish()
		return err
	}
	return t.fail(ctx, stage, err)
}

// finish returns a connection whose transaction completed to the pool.
func (t *Txn) finish() {
	if t.done {
		return
	}
	t.done = true
	t.r.put(t.p)
}

// fail drops a connection that broke mid-transaction and returns the
// error to report. The break counts as a failure of the server, unless
// the session's context ended it.
func (t *Txn) fail(ctx context.Context, stage string, err error) error {
	err = fmt.Errorf("%s: %w", stage, err)
	if t.done {
		return err
	}
	t.done = true
	t.p.c.close()
	if cause := cancelled(ctx, t.p.c); cause != nil {
		return fmt.Errorf("%w (%v)", cause, err)
	}
	t.rt.Failed(ctx, t.p.pool.addr, err)
	return err
}

// cancelled returns why a call on c was cut short by a context, or nil:
// ctx is done, or an earlier call's context closed c.
func cancelled(ctx context.Context, c *client) error {
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if c.interrupted.Load() {
		return context.Canceled
	}
	return nil
}

// get returns a connection to the first server of rt's route that can be
// reached: its idle connection, or a new one. Servers are taken strictly
// in order (an idle connection to a failover is not preferred over
// dialing a primary), so traffic returns to the primary as soon as it is
// back up.
func (r *Relay) get(ctx context.Context, rt Router) (*pooled, bool, error) {
	now := time.Now()
	var errs []error
	for _, addr := range rt.Route() {
		if p := r.popIdle(addr, now); p != nil {
			return p, true, nil
		}
		p, err := r.dial(ctx, addr)
		if err == nil {
			rt.Succeeded(ctx, addr)
			return p, false, nil
		}
		if ctx.Err() != nil {
			// The client went away during the dial: that says
			// nothing about the server.
			return nil, false, fmt.Errorf("%w: %w (%v)", ErrUnavailable, context.Cause(ctx), err)
		}
		if errors.Is(err, ErrLocal) {
			// Another server would fail the same way; the client
			// gets a local temporary failure.
			return nil, false, err
		}
		errs = append(errs, err)
		r.o.Logger.Warn("downstream unavailable", "server", addr, "err", err)
		rt.Failed(ctx, addr, err)
	}
	if len(errs) == 0 {
		// Fail fast: the health checks bring servers back.
		return nil, false, errAllDown
	}
	return nil, false, fmt.Errorf("%w: %v", ErrUnavailable, errors.Join(errs...))
}

// errAllDown is returned without dialing while every server is down.
var errAllDown = fmt.Errorf("%w: every delivery server is down", ErrUnavailable)

// popIdle returns an idle connection to addr that is not too old,
// closing the stale ones it passes.
func (r *Relay) popIdle(addr string, now time.Time) *pooled {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.pools[addr]
	if s == nil {
		return nil
	}
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

// dial opens a new session with addr for traffic.
func (r *Relay) dial(ctx context.Context, addr string) (*pooled, error) {
	r.mu.Lock()
	s := r.pools[addr]
	if s == nil {
		s = &pool{addr: addr}
		r.pools[addr] = s
	}
	r.mu.Unlock()
	c, err := r.connect(ctx, addr, r.o.CommandTimeout, r.o.TLS)
	if err != nil {
		return nil, err
	}
	return &pooled{c: c, pool: s}, nil
}

// connect dials addr and opens an SMTP session: greeting, EHLO, STARTTLS
// as tls says.
func (r *Relay) connect(ctx context.Context, addr string, cmdTimeout time.Duration, tls TLSMode) (*client, error) {
	dctx, cancel := context.WithTimeout(ctx, r.o.DialTimeout)
	conn, err := r.dials(dctx, "tcp", addr)
	cancel()
	if err != nil {
		if name, ok := localErrno(err); ok {
			r.o.Logger.Error("cannot connect to a delivery server: local resource shortage", "server", addr, "errno", name, "err", err)
			if m := r.o.Metrics; m != nil {
				m.RelayLocalErrors.WithLabelValues(name).Inc()
			}
			return nil, fmt.Errorf("%w: %w", ErrLocal, err)
		}
		return nil, err
	}
	host, _, _ := net.SplitHostPort(addr)
	c, err := newClient(ctx, conn, clientConfig{hostname: r.o.Hostname, cmdTimeout: cmdTimeout, tls: tls, serverName: host})
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	return c, nil
}

// localErrno reports whether err is one of localErrnos, and which.
func localErrno(err error) (string, bool) {
	for _, e := range localErrnos {
		if errors.Is(err, e.errno) {
			return e.name, true
		}
	}
	return "", false
}

// Probe is one health check of addr: connect, read the greeting, EHLO,
// STARTTLS when delivery.tls is require (a server that stops offering it
// goes down with that reason), QUIT, all within timeout. A 4xx or 5xx
// greeting or EHLO reply fails it like a refused connection (RFC 5321
// §3.1: a 554 greeting means no service here). A local resource shortage
// is ErrLocal and says nothing about the server.
func (r *Relay) Probe(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tls := TLSNone
	if r.o.TLS == TLSRequire {
		tls = TLSRequire
	}
	c, err := r.connect(ctx, addr, timeout, tls)
	if err != nil {
		return r.probeError(ctx, timeout, err)
	}
	defer c.close()
	stop := c.watch(ctx)
	defer c.unwatch(stop)
	if _, err := c.cmd(221, "QUIT"); err != nil {
		return r.probeError(ctx, timeout, &stageError{"QUIT", err})
	}
	return nil
}

// probeError says which step of a check got no answer in time:
// "use of closed network connection" or "i/o timeout" (whichever of the
// two bounds fired first) would tell the operator less.
func (r *Relay) probeError(ctx context.Context, timeout time.Duration, err error) error {
	var se *stageError
	if (ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded)) && errors.As(err, &se) {
		return fmt.Errorf("%s: no answer within %v", se.stage, timeout)
	}
	return err
}

// put keeps a connection for the next transaction, unless its server went
// down or away meanwhile (CloseIdle), it is in an unknown state, or the
// pool is full.
func (r *Relay) put(p *pooled) {
	p.idleAt = time.Now()
	c := p.c
	// Unread bytes after the final reply are garbage or a reply nobody
	// asked for: not a connection to reuse.
	ok := !c.broken && !c.interrupted.Load() && c.r.Buffered() == 0
	r.mu.Lock()
	if s := p.pool; ok && r.pools[s.addr] == s && len(s.idle) < r.o.MaxIdle {
		s.idle = append(s.idle, p)
		p = nil
	}
	r.mu.Unlock()
	if p != nil {
		p.c.quit()
	}
}

// CloseIdle closes the idle connections to addr, and keeps connections in
// use now from returning to the pool: its server went down (they are as
// dead as it is, or soon will be) or was removed.
func (r *Relay) CloseIdle(addr string) {
	r.mu.Lock()
	s := r.pools[addr]
	delete(r.pools, addr)
	r.mu.Unlock()
	if s != nil {
		for _, p := range s.idle {
			p.c.close()
		}
	}
}

// SetDataTimeout changes DataTimeout for the transactions that reach DATA
// from now on (a reload of timeouts.data).
func (r *Relay) SetDataTimeout(d time.Duration) {
	if d > 0 {
		r.dataTimeout.Store(int64(d))
	}
}

// Close quits every idle connection.
func (r *Relay) Close() error {
	r.mu.Lock()
	var idle []*pooled
	for _, s := range r.pools {
		idle = append(idle, s.idle...)
		s.idle = nil
	}
	r.mu.Unlock()
	for _, p := range idle {
		p.c.quit()
	}
	return nil
}
