// Package mailsink is a small in-process SMTP server that stands in for the
// downstream mail server: the demo embeds it as its primary and failover
// servers, and tests relay into it and inspect what arrived.
//
// It accepts mail for configured domains and mailboxes, answers unknown
// recipients the way a real final-destination MTA does (550 5.1.1 during
// RCPT, so a relay sees the rejection in the same session), and can simulate
// an outage with SetDown.
package mailsink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Options configures a Server. The zero value is a catch-all sink on a free
// loopback port.
type Options struct {
	// Addr is the listen address; default "127.0.0.1:0" (a free port).
	Addr string
	// Hostname is announced in the greeting; default "mailsink.localhost".
	Hostname string
	// Domains are the recipient domains served here. RCPT to any other
	// domain gets 554 5.7.1 (relay denied). When empty, the domains of
	// Mailboxes are served; when both are empty every recipient is accepted.
	Domains []string
	// Mailboxes are the full addresses that exist. RCPT to an address in a
	// served domain that is not listed gets 550 5.1.1. When empty, every
	// address of a served domain exists.
	Mailboxes []string
	// Logger receives one line per message and server errors; default discards.
	Logger *slog.Logger
	// MaxMessageBytes limits a message (SIZE is advertised with it); 0 = no limit.
	MaxMessageBytes int64
	// MaxStored bounds how many messages Messages keeps (the newest); 0 keeps
	// all. Count still counts every message. The demo runs for hours and
	// must not grow without bound.
	MaxStored int
	// Now stamps Message.Received; default time.Now.
	Now func() time.Time
}

// Message is one accepted message as it arrived.
type Message struct {
	From     string
	To       []string
	Data     []byte
	Received time.Time
}

// Server is a running sink. All methods are safe for concurrent use.
type Server struct {
	opts      Options
	log       *slog.Logger
	domains   map[string]bool // nil: every domain served
	mailboxes map[string]bool // nil: every address of a served domain exists

	mu      sync.Mutex
	addr    string // fixed after the first listen, so SetDown(false) reuses it
	srv     *smtp.Server
	ln      net.Listener
	serving chan struct{} // closed when the current Serve goroutine returned
	closed  bool
	count   int
	msgs    []Message
	arrived chan struct{} // closed and replaced on every message: a broadcast
	done    chan struct{} // closed by Close; ends the ctx watcher
}

// Start listens on o.Addr and serves until Close or ctx is done.
func Start(ctx context.Context, o Options) (*Server, error) {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Hostname == "" {
		o.Hostname = "mailsink.localhost"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	s := &Server{
		opts:    o,
		log:     o.Logger.With("component", "mailsink"),
		arrived: make(chan struct{}),
		done:    make(chan struct{}),
	}
	if len(o.Mailboxes) > 0 {
		s.mailboxes = make(map[string]bool, len(o.Mailboxes))
		for _, m := range o.Mailboxes {
			s.mailboxes[strings.ToLower(m)] = true
		}
	}
	switch {
	case len(o.Domains) > 0:
		s.domains = make(map[string]bool, len(o.Domains))
		for _, d := range o.Domains {
			s.domains[strings.ToLower(d)] = true
		}
	case s.mailboxes != nil:
		s.domains = make(map[string]bool)
		for m := range s.mailboxes {
			s.domains[domainOf(m)] = true
		}
	}

	s.mu.Lock()
	err := s.listenLocked(o.Addr)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Close()
		case <-s.done:
		}
	}()
	return s, nil
}

// listenLocked binds addr and starts a fresh smtp.Server on it. A new
// smtp.Server per up-period is what lets SetDown(true) drop every open
// session too: go-smtp only closes its connections in Server.Close.
func (s *Server) listenLocked(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("mailsink: listen %s: %w", addr, err)
	}
	s.addr = l.Addr().String()
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = s.opts.Hostname
	srv.MaxMessageBytes = s.opts.MaxMessageBytes
	// Real downstreams (Postfix) take message lines far beyond RFC 5321's
	// 1000 octets; so does the sink, like mxguard itself.
	srv.MaxLineLength = 64 << 10
	srv.ErrorLog = slogPrinter{s.log}
	// go-smtp already advertises PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES,
	// CHUNKING and SIZE; nothing to enable here.
	done := make(chan struct{})
	s.srv, s.ln, s.serving = srv, l, done
	go func() {
		defer close(done)
		if err := srv.Serve(l); err != nil && !errors.Is(err, net.ErrClosed) {
			s.log.Error("serve", "addr", l.Addr().String(), "err", err)
		}
	}()
	return nil
}

