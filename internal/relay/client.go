package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"mxguard/internal/address"
)

// client is the downstream side of a pass-through transaction: a small
// SMTP client (RFC 5321) that keeps the number of round trips and writes
// per message low, because on a loopback or LAN downstream the syscalls
// are the cost. With PIPELINING (RFC 2920) MAIL FROM and the first RCPT TO
// go out in one write; the message and its final dot go out in one write.
//
// Replies are trusted only where the protocol puts them. A 4xx or 5xx is
// the server's verdict and comes back as *smtp.SMTPError; any other reply
// that is not the one the command expects (a 250 to DATA, a 354 after the
// dot, a garbled or over-long reply, a reply nobody asked for) is an
// ErrProtocol error, as is any break of the connection: the caller drops
// the connection and defers, it never passes such a reply on. A 250 to
// DATA passed on would tell the sender "accepted" for a message nobody
// took.
type client struct {
	raw        net.Conn // the TCP connection; closing it interrupts any call
	conn       net.Conn // raw, or the TLS session on it after STARTTLS
	r          *bufio.Reader
	w          *bufio.Writer
	ext        map[string]string
	pipelining bool
	tls        bool // the session runs over STARTTLS
	cmdTimeout time.Duration
	// broken marks a connection whose state is unknown (a failed RSET):
	// the pool closes it instead of keeping it.
	broken bool
	// interrupted is set when a context ended a call by closing the
	// connection (the client left, or mxguard is stopping): the failure
	// that follows says nothing about the server.
	interrupted atomic.Bool
	interrupt   func() // marks interrupted and closes; made once, for watch
}

// clientConfig is what a new downstream session needs.
type clientConfig struct {
	hostname   string        // EHLO name
	cmdTimeout time.Duration // per command, and for the greeting
	tls        TLSMode
	serverName string // sent as SNI; certificates are not verified
}

// ErrProtocol marks a downstream reply that has no place at its stage of
// the dialogue (see client). The connection it came on is dropped and the
// server counts a failure.
var ErrProtocol = errors.New("downstream protocol error")

// ErrNoTLS is the failure of a server that does not offer STARTTLS (or
// refuses it) while delivery.tls is require: no mail goes to it in
// plaintext (like Postfix's smtp_tls_security_level = encrypt).
var ErrNoTLS = errors.New("STARTTLS not offered, and delivery.tls is require")

