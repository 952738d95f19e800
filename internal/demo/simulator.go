package demo

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// simulator plays remote hosts. Each bound to its own 127.0.0.x address,
// which the gateway sees as a distinct source.
type simulator struct {
	gw         string
	submission string // the submission listener
	policy     string // the Postfix policy server (listen.policy)
	n          *narrator
	// outage stops and restarts the downstream servers (demo.go).
	outage func(ctx context.Context, step time.Duration)
}

// normalTraffic sends one ordinary message every two seconds.
func (s *simulator) normalTraffic(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	rcpts := []string{"alice@example.test", "bob@example.test", "carol@example.test"}
	last := "250"
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		body := fmt.Sprintf("Subject: status report %d\r\nMessage-ID: <report-%d@partner.test>\r\n\r\nAll systems nominal.\r\n", i, i)
		code, reply, err := s.send(ctx, "127.0.0.10", "reports@partner.test", []string{rcpts[i%len(rcpts)]}, body)
		// Tell only when the answer changes: relayed, spooled, deferred.
		kind := fmt.Sprint(code)
		if strings.Contains(reply, "spooled") {
			kind = "spooled"
		}
		if kind != last {
			switch {
			case err != nil:
				s.n.say("normal mail from 127.0.0.10 could not be sent: %v", err)
			case code == 250 && kind == "spooled":
				s.n.say("NORMAL MAIL    accepted into the spool: %s", reply)
			case code == 250:
				s.n.say("NORMAL MAIL    relayed: %s", reply)
			default:
				s.n.say("NORMAL MAIL    deferred, the sender will retry: %s", reply)
			}
			last = kind
		}
	}
}

