package relay

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"mxguard/internal/address"
)

// client is the downstream side of a pass-through transaction: a small
// SMTP client (RFC 5321) that keeps the number of round trips and writes
// per message low, because on a loopback or LAN downstream the syscalls
// are the cost. With PIPELINING (RFC 2920) MAIL FROM and the first RCPT TO
// go out in one write; the message and its final dot go out in one write.
// Downstream replies of 4xx/5xx come back as *smtp.SMTPError, so callers
// tell a verdict from a broken connection with errors.As.
type client struct {
	conn       net.Conn
	r          *bufio.Reader
	w          *bufio.Writer
	ext        map[string]string
	pipelining bool
	cmdTimeout time.Duration
	// broken marks a connection whose state is unknown (a failed RSET):
	// the pool closes it instead of keeping it.
	broken bool
}

// newClient reads the greeting and says EHLO (HELO if refused).
func newClient(conn net.Conn, hostname string, cmdTimeout time.Duration) (*client, error) {
	c := &client{
		conn:       conn,
		r:          bufio.NewReaderSize(conn, 4096),
		w:          bufio.NewWriterSize(conn, 32<<10),
		cmdTimeout: cmdTimeout,
	}
	c.deadline(cmdTimeout)
	if _, _, err := c.reply(220); err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	text, err := c.cmd(250, "EHLO "+hostname)
	if se, ok := err.(*smtp.SMTPError); ok && se.Code/100 == 5 {
		text, err = c.cmd(250, "HELO "+hostname)
	}
	if err != nil {
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	c.ext = map[string]string{}
	for _, l := range strings.Split(text, "\n")[1:] {
		k, v, _ := strings.Cut(l, " ")
		c.ext[strings.ToUpper(k)] = v
	}
	_, c.pipelining = c.ext["PIPELINING"]
	return c, nil
}

func (c *client) deadline(d time.Duration) { c.conn.SetDeadline(time.Now().Add(d)) }

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
		_, err := c.cmd(250, rcptLine(to))
		return nil, err
	}
	c.deadline(c.cmdTimeout)
	c.w.WriteString(c.mailLine(from, o))
	c.w.WriteString("\r\n")
	c.w.WriteString(rcptLine(to))
	c.w.WriteString("\r\n")
	if err := c.w.Flush(); err != nil {
		return err, nil
	}
	_, _, mailErr = c.reply(250)
	if mailErr != nil {
		if _, ok := mailErr.(*smtp.SMTPError); !ok {
			return mailErr, nil
		}
	}
	// RFC 2920 §3.1: the RCPT reply follows even when MAIL was refused.
	_, _, rcptErr = c.reply(250)
	if mailErr != nil {
		if _, ok := rcptErr.(*smtp.SMTPError); ok {
			rcptErr = nil // a RCPT refused for want of a MAIL says nothing
		}
	}
	return mailErr, rcptErr
}

// rcpt sends one more RCPT TO.
func (c *client) rcpt(to address.Mailbox) error {
	_, err := c.cmd(250, rcptLine(to))
	return err
}

// rcptLine is RCPT TO for the re-quoted address, without parameters: DSN's
// NOTIFY and ORCPT are not passed on (see README).
func rcptLine(to address.Mailbox) string { return "RCPT TO:<" + to.String() + ">" }

// data sends DATA, then the parts dot-stuffed (RFC 5321 §4.5.2) with the
// final dot in one write, and returns the server's reply text.
func (c *client) data(dataTimeout time.Duration, parts ...[]byte) (string, error) {
	if _, err := c.cmd(354, "DATA"); err != nil {
		// A refused DATA leaves the transaction open on the server
		// (Postfix answers a later MAIL with "503 nested MAIL"): end it
		// before the connection is pooled again.
		if _, ok := err.(*smtp.SMTPError); ok {
			if rerr := c.reset(); rerr != nil {
				c.broken = true
			}
		}
		return "", err
	}
	c.deadline(dataTimeout)
	bol := true // at the beginning of a line
	for _, p := range parts {
		for len(p) > 0 {
			if bol && p[0] == '.' {
				c.w.WriteByte('.')
			}
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				c.w.Write(p)
				bol = false
				break
			}
			c.w.Write(p[:i+1])
			p = p[i+1:]
			bol = true
		}
	}
	if !bol {
		c.w.WriteString("\r\n")
	}
	c.w.WriteString(".\r\n")
	if err := c.w.Flush(); err != nil {
		return "", err
	}
	_, text, err := c.reply(250)
	return text, err
}

// reset sends RSET.
func (c *client) reset() error {
	_, err := c.cmd(250, "RSET")
	return err
}

// quit says goodbye and closes; errors do not matter any more.
func (c *client) quit() {
	c.conn.SetDeadline(time.Now().Add(time.Second))
	c.w.WriteString("QUIT\r\n")
	if c.w.Flush() == nil {
		c.reply(221)
	}
	c.conn.Close()
}

func (c *client) close() { c.conn.Close() }

// cmd sends one command and reads its reply.
func (c *client) cmd(want int, line string) (string, error) {
	c.deadline(c.cmdTimeout)
	c.w.WriteString(line)
	c.w.WriteString("\r\n")
	if err := c.w.Flush(); err != nil {
		return "", err
	}
	_, text, err := c.reply(want)
	return text, err
}

// reply reads a (multi-line) reply. A code other than want is an
// *smtp.SMTPError carrying the enhanced status code (RFC 3463) if any.
func (c *client) reply(want int) (int, string, error) {
	var lines []string
	code := 0
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, "", err
		}
		l = strings.TrimRight(l, "\r\n")
		if len(l) < 3 || (len(l) > 3 && l[3] != ' ' && l[3] != '-') {
			return 0, "", fmt.Errorf("malformed reply %q", l)
		}
		// RFC 5321 §4.2: three digits, the first 2 to 5.
		if l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' {
			return 0, "", fmt.Errorf("malformed reply %q", l)
		}
		n := int(l[0]-'0')*100 + int(l[1]-'0')*10 + int(l[2]-'0')
		if code != 0 && n != code {
			return 0, "", fmt.Errorf("malformed reply %q", l)
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
	// Any 2xx is success where a 250 is expected: 251 "user not local;
	// will forward" accepts the recipient (RFC 5321 §4.2.2).
	if code == want || (want/100 == 2 && code/100 == 2) {
		return code, text, nil
	}
	se := &smtp.SMTPError{Code: code, EnhancedCode: smtp.NoEnhancedCode, Message: text}
	if enh, rest, ok := parseEnhanced(text); ok && enh[0] == code/100 {
		se.EnhancedCode, se.Message = enh, rest
	}
	return code, text, se
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