// stageError names the step of the session setup that failed.
type stageError struct {
	stage string
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

// Bounds on one downstream reply. RFC 5321 §4.5.3.1.5 allows 512 octets
// per reply line; four times that is generous to servers with long
// texts and still keeps a hostile or broken server from making us buffer
// without end. The longest legitimate replies are EHLO lists of a few
// dozen lines.
const (
	maxReplyLine  = 2048
	maxReplyLines = 100
	readBufSize   = 4096 // > maxReplyLine: a too-long line is seen, not split
)

// codeRcptOK as the expected code stands for "250 or 251": RCPT is the one
// command whose success may be 251 "user not local; will forward" (RFC
// 5321 §4.3.2).
const codeRcptOK = 251

// newClient reads the greeting and says EHLO (HELO if refused), then
// STARTTLS as cfg.tls asks. ctx ending closes the connection.
func newClient(ctx context.Context, conn net.Conn, cfg clientConfig) (*client, error) {
	c := &client{
		raw:        conn,
		conn:       conn,
		r:          bufio.NewReaderSize(conn, readBufSize),
		w:          bufio.NewWriterSize(conn, 32<<10),
		cmdTimeout: cfg.cmdTimeout,
	}
	c.interrupt = func() {
		c.interrupted.Store(true)
		c.raw.Close()
	}
	stop := c.watch(ctx)
	defer c.unwatch(stop)
	c.deadline(cfg.cmdTimeout)
	// RFC 5321 §4.3.2: the greeting is 220 (or 554, a refusal).
	if _, _, err := c.reply(220); err != nil {
		return nil, &stageError{"greeting", err}
	}
	if err := c.hello(cfg.hostname); err != nil {
		return nil, &stageError{"EHLO", err}
	}
	if cfg.tls == TLSNone {
		return c, nil
	}
	if err := c.startTLS(cfg); err != nil {
		return nil, &stageError{"STARTTLS", err}
	}
	return c, nil
}

// hello sends EHLO, or HELO to an old server that refuses EHLO with a 5xx
// (RFC 5321 §3.2), and records the extensions offered.
func (c *client) hello(name string) error {
	text, err := c.cmd(250, "EHLO "+name)
	if se, ok := asReply(err); ok && se.Code/100 == 5 {
		text, err = c.cmd(250, "HELO "+name)
	}
	if err != nil {
		return err
	}
	c.ext = map[string]string{}
	for _, l := range strings.Split(text, "\n")[1:] {
		k, v, _ := strings.Cut(l, " ")
		c.ext[strings.ToUpper(k)] = v
	}
	_, c.pipelining = c.ext["PIPELINING"]
	return nil
}

// startTLS upgrades the session (RFC 3207). With TLSMay a server that
// does not offer STARTTLS, or refuses it with a 4xx/5xx (§4: 454 "TLS
// not available"), keeps the session in plaintext; with TLSRequire
// either is ErrNoTLS. A failed handshake fails the connection in both
// modes, as Postfix's "may" defers instead of retrying in plaintext: a
// downgrade should not be something an attacker can provoke.
//
// Certificates are not verified: this is opportunistic TLS (RFC 7435),
// the organisation's servers behind a gateway commonly have self-signed
// or internal certificates, and an unauthenticated encrypted channel is
// still better than plaintext.
func (c *client) startTLS(cfg clientConfig) error {
	if _, ok := c.ext["STARTTLS"]; !ok {
		if cfg.tls == TLSRequire {
			return ErrNoTLS
		}
		return nil
	}
	if _, err := c.cmd(220, "STARTTLS"); err != nil {
		if _, ok := asReply(err); ok && cfg.tls == TLSMay {
			return nil
		}
		if _, ok := asReply(err); ok {
			return fmt.Errorf("%w: %w", ErrNoTLS, err)
		}
		return err
	}
	// What the server sent after its 220 came in plaintext; read after
	// the handshake it would pass for protected data (the STARTTLS
	// command injection of CVE-2011-0411, seen from the client side).
	if n := c.r.Buffered(); n > 0 {
		return fmt.Errorf("%w: %d bytes after the 220 to STARTTLS", ErrProtocol, n)
	}
	tc := tls.Client(c.raw, &tls.Config{
		ServerName:         cfg.serverName,
		InsecureSkipVerify: true, // opportunistic, see above
		// RFC 7435 §3: a weak cipher is better than falling back to
		// no encryption at all.
		MinVersion: tls.VersionTLS10,
	})
	if err := tc.Handshake(); err != nil { // within the connection's deadline
		return fmt.Errorf("handshake: %w", err)
	}
	c.conn, c.tls = tc, true
	c.r.Reset(tc)
	c.w.Reset(tc)
	// RFC 3207 §4.2: forget what the server said before TLS and ask again.
	return c.hello(cfg.hostname)
}

func (c *client) deadline(d time.Duration) { c.raw.SetDeadline(time.Now().Add(d)) }

// watch closes the connection if ctx ends before the returned stop is
// called, so a blocked read or write returns at once. Pass stop to
// unwatch, once.
func (c *client) watch(ctx context.Context) (stop func() bool) {
	if ctx.Done() == nil {
		return neverInterrupted // context.Background: nothing to watch
	}
	return context.AfterFunc(ctx, c.interrupt)
}

// unwatch disarms a watch; false means ctx ended first and the
// connection is (being) closed, and marks it interrupted.
func (c *client) unwatch(stop func() bool) bool {
	if stop() {
		return true
	}
	c.interrupted.Store(true) // interrupt may still be running
	return false
}

func neverInterrupted() bool { return true }

// mailLine is MAIL FROM with the parameters the server supports. The
// address is written from its parsed form, re-quoted (never a client's
// raw text), and the parameters from MailOptions, which hold only what
// mxguard understands: SIZE, BODY=8BITMIME and SMTPUTF8. Anything else a
// client sent (DSN's RET and ENVID, say) is not passed on.
func (c *client) mailLine(from address.Mailbox, o MailOptions) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<")
	b.WriteString(from.String())
	b.WriteByte('>')
	if _, ok := c.ext["8BITMIME"]; ok && o.EightBit {
		b.WriteString(" BODY=8BITMIME")
	}
	if _, ok := c.ext["SIZE"]; ok && o.Size > 0 {
		b.WriteString(" SIZE=")
		b.WriteString(strconv.FormatInt(o.Size, 10))
	}
	if _, ok := c.ext["SMTPUTF8"]; ok && o.UTF8 {
		b.WriteString(" SMTPUTF8")
	}
	return b.String()
}

