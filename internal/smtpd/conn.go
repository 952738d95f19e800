package smtpd

import (
	"bufio"
	"bytes"
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

	"mxguard/internal/detect"
	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// conn wraps the client connection under go-smtp. It is where the
// connection-wide policies live that go-smtp has no hook for:
//
//   - Replies are buffered and written in one syscall when the server next
//     waits for input, like Postfix's smtpd: a pipelining client (RFC 2920)
//     gets all its replies in one segment, and a multi-line EHLO reply costs
//     one write instead of one per line. After STARTTLS go-smtp's TLS layer
//     sits above conn, so its records are buffered the same way.
//   - conn owns every read deadline (limits.go): the greeting timeout
//     before the first command, the command timeout per command line, the
//     DATA timeout for a whole DATA or BDAT transfer, the session time
//     limit, and the shorter timeouts of stress mode.
//   - A source blocked while its session is open gets 421 4.7.0 at its next
//     command (INTERFACE.md §3), whatever the command is.
//   - Final replies (a block, a timeout, a session limit) are written
//     through TLS once the session runs over TLS (final).
//
// Read, SetReadDeadline and final run on go-smtp's connection goroutine;
// with BDAT, the session's Data runs on another one and only touches the
// atomic fields.
type conn struct {
	// in frames the client's input as go-smtp reads it (input.go), so
	// that command lines, and only those, can be looked at; routes notes
	// the source routes in RCPT commands, which go-smtp drops (routes.go).
	// Both are used on the session goroutine only (in.sniff under outMu).
	in      input
	readErr error // how the last read that returned data ended
	routes  routeWatch
	net.Conn
	srv  *Server
	set  *Settings
	id   uint64
	addr netip.Addr // client address after PROXY protocol
	peer net.Addr   // what RemoteAddr reports
	key  netip.Addr // per-source key (IPv6 masked)
	ps   pipeline.Session

	start    time.Time
	gotInput bool
	// sc is go-smtp's connection, known from the first EHLO/HELO (attach);
	// a new one after STARTTLS (starttls.go).
	sc *smtp.Conn
	// gen is the generation that serves the connection; its tlsLn takes
	// it after STARTTLS.
	gen *generation
	// tlsStarted: a TLS handshake began; while it runs no reply could be
	// read, so final writes nothing.
	tlsStarted bool
	// handoff: STARTTLS was answered; go-smtp's plaintext connection ends
	// and Close runs the handshake (starttls.go).
	handoff atomic.Bool
	// tls is conn's own TLS layer on the client socket once the handshake
	// succeeded (starttls.go): reads and writes go through it, and conn
	// still sees plaintext. Set under outMu.
	tls *tls.Conn
	// dropGreeting: the greeting of the post-TLS go-smtp connection is
	// not for the client (RFC 3207 §4.2: the client goes on with EHLO).
	dropGreeting bool
	// outMu guards out: the session goroutine writes, while Close may come
	// from a server shutdown in another goroutine.
	outMu     sync.Mutex
	out       []byte
	closeNext bool        // a 421 was answered: close at the next read
	dead      atomic.Bool // final reply sent: drop further output
	refused   atomic.Bool // refused mid-session because the source got blocked
	ownFail   atomic.Bool // answered with our own temporary failure (see ownFailure): counts toward no sender rule
	protected bool
	blockGen  uint64
	counted   bool // holds a slot of max_connections
	perSource bool // holds a slot of max_connections_per_source
	// sentMessage is set once a message of this connection was accepted;
	// a session that ends without one is a "bad session".
	sentMessage atomic.Bool
	tally       tally // junk commands and errors (limits.go)
	// dataUntil is the deadline of the message transfer in progress (Unix
	// nanoseconds), 0 when there is none; BDAT chunk commands read under it.
	dataUntil atomic.Int64
	logger    *slog.Logger
	logOnce   sync.Once

	// ctx is the session's context, handed to the downstream calls; it
	// ends when the connection closes, when the client hangs up while
	// the session waits for the downstream (hangup.go), and when the
	// server closes. Set before the connection goes to go-smtp.
	ctx    context.Context
	cancel context.CancelFunc
	// ahead holds what the client sent while the session waited for the
	// downstream, and aheadErr how that read ended if the client hung
	// up; Read returns them first (hangup.go).
	ahead     []byte
	aheadErr  error
	watch     *time.Timer   // the hangup watch (hangup.go), reused
	watchDone chan struct{} // the watch's reader finished

	// live is what GET /api/v1/sessions shows of this connection
	// (sessions.go); listed while it holds a slot of its source.
	live live

	closeOnce sync.Once
}

// badSessionText is the evidence of a bad session: how long it lasted
// and what its tally saw (atomics only: Close may run on another
// goroutine than the session's).
func (c *conn) badSessionText() string {
	why := "without a message"
	if c.tally.abusive.Load() {
		why = "closed for junk commands or errors"
	}
	return fmt.Sprintf("session ended %s after %s (%d junk commands, %d errors)", why,
		time.Since(c.start).Round(time.Millisecond), c.tally.junk.Load(), c.tally.errors.Load())
}

// peerAddr takes the client address from the TCP peer.
func (c *conn) peerAddr() error {
	var ap netip.AddrPort
	if ta, ok := c.Conn.RemoteAddr().(*net.TCPAddr); ok {
		ap = ta.AddrPort() // no formatting and re-parsing per connection
	} else {
		var err error
		if ap, err = netip.ParseAddrPort(c.Conn.RemoteAddr().String()); err != nil {
			return fmt.Errorf("peer address %q: %w", c.Conn.RemoteAddr(), err)
		}
	}
	c.addr = ap.Addr().Unmap()
	c.peer = c.Conn.RemoteAddr()
	return nil
}

// resolveSource reads the PROXY header when the peer must send one.
func (c *conn) resolveSource() error {
	if err := c.peerAddr(); err != nil {
		return err
	}
	if !inAny(c.set.ProxyProtocol, c.addr) {
		return nil
	}
	// The proxy sends its header at once; bound the wait like a greeting.
	c.Conn.SetReadDeadline(time.Now().Add(min(c.set.Timeouts.Greeting, 10*time.Second)))
	src, ok, err := readProxyHeader(c.Conn)
	c.Conn.SetReadDeadline(time.Time{})
	if err != nil {
		return err
	}
	if ok {
		c.addr = src.Addr().Unmap()
		c.peer = net.TCPAddrFromAddrPort(netip.AddrPortFrom(c.addr, src.Port()))
	}
	return nil
}

// RemoteAddr is the real client address (after PROXY protocol).
func (c *conn) RemoteAddr() net.Addr { return c.peer }

// log is the connection's logger, made on first use (most connections
// log nothing at info level); with BDAT two goroutines may ask at once.
func (c *conn) log() *slog.Logger {
	c.logOnce.Do(func() {
		c.logger = c.srv.o.Logger.With("conn", c.id, "client", c.addr.String())
	})
	return c.logger
}

// attach records go-smtp's connection at EHLO/HELO (backend.NewSession).
func (c *conn) attach(sc *smtp.Conn) {
	if c.sc == nil {
		c.sc = sc
	}
	c.tally.useful.Store(true)
}

// Write buffers output until the next read (see type comment).
func (c *conn) Write(p []byte) (int, error) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.dead.Load() {
		return len(p), nil
	}
	n := len(p)
	if c.dropGreeting {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			return n, nil
		}
		c.dropGreeting, p = false, p[i+1:]
	}
	c.in.sniffReply(p)
	c.out = append(c.out, p...)
	if len(c.out) >= 64<<10 {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return n, nil
}

