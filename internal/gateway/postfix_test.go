package gateway_test

import (
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
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 3, actions: [alert, block], block_for: 1h}
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
