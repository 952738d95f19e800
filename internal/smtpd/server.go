// Package smtpd is the SMTP front end: the MX listener and (later) the
// submission listener. It accepts connections, applies the connection-level
// defences (PROXY protocol, blocks, connection limits), then speaks SMTP with
// emersion/go-smtp and relays every transaction pass-through to the
// downstream servers (internal/relay, routed by internal/delivery). Every
// decision is delegated to the check pipeline and every observation goes
// to the detection engine; this package has no detection logic of its
// own.
package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"mxguard/internal/address"
	"mxguard/internal/batv"
	"mxguard/internal/config"
	"mxguard/internal/detect"
	"mxguard/internal/metrics"
	"mxguard/internal/msgbuf"
	"mxguard/internal/pipeline"
	"mxguard/internal/recipients"
	"mxguard/internal/relay"
	"mxguard/internal/reply"
	"mxguard/internal/spool"
)

// Detector is what the front end needs of the detection engine.
type Detector interface {
	Observe(o detect.Observation) bool
	Blocked(addr netip.Addr) bool
	BlockGeneration() uint64
	Refused(addr netip.Addr)
}

var _ Detector = (*detect.Engine)(nil)

// Relay opens the pass-through transactions: the delivery manager
// (internal/delivery), which picks the server.
type Relay interface {
	Begin(ctx context.Context, from address.Mailbox, o relay.MailOptions) (*relay.Txn, error)
}

// Spooler decides, per transaction, between pass-through, the outage spool
// and a deferral (internal/spool), and stores spooled messages durably.
type Spooler interface {
	Decide() spool.Decision
	// Put streams a message of size bytes from msg into the spool.
	Put(ctx context.Context, env spool.Envelope, size int64, msg io.Reader) (string, error)
}

// Directory is the recipients directory (internal/recipients): it refuses
// recipients known not to exist, answers for the downstream while it
// cannot be asked (outage true), and learns from the downstream's own
// verdicts.
type Directory interface {
	Check(rcpt address.Mailbox, outage bool) *reply.Reply
	Record(rcpt address.Mailbox, v recipients.Verdict)
}

var _ Directory = (*recipients.Directory)(nil)

// Settings is the reloadable part of the configuration. A connection keeps
// the Settings it started with for its whole life.
type Settings struct {
	Hostname      string
	Domains       []string // ours (domains): BATV signs senders in them and checks bounces to them
	Trusted       []netip.Prefix
	Allowlist     []netip.Prefix
	ProxyProtocol []netip.Prefix
	IPv6Prefix    int
	Limits        config.Limits
	Timeouts      config.Timeouts
	Chain         *pipeline.Chain
	TLS           *tls.Config // nil: no STARTTLS
}

// Options are the fixed dependencies of a Server.
type Options struct {
	Name      string // listener name for metrics and logs: "smtp"
	Detector  Detector
	Relay     Relay
	Spooler   Spooler   // nil: always pass-through
	Directory Directory // nil: the downstream's verdict only
	// Buffers hold message data during DATA: memory up to a budget,
	// then data_dir/tmp (required).
	Buffers *msgbuf.Store
	// Auth makes this the submission listener: AUTH PLAIN/LOGIN over TLS
	// (or from trusted clients), mail only after AUTH (submission.go).
	// nil: the MX listener, which never offers AUTH.
	Auth     Authenticator
	Accounts Accounts // suspensions and password fingerprints; nil: none
	// BATV signs the senders of outbound mail and checks bounces
	// (batv.key_file); nil: off. Senders ties signed senders to the
	// accounts that used them, shared by the listeners.
	BATV    *batv.Signer
	Senders *SenderAccounts
	Metrics *metrics.Metrics // may be nil
	Logger  *slog.Logger
	// Stress are the timeouts of stress mode (stress.go); zero fields take
	// the defaults (10s greeting and command, 2m DATA).
	Stress config.Timeouts
	// Sessions is the registry of open sessions (sessions.go), shared by
	// the listeners of one instance; nil: one of this Server's own.
	Sessions *Sessions
}