func (c *conn) flush() error {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	return c.flushLocked()
}

func (c *conn) flushLocked() error {
	if len(c.out) == 0 {
		return nil
	}
	var w io.Writer = c.Conn
	if c.tls != nil {
		w = c.tls
	}
	_, err := w.Write(c.out)
	if cap(c.out) > 64<<10 {
		c.out = nil
	} else {
		c.out = c.out[:0]
	}
	return err
}

// Read hands go-smtp the client's input framed (input.go): one command
// line at a time, message data as it comes. It flushes pending replies
// only when it has to wait for the client, so a pipelined batch is
// answered in one write; after a read returns data it checks whether the
// source got blocked meanwhile.
func (c *conn) Read(p []byte) (int, error) {
	if c.closeNext || c.dead.Load() {
		c.flush()
		return 0, io.EOF
	}
	for len(c.in.ready) == 0 {
		if c.handoff.Load() {
			return 0, io.EOF // STARTTLS: this go-smtp connection ends
		}
		if c.in.frame(c.commandLine) {
			continue
		}
		if c.readErr != nil {
			err := c.readErr
			c.readErr = nil
			return 0, err
		}
		if err := c.flush(); err != nil {
			return 0, err
		}
		if err := c.readInput(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.in.ready)
	c.in.ready = c.in.ready[n:]
	return n, nil
}

// readInput appends what the client sends next to c.in.raw.
func (c *conn) readInput() error {
	raw := c.in.raw
	if len(raw) == 0 {
		if c.in.rbuf == nil {
			c.in.rbuf = make([]byte, 4096)
		}
		raw = c.in.rbuf[:0]
	}
	if cap(raw)-len(raw) < 1024 {
		raw = append(make([]byte, 0, len(raw)+4096), raw...)
	}
	var n int
	var err error
	if c.tls != nil {
		n, err = c.tls.Read(raw[len(raw):cap(raw)])
	} else {
		n, err = c.readRaw(raw[len(raw):cap(raw)])
	}
	c.in.raw = raw[:len(raw)+n]
	if n > 0 {
		if c.blockedNow() {
			c.refuseNow()
			return io.EOF
		}
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		// bufio hands a partial line to go-smtp as a whole line when a
		// read times out mid-line; a slow client would then get its line
		// split into commands and live forever. A timeout ends the
		// session here (RFC 5321 §4.5.3.2: the server may close after
		// its timeout, with 421).
		c.timedOut()
	}
	if n > 0 {
		c.readErr = err
		return nil
	}
	return err
}

// readRaw reads from the client socket: first what the hangup watch read
// ahead, and counts what arrived.
func (c *conn) readRaw(p []byte) (int, error) {
	n, err := c.readAhead(p)
	if n > 0 {
		c.gotInput = true
		c.live.read(n, time.Now())
	}
	return n, err
}

// commandLine looks at a complete command line before go-smtp reads it
// and returns the line go-smtp is to read (nil: none, conn answered it).
func (c *conn) commandLine(line []byte) []byte {
	if c.in.sasl {
		return saslLine(line)
	}
	if l, ok := authLine(line); ok {
		return l
	}
	if startTLSLine(line) && c.startTLS() {
		return nil
	}
	c.routes.check(line)
	if len(c.set.Domains) > 0 {
		if pm, ok := postmasterLine(line, c.set.Domains[0]); ok {
			return pm
		}
	}
	return line
}

// final sends a last reply at once and drops whatever go-smtp writes
// after it. Over TLS the reply must be a TLS record: plaintext in the
// middle of the TLS stream would reach the client as a TLS error, not as
// an SMTP reply. It goes through the *tls.Conn (which writes its record
// into our buffer), followed by close_notify (RFC 8446 §6.1), which also
// makes the TLS layer refuse go-smtp's own later replies.
func (c *conn) final(r *reply.Reply) {
	if c.dead.Load() {
		return
	}
	if !c.tlsStarted { // mid-handshake no reply can be read; just close
		c.Write(append(r.Line(), "\r\n"...))
	}
	c.outMu.Lock()
	defer c.outMu.Unlock()
	c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.flushLocked()
	if c.tls != nil {
		c.tls.CloseWrite()
	}
	c.dead.Store(true)
}

// blockedNow is cheap: the engine's block generation only changes when a
// block is added or removed, so the map look-up runs rarely.
func (c *conn) blockedNow() bool {
	d := c.srv.o.Detector
	if c.protected || d == nil {
		return false
	}
	g := d.BlockGeneration()
	if g == c.blockGen {
		return false
	}
	c.blockGen = g
	return d.Blocked(c.addr)
}

// refuseNow answers 421 4.7.0 and ends the session at once.
func (c *conn) refuseNow() {
	c.srv.o.Detector.Refused(c.addr)
	c.log().Info("source blocked during session")
	c.refused.Store(true)
	c.final(&reply.Blocked)
}

// SetReadDeadline is called by go-smtp before it reads each command line:
// the answer to the previous command has been given, so conn accounts for
// that command (junk, errors) and ends the session when a limit is
// exceeded. The deadline go-smtp asks for is replaced by conn's own
// (limits.go).
func (c *conn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		return c.Conn.SetReadDeadline(t)
	}
	if c.in.mode == modeTLS {
		// go-smtp's handshake was refused (before EHLO): it goes on in
		// plaintext, and so does the framing. What the handshake did not
		// read was sent as TLS data: dropped, never handed to go-smtp as
		// unframed command lines (RFC 3207 §4.2).
		c.in.mode, c.in.ready, c.in.raw, c.in.scanned = modeCommand, nil, c.in.raw[:0], 0
	}
	if r, name := c.nextCommand(); r != nil {
		c.limit(r, name)
		return nil // the read that follows sees the session closed
	}
	return c.Conn.SetReadDeadline(c.readDeadline(time.Now()))
}

