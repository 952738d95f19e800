package smtpd

import (
	"errors"
	"os"
	"time"
)

// A client that hangs up while its session waits for the downstream (a
// RCPT the downstream is slow to answer, a dial to a server that does
// not answer) is seen by nobody: go-smtp reads the next command only
// after the handler returned. The downstream call would run to its own
// timeout, holding a downstream connection for a client that is gone.
// So while the session waits, a reader watches the client connection: a
// hangup cancels the connection's context, which interrupts the
// downstream call (relay closes that connection; it counts as no server
// failure). Bytes a pipelining client sends meanwhile are kept for the
// session's next Read.

// hangupAfter is how long a downstream call runs before the watcher
// starts: a LAN downstream answers in a millisecond, and the watcher (a
// goroutine, a read, a deadline to stop it) would cost every recipient
// for nothing.
const hangupAfter = 100 * time.Millisecond

// maxAhead bounds what is read ahead; past it the watcher stops reading.
const maxAhead = 64 << 10

// aLongTimeAgo is a deadline in the past: it ends a blocked read at once.
func aLongTimeAgo() time.Time { return time.Unix(1, 0) }

// watchHangup starts watching the client (after hangupAfter); call
// unwatchHangup before go-smtp reads again.
func (c *conn) watchHangup() { c.watchHangupAfter(hangupAfter) }

// watchHangupAfter arms the connection's watch timer, made on first use
// and reused: a session watches once per recipient, and one timer and
// channel per connection cost less than one per recipient.
func (c *conn) watchHangupAfter(after time.Duration) {
	if c.cancel == nil {
		return
	}
	if c.watch == nil {
		c.watchDone = make(chan struct{}, 1)
		c.watch = time.AfterFunc(after, func() {
			c.readWhileWaiting()
			c.watchDone <- struct{}{}
		})
		return
	}
	c.watch.Reset(after)
}

// unwatchHangup stops the watch, and waits for the reader if it started.
func (c *conn) unwatchHangup() {
	if c.watch == nil || c.watch.Stop() {
		return // not armed, or never started
	}
	c.Conn.SetReadDeadline(aLongTimeAgo())
	<-c.watchDone
	// go-smtp sets its own deadline before it reads again.
	c.Conn.SetReadDeadline(time.Time{})
}

// readWhileWaiting reads what the client sends into c.ahead until the
// read fails: the deadline set by stop (or the command timeout) ends it
// quietly; anything else is the client gone, which cancels c.ctx.
func (c *conn) readWhileWaiting() {
	var buf [4096]byte
	for len(c.ahead) < maxAhead {
		n, err := c.Conn.Read(buf[:])
		c.ahead = append(c.ahead, buf[:n]...)
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				c.aheadErr = err
				c.cancel()
			}
			return
		}
	}
}

// readAhead reads for the session: first what was read ahead, then how
// that reading ended, then the connection.
func (c *conn) readAhead(p []byte) (int, error) {
	if len(c.ahead) > 0 {
		n := copy(p, c.ahead)
		c.ahead = c.ahead[n:]
		if len(c.ahead) == 0 {
			c.ahead = nil
		}
		return n, nil
	}
	if c.aheadErr != nil {
		return 0, c.aheadErr
	}
	return c.Conn.Read(p)
}
