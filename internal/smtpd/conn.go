package smtpd

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

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
//     one write instead of one per line.
//   - Before the first command the greeting timeout applies instead of the
//     command timeout.
//   - A source blocked while its session is open gets 421 4.7.0 at its next
//     command (INTERFACE.md §3), whatever the command is.
type conn struct {
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
	// outMu guards out: the session goroutine writes, while Close may come
	// from a server shutdown in another goroutine.
	outMu     sync.Mutex
	out       []byte
	closeNext bool        // a 421 was answered: close at the next read
	dead      atomic.Bool // final reply sent: drop further output
	refused   atomic.Bool // refused mid-session because the source got blocked
	protected bool
	blockGen  uint64
	counted   bool // holds a slot of max_connections
	perSource bool // holds a slot of max_connections_per_source
	// sentMessage is set once a message of this connection was accepted;
	// a session that ends without one is a "bad session".
	sentMessage atomic.Bool
	logger      *slog.Logger
	logOnce     sync.Once

	closeOnce sync.Once
}

// resolveSource reads the PROXY header when the peer must send one.
func (c *conn) resolveSource() error {
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

// Write buffers output until the next read (see type comment).
func (c *conn) Write(p []byte) (int, error) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.dead.Load() {
		return len(p), nil
	}
	c.out = append(c.out, p...)
	if len(c.out) >= 64<<10 {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
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
	_, err := c.Conn.Write(c.out)
	if cap(c.out) > 64<<10 {
		c.out = nil
	} else {
		c.out = c.out[:0]
	}
	return err
}

// Read flushes pending replies, then reads; after it returns data it checks
// whether the source got blocked meanwhile.
func (c *conn) Read(p []byte) (int, error) {
	if c.closeNext || c.dead.Load() {
		c.flush()
		return 0, io.EOF
	}
	if err := c.flush(); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.gotInput = true
		if c.blockedNow() {
			c.refuseNow()
			return 0, io.EOF
		}
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		// bufio hands a partial line to go-smtp as a whole line when a
		// read times out mid-line; a slow client would then get its line
		// split into commands and live forever. A timeout ends the
		// session here (RFC 5321 §4.5.3.2: the server may close after
		// its timeout, with 421).
		c.final(&reply.Timeout)
	}
	return n, err
}

// final sends a last reply directly and drops whatever go-smtp writes after.
func (c *conn) final(r *reply.Reply) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.dead.Load() {
		return
	}
	c.out = append(c.out, append(r.Line(), "\r\n"...)...)
	c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.flushLocked()
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

// SetReadDeadline replaces go-smtp's per-command deadline with the
// greeting deadline until the client said anything.
func (c *conn) SetReadDeadline(t time.Time) error {
	if !c.gotInput {
		t = c.start.Add(c.set.Timeouts.Greeting)
	}
	return c.Conn.SetReadDeadline(t)
}

// SetDeadline keeps the greeting rule for the read half.
func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// refuse answers r to a connection that was never handed to go-smtp and
// closes it.
func (c *conn) refuse(r *reply.Reply) {
	c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	c.Conn.Write(append(r.Line(), "\r\n"...))
	c.closeRaw()
}

// closeRaw closes a connection refused before the SMTP dialogue; it does
// not count as a bad session.
func (c *conn) closeRaw() {
	c.closeOnce.Do(func() {
		c.release()
		c.Conn.Close()
	})
}

// Close ends the session: flush, release limits, and report a session that
// sent no message to the detection engine.
func (c *conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		// tls.Conn.Close sets a write deadline of "now" after queueing
		// its close_notify: without a fresh deadline the last replies
		// (the 221 to QUIT) would never leave the buffer.
		c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		c.flush()
		err = c.Conn.Close()
		c.release()
		// A source refused mid-session, or blocked meanwhile, is already
		// handled: its sessions add nothing to other rules.
		if d := c.srv.o.Detector; d != nil && !c.sentMessage.Load() && !c.refused.Load() && (c.protected || !d.Blocked(c.addr)) {
			d.Observe(detect.Observation{Kind: detect.KindBadSession, Addr: c.addr, Service: c.srv.o.Name})
		}
		c.log().Debug("disconnect", "message", c.sentMessage.Load(), "duration", time.Since(c.start).Round(time.Millisecond))
	})
	return err
}

func (c *conn) release() {
	if c.perSource {
		c.srv.removeSource(c.key)
		c.perSource = false
	}
	if c.counted {
		c.srv.conns.Add(-1)
		c.counted = false
	}
}
