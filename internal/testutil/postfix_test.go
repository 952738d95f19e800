package testutil

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestPostfixFinalDestination is the contract the relay tests rely on: the
// private Postfix delivers to a virtual mailbox and rejects an unknown
// recipient during RCPT with a real 550 5.1.1.
func TestPostfixFinalDestination(t *testing.T) {
	pf := StartPostfix(t, PostfixOptions{})

	c := Dial(t, pf.Addr(), DialOptions{LocalIP: "127.0.0.9"})
	c.Expect(220)
	c.Cmd("EHLO client.example.net", 250)
	c.Cmd("MAIL FROM:<sender@example.net>", 250)
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	if text := c.Cmd("RCPT TO:<nobody@example.test>", 550); !strings.Contains(text, "5.1.1") || !strings.Contains(text, "User unknown") {
		t.Errorf("unknown recipient: got %q, want 5.1.1 User unknown", text)
	}
	c.Data("Subject: hello\n\n.leading dot\nbody\n", 250)
	c.Cmd("QUIT", 221)
	c.ExpectClosed()

	files := pf.WaitDelivered(t, "alice", 1, 30*time.Second)
	msg, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Subject: hello", "\n.leading dot\n", "Delivered-To: alice@example.test"} {
		if !strings.Contains(string(msg), want) {
			t.Errorf("delivered message lacks %q:\n%s", want, msg)
		}
	}
	if n := len(pf.Maildir("bob@example.test")); n != 0 {
		t.Errorf("bob got %d messages, want 0", n)
	}
	if !strings.Contains(pf.Log(), "127.0.0.9") {
		t.Errorf("maillog does not show the client address 127.0.0.9")
	}
}

// TestPostfixRelayRestart checks relay mode and Stop/Start on the same port:
// mail queued while the next hop (a second Postfix) is down is delivered
// after it comes back.
func TestPostfixRelayRestart(t *testing.T) {
	final := StartPostfix(t, PostfixOptions{})
	relay := StartPostfix(t, PostfixOptions{RelayTo: final.Addr()})

	final.Stop()
	if err := greets(final.Addr()); err == nil {
		t.Fatal("stopped Postfix still greets")
	}
	c := Dial(t, relay.Addr(), DialOptions{})
	c.Expect(220)
	c.Cmd("HELO client.example.net", 250)
	c.Cmd("MAIL FROM:<sender@example.net>", 250)
	c.Cmd("RCPT TO:<bob@example.test>", 250)
	c.Data("Subject: queued\n\nwhile down\n", 250)
	c.Cmd("QUIT", 221)

	final.Start()
	final.WaitDelivered(t, "bob", 1, 30*time.Second)
}
