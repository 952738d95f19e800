// Package relay is the pass-through SMTP client: for each transaction the
// gateway relays MAIL, RCPT and DATA to a downstream server in the same
// session, so the downstream's verdict (a 550 5.1.1 for an unknown user, a
// 250 after it took the message) reaches the original client at once.
//
// Connections to a downstream are pooled: after a completed DATA the SMTP
// session is back in its initial state (RFC 5321 §4.1.4) and is reused for
// the next transaction, which saves a TCP handshake, a greeting and an EHLO
// per message.
package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Options configures a Relay.
type Options struct {
	// Servers are tried in order; the first that accepts a connection and
	// greets is used for the transaction.
	Servers  []string
	Hostname string // EHLO name
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
}

// Relay hands transactions to downstream servers.
type Relay struct {
	o     Options
	mu    sync.Mutex
	idle  map[string][]*pooled
	dials func(ctx context.Context, network, addr string) (net.Conn, error)
}

type pooled struct {
	c      *smtp.Client
	addr   string
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
	r := &Relay{o: o, idle: make(map[string][]*pooled)}
	r.dials = o.Dial
	if r.dials == nil {
		d := &net.Dialer{Timeout: o.DialTimeout}
		r.dials = d.DialContext
	}
	return r
}

// MailOptions are the MAIL FROM parameters passed on.
type MailOptions struct {
	Size     int64
	EightBit bool
	UTF8     bool
}

// Txn is one mail transaction on one downstream connection.
type Txn struct {
	r    *Relay
	p    *pooled
	done bool
}

// Begin opens (or reuses) a downstream connection and sends MAIL FROM. A
// downstream refusal of the sender is returned as *smtp.SMTPError; when no
// server is reachable the error wraps ErrUnavailable.
func (r *Relay) Begin(ctx context.Context, from string, o MailOptions) (*Txn, error) {
	mo := &smtp.MailOptions{Size: o.Size, UTF8: o.UTF8}
	if o.EightBit {
		mo.Body = smtp.Body8BitMIME
	}
	// A pooled connection may have been closed by the server while idle;
	// such a failure is not the sender's fault, so retry on a fresh one.
	for attempt := 0; ; attempt++ {
		p, reused, err := r.get(ctx)
		if err != nil {
			return nil, err
		}
		err = p.c.Mail(from, mo)
		if err == nil {
			return &Txn{r: r, p: p}, nil
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			// The server answered: the connection is healthy, the
			// verdict is about this sender.
			r.put(p)
			return nil, se
		}
		p.c.Close()
		if !reused || attempt > 0 {
			return nil, fmt.Errorf("%w: MAIL to %s: %v", ErrUnavailable, p.addr, err)
		}
	}
}

// Server is the address of the downstream carrying this transaction.
func (t *Txn) Server() string { return t.p.addr }

// Rcpt relays one recipient. A downstream refusal is a *smtp.SMTPError; any
// other error means the connection broke and the transaction is lost.
func (t *Txn) Rcpt(ctx context.Context, to string) error {
	err := t.p.c.Rcpt(to, nil)
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		t.fail()
	}
	return err
}

// Data sends the message (header is written first, typically our Received
// line) and returns the downstream's final reply text. The transaction is
// over afterwards, whatever the outcome.
func (t *Txn) Data(ctx context.Context, header, body []byte) (string, error) {
	w, err := t.p.c.Data()
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			t.finish()
		} else {
			t.fail()
		}
		return "", err
	}
	t.p.c.SubmissionTimeout = t.r.o.DataTimeout
	if err := writeAll(w, header, body); err != nil {
		t.fail()
		return "", err
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			t.finish()
		} else {
			t.fail()
		}
		return "", err
	}
	t.finish()
	return resp.StatusText, nil
}

func writeAll(w io.Writer, parts ...[]byte) error {
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// Abort ends an unfinished transaction (client sent RSET, or left). The
// connection goes back to the pool after a successful RSET.
func (t *Txn) Abort() {
	if t == nil || t.done {
		return
	}
	t.done = true
	if err := t.p.c.Reset(); err != nil {
		t.p.c.Close()
		return
	}
	t.r.put(t.p)
}

// finish returns a connection whose transaction completed to the pool.
func (t *Txn) finish() {
	if t.done {
		return
	}
	t.done = true
	t.r.put(t.p)
}

// fail drops a connection that broke mid-transaction.
func (t *Txn) fail() {
	if t.done {
		return
	}
	t.done = true
	t.p.c.Close()
}

// get returns an idle connection or dials the servers in order.
func (r *Relay) get(ctx context.Context) (*pooled, bool, error) {
	now := time.Now()
	r.mu.Lock()
	servers := r.o.Servers
	for _, addr := range servers {
		list := r.idle[addr]
		for len(list) > 0 {
			p := list[len(list)-1]
			list = list[:len(list)-1]
			if now.Sub(p.idleAt) < r.o.IdleTimeout {
				r.idle[addr] = list
				r.mu.Unlock()
				return p, true, nil
			}
			go p.c.Close()
		}
		r.idle[addr] = list
	}
	r.mu.Unlock()

	var errs []error
	for _, addr := range servers {
		p, err := r.dial(ctx, addr)
		if err == nil {
			return p, false, nil
		}
		r.o.Logger.Warn("downstream unavailable", "server", addr, "err", err)
		errs = append(errs, err)
	}
	return nil, false, fmt.Errorf("%w: %v", ErrUnavailable, errors.Join(errs...))
}

func (r *Relay) dial(ctx context.Context, addr string) (*pooled, error) {
	dctx, cancel := context.WithTimeout(ctx, r.o.DialTimeout)
	defer cancel()
	conn, err := r.dials(dctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := smtp.NewClient(conn)
	c.CommandTimeout = r.o.CommandTimeout
	if err := c.Hello(r.o.Hostname); err != nil {
		c.Close()
		return nil, fmt.Errorf("greeting/EHLO from %s: %w", addr, err)
	}
	return &pooled{c: c, addr: addr}, nil
}

func (r *Relay) put(p *pooled) {
	p.idleAt = time.Now()
	r.mu.Lock()
	list := r.idle[p.addr]
	if len(list) < r.o.MaxIdle {
		r.idle[p.addr] = append(list, p)
		p = nil
	}
	r.mu.Unlock()
	if p != nil {
		p.c.Quit()
	}
}

// Close quits every idle connection.
func (r *Relay) Close() error {
	r.mu.Lock()
	idle := r.idle
	r.idle = make(map[string][]*pooled)
	r.mu.Unlock()
	for _, list := range idle {
		for _, p := range list {
			p.c.Quit()
		}
	}
	return nil
}

// SetServers replaces the server list (config reload).
func (r *Relay) SetServers(servers []string) {
	r.mu.Lock()
	r.o.Servers = append([]string(nil), servers...)
	r.mu.Unlock()
}