// stopLocked closes the listener and every open session, and waits until
// the accept loop returned so the port is free for the next listen.
func (s *Server) stopLocked() error {
	if s.srv == nil {
		return nil
	}
	// Close the listener ourselves as well: srv.Close only closes the
	// listeners its Serve goroutine has registered, and that goroutine may
	// not have run yet.
	err := s.ln.Close()
	_ = s.srv.Close() // closes open sessions
	<-s.serving
	s.srv, s.ln, s.serving = nil, nil, nil
	return err
}

// Addr is the address the server listens on ("127.0.0.1:PORT"); it stays
// the same across SetDown.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Close stops the server and drops open sessions. It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	close(s.done)
	return s.stopLocked()
}

// SetDown simulates an outage: down closes the listener and all sessions, so
// new connections are refused at once (like a crashed server); up listens
// again on the same address. It returns an error only when re-listening
// fails (for example if another process took the port meanwhile).
func (s *Server) SetDown(down bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return errors.New("mailsink: server closed")
	case down:
		return s.stopLocked()
	case s.srv != nil:
		return nil // already up
	default:
		return s.listenLocked(s.addr)
	}
}

// Messages returns a copy of the stored messages, oldest first.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Relayed finds the newest stored message with a "Subject: subject" line
// and splits it there: trace is what a relay prepended (its Received
// line), msg the message from that line on, as the relay's client sent it
// when the Subject came first.
func (s *Server) Relayed(subject string) (trace, msg string, ok bool) {
	line := "Subject: " + subject + "\r\n"
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.msgs) - 1; i >= 0; i-- {
		d := string(s.msgs[i].Data)
		if j := strings.Index(d, line); j >= 0 {
			return d[:j], d[j:], true
		}
	}
	return "", "", false
}

// Count is the number of messages accepted since Start.
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// WaitCount blocks until at least n messages were accepted in total, or ctx
// is done.
func (s *Server) WaitCount(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		count, arrived := s.count, s.arrived
		s.mu.Unlock()
		if count >= n {
			return nil
		}
		select {
		case <-arrived:
		case <-ctx.Done():
			return fmt.Errorf("mailsink: waiting for %d messages, got %d: %w", n, count, ctx.Err())
		}
	}
}

func (s *Server) deliver(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count++
	s.msgs = append(s.msgs, m)
	if max := s.opts.MaxStored; max > 0 && len(s.msgs) > max {
		// Copy down instead of reslicing so the backing array does not
		// keep dropped messages alive.
		s.msgs = append(s.msgs[:0], s.msgs[len(s.msgs)-max:]...)
	}
	close(s.arrived)
	s.arrived = make(chan struct{})
}

// checkRcpt answers like a final-destination MTA (Postfix replies shown in
// the comments): foreign domains are not relayed, unknown local users are
// rejected at RCPT time with RFC 3463 code 5.1.1 (bad destination mailbox).
func (s *Server) checkRcpt(to string) error {
	addr := strings.ToLower(to)
	if s.domains != nil && !s.domains[domainOf(addr)] {
		// Postfix: "554 5.7.1 <x@y>: Relay access denied"
		return &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: fmt.Sprintf("<%s>: Relay access denied", to)}
	}
	if s.mailboxes != nil && !s.mailboxes[addr] {
		// Postfix: "550 5.1.1 <x@y>: Recipient address rejected: User unknown ..."
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
			Message: fmt.Sprintf("<%s>: User unknown", to)}
	}
	return nil
}

func domainOf(addr string) string {
	_, d, _ := strings.Cut(addr, "@")
	return d
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	return &session{srv: s, remote: c.Conn().RemoteAddr().String()}, nil
}

// session collects one transaction at a time (RFC 5321 §3.3).
type session struct {
	srv    *Server
	remote string
	from   string
	to     []string
}

var _ smtp.Session = (*session)(nil)

func (ss *session) Reset() { ss.from, ss.to = "", nil }

func (ss *session) Logout() error { return nil }

func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	ss.Reset()
	ss.from = from
	return nil
}

func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := ss.srv.checkRcpt(to); err != nil {
		ss.srv.log.Debug("rcpt rejected", "remote", ss.remote, "to", to, "err", err)
		return err
	}
	ss.to = append(ss.to, to)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		// go-smtp turns its own ErrDataTooLarge into 552 5.3.4.
		return err
	}
	m := Message{From: ss.from, To: ss.to, Data: data, Received: ss.srv.opts.Now()}
	ss.srv.deliver(m)
	ss.srv.log.Debug("message accepted", "remote", ss.remote, "from", m.From, "to", m.To, "size", len(data))
	return nil
}

// slogPrinter adapts go-smtp's printf-style error log to slog.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) { p.log.Warn(fmt.Sprintf(format, v...)) }
func (p slogPrinter) Println(v ...any)               { p.log.Warn(strings.TrimSuffix(fmt.Sprintln(v...), "\n")) }
