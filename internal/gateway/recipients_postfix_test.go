package gateway_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mxguard/internal/address"
	"mxguard/internal/recipients"
	"mxguard/internal/testutil"
)

// TestRecipientsDirectoryPostfix runs the recipients directory against a
// real Postfix (final destination for example.test, mailboxes alice and
// bob): its own 250 and "550 5.1.1 User unknown in virtual mailbox table"
// seen before the outage answer for it while it is stopped. A harvest
// during the outage fires directory_harvest and blocks; known_only defers
// an address never seen valid; after Postfix is back the spool drains
// into it, and the bounce for a forged local sender, refused by Postfix
// too, is held rather than lost.
func TestRecipientsDirectoryPostfix(t *testing.T) {
	pf := testutil.StartPostfix(t, testutil.PostfixOptions{})
	// check_interval 1s: a real Postfix forks an smtpd per health check,
	// slow under -race (see outageConfig).
	extra := func(delay, mode string) string {
		return `delivery:
  servers: [{address: {SINK}, role: primary}]
  check_interval: 1s
  down_after: 2
spool: {delay: ` + delay + `, unspool_rate: 100}
recipients: {during_outage: ` + mode + `}
` + outageRules
	}
	e := startAt(t, pf.Addr(), extra("1h", "accept"), t.TempDir())

	c := e.session("127.0.0.70")
	rcpt(t, c, "alice@example.test", 250, "")
	rcpt(t, c, "nobody@example.test", 550, "5.1.1") // Postfix's own verdict
	c.Data("Subject: before\r\nMessage-ID: <before@remote.test>\r\n\r\nbefore the outage\r\n", 250)
	c.Cmd("QUIT", 221)

	pf.Stop()
	e.waitSpool("delay", func(s spoolStatus) bool { return s.State == "delay" })
	c = e.session("127.0.0.71")
	rcpt(t, c, "nobody@example.test", 550, "5.1.1")
	rcpt(t, c, "alice@example.test", 451, "4.4.1")
	c.Cmd("QUIT", 221)

	e.apply(pf.Addr(), extra("0s", "accept"))
	e.waitSpool("spooling", func(s spoolStatus) bool { return s.State == "spooling" })
	c = e.session("127.0.0.71")
	rcpt(t, c, "alice@example.test", 250, "")
	rcpt(t, c, "nobody@example.test", 550, "5.1.1")
	c.Data("Subject: spooled\r\nMessage-ID: <spooled-1@remote.test>\r\n\r\nduring the outage\r\n", 250)
	c.Cmd("QUIT", 221)

	// Forged local sender to an unseen recipient: accepted (accept mode);
	// Postfix will refuse carol, and then the bounce to ghost.
	f := e.dial("127.0.0.72")
	f.Expect(220)
	f.Cmd("EHLO spammer.test", 250)
	f.Cmd("MAIL FROM:<ghost@example.test>", 250)
	rcpt(t, f, "carol@example.test", 250, "")
	f.Data("Subject: forged\r\n\r\nspam\r\n", 250)
	f.Cmd("QUIT", 221)

	e.harvestBlocked("127.0.0.73", "nobody@example.test", "nobody@example.test", "nobody@example.test")

	e.apply(pf.Addr(), extra("0s", "known_only"))
	c = e.session("127.0.0.74")
	rcpt(t, c, "bob@example.test", 451, "4.4.1") // exists in Postfix, but never seen
	rcpt(t, c, "alice@example.test", 250, "")
	c.Data("Subject: known only\r\nMessage-ID: <spooled-2@remote.test>\r\n\r\nstill out\r\n", 250)
	c.Cmd("QUIT", 221)
	if s := e.spool(); s.Messages != 3 {
		t.Fatalf("spool holds %d messages, want 3", s.Messages)
	}

	pf.Start()
	e.waitSpool("drained", func(s spoolStatus) bool { return s.Messages == 0 && s.State == "off" })
	files := pf.WaitDelivered(t, "alice@example.test", 3, 30*time.Second)
	var all strings.Builder
	for _, f := range files {
		b, _ := os.ReadFile(f)
		all.Write(b)
	}
	for _, id := range []string{"before", "spooled-1", "spooled-2"} {
		if !strings.Contains(all.String(), "Message-ID: <"+id+"@remote.test>") {
			t.Errorf("message %s never reached alice", id)
		}
	}
	for _, addr := range []string{"carol@example.test", "ghost@example.test"} {
		if a := e.gw.Recipients.Lookup(address.MustParse(addr)); a.Verdict != recipients.Unknown {
			t.Errorf("%s after unspool: %+v, want unknown (Postfix refused it)", addr, a)
		}
	}
	held, _ := filepath.Glob(filepath.Join(e.dir, "spool", "bounces", "*.reason"))
	if len(held) != 1 {
		t.Fatalf("held bounces: %v, want the one to ghost@example.test", held)
	}
	if b, _ := os.ReadFile(held[0]); !strings.Contains(string(b), "<ghost@example.test>: 5.1.1 smtp; 550 5.1.1") {
		t.Errorf("held reason %q", b)
	}
	// Counted just after the move that emptied the spool.
	waitFor(t, func() bool { return strings.Contains(e.metrics(), "mxguard_spool_bounces_held_total 1\n") })
}