// Server is one SMTP listener.
type Server struct {
	o       Options
	cur     atomic.Pointer[generation]
	conns   atomic.Int64
	stress  atomic.Bool // stress mode (stress.go)
	mu      sync.Mutex
	perSrc  map[netip.Addr]int
	wg      sync.WaitGroup
	closing atomic.Bool
	lnMu    sync.Mutex
	lns     []net.Listener
	gens    []*generation // every generation, for Close/Shutdown
	// ctx is the parent of every session's context; Close cancels it
	// first, so downstream calls in progress end (go-smtp's Close waits
	// for each session's handler to return).
	ctx  context.Context
	stop context.CancelFunc
}

// generation pairs a Settings with the go-smtp server built from it, so a
// reload never changes limits under a running session.
type generation struct {
	set  *Settings
	smtp *smtp.Server
	ln   *chanListener
	// tlsSmtp serves the connections after STARTTLS (starttls.go), fed
	// by tlsLn; it stays open across reloads for the sessions of its
	// generation.
	tlsSmtp *smtp.Server
	tlsLn   *chanListener
}

// New returns a Server; call Serve to run it.
func New(o Options, s *Settings) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Name == "" {
		o.Name = "smtp"
	}
	o.Stress = stressTimeouts(o.Stress)
	if o.Sessions == nil {
		o.Sessions = NewSessions()
	}
	srv := &Server{o: o, perSrc: make(map[netip.Addr]int)}
	srv.ctx, srv.stop = context.WithCancel(context.Background())
	srv.cur.Store(srv.newGeneration(s))
	return srv
}

func (s *Server) newGeneration(set *Settings) *generation {
	g := &generation{set: set, ln: newChanListener(), tlsLn: newChanListener()}
	g.smtp = s.goSMTP(set)
	g.smtp.TLSConfig = starttlsConfig(set.TLS)
	g.tlsSmtp = s.goSMTP(set)
	s.lnMu.Lock()
	s.gens = append(s.gens, g)
	s.lnMu.Unlock()
	go func() { _ = g.smtp.Serve(g.ln) }()
	go func() { _ = g.tlsSmtp.Serve(g.tlsLn) }()
	return g
}

// goSMTP is a go-smtp server for set, without TLS.
func (s *Server) goSMTP(set *Settings) *smtp.Server {
	ss := smtp.NewServer(backend{s})
	ss.Domain = set.Hostname
	ss.MaxMessageBytes = int64(set.Limits.MaxMessageSize)
	ss.MaxRecipients = set.Limits.MaxRecipients
	// RFC 5321 §4.5.3.1.6 allows 1000 octets per text line, but real mail
	// (HTML newsletters) has longer lines and Postfix takes them; go-smtp
	// applies one limit to commands and message lines, so it is generous
	// here and max_message_size bounds the message.
	ss.MaxLineLength = maxLine
	// go-smtp asks for a deadline before each command line and each
	// reply; conn replaces it with its own (limits.go: greeting, command,
	// DATA, session limit, stress mode).
	ss.ReadTimeout = set.Timeouts.Command
	ss.WriteTimeout = set.Timeouts.Command
	// The session decides who may AUTH (TLS, or a trusted client) and
	// answers the others 530 5.7.0 itself; go-smtp's own refusal would be
	// 523 5.7.10 for everyone without TLS (and go-smtp never knows about
	// conn's TLS, starttls.go).
	ss.AllowInsecureAuth = s.o.Auth != nil
	ss.ErrorLog = errorLog{s}
	return ss
}

// Reload applies new settings to connections accepted from now on.
func (s *Server) Reload(set *Settings) {
	old := s.cur.Swap(s.newGeneration(set))
	// Existing sessions keep running on the old go-smtp server; closing its
	// listener only stops it from taking new connections.
	old.ln.Close()
}

// maxLine is the longest command or message line accepted.
const maxLine = 64 << 10

// Listen opens a TCP listener for Serve. TCP keep-alive is off: every
// session phase has its own timeout, and the two setsockopt calls per
// accepted connection are a measurable share of refusing a flood.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(ctx, "tcp", addr)
}

