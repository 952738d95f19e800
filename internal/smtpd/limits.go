package smtpd

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"mxguard/internal/config"
	"mxguard/internal/reply"
)

// Session limits against clients that hold a session without sending mail
// (slowloris, NOOP loops, harvesting). They are fixed, derived from the
// configured timeouts where they are about time: none of them is a
// configuration key (INTERFACE.md §2).
const (
	// junkLimit follows Postfix's smtpd_junk_command_limit (default 100):
	// commands that do not move a mail transaction forward (NOOP, RSET,
	// VRFY, HELP, a repeated MAIL or EHLO, AUTH exchanges, unknown or
	// malformed commands) allowed between two accepted messages; the
	// session closes after the last one was answered.
	junkLimit = 100
	// errorLimit follows Postfix's smtpd_hard_error_limit (default 20):
	// error replies (4xx/5xx that are the client's doing) allowed between
	// two accepted messages; the session closes at the limit.
	errorLimit = 20
)

// sessionLimit bounds a whole session: room for two full DATA transfers
// and two full command timeouts, 30 minutes with the default timeouts
// (5m, 10m). A session that lasts longer is holding a slot, not sending
// mail; RFC 5321 §4.5.3.2 timeouts alone never end a client that sends a
// NOOP every few minutes.
func sessionLimit(t config.Timeouts) time.Duration { return 2 * (t.Command + t.Data) }

var errTLSBeforeEHLO = errors.New("STARTTLS before EHLO")

// tally counts, per session, what the junk and error limits look at.
// go-smtp answers most commands itself (NOOP, RSET, VRFY, syntax errors)
// and after STARTTLS conn only sees TLS records, so commands are not
// parsed here: conn knows that a command was answered when go-smtp asks
// for the next one (SetReadDeadline), and the session marks the commands
// that moved a transaction forward (guard). A command nobody marked is
// junk.
type tally struct {
	reading bool        // the first command line is being read (connection goroutine only)
	useful  atomic.Bool // the command being answered advanced the session
	junk    atomic.Int32
	errors  atomic.Int32
	// mailOpen: a MAIL was accepted and no RSET or message followed; a
	// second MAIL is junk.
	mailOpen atomic.Bool
	// abusive: closed for junk or errors; counts as a bad session even
	// after a message.
	abusive atomic.Bool
}

// step marks the command being answered as useful and counts err if it
// is an error reply of the client's doing.
func (t *tally) step(err error) {
	t.useful.Store(true)
	if clientFault(err) {
		t.errors.Add(1)
	}
}

// delivered resets the counts when a message is accepted (Postfix resets
// both "after mail is delivered").
func (t *tally) delivered() {
	t.useful.Store(true)
	t.junk.Store(0)
	t.errors.Store(0)
}

// clientFault reports whether err, answered to a command, counts toward
// the error limit. mxguard's own temporary failures do not (INTERFACE.md
// §3: they count against nobody): RFC 3463 X.3.x (mail system) and X.4.x
// (network and routing) such as 451 4.4.1 during an outage, 452 4.3.1
// spool full, 451 4.3.0 local problem; nor does a plain error, which is an
// internal failure.
func clientFault(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code >= 400 && se.Code != 421 && !systemTrouble(se)
}

// systemTrouble reports a temporary failure of a mail system or network
// (RFC 3463 X.3.x, X.4.x) rather than of the client's request.
func systemTrouble(se *smtp.SMTPError) bool {
	return se.Code/100 == 4 && (se.EnhancedCode[1] == 3 || se.EnhancedCode[1] == 4)
}

// nextCommand accounts for the command just answered; it returns the
// reply and limit name when a limit is exceeded.
func (c *conn) nextCommand() (*reply.Reply, string) {
	t := &c.tally
	if !t.reading {
		t.reading = true // before the first command: nothing answered yet
		return nil, ""
	}
	if !t.useful.Swap(false) && t.junk.Add(1) >= junkLimit {
		t.abusive.Store(true)
		return &reply.JunkCommands, "junk"
	}
	if t.errors.Load() >= errorLimit {
		t.abusive.Store(true)
		return &reply.TooManyErrors, "errors"
	}
	return nil, ""
}

// timedOut answers a read deadline that passed: the session time limit,
// or else the timeout of the phase (greeting, command, DATA).
func (c *conn) timedOut() {
	if time.Now().Before(c.start.Add(sessionLimit(c.timeouts()))) {
		c.limit(&reply.Timeout, "timeout")
	} else {
		c.limit(&reply.SessionTime, "session_time")
	}
}

// limit ends the session with r, counted under name.
func (c *conn) limit(r *reply.Reply, name string) {
	if c.dead.Load() {
		return
	}
	if m := c.srv.o.Metrics; m != nil {
		m.SessionLimits.WithLabelValues(c.srv.o.Name, name).Inc()
	}
	c.log().Info("session limit", append([]any{"limit", name, "junk", c.tally.junk.Load(), "errors", c.tally.errors.Load()}, r.Fields()...)...)
	c.final(r)
}

// readDeadline is the deadline of the next read: the greeting timeout
// until the client said anything, then the command timeout per command
// line (a line trickled in byte by byte still ends then), or the DATA
// deadline while a BDAT transfer is open; never past the session limit.
func (c *conn) readDeadline(now time.Time) time.Time {
	tmo := c.timeouts()
	switch u := c.dataUntil.Load(); {
	case u != 0:
		return time.Unix(0, u)
	case !c.gotInput:
		return earliest(c.start.Add(tmo.Greeting), c.start.Add(sessionLimit(tmo)))
	}
	return c.commandDeadline(now, tmo)
}

func (c *conn) commandDeadline(now time.Time, tmo config.Timeouts) time.Time {
	return earliest(now.Add(tmo.Command), c.start.Add(sessionLimit(tmo)))
}

// beginData starts a message transfer: a DATA, or the BDAT chunks up to
// LAST, are bounded as a whole by timeouts.data (RFC 5321 §4.5.3.2.6 for
// DATA; RFC 3030 gives BDAT no timeout of its own, and without this each
// chunk command would get a fresh command timeout, so a client trickling
// small chunks would never end). With BDAT it runs on the Data goroutine.
func (c *conn) beginData() {
	now := time.Now()
	tmo := c.timeouts()
	d := earliest(now.Add(tmo.Data), c.start.Add(sessionLimit(tmo)))
	c.dataUntil.Store(d.UnixNano())
	c.Conn.SetReadDeadline(d)
}

// endData ends the transfer: the next read is a command again. (After a
// BDAT transfer ended by RSET, go-smtp may already be reading the next
// command under the transfer's deadline.)
func (c *conn) endData() {
	c.dataUntil.Store(0)
	now := time.Now()
	c.Conn.SetReadDeadline(c.commandDeadline(now, c.timeouts()))
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
