package testutil

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DialOptions configures Dial.
type DialOptions struct {
	// LocalIP binds the client to this source address, e.g. "127.0.0.9"; all
	// of 127.0.0.0/8 is on the loopback interface, so each test can act as
	// a distinct remote host without any setup.
	LocalIP string
	// Timeout bounds the connect and each reply; default 10s.
	Timeout time.Duration
}

// SMTPClient speaks raw SMTP so tests can script a session line by line and
// see exactly the replies a remote client would. Every line sent and
// received is logged with t.Logf in swaks' notation ("->" client, "<-"
// server), so a failing test's output reads like a mail log.
type SMTPClient struct {
	t       testing.TB
	conn    net.Conn
	r       *bufio.Reader
	timeout time.Duration
	// in and out are the log arrows; swaks' "<~" and " ~>" after STARTTLS.
	in, out string
}

// Dial connects to addr; the connection is closed by t.Cleanup if the test
// does not Close it.
func Dial(t testing.TB, addr string, o DialOptions) *SMTPClient {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	d := net.Dialer{Timeout: o.Timeout}
	if o.LocalIP != "" {
		ip := net.ParseIP(o.LocalIP)
		if ip == nil {
			t.Fatalf("dial %s: bad LocalIP %q", addr, o.LocalIP)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Logf("=== connected %s -> %s", conn.LocalAddr(), addr)
	c := &SMTPClient{t: t, conn: conn, r: bufio.NewReader(conn), timeout: o.Timeout, in: "<-", out: " ->"}
	t.Cleanup(func() { _ = conn.Close() })
	return c
}

// LocalAddr is the client's address as the server sees it.
func (c *SMTPClient) LocalAddr() string { return c.conn.LocalAddr().String() }

// ReadReply reads one reply, which may span several lines ("250-..." up to
// "250 ..."; RFC 5321 §4.2.1). text holds the lines without the code,
// joined with "\n". It does not fail the test, so it can check for a
// closed connection or an unexpected code.
func (c *SMTPClient) ReadReply() (code int, text string, err error) {
	c.t.Helper()
	if err := c.conn.SetReadDeadline(time.Now().Add(c.timeout)); err != nil {
		return 0, "", err
	}
	var lines []string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			if line != "" {
				c.t.Logf("%s %s (incomplete: %v)", c.in, line, err)
			}
			return 0, strings.Join(lines, "\n"), err
		}
		line = strings.TrimRight(line, "\r\n")
		c.t.Logf("%s %s", c.in, line)
		if len(line) < 3 {
			return 0, line, fmt.Errorf("malformed reply line %q", line)
		}
		n, err := strconv.Atoi(line[:3])
		if err != nil || n < 100 || n > 599 {
			return 0, line, fmt.Errorf("malformed reply line %q", line)
		}
		if code != 0 && n != code {
			return 0, line, fmt.Errorf("reply code changed from %d to %d within one reply", code, n)
		}
		code = n
		lines = append(lines, strings.TrimSpace(line[min(4, len(line)):]))
		if len(line) == 3 || line[3] == ' ' {
			return code, strings.Join(lines, "\n"), nil
		}
		if line[3] != '-' {
			return 0, line, fmt.Errorf("malformed reply line %q", line)
		}
	}
}

// Expect reads one reply and fails the test unless its code is code.
func (c *SMTPClient) Expect(code int) string {
	c.t.Helper()
	got, text, err := c.ReadReply()
	if err != nil {
		c.t.Fatalf("expected %d, read error: %v", code, err)
	}
	if got != code {
		c.t.Fatalf("expected %d, got %d %s", code, got, text)
	}
	return text
}

// Cmd sends one command line and expects the reply code.
func (c *SMTPClient) Cmd(line string, code int) string {
	c.t.Helper()
	c.t.Logf("%s %s", c.out, line)
	c.write(line + "\r\n")
	return c.Expect(code)
}

// Send writes raw bytes without reading a reply: pipelined commands, a
// PROXY header, or deliberately broken input.
func (c *SMTPClient) Send(raw string) {
	c.t.Helper()
	for _, l := range strings.SplitAfter(raw, "\n") {
		if l != "" {
			c.t.Logf("%s %s", c.out, strings.TrimRight(l, "\r\n"))
		}
	}
	c.write(raw)
}

// Data sends DATA, the message (dot-stuffed, RFC 5321 §4.5.2) and the
// terminating ".", and expects code for the message. msg may use "\n" or
// "\r\n" line ends.
func (c *SMTPClient) Data(msg string, code int) string {
	c.t.Helper()
	c.Cmd("DATA", 354)
	var b strings.Builder
	for l := range strings.Lines(msg) {
		l = strings.TrimRight(l, "\r\n")
		if strings.HasPrefix(l, ".") {
			b.WriteByte('.')
		}
		b.WriteString(l)
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	c.t.Logf("%s (message, %d bytes)", c.out, b.Len())
	c.write(b.String())
	return c.Expect(code)
}

// ExpectClosed fails the test unless the server closes the connection,
// possibly after more replies (such as a final 421), which are logged.
func (c *SMTPClient) ExpectClosed() {
	c.t.Helper()
	for {
		_, _, err := c.ReadReply()
		switch {
		case err == nil:
			continue
		case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
			c.t.Logf("=== connection closed by server (%v)", err)
			return
		default:
			c.t.Fatalf("expected the server to close the connection: %v", err)
		}
	}
}

// StartTLS sends STARTTLS, expects 220 and runs the TLS handshake
// (RFC 3207 §4); the transcript goes on over TLS, logged with swaks' "~"
// arrows. A reply the server writes outside the TLS stream then fails the
// read that meets it.
func (c *SMTPClient) StartTLS(cfg *tls.Config) {
	c.t.Helper()
	c.Cmd("STARTTLS", 220)
	tc := tls.Client(c.conn, cfg)
	if err := tc.SetDeadline(time.Now().Add(c.timeout)); err != nil {
		c.t.Fatalf("TLS: %v", err)
	}
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	st := tc.ConnectionState()
	c.t.Logf("=== TLS started: %s, %s", tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
	c.conn, c.r = tc, bufio.NewReader(tc)
	c.in, c.out = "<~", " ~>"
}

// Close closes the connection without QUIT.
func (c *SMTPClient) Close() { _ = c.conn.Close() }

func (c *SMTPClient) write(s string) {
	c.t.Helper()
	if err := c.conn.SetWriteDeadline(time.Now().Add(c.timeout)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}
