package gateway_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"mxguard/internal/testutil"
)

// TestPostfixDownstream runs mxguard in front of a real Postfix that is the
// final destination for example.test: mail to a real mailbox is delivered,
// Postfix's own "550 5.1.1 User unknown" reaches the client inside the same
// session and counts toward directory harvest until the source is blocked.
func TestPostfixDownstream(t *testing.T) {
	pf := testutil.StartPostfix(t, testutil.PostfixOptions{})
	e := startAt(t, pf.Addr(), `rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 3, actions: [block], block_for: 1h}
`, t.TempDir())

	c := e.session("127.0.0.80")
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Data("Subject: through postfix\r\nMessage-ID: <pf-1@remote.test>\r\n\r\nHello Alice.\r\n", 250)
	c.Cmd("QUIT", 221)
	files := pf.WaitDelivered(t, "alice@example.test", 1, 30*time.Second)
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if msg := string(b); !strings.Contains(msg, "Message-ID: <pf-1@remote.test>") || !strings.Contains(msg, "by mx.example.test (mxguard)") {
		t.Errorf("delivered message lacks its Message-ID or our Received line:\n%s", msg)
	}

	h := e.session("127.0.0.81")
	for i := 1; i <= 3; i++ {
		text := h.Cmd(fmt.Sprintf("RCPT TO:<nobody%d@example.test>", i), 550)
		if !strings.HasPrefix(text, "5.1.1 ") {
			t.Errorf("Postfix's unknown user should reach the client as 550 5.1.1, got %s", text)
		}
	}
	h.Cmd("RCPT TO:<bob@example.test>", 421)
	e.dial("127.0.0.81").Expect(421)
	if l := e.events("type=directory_harvest&source=127.0.0.81"); l.Total != 1 {
		t.Errorf("harvest events: %+v", l)
	}
	if !strings.Contains(pf.Log(), "User unknown in virtual mailbox table") {
		t.Errorf("Postfix log does not show its own recipient check:\n%s", pf.Log())
	}
}

// TestPostfixAsClient has a real Postfix relay mail through mxguard: its
// smtp client (pipelining, ESMTP, opportunistic STARTTLS) talks to our
// server, the way a sending MTA on the internet does.
func TestPostfixAsClient(t *testing.T) {
	e := start(t, "")
	pf := testutil.StartPostfix(t, testutil.PostfixOptions{
		RelayTo: e.gw.SMTPAddr(),
		Main:    map[string]string{"smtp_tls_security_level": "may", "smtp_tls_loglevel": "1"},
	})
	for i := 0; i < 3; i++ {
		c := testutil.Dial(t, pf.Addr(), testutil.DialOptions{})
		c.Expect(220)
		c.Cmd("EHLO submitter.test", 250)
		c.Cmd("MAIL FROM:<sender@remote.test>", 250)
		c.Cmd("RCPT TO:<alice@example.test>", 250)
		c.Cmd("RCPT TO:<bob@example.test>", 250)
		c.Data(fmt.Sprintf("Subject: via postfix %d\r\nMessage-ID: <pfc-%d@remote.test>\r\n\r\nrelayed by Postfix\r\n", i, i), 250)
		c.Cmd("QUIT", 221)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := e.sink.WaitCount(ctx, 3); err != nil {
		t.Fatalf("mxguard relayed %d of 3 messages from Postfix: %v\n%s", e.sink.Count(), err, pf.Log())
	}
	for _, m := range e.sink.Messages() {
		if len(m.To) != 2 || !strings.Contains(string(m.Data), "by mx.example.test (mxguard) with ESMTPS") {
			t.Errorf("message from Postfix: to %v, want both recipients, over TLS:\n%s", m.To, m.Data)
		}
	}
	if !strings.Contains(pf.Log(), "status=sent") {
		t.Errorf("Postfix does not report the delivery:\n%s", pf.Log())
	}
}
