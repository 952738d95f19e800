package alert

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// mailer sends each alert as one plain-text mail through alerts.email.server,
// a relay next to the gateway (the local Postfix, the organisation's
// smarthost on the trusted network): plain SMTP without AUTH or STARTTLS,
// as a monitoring host's mail usually leaves.
type mailer struct {
	timeout time.Duration
	now     func() time.Time // the Date header: the system clock, not the cap's
}

func newMailer(o Options) *mailer {
	return &mailer{timeout: o.Timeout, now: time.Now}
}

func (m *mailer) deliver(ctx context.Context, s *Settings, msg message) error {
	from, err := mail.ParseAddress(s.Email.From)
	if err != nil {
		return fmt.Errorf("%w: alerts.email.from %q: %w", errPermanent, s.Email.From, err)
	}
	var to []*mail.Address
	for _, t := range s.Email.To {
		a, err := mail.ParseAddress(t)
		if err != nil {
			return fmt.Errorf("%w: alerts.email.to %q: %w", errPermanent, t, err)
		}
		to = append(to, a)
	}
	subject, body := compose(s, msg)
	data := m.message(s, from, to, subject, body)

	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.Email.Server)
	if err != nil {
		return fmt.Errorf("email: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl) // the whole transaction, whatever go-smtp's per-command timeouts
	}
	// Shutdown (ctx cancelled) ends a transaction stuck on a silent server.
	defer context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })()
	c := smtp.NewClient(conn)
	defer c.Close()
	c.CommandTimeout, c.SubmissionTimeout = m.timeout, m.timeout
	err = m.transact(c, s, from.Address, to, data)
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 {
		// RFC 5321 §4.2.1: 5yz is a permanent negative reply.
		return fmt.Errorf("%w: email to %s: %w", errPermanent, s.Email.Server, err)
	}
	if err != nil {
		return fmt.Errorf("email to %s: %w", s.Email.Server, err)
	}
	return nil
}

func (m *mailer) transact(c *smtp.Client, s *Settings, from string, to []*mail.Address, data []byte) error {
	if err := c.Hello(helloName(s.Hostname)); err != nil {
		return err
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, t := range to {
		if err := c.Rcpt(t.Address, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(data); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

func helloName(h string) string {
	if h = strings.TrimSuffix(h, "."); h == "" {
		return "localhost"
	}
	return h
}

// message is the RFC 5322 message: headers a mail client and a spam
// filter expect (Date, Message-ID, MIME-Version, RFC 3834's
// Auto-Submitted so vacation responders stay quiet) and a plain-text
// body, 8bit when it is 7-bit clean with short lines, else
// quoted-printable.
func (m *mailer) message(s *Settings, from *mail.Address, to []*mail.Address, subject, body string) []byte {
	var b bytes.Buffer
	hdr := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	hdr("Date", m.now().Format(time.RFC1123Z))
	hdr("From", from.String())
	tos := make([]string, len(to))
	for i, t := range to {
		tos[i] = t.String()
	}
	hdr("To", strings.Join(tos, ", "))
	hdr("Subject", mime.QEncoding.Encode("utf-8", subject))
	hdr("Message-ID", "<"+messageID()+"@"+helloName(s.Hostname)+">")
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", "text/plain; charset=utf-8")
	hdr("Auto-Submitted", "auto-generated")
	hdr("X-Mailer", "mxguard")
	text := strings.ReplaceAll(body, "\n", "\r\n")
	if plain(text) {
		hdr("Content-Transfer-Encoding", "7bit")
		b.WriteString("\r\n")
		b.WriteString(text)
		return b.Bytes()
	}
	hdr("Content-Transfer-Encoding", "quoted-printable")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	qp.Write([]byte(text))
	qp.Close()
	return b.Bytes()
}

// plain reports whether text can go as 7bit: ASCII, lines of at most 998
// octets (RFC 5322 §2.1.1).
func plain(text string) bool {
	for _, line := range strings.Split(text, "\r\n") {
		if len(line) > 998 {
			return false
		}
		for i := 0; i < len(line); i++ {
			if line[i] >= 0x80 {
				return false
			}
		}
	}
	return true
}

func messageID() string {
	var b [12]byte
	rand.Read(b[:])
	return time.Now().UTC().Format("20060102150405") + "." + hex.EncodeToString(b[:])
}