// Serve accepts connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	s.lnMu.Lock()
	s.lns = append(s.lns, ln)
	s.lnMu.Unlock()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if s.closing.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of file descriptors and similar: back off, don't spin.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.o.Logger.Error("accept", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.wg.Add(1)
		go s.admit(c)
	}
}

// Close stops accepting and closes every session.
func (s *Server) Close() error {
	s.stop()
	var errs []error
	for _, g := range s.stopAccepting() {
		errs = append(errs, ignoreClosed(g.smtp.Close()), ignoreClosed(g.tlsSmtp.Close()))
	}
	return errors.Join(errs...)
}

// Shutdown stops accepting and waits for sessions to end until ctx is done.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	for _, g := range s.stopAccepting() {
		errs = append(errs, ignoreClosed(g.smtp.Shutdown(ctx)), ignoreClosed(g.tlsSmtp.Shutdown(ctx)))
	}
	return errors.Join(errs...)
}

// stopAccepting closes the listeners and returns every generation, the
// current one and those still serving sessions from before a reload.
func (s *Server) stopAccepting() []*generation {
	s.closing.Store(true)
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	for _, ln := range s.lns {
		ln.Close()
	}
	for _, g := range s.gens {
		g.ln.Close()
		g.tlsLn.Close()
	}
	return s.gens
}

