package demo

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"
)

// The demo's submission accounts (data_dir/users, made with
// `mxguard users add`'s code): carol is guessed at and then phished, bob
// is the target of password spraying, dave owns a mailing list.
const (
	demoUser     = "carol@example.test"
	demoPassword = "carol's-demo-password"
	sprayedUser  = "bob@example.test"
	listOwner    = "dave@example.test"
	listPassword = "dave's-demo-password"
)

// demoAccounts are the users file's accounts and passwords.
var demoAccounts = [][2]string{
	{demoUser, demoPassword},
	{sprayedUser, "bob's-demo-password"},
	{listOwner, listPassword},
}

// login connects to the submission listener from ip, upgrades to TLS (AUTH
// is offered only there) and authenticates; the reply code of AUTH.
func (s *simulator) login(ctx context.Context, ip, user, password string) (*client, int, string, error) {
	c, err := s.dialAddr(ctx, ip, s.submission)
	if err != nil {
		return nil, 0, "", err
	}
	if !strings.HasPrefix(c.greeting, "220") {
		return c, atoi(c.greeting), c.greeting, nil
	}
	c.cmd("EHLO laptop.example.test")
	if code, text := c.cmd("STARTTLS"); code != 220 {
		return c, code, text, nil
	}
	// The demo's certificate is self-signed: opportunistic TLS.
	tc := tls.Client(c.c, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.example.test"})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.close()
		return nil, 0, "", err
	}
	c.c, c.r, c.w = tc, bufio.NewReader(tc), bufio.NewWriter(tc)
	c.cmd("EHLO laptop.example.test")
	code, text := c.cmd("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+password)))
	return c, code, text, nil
}

// passwordGuessing tries a list of common passwords for one account over
// submission until the source is blocked.
func (s *simulator) passwordGuessing(ctx context.Context, ip string) {
	s.n.say("ATTACK         password guessing from %s: common passwords for %s over submission", ip, demoUser)
	for i, pw := range []string{"123456", "password", "qwerty", "letmein", "carol2026", "welcome1", "iloveyou"} {
		c, code, text, err := s.login(ctx, ip, demoUser, pw)
		if err != nil {
			s.n.say("  %s could not connect: %v", ip, err)
			return
		}
		c.close()
		if code != 535 {
			s.n.say("  %s guess %d (%s): %s", ip, i+1, pw, text)
			s.reconnectTo(ctx, ip, s.submission, "submission")
			s.reconnect(ctx, ip)
			return
		}
	}
	s.n.say("  %s tried every password without being blocked", ip)
}

// compromisedAccount logs in with the right password, as a phished
// account does, and sends mail until the account is suspended.
func (s *simulator) compromisedAccount(ctx context.Context, ip string) {
	s.n.say("ATTACK         compromised account %s sends phishing from %s", demoUser, ip)
	sent := 0
	for i := 0; i < 10; i++ {
		c, code, text, err := s.login(ctx, ip, demoUser, demoPassword)
		if err != nil {
			s.n.say("  %s could not connect: %v", ip, err)
			return
		}
		if code != 235 {
			c.close()
			s.n.say("  %s AUTH: %s", ip, text)
			return
		}
		if code, text := c.cmd("MAIL FROM:<" + demoUser + ">"); code != 250 {
			s.n.say("  %s message %d: MAIL FROM refused: %s", ip, i+1, text)
			c.close()
			s.n.say("  %d messages (3 recipients each) went out before the account was suspended", sent)
			return
		}
		for _, r := range []string{"alice@example.test", "bob@example.test", "postmaster@example.test"} {
			c.cmd("RCPT TO:<" + r + ">")
		}
		if code, _ := c.cmd("DATA"); code == 354 {
			fmt.Fprintf(c.w, "Subject: Urgent: verify your mailbox\r\n\r\nClick here.\r\n.\r\n")
			if code, _ := c.reply(); code == 250 {
				sent++
			}
		}
		c.cmd("QUIT")
		c.close()
	}
	s.n.say("  %s sent %d messages without being suspended", demoUser, sent)
}

// reconnectTo shows that a blocked source is refused by another listener.
func (s *simulator) reconnectTo(ctx context.Context, ip, addr, name string) {
	c, err := s.dialAddr(ctx, ip, addr)
	if err != nil {
		s.n.say("  %s reconnect to %s: %v", ip, name, err)
		return
	}
	defer c.close()
	s.n.say("  %s reconnects to %s and is refused at once: %s", ip, name, c.greeting)
}

// passwordSpraying tries a few passwords for one account from each of
// several sources: no source reaches brute_force's threshold, but the
// account's failures together reach account_brute_force's.
func (s *simulator) passwordSpraying(ctx context.Context, ip string) {
	sources := nextIPs(ip, 4)
	s.n.say("ATTACK         password spraying: %s, 3 passwords each for %s over submission", strings.Join(sources, ", "), sprayedUser)
	failed := 0
	for i, src := range sources {
		for j := range 3 {
			c, code, text, err := s.login(ctx, src, sprayedUser, fmt.Sprintf("Spring2026-%d%d!", i, j))
			if err != nil {
				s.n.say("  %s could not connect: %v", src, err)
				return
			}
			c.close()
			if code != 535 {
				s.n.say("  %s guess %d: %s", src, j+1, text)
				return
			}
			failed++
		}
	}
	s.n.say("  %d failed logins for %s from %d sources; none of them reached brute_force's threshold, so none is blocked", failed, sprayedUser, len(sources))
}

// staleList sends the list owner's newsletter to a list with many
// addresses that no longer exist: the delivery servers refuse them (550
// 5.1.1), and each refusal counts toward the account's bounce_spammer rule.
func (s *simulator) staleList(ctx context.Context, ip string) {
	s.n.say("ATTACK         %s sends a newsletter from %s to a list of long-gone subscribers", listOwner, ip)
	c, code, text, err := s.login(ctx, ip, listOwner, listPassword)
	if err != nil {
		s.n.say("  %s could not connect: %v", ip, err)
		return
	}
	defer c.close()
	if code != 235 {
		s.n.say("  %s AUTH: %s", ip, text)
		return
	}
	c.cmd("MAIL FROM:<" + listOwner + ">")
	accepted, refused := 0, 0
	for _, r := range []string{"alice@example.test", "former1@example.test", "former2@example.test", "former3@example.test",
		"bob@example.test", "former4@example.test", "former5@example.test", "former6@example.test"} {
		switch code, _ := c.cmd("RCPT TO:<" + r + ">"); code {
		case 250:
			accepted++
		default:
			refused++
		}
	}
	if code, _ := c.cmd("DATA"); code == 354 {
		fmt.Fprintf(c.w, "Subject: December newsletter\r\n\r\nNews of the month.\r\n.\r\n")
		c.reply()
	}
	c.cmd("QUIT")
	s.n.say("  the mail servers accepted %d subscribers and refused %d as unknown", accepted, refused)
}

// nextIPs returns n addresses from ip on (127.0.0.70, .71, ...).
func nextIPs(ip string, n int) []string {
	a := netip.MustParseAddr(ip)
	out := make([]string, n)
	for i := range out {
		out[i] = a.String()
		a = a.Next()
	}
	return out
}