// mailRcpt sends MAIL FROM and the first RCPT TO, pipelined when the server
// allows it. mailErr or rcptErr is the server's verdict on each; a non-SMTP
// error in either means the connection broke.
func (c *client) mailRcpt(from address.Mailbox, o MailOptions, to address.Mailbox) (mailErr, rcptErr error) {
	if !c.pipelining {
		if _, err := c.cmd(250, c.mailLine(from, o)); err != nil {
			return err, nil
		}
		_, err := c.cmd(codeRcptOK, rcptLine(to))
		return nil, err
	}
	c.deadline(c.cmdTimeout)
	c.w.WriteString(c.mailLine(from, o))
	c.w.WriteString("\r\n")
	c.w.WriteString(rcptLine(to))
	c.w.WriteString("\r\n")
	if err := c.flush(); err != nil {
		return err, nil
	}
	_, _, mailErr = c.reply(250)
	if mailErr != nil {
		if _, ok := asReply(mailErr); !ok {
			return mailErr, nil
		}
	}
	// RFC 2920 §3.1: the RCPT reply follows even when MAIL was refused.
	_, _, rcptErr = c.reply(codeRcptOK)
	if mailErr != nil {
		if _, ok := asReply(rcptErr); ok || rcptErr == nil {
			return mailErr, nil // a RCPT reply after a refused MAIL says nothing
		}
		return rcptErr, nil // the connection broke after all
	}
	return nil, rcptErr
}

// rcpt sends one more RCPT TO.
func (c *client) rcpt(to address.Mailbox) error {
	_, err := c.cmd(codeRcptOK, rcptLine(to))
	return err
}

// rcptLine is RCPT TO for the re-quoted address, without parameters: DSN's
// NOTIFY and ORCPT are not passed on (see README).
func rcptLine(to address.Mailbox) string { return "RCPT TO:<" + to.String() + ">" }

// data sends DATA, then header and body dot-stuffed (RFC 5321 §4.5.2)
// and the final dot, and returns the server's reply text. The whole
// exchange, DATA to final reply, is bounded by timeout. The body is
// streamed through the connection's write buffer: a message that fits in
// it goes out with its final dot in one write, a larger one in
// buffer-sized writes, never all in memory. If the body cannot be read the
// final dot is never sent and the connection is closed, so the server
// drops what it got; the error wraps ErrBody.
//
// ctx can interrupt it until the final dot is written, not after: then
// the downstream has the whole message and is deciding. Hanging up on it
// would not unsend the message (a server that already queued it delivers
// it; RFC 1047), it would only cost the pooled connection and the record
// of what the downstream said.
func (c *client) data(ctx context.Context, timeout time.Duration, header []byte, body io.Reader) (string, error) {
	end := time.Now().Add(timeout)
	stop, watching := c.watch(ctx), true
	defer func() {
		if watching {
			c.unwatch(stop)
		}
	}()
	c.raw.SetDeadline(earliest(end, time.Now().Add(c.cmdTimeout)))
	if _, err := c.send(354, "DATA"); err != nil {
		// A refused DATA leaves the transaction open on the server
		// (Postfix answers a later MAIL with "503 nested MAIL"): end it
		// before the connection is pooled again.
		if _, ok := asReply(err); ok {
			if rerr := c.reset(); rerr != nil {
				c.broken = true
			}
		}
		return "", err
	}
	c.raw.SetDeadline(end)
	dw := newDotWriter(c.w)
	dw.Write(header)
	if _, err := io.Copy(dw, body); err != nil && dw.err == nil {
		c.broken = true
		c.close()
		return "", fmt.Errorf("%w: %w", ErrBody, err)
	}
	dw.end()
	if err := c.flush(); err != nil {
		return "", err
	}
	if watching = false; !c.unwatch(stop) {
		return "", errors.New("interrupted while sending the message")
	}
	_, text, err := c.reply(250)
	if err != nil {
		if _, ok := asReply(err); !ok {
			err = fmt.Errorf("after the final dot: %w", err)
		}
	}
	return text, err
}

