package smtpd

import (
	"net"
	"time"

	"mxguard/internal/reply"
)

// STARTTLS (RFC 3207) is answered by conn, not by go-smtp. go-smtp would
// put its TLS layer above conn, and conn would see only ciphertext: the
// route watch (routes.go) and the postmaster rewrite would be blind to
// every command sent over TLS. So conn answers 220 itself, the plaintext
// go-smtp connection ends (its session is logged out, its transaction
// dropped), conn runs the handshake on the client socket, and the
// connection goes to the generation's second go-smtp server, which has
// no TLS configuration: a fresh go-smtp connection reading plaintext
// from conn, which knows nothing of what was said before TLS (RFC 3207
// §4.2: the client starts over with EHLO). Its greeting is dropped.
//
// The first server offers STARTTLS (it has the TLS configuration); the
// second one offers neither STARTTLS nor answers it but 502. Sessions
// learn that they run over TLS from conn (session.secure).

// startTLS answers a STARTTLS line when conn takes it: after EHLO (or
// HELO), with TLS configured, not yet over TLS. go-smtp gets every other
// one (before EHLO: its handshake is refused; after TLS: 502).
func (c *conn) startTLS() bool {
	if c.tls != nil || c.sc == nil || c.set.TLS == nil || c.gen == nil {
		return false
	}
	c.in.await = modeCommand
	c.Write(append(reply.ReadyTLS.Line(), "\r\n"...))
	c.tlsStarted = true
	c.tally.useful.Store(true)
	c.handoff.Store(true)
	return true
}

// switchTLS runs the handshake once go-smtp's plaintext connection has
// closed (conn.Close) and hands the connection to the post-TLS server.
// It reports false when the connection is to close instead.
func (c *conn) switchTLS() bool {
	if c.flush() != nil {
		return false
	}
	// Whatever the client pipelined after STARTTLS is dropped, never
	// read as TLS data or commands (RFC 3207 §4.2, CVE-2011-0411).
	c.in = input{}
	tc := tlsServer(c)
	c.Conn.SetDeadline(time.Now().Add(c.timeouts().Command))
	err := tc.HandshakeContext(c.ctx)
	c.Conn.SetDeadline(time.Time{})
	c.tlsStarted = false
	if err != nil {
		c.log().Debug("tls handshake", "err", err)
		return false
	}
	c.outMu.Lock()
	c.tls, c.dropGreeting = tc, true
	c.outMu.Unlock()
	c.live.secure.Store(true)
	// A transaction open before STARTTLS is gone with go-smtp's plaintext
	// connection (as guard.Reset notes for RSET).
	c.tally.mailOpen.Store(false)
	c.live.endTransaction()
	c.sc = nil // the next EHLO attaches the new go-smtp connection
	return c.gen.tlsLn.deliver(c)
}

// rawSide is the client socket below conn's TLS layer: reads come after
// what the hangup watch read ahead and count toward the session's bytes
// in (ciphertext, as the client cost); writes go straight out (conn
// buffers the plaintext above).
type rawSide struct {
	net.Conn
	c *conn
}

func (r rawSide) Read(p []byte) (int, error) { return r.c.readRaw(p) }