// SetWriteDeadline shortens go-smtp's write deadlines in stress mode: a
// client that does not read its replies holds a slot as long as one that
// does not write.
func (c *conn) SetWriteDeadline(t time.Time) error {
	if !t.IsZero() {
		t = earliest(t, time.Now().Add(c.timeouts().Command))
	}
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline applies conn's read deadline and the write deadline.
func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetWriteDeadline(t); err != nil {
		return err
	}
	if !t.IsZero() {
		t = c.readDeadline(time.Now())
	}
	return c.Conn.SetReadDeadline(t)
}

// refuse answers r to a connection that was never handed to go-smtp and
// closes it.
func (c *conn) refuse(r *reply.Reply) {
	c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Conn.Write(append(r.Line(), "\r\n"...))
	c.closeRaw()
}

// sessionRefusal reports whether a connect check's reply refuses the
// session but keeps the connection: a 5xx greeting without Close (dnsbl).
// RFC 5321 §3.1: such a server "MUST NOT close the connection" at once
// but wait for QUIT, answering 503 to everything else.
func sessionRefusal(r *reply.Reply) bool {
	return r.Code >= 500 && !r.Close
}

// maxRefusedCommands bounds what a refused client may send before it is
// disconnected: a real MTA sends QUIT at once (Postfix, Exim) or after
// EHLO and MAIL; a bot that goes on is cut short.
const maxRefusedCommands = 10