// ErrBody means the message could not be read (our storage failed, or a
// spool file failed its checksum): the downstream never got the final dot
// and nothing was delivered. It is not the server's failure.
var ErrBody = errors.New("relay: cannot read the message")

// dotWriter dot-stuffs (RFC 5321 §4.5.2: a line starting with "." gets
// one more) into w, in runs between such lines rather than line by line.
//
// A line starts after CRLF, but also after a bare LF and after a bare CR:
// MTAs differ in which of them end a line (Postfix takes a bare LF,
// others a bare CR), and a message whose "\r.\r" or "\n.\n" one of them
// reads as the end of data makes it take the rest for commands of ours,
// sent from an address it trusts (SMTP smuggling, CVE-2023-51764 and its
// kin): an open relay. go-smtp ends a message only at CRLF.CRLF, so such
// sequences arrive inside messages; stuffed, every reading sees data. A
// dot after a bare CR costs a reader of LF lines one extra dot, in mail
// that is broken anyway.
type dotWriter struct {
	w    *bufio.Writer
	prev byte  // the last octet written; '\n' at the start
	crlf bool  // what was written ends with CRLF (or nothing was)
	err  error // the first write error: the connection broke
}

func newDotWriter(w *bufio.Writer) *dotWriter { return &dotWriter{w: w, prev: '\n', crlf: true} }

func (d *dotWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && d.err == nil {
		if p[0] == '.' && (d.prev == '\n' || d.prev == '\r') {
			d.w.WriteByte('.')
		}
		i := lineDot(p)
		_, d.err = d.w.Write(p[:i])
		d.crlf = i >= 2 && p[i-2] == '\r' && p[i-1] == '\n' || i == 1 && d.prev == '\r' && p[0] == '\n'
		d.prev = p[i-1]
		p = p[i:]
	}
	if d.err != nil {
		return 0, d.err
	}
	return n, nil
}

// lineDot returns the index of the first dot after p[0] that starts a
// line (follows a CR or LF), or len(p).
func lineDot(p []byte) int {
	for i := 1; i < len(p); {
		j := bytes.IndexByte(p[i:], '.')
		if j < 0 {
			break
		}
		i += j
		if c := p[i-1]; c == '\n' || c == '\r' {
			return i
		}
		i++
	}
	return len(p)
}