func ignoreClosed(err error) error {
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// admit runs the connection-level defences, then hands the connection to
// go-smtp. It runs in its own goroutine so a slow PROXY header never holds
// up the accept loop.
func (s *Server) admit(raw net.Conn) {
	defer s.wg.Done()
	g := s.cur.Load()
	set := g.set
	c := &conn{Conn: raw, srv: s, set: set, id: s.o.Sessions.nextID.Add(1), start: time.Now()}
	defer func() {
		if p := recover(); p != nil {
			s.o.Logger.Error("panic admitting connection", "panic", p)
			if s.o.Metrics != nil {
				s.o.Metrics.Panics.Inc()
			}
			raw.Close()
		}
	}()

	n := s.conns.Add(1)
	if n > int64(set.Limits.MaxConnections) {
		s.conns.Add(-1)
		s.count("busy")
		s.observeBusy(c)
		c.refuse(&reply.Busy)
		return
	}
	c.counted = true
	s.updateStress(n)

	if err := c.resolveSource(); err != nil {
		s.count("proxy_error")
		c.log().Warn("PROXY header", "err", err)
		c.closeRaw()
		return
	}
	c.ps = pipeline.Session{
		Listener:    s.o.Name,
		Addr:        c.addr,
		Trusted:     inAny(set.Trusted, c.addr),
		Allowlisted: inAny(set.Allowlist, c.addr),
	}
	ctx := context.Background()
	refusal := set.Chain.RunConnect(ctx, &c.ps)
	if refusal != nil && !sessionRefusal(refusal) {
		if refusal.Check == "blocklist" {
			s.count("blocked")
		} else {
			s.count("refused")
		}
		// Debug: a blocked flood would otherwise log every attempt; the
		// event's impact and the metrics count them.
		c.log().Debug("refused at connect", "reply", refusal.Error())
		c.refuse(refusal)
		return
	}
	// Count the connection toward dos after the block check: a blocked
	// source's refused attempts are impact of its event, not new evidence.
	// The block generation is read before: if this very connection fires
	// the rule, the session sees the new block at its first command
	// (INTERFACE.md §3: 421 4.7.0 at the next command).
	if s.o.Detector != nil {
		c.blockGen = s.o.Detector.BlockGeneration()
		s.o.Detector.Observe(detect.Observation{Kind: detect.KindConnect, Addr: c.addr, Service: s.o.Name, Text: textConnect})
	}
	// Every source is limited, trusted ones too: a limit is not a block,
	// and an internal relay that needs more raises the limit.
	if !s.addSource(c) {
		s.count("limit")
		c.refuse(&reply.TooManyConns)
		return
	}
	if refusal != nil {
		// A listed client (dnsbl) counts toward dos and holds one of its
		// source's slots while it waits for QUIT, like any session.
		s.count(refusal.Check)
		c.log().Debug("session refused at connect", "reply", refusal.Error())
		c.refuseSession(s.ctx, refusal)
		return
	}
	c.protected = c.ps.Trusted || c.ps.Allowlisted
	s.count("accepted")
	// Cancelled by conn.Close and by Server.Close (see conn.ctx).
	c.ctx, c.cancel = context.WithCancel(s.ctx)
	c.gen = g
	if !g.ln.deliver(c) {
		// The generation was replaced between Load and deliver: hand the
		// connection to the current one.
		c.gen = s.cur.Load()
		if !c.gen.ln.deliver(c) {
			c.Close()
		}
	}
}

// observeBusy counts a connection refused as busy toward dos: a flood
// that fills every slot is the attack, and refusing it must not hide it
// from the engine. A blocked source's attempt is impact of its event
// instead. Behind a PROXY peer the source is unknown (its header is not
// read for a connection that is refused anyway), so nothing is counted.
func (s *Server) observeBusy(c *conn) {
	d := s.o.Detector
	if d == nil || c.peerAddr() != nil || inAny(c.set.ProxyProtocol, c.addr) {
		return
	}
	if d.Blocked(c.addr) {
		d.Refused(c.addr)
		return
	}
	d.Observe(detect.Observation{Kind: detect.KindConnect, Addr: c.addr, Service: s.o.Name, Text: textBusy})
}

// The evidence texts of connections (detect.Observation.Text): constants,
// since every connection is observed.
const (
	textConnect = "connection opened"
	textBusy    = "connection refused: 421 4.3.2 Too many connections, try again later (max_connections)"
)

// addSource enforces max_connections_per_source (keyed like detection:
// IPv6 per prefix, so one /64 cannot open 20 connections per address).
func (s *Server) addSource(c *conn) bool {
	c.key = sourceKey(c.addr, c.set.IPv6Prefix)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.perSrc[c.key] >= c.set.Limits.MaxConnectionsPerSource {
		return false
	}
	s.perSrc[c.key]++
	c.perSource = true
	c.live = live{id: c.id, listener: s.o.Name, addr: c.addr, key: c.key, v6bits: c.set.IPv6Prefix, started: c.start}
	s.o.Sessions.add(&c.live)
	return true
}

// Sessions is the registry this Server lists its open sessions in.
func (s *Server) Sessions() *Sessions { return s.o.Sessions }

func (s *Server) removeSource(key netip.Addr) {
	s.mu.Lock()
	if n := s.perSrc[key]; n <= 1 {
		delete(s.perSrc, key)
	} else {
		s.perSrc[key] = n - 1
	}
	s.mu.Unlock()
}

func (s *Server) count(result string) {
	if s.o.Metrics != nil {
		s.o.Metrics.Connection(s.o.Name, result)
	}
}

// sourceKey is the address detection and limits key on: IPv4 as is, IPv6
// masked to the configured prefix.
func sourceKey(a netip.Addr, v6prefix int) netip.Addr {
	if a.Is4() || v6prefix <= 0 || v6prefix >= 128 {
		return a
	}
	p, err := a.Prefix(v6prefix)
	if err != nil {
		return a
	}
	return p.Addr()
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// chanListener feeds admitted connections to a go-smtp server.
type chanListener struct {
	ch     chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newChanListener() *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.closed.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

// errorLog routes go-smtp's internal error log (including recovered
// panics) to slog and counts panics.
type errorLog struct{ s *Server }

func (e errorLog) Printf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if !strings.HasPrefix(msg, "panic") {
		// Broken pipes and resets from clients: routine, not errors.
		e.s.o.Logger.Debug("smtp server", "msg", msg)
		return
	}
	if e.s.o.Metrics != nil {
		e.s.o.Metrics.Panics.Inc()
	}
	e.s.o.Logger.Error("smtp server", "msg", msg)
}

func (e errorLog) Println(v ...any) { e.s.o.Logger.Error("smtp server", "msg", fmt.Sprintln(v...)) }