// refuseSession greets with the refusal r, answers "503 5.5.1" to every
// command but QUIT and "221 2.0.0" to QUIT, and closes after QUIT, after
// maxRefusedCommands commands (421) or when the greeting timeout has
// passed since the connection came — whichever is first (INTERFACE.md
// §4). Server shutdown (ctx) ends it at once.
func (c *conn) refuseSession(ctx context.Context, r *reply.Reply) {
	defer c.closeRaw()
	c.Conn.SetDeadline(time.Now().Add(c.set.Timeouts.Greeting))
	stop := context.AfterFunc(ctx, func() { c.Conn.SetDeadline(aLongTimeAgo()) })
	defer stop()
	w := bufio.NewWriterSize(c.Conn, 512)
	say := func(line []byte) bool {
		w.Write(line)
		w.WriteString("\r\n")
		return w.Flush() == nil
	}
	if !say(r.Line()) {
		return
	}
	br := bufio.NewReaderSize(liveReader{c}, 1024)
	for range maxRefusedCommands {
		line, err := br.ReadSlice('\n')
		for errors.Is(err, bufio.ErrBufferFull) {
			// An overlong line is one command; its rest is skipped.
			_, err = br.ReadSlice('\n')
		}
		if err != nil {
			return
		}
		verb, _, _ := strings.Cut(strings.TrimSpace(string(line)), " ")
		if strings.EqualFold(verb, "QUIT") {
			say([]byte("221 2.0.0 Bye"))
			return
		}
		if !say(reply.BadSequence.Line()) {
			return
		}
	}
	say(reply.TooManyErrors.Line())
}

// liveReader reads the raw connection of a refused session and counts
// what arrives, as conn.Read does for the others.
type liveReader struct{ c *conn }

func (r liveReader) Read(p []byte) (int, error) {
	n, err := r.c.Conn.Read(p)
	if n > 0 {
		r.c.live.read(n, time.Now())
	}
	return n, err
}

// closeRaw closes a connection refused before the SMTP dialogue; it does
// not count as a bad session.
func (c *conn) closeRaw() {
	c.closeOnce.Do(func() {
		c.release()
		c.Conn.Close()
	})
}

// Close ends the session: flush, release limits, and report a bad session
// to the detection engine: one that sent no message, or one closed for
// junk commands or errors (limits.go) whatever it sent before.
func (c *conn) Close() error {
	if c.handoff.Swap(false) && c.switchTLS() {
		return nil // the session goes on over TLS
	}
	var err error
	c.closeOnce.Do(func() {
		// tls.Conn.Close sets a write deadline of "now" after queueing
		// its close_notify: without a fresh deadline the last replies
		// (the 221 to QUIT) would never leave the buffer.
		c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		c.flush()
		if c.tls != nil {
			c.tls.CloseWrite() // close_notify (RFC 8446 §6.1)
		}
		err = c.Conn.Close()
		if c.cancel != nil {
			c.cancel()
		}
		c.release()
		// A source refused mid-session, or blocked meanwhile, is already
		// handled: its sessions add nothing to other rules. A session
		// that met our own temporary failure proves nothing about the
		// sender (one retrying through an outage must stay unblocked),
		// unless it was abusive on its own account.
		bad := (!c.sentMessage.Load() && !c.ownFail.Load()) || c.tally.abusive.Load()
		if d := c.srv.o.Detector; d != nil && bad && !c.refused.Load() && (c.protected || !d.Blocked(c.addr)) {
			d.Observe(detect.Observation{Kind: detect.KindBadSession, Addr: c.addr, Service: c.srv.o.Name, Text: c.badSessionText()})
		}
		c.log().Debug("disconnect", "message", c.sentMessage.Load(), "duration", time.Since(c.start).Round(time.Millisecond))
	})
	return err
}

func (c *conn) release() {
	if c.perSource {
		c.srv.o.Sessions.remove(&c.live)
		c.srv.removeSource(c.key)
		c.perSource = false
	}
	if c.counted {
		c.srv.updateStress(c.srv.conns.Add(-1))
		c.counted = false
	}
}