// end writes the final dot on a line of its own, after a CRLF when the
// message did not end with one (a bare LF or CR is no line end to every
// server, and the dot after it would be no end of data).
func (d *dotWriter) end() {
	if !d.crlf {
		d.w.WriteString("\r\n")
	}
	d.w.WriteString(".\r\n")
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// reset sends RSET.
func (c *client) reset() error {
	_, err := c.cmd(250, "RSET")
	return err
}

// quit says goodbye and closes; errors do not matter any more.
func (c *client) quit() {
	c.raw.SetDeadline(time.Now().Add(time.Second))
	c.w.WriteString("QUIT\r\n")
	if c.flush() == nil {
		c.reply(221)
	}
	c.raw.Close()
}

func (c *client) close() { c.raw.Close() }

// cmd sends one command and reads its reply, within the command timeout.
func (c *client) cmd(want int, line string) (string, error) {
	c.deadline(c.cmdTimeout)
	return c.send(want, line)
}

// send sends one command and reads its reply, within the deadline set.
func (c *client) send(want int, line string) (string, error) {
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	if err := c.flush(); err != nil {
		return "", err
	}
	_, text, err := c.reply(want)
	return text, err
}

// flush writes what is buffered. Anything the server sent that was not
// read yet is a reply nobody asked for: the dialogue is out of step, and
// the next reply read would be taken for the answer to this command (a
// stray 250 read as the answer to the final dot would accept a message
// the server never took), so that is a protocol error.
func (c *client) flush() error {
	if n := c.r.Buffered(); n > 0 {
		return fmt.Errorf("%w: %d bytes the server sent unasked", ErrProtocol, n)
	}
	return c.w.Flush()
}

// reply reads a (multi-line) reply (RFC 5321 §4.2). The expected code is
// success; a 4xx or 5xx is an *smtp.SMTPError carrying the enhanced
// status code (RFC 3463) if any; anything else is ErrProtocol. A
// connection closed before the reply is io.ErrUnexpectedEOF.
func (c *client) reply(want int) (int, string, error) {
	var lines []string
	code := 0
	for i := 0; ; i++ {
		if i == maxReplyLines {
			return 0, "", fmt.Errorf("%w: reply of more than %d lines", ErrProtocol, maxReplyLines)
		}
		b, err := c.r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(b) > maxReplyLine {
			return 0, "", fmt.Errorf("%w: reply line longer than %d bytes", ErrProtocol, maxReplyLine)
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, "", err
		}
		l := strings.TrimRight(string(b), "\r\n")
		n, ok := replyCode(l)
		if !ok || (code != 0 && n != code) {
			// Mixed codes in one multi-line reply cannot be read as
			// one verdict (RFC 5321 §4.2.1: every line has the same).
			return 0, "", fmt.Errorf("%w: malformed reply %s", ErrProtocol, quote(l))
		}
		code = n
		if len(l) > 3 {
			lines = append(lines, l[4:])
		}
		if len(l) == 3 || l[3] == ' ' {
			break
		}
	}
	text := strings.Join(lines, "\n")
	if code == want || (want == codeRcptOK && code == 250) {
		return code, text, nil
	}
	if code < 400 {
		return 0, "", fmt.Errorf("%w: %d where %d was expected: %s", ErrProtocol, code, want, quote(text))
	}
	se := &smtp.SMTPError{Code: code, EnhancedCode: smtp.NoEnhancedCode, Message: text}
	if enh, rest, ok := parseEnhanced(text); ok && enh[0] == code/100 {
		se.EnhancedCode, se.Message = enh, rest
	}
	return code, text, se
}

// replyCode reads the code of one reply line: "250", "250 text" or
// "250-text"; RFC 5321 §4.2: three digits, the first 2 to 5, the second
// 0 to 5.
func replyCode(l string) (int, bool) {
	if len(l) < 3 || (len(l) > 3 && l[3] != ' ' && l[3] != '-') {
		return 0, false
	}
	if l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '5' || l[2] < '0' || l[2] > '9' {
		return 0, false
	}
	return int(l[0]-'0')*100 + int(l[1]-'0')*10 + int(l[2]-'0'), true
}

// quote shows a downstream's text in a log or last_error, shortened.
func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	return strconv.Quote(s)
}

// asReply returns the server's verdict carried by err, if it is one.
func asReply(err error) (*smtp.SMTPError, bool) {
	var se *smtp.SMTPError
	ok := errors.As(err, &se)
	return se, ok
}

// parseEnhanced splits "5.1.1 text" into its status code and the text.
func parseEnhanced(s string) (smtp.EnhancedCode, string, bool) {
	head, rest, _ := strings.Cut(s, " ")
	f := strings.Split(head, ".")
	if len(f) != 3 {
		return smtp.EnhancedCode{}, s, false
	}
	var e smtp.EnhancedCode
	for i, x := range f {
		n, err := strconv.Atoi(x)
		if err != nil || n < 0 || n > 999 {
			return smtp.EnhancedCode{}, s, false
		}
		e[i] = n
	}
	return e, rest, true
}
