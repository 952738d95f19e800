package smtpd

import (
	"crypto/tls"
	"errors"
	"io"

	"github.com/emersion/go-smtp"
)

// guard is the session as go-smtp sees it: it tells the connection's tally
// (limits.go) which commands moved a transaction forward and which were
// refused, and bounds a message transfer by the DATA timeout. Every other
// method of *session, including optional go-smtp interfaces such as
// AuthSession, is promoted unchanged.
type guard struct{ *session }

var _ smtp.Session = guard{}

// Mail: the first MAIL of a transaction is useful; another MAIL before
// RSET or the message is junk (Postfix answers it "503 nested MAIL").
func (g guard) Mail(from string, opts *smtp.MailOptions) error {
	err := g.session.Mail(from, opts)
	if err == nil {
		g.c.live.setState(StateMail)
	}
	if err != nil || !g.c.tally.mailOpen.Swap(true) {
		g.c.tally.step(err)
	}
	return err
}

func (g guard) Rcpt(to string, opts *smtp.RcptOptions) error {
	err := g.session.Rcpt(to, opts)
	if err == nil {
		g.c.live.setState(StateRcpt)
	}
	g.c.tally.step(err)
	return err
}

// Data runs the message transfer under the DATA deadline. Bytes read
// mark each BDAT chunk as useful; an accepted message resets the counts.
func (g guard) Data(r io.Reader) error {
	c := g.c
	c.beginData()
	defer c.endData()
	c.live.setState(StateData)
	err := g.session.Data(progressReader{r: r, t: &c.tally})
	c.live.setState(StateIdle)
	c.tally.mailOpen.Store(false)
	var se *smtp.SMTPError
	if err == nil || (errors.As(err, &se) && se.Code/100 == 2) {
		c.tally.delivered()
	} else {
		c.tally.step(err)
	}
	return err
}

// Reset is RSET, a new EHLO or the end of a message: the next MAIL opens
// a new transaction.
func (g guard) Reset() {
	g.session.Reset()
	g.c.tally.mailOpen.Store(false)
	g.c.live.endTransaction()
	if g.c.sc != nil {
		g.c.live.setHelo(g.c.sc.Hostname()) // a new EHLO names the client anew
	}
}

// progressReader marks the command being answered as useful whenever
// message bytes arrive.
type progressReader struct {
	r io.Reader
	t *tally
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.t.useful.Store(true)
	}
	return n, err
}

// starttlsConfig is the STARTTLS configuration go-smtp gets: it makes
// go-smtp offer STARTTLS, but every handshake go-smtp itself starts is
// refused. conn answers STARTTLS after EHLO itself (starttls.go), so
// go-smtp only meets one before EHLO, which was never offered to that
// client (RFC 3207 §4, RFC 5321 §4.1.1.1).
func starttlsConfig(base *tls.Config) *tls.Config {
	if base == nil {
		return nil
	}
	return &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return nil, errTLSBeforeEHLO
	}}
}