// attacks runs one round of every attack, then repeats with new sources.
func (s *simulator) attacks(ctx context.Context, step, cycle time.Duration) {
	for round := 0; ; round++ {
		base := 60 + round*40%180 // new source addresses each round
		steps := []struct {
			wait time.Duration
			run  func(context.Context, string)
			ip   int
		}{
			{step / 4, s.harvest, base},
			{step, s.flood, base + 1},
			{step, s.badSessions, base + 2},
			{step, s.mailbomb, base + 3},
			{step / 4, s.relayProbe, base + 4},
			{step / 4, s.passwordGuessing, base + 5},
			{step / 2, s.passwordSpraying, base + 10}, // .10 to .13
			{step, s.compromisedAccount, base + 6},
			{step, s.staleList, base + 9},
			{step, s.spamAttack, base + 7},
			{step, s.virusOutbreak, base + 8},
			{step, s.backscatter, base + 14},
		}
		// The Postfix policy step judges a client_address outside
		// 127.0.0.0/8: a Postfix on the Internet would ask about those.
		policyClient := fmt.Sprintf("203.0.113.%d", 10+round%200)
		for _, st := range steps {
			if !sleep(ctx, st.wait) {
				return
			}
			st.run(ctx, "127.0.0."+strconv.Itoa(st.ip))
		}
		if sleep(ctx, step/4) {
			s.postfixHarvest(ctx, policyClient)
		}
		if s.outage != nil && sleep(ctx, step) {
			s.outage(ctx, step)
		}
		s.n.say("attack round %d done; events end once their source is quiet for one window. Next round in %s", round+1, cycle)
		if !sleep(ctx, cycle) {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// harvest tries dictionary names in one session until refused.
func (s *simulator) harvest(ctx context.Context, ip string) {
	s.n.say("ATTACK         directory harvest from %s: guessing recipient names", ip)
	c, ok := s.open(ctx, ip, "harvester.test")
	if !ok {
		return
	}
	defer c.close()
	c.cmd("MAIL FROM:<promo@harvester.test>")
	valid, unknown := 0, 0
	for _, name := range harvestNames {
		code, _ := c.cmd("RCPT TO:<" + name + "@example.test>")
		switch {
		case code == 250:
			valid++
		case code == 550:
			unknown++
		default:
			s.n.say("  %s got %d after %d unknown and %d valid guesses: session refused", ip, code, unknown, valid)
			s.reconnect(ctx, ip)
			return
		}
	}
	s.n.say("  %s finished: %d unknown, %d valid", ip, unknown, valid)
}

// harvestNames are the harvester's guesses; the simulated Postfix asks
// about the same ones, which the downstream's answers made known unknown.
var harvestNames = []string{"admin", "info", "sales", "john", "mary", "support", "webmaster", "office", "hr", "jobs", "billing", "alice", "test", "root", "contact", "dave", "eve"}

// relayProbe tries the routing tricks that make a gateway in front of a
// trusting downstream an open relay (issue 7): each is refused 554 5.7.1
// before anything reaches the downstream.
func (s *simulator) relayProbe(ctx context.Context, ip string) {
	s.n.say("ATTACK         open-relay probe from %s: addresses that route through the downstream", ip)
	c, ok := s.open(ctx, ip, "prober.test")
	if !ok {
		return
	}
	defer c.close()
	for _, rcpt := range []string{
		"victim@elsewhere.test", "victim%elsewhere.test@example.test", `"victim@elsewhere.test"@example.test`,
		"elsewhere.test!victim@example.test", "@example.test:victim@elsewhere.test",
	} {
		c.cmd("MAIL FROM:<probe@prober.test>")
		_, reply := c.cmd("RCPT TO:<" + rcpt + ">")
		s.n.say("  %s RCPT TO:<%s>: %s", ip, rcpt, reply)
		c.cmd("RSET")
	}
	c.cmd("QUIT")
}

// backscatter bounces "our" mail that we never sent: null-sender
// messages to local addresses without our BATV tag. Each is refused 550
// 5.7.1, and they count toward the backscatter rule for their source.
func (s *simulator) backscatter(ctx context.Context, ip string) {
	s.n.say("ATTACK         backscatter from %s: bounces of forged mail that claimed to come from us", ip)
	c, ok := s.open(ctx, ip, "mx.victim-of-forgery.test")
	if !ok {
		return
	}
	defer c.close()
	refused := 0
	for i, rcpt := range []string{"alice@example.test", "bob@example.test", "carol@example.test", "alice@example.test", "bob@example.test", "carol@example.test"} {
		c.cmd("MAIL FROM:<>")
		code, reply := c.cmd("RCPT TO:<" + rcpt + ">")
		if i == 0 {
			s.n.say("  %s RCPT TO:<%s> with a null sender: %s", ip, rcpt, reply)
		}
		if code == 550 {
			refused++
		}
		c.cmd("RSET")
	}
	c.cmd("QUIT")
	s.n.say("  %s: %d bounces without a BATV tag refused", ip, refused)
}

// reconnect shows that the blocked source is now refused at connect.
func (s *simulator) reconnect(ctx context.Context, ip string) {
	c, err := s.dial(ctx, ip)
	if err != nil {
		s.n.say("  %s reconnect: %v", ip, err)
		return
	}
	defer c.close()
	s.n.say("  %s reconnects and is refused at once: %s", ip, c.greeting)
}

// flood opens connections and holds them, as a denial of service does; the
// per-source limit refuses the surplus, the dos rule blocks the source.
func (s *simulator) flood(ctx context.Context, ip string) {
	s.n.say("ATTACK         connection flood from %s", ip)
	var open []*client
	refused := 0
	for i := 0; i < 60; i++ {
		c, err := s.dial(ctx, ip)
		if err != nil {
			continue
		}
		if strings.HasPrefix(c.greeting, "421") {
			refused++
			c.close()
			continue
		}
		open = append(open, c)
	}
	for _, c := range open {
		c.close()
	}
	s.n.say("  %s opened 60 connections, %d were refused with 421", ip, refused)
}

// badSessions connects, says hello and leaves without mail, again and again.
func (s *simulator) badSessions(ctx context.Context, ip string) {
	s.n.say("ATTACK         probing sessions without mail from %s", ip)
	refused := 0
	for i := 0; i < 20; i++ {
		c, err := s.dial(ctx, ip)
		if err != nil {
			continue
		}
		if strings.HasPrefix(c.greeting, "421") {
			refused++
		} else {
			c.cmd("EHLO prober.test")
		}
		c.close()
		sleep(ctx, 100*time.Millisecond)
	}
	s.n.say("  %s made 20 sessions without mail, %d refused", ip, refused)
}

// mailbomb sends large messages to one mailbox.
func (s *simulator) mailbomb(ctx context.Context, ip string) {
	s.n.say("ATTACK         mailbomb from %s: 300 KB messages to bob@example.test", ip)
	body := "Subject: you won\r\n\r\n" + strings.Repeat(strings.Repeat("X", 76)+"\r\n", 300*1024/78)
	accepted, refused := 0, 0
	for i := 0; i < 8; i++ {
		code, _, err := s.send(ctx, ip, "bomber@bomb.test", []string{"bob@example.test"}, body)
		if err == nil && code == 250 {
			accepted++
		} else {
			refused++
		}
	}
	s.n.say("  %s: %d large messages accepted, %d refused", ip, accepted, refused)
}

// gtube is SpamAssassin's spam test string, which mxguard's built-in
// check refuses like real spam (assembled here so that this file is not
// itself taken for spam).
const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

// spamAttack sends spam (GTUBE, judged by the built-in check) until the
// source is blocked: each message is refused with 554 5.7.1, and the
// spam_attack rule blocks the source.
func (s *simulator) spamAttack(ctx context.Context, ip string) {
	s.n.say("ATTACK         spam run from %s: GTUBE test spam to alice@example.test", ip)
	s.contentRun(ctx, ip, "offers@spam.test", func(i int) string {
		return fmt.Sprintf("Subject: cheap watches %d\r\nMessage-ID: <spam-%d@spam.test>\r\n\r\nBuy now!\r\n%s\r\n", i, i, gtube)
	})
}

// virusOutbreak sends "invoices" with an executable attachment, which
// the built-in attachment check refuses; the virus_outbreak rule blocks
// the source.
func (s *simulator) virusOutbreak(ctx context.Context, ip string) {
	s.n.say("ATTACK         malware run from %s: invoices with an .exe attachment", ip)
	s.contentRun(ctx, ip, "billing@malware.test", func(i int) string {
		return fmt.Sprintf("Subject: invoice %d overdue\r\nMessage-ID: <inv-%d@malware.test>\r\nMIME-Version: 1.0\r\n"+
			"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nPlease pay the attached invoice.\r\n"+
			"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"invoice_%d.pdf.exe\"\r\n"+
			"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAA=\r\n--b--\r\n", i, i, i)
	})
}

// contentRun sends up to ten messages and tells how they were answered.
func (s *simulator) contentRun(ctx context.Context, ip, from string, msg func(int) string) {
	refused, blocked := 0, false
	for i := 0; i < 10 && !blocked; i++ {
		code, text, err := s.send(ctx, ip, from, []string{"alice@example.test"}, msg(i))
		switch {
		case err != nil:
			s.n.say("  %s could not send: %v", ip, err)
			return
		case code == 554 && i == 0:
			s.n.say("  %s: message refused at end of DATA: %s", ip, text)
			refused++
		case code == 554:
			refused++
		case code == 421:
			s.n.say("  %s is now refused at connect: %s", ip, text)
			blocked = true
		default:
			s.n.say("  %s: unexpected answer %s", ip, text)
		}
	}
	s.n.say("  %s: %d messages refused for their content", ip, refused)
}

// send delivers one message and returns the final reply.
func (s *simulator) send(ctx context.Context, ip, from string, to []string, body string) (int, string, error) {
	c, err := s.dial(ctx, ip)
	if err != nil {
		return 0, "", err
	}
	defer c.close()
	if !strings.HasPrefix(c.greeting, "220") {
		return atoi(c.greeting), c.greeting, nil
	}
	for _, line := range append([]string{"EHLO client.test", "MAIL FROM:<" + from + ">"}, rcptLines(to)...) {
		if code, text := c.cmd(line); code >= 400 {
			return code, text, nil
		}
	}
	if code, text := c.cmd("DATA"); code != 354 {
		return code, text, nil
	}
	fmt.Fprintf(c.w, "%s\r\n.\r\n", strings.TrimSuffix(body, "\r\n"))
	code, text := c.reply()
	c.cmd("QUIT")
	return code, text, nil
}

func rcptLines(to []string) []string {
	var l []string
	for _, r := range to {
		l = append(l, "RCPT TO:<"+r+">")
	}
	return l
}

type client struct {
	c        net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	greeting string
}

// open connects from ip and says EHLO; false (and told) when it cannot.
func (s *simulator) open(ctx context.Context, ip, helo string) (*client, bool) {
	c, err := s.dial(ctx, ip)
	if err != nil {
		s.n.say("  %s could not connect: %v", ip, err)
		return nil, false
	}
	c.cmd("EHLO " + helo)
	return c, true
}

func (s *simulator) dial(ctx context.Context, ip string) (*client, error) {
	return s.dialAddr(ctx, ip, s.gw)
}

func (s *simulator) dialAddr(ctx context.Context, ip, addr string) (*client, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := &client{c: nc, r: bufio.NewReader(nc), w: bufio.NewWriter(nc)}
	_, c.greeting = c.reply()
	return c, nil
}

func (c *client) cmd(line string) (int, string) {
	fmt.Fprintf(c.w, "%s\r\n", line)
	return c.reply()
}

// reply flushes pending output and reads one (possibly multi-line) reply.
func (c *client) reply() (int, string) {
	if err := c.w.Flush(); err != nil {
		return 0, err.Error()
	}
	var last string
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return 0, "connection closed"
		}
		last = strings.TrimRight(line, "\r\n")
		if len(last) < 4 || last[3] != '-' {
			return atoi(last), last
		}
	}
}

func (c *client) close() { c.c.Close() }

func atoi(s string) int {
	if len(s) < 3 {
		return 0
	}
	n, _ := strconv.Atoi(s[:3])
	return n
}
