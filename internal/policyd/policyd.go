// Package policyd is mxguard's Postfix policy delegation front end
// (INTERFACE.md §7, listen.policy; Postfix SMTPD_POLICY_README): Postfix's
// smtpd asks it, over a persistent TCP connection, about each SMTP event
// its check_policy_service restrictions reach, in name=value lines ending
// with an empty line, and gets one "action=..." line and an empty line
// back. Each request is translated into the observations the SMTP
// listener makes (a connection, an unknown recipient, a message and its
// size, an account's message), fed to the same detection engine, and
// answered from the same blocks, suspensions and recipients directory. See
// README.md for the protocol, what is counted, and Postfix's main.cf.
package policyd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"mxguard/internal/address"
	"mxguard/internal/detect"
	"mxguard/internal/metrics"
	"mxguard/internal/pipeline"
	"mxguard/internal/recipients"
	"mxguard/internal/reply"
)

// Engine is what the front end asks of the detection engine
// (internal/detect); it never counts anything itself.
type Engine interface {
	// Observe counts an observation and reports whether its source is
	// blocked now.
	Observe(o detect.Observation) bool
	// Blocked reports whether addr is blocked now (any rule, any
	// service, or a manual block); Refused counts a refused attempt
	// toward the impact of the event that blocked it.
	Blocked(addr netip.Addr) bool
	Refused(addr netip.Addr)
	// Protected reports trusted_networks and the allowlist: never
	// blocked.
	Protected(addr netip.Addr) bool
	// Suspended reports an account suspended by a rule or an operator.
	Suspended(account string) bool
}

var _ Engine = (*detect.Engine)(nil)

// Directory is the recipients directory (internal/recipients). Postfix
// never tells the policy server the downstream's verdict, so only what
// the directory knows (recipients.file, the verdicts the SMTP listener
// saw within cache_ttl) can refuse a recipient here.
type Directory interface {
	Lookup(rcpt address.Mailbox) recipients.Answer
}

var _ Directory = (*recipients.Directory)(nil)

// ConnectChecker runs the connect checks of the SMTP listener (the
// pipeline's connect stage: blocks, the static blocklist by address and
// by host name, DNSBL) once per SMTP session; *pipeline.Chain is one.
type ConnectChecker interface {
	RunConnect(ctx context.Context, s *pipeline.Session) *reply.Reply
}

var _ ConnectChecker = (*pipeline.Chain)(nil)

// Settings are what a reload replaces; requests already read finish with
// the old ones.
type Settings struct {
	// Trusted are the peers allowed besides loopback (trusted_networks):
	// the policy server decides who may send mail, so nobody else may
	// talk to it.
	Trusted []netip.Prefix
	// Connect are the connect checks; nil: only the engine's blocks.
	Connect ConnectChecker
}

// Options configure a Server.
type Options struct {
	Engine    Engine
	Directory Directory // nil: no recipient is known to be unknown
	Settings  Settings
	Logger    *slog.Logger     // nil: discard
	Metrics   *metrics.Metrics // may be nil
	// MaxConns bounds the open connections (default 1000: Postfix opens
	// one per smtpd process, default_process_limit is 100); past it a new
	// connection is closed at once.
	MaxConns int
	// IdleTimeout is how long a connection may wait between requests
	// (default 10m: longer than Postfix's smtpd_policy_service_max_idle,
	// 300s, so Postfix closes idle connections first);
	// RequestTimeout bounds the reading of one request once its first
	// byte came (default 10s: Postfix writes a request at once).
	IdleTimeout, RequestTimeout time.Duration
	// Clock times the sessions of closed connections (parked.go); nil:
	// the system clock.
	Clock detect.Clock
}

func (o *Options) now() time.Time {
	if o.Clock == nil {
		return time.Now()
	}
	return o.Clock.Now()
}

// Server answers Postfix's policy requests.
type Server struct {
	o      Options
	log    *slog.Logger
	set    atomic.Pointer[Settings]
	conns  atomic.Int64
	nextID atomic.Uint64
	// peerLogged is when a refused peer was last logged (UnixNano).
	peerLogged atomic.Int64

	mu     sync.Mutex
	open   map[net.Conn]struct{}
	wg     sync.WaitGroup
	parked parking // sessions of closed connections (parked.go)
}

// New returns a Server.
func New(o Options) (*Server, error) {
	if o.Engine == nil {
		return nil, errors.New("policyd: no engine")
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 1000
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 10 * time.Minute
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 10 * time.Second
	}
	s := &Server{o: o, log: o.Logger, open: make(map[net.Conn]struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.Reconfigure(o.Settings)
	if m := o.Metrics; m != nil {
		for _, a := range labels {
			m.PolicyRequests.WithLabelValues(frontEnd, a)
		}
	}
	return s, nil
}

// Reconfigure replaces the settings (a config reload).
func (s *Server) Reconfigure(set Settings) {
	set.Trusted = append([]netip.Prefix(nil), set.Trusted...)
	s.set.Store(&set)
}

// Label values of mxguard_policy_requests_total{front_end="postfix"}:
// what each request was answered, by class of action, and what was
// refused before a request was answered.
const (
	frontEnd         = "postfix"
	labelDunno       = "dunno"       // action=DUNNO: the next restriction decides
	labelReject      = "reject"      // a 5xx: unknown recipient, suspended account, DNSBL listing
	labelDefer       = "defer"       // a 4xx other than 421: mxguard's own temporary trouble
	label421         = "421"         // 421 4.7.0: a blocked client; Postfix disconnects it
	labelBadRequest  = "bad_request" // no smtpd_access_policy request, no client_address, or input that closed the connection
	labelPeerRefused = "peer_refused"
	labelBusy        = "busy" // over MaxConns
)

var labels = []string{labelDunno, labelReject, labelDefer, label421, labelBadRequest, labelPeerRefused, labelBusy}

func (s *Server) count(label string) {
	if s.o.Metrics != nil {
		s.o.Metrics.PolicyRequests.WithLabelValues(frontEnd, label).Inc()
	}
}

// Serve answers connections on ln until ctx ends; then it closes ln and
// every connection and returns once their goroutines are done.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() {
		ln.Close()
		s.mu.Lock()
		for c := range s.open {
			c.Close()
		}
		s.mu.Unlock()
	})
	defer stop()
	defer s.wg.Wait()
	s.wg.Go(func() { s.runSweeper(ctx) })
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporary(err) {
				// Out of file descriptors and the like: wait, as
				// net/http does, instead of spinning.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("policy: accept", "err", err, "retry_in", delay)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("policyd: accept: %w", err)
		}
		delay = 0
		if !s.admit(nc) {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(ctx, nc)
		}()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// admit refuses peers that may not ask and connections past MaxConns.
func (s *Server) admit(nc net.Conn) bool {
	if !PeerAllowed(nc.RemoteAddr(), s.set.Load().Trusted) {
		s.count(labelPeerRefused)
		// Logged at most once a minute: a scan of an exposed port must not
		// flood the log; the metric counts every one.
		if now := time.Now().UnixNano(); now-s.peerLogged.Load() > int64(time.Minute) {
			s.peerLogged.Store(now)
			s.log.Warn("policy: connection refused: peer is neither loopback nor in trusted_networks", "peer", nc.RemoteAddr().String())
		}
		nc.Close()
		return false
	}
	if s.conns.Add(1) > int64(s.o.MaxConns) {
		s.conns.Add(-1)
		s.count(labelBusy)
		s.log.Warn("policy: connection refused: too many connections", "max", s.o.MaxConns)
		nc.Close()
		return false
	}
	s.mu.Lock()
	s.open[nc] = struct{}{}
	s.mu.Unlock()
	return true
}

// PeerAllowed reports whether a policy client at addr may connect: a
// loopback address, or one in trusted (INTERFACE.md §7). The judged
// source is the request's client_address, never this peer.
func PeerAllowed(addr net.Addr, trusted []netip.Prefix) bool {
	ta, ok := addr.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip := ta.AddrPort().Addr()
	return ip.Unmap().IsLoopback() || inAny(trusted, ip)
}

func inAny(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// conn is one Postfix smtpd process's policy connection. Postfix's smtpd
// handles one SMTP session at a time and reuses the connection for the
// next, so the requests on one connection are those of one SMTP session
// after another, in order.
type conn struct {
	s   *Server
	nc  net.Conn
	br  *bufio.Reader
	bw  *bufio.Writer
	log *slog.Logger
	req Request

	sess session
	// key and lastKey identify a request's SMTP event (judge.go): the
	// same event asked twice in a row, from two restriction lists, is
	// answered again and counted once.
	key, lastKey []byte
	lastVerdict  verdict
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	c := &conn{
		s:   s,
		nc:  nc,
		br:  NewReader(nc),
		bw:  bufio.NewWriterSize(nc, 512),
		log: s.log.With("conn", s.nextID.Add(1), "peer", nc.RemoteAddr().String()),
	}
	defer func() {
		if p := recover(); p != nil {
			// A bug must cost this connection only; Postfix retries on a
			// new one and then applies smtpd_policy_service_default_action.
			if s.o.Metrics != nil {
				s.o.Metrics.Panics.Inc()
			}
			c.log.Error("policy: panic", "panic", p, "stack", string(debug.Stack()))
			c.write(verdictOf(&reply.InternalError))
		}
		// Its session may go on over a new connection (parked.go).
		s.park(c.sess)
		nc.Close()
		s.mu.Lock()
		delete(s.open, nc)
		s.mu.Unlock()
		s.conns.Add(-1)
	}()
	for {
		if err := c.next(); err != nil {
			if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				if errors.Is(err, ErrGarbage) || errors.Is(err, ErrLineTooLong) || errors.Is(err, ErrTooManyAttributes) || errors.Is(err, ErrRequestTooLarge) {
					s.count(labelBadRequest)
					c.log.Warn("policy: connection closed: not a policy request", "err", err)
				} else {
					c.log.Debug("policy: connection closed", "err", err)
				}
			}
			return
		}
		v := c.judge(ctx, &c.req)
		s.count(v.label)
		if err := c.write(v); err != nil {
			c.log.Debug("policy: write", "err", err)
			return
		}
	}
}

// next reads the next request: any time for its first byte up to the
// idle timeout, then RequestTimeout for the rest.
func (c *conn) next() error {
	c.nc.SetReadDeadline(time.Now().Add(c.s.o.IdleTimeout))
	if _, err := c.br.Peek(1); err != nil {
		return err
	}
	c.nc.SetReadDeadline(time.Now().Add(c.s.o.RequestTimeout))
	return ReadRequest(c.br, &c.req)
}

// write sends "action=...\n\n" (SMTPD_POLICY_README: one attribute and
// an empty line).
func (c *conn) write(v verdict) error {
	c.nc.SetWriteDeadline(time.Now().Add(c.s.o.RequestTimeout))
	c.bw.WriteString("action=")
	c.bw.Write(v.action)
	c.bw.WriteString("\n\n")
	return c.bw.Flush()
}
