package mailsink

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"mxguard/internal/testutil"
)

func start(t *testing.T, o Options) *Server {
	t.Helper()
	s, err := Start(t.Context(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestDeliverAndRecipientChecks(t *testing.T) {
	received := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	s := start(t, Options{
		Hostname:  "sink.example.test",
		Mailboxes: []string{"alice@example.test", "Bob@Example.test"},
		Now:       func() time.Time { return received },
	})

	c := testutil.Dial(t, s.Addr(), testutil.DialOptions{LocalIP: "127.0.0.9"})
	if greeting := c.Expect(220); !strings.HasPrefix(greeting, "sink.example.test ") {
		t.Errorf("greeting %q does not start with the hostname", greeting)
	}
	ehlo := c.Cmd("EHLO client.example.net", 250)
	for _, ext := range []string{"PIPELINING", "8BITMIME", "SIZE", "ENHANCEDSTATUSCODES"} {
		if !strings.Contains(ehlo, "\n"+ext) {
			t.Errorf("EHLO does not advertise %s:\n%s", ext, ehlo)
		}
	}
	c.Cmd("MAIL FROM:<sender@example.net>", 250)
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Cmd("RCPT TO:<bob@EXAMPLE.TEST>", 250)
	if text := c.Cmd("RCPT TO:<carol@example.test>", 550); !strings.HasPrefix(text, "5.1.1 ") || !strings.Contains(text, "User unknown") {
		t.Errorf("unknown user: %q", text)
	}
	if text := c.Cmd("RCPT TO:<alice@elsewhere.test>", 554); !strings.HasPrefix(text, "5.7.1 ") {
		t.Errorf("foreign domain: %q", text)
	}
	c.Data("Subject: hi\n\n.dot\nbody\n", 250)
	c.Cmd("QUIT", 221)

	if err := s.WaitCount(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	msgs := s.Messages()
	if len(msgs) != 1 || s.Count() != 1 {
		t.Fatalf("got %d messages (count %d), want 1", len(msgs), s.Count())
	}
	m := msgs[0]
	if m.From != "sender@example.net" || strings.Join(m.To, ",") != "alice@example.test,bob@EXAMPLE.TEST" {
		t.Errorf("envelope from=%q to=%q", m.From, m.To)
	}
	if want := "Subject: hi\r\n\r\n.dot\r\nbody\r\n"; string(m.Data) != want {
		t.Errorf("data %q, want %q", m.Data, want)
	}
	if !m.Received.Equal(received) {
		t.Errorf("received %v, want %v", m.Received, received)
	}
}

func TestCatchAllAndLimits(t *testing.T) {
	s := start(t, Options{MaxMessageBytes: 100, MaxStored: 2})

	c := testutil.Dial(t, s.Addr(), testutil.DialOptions{})
	c.Expect(220)
	if ehlo := c.Cmd("EHLO client.example.net", 250); !strings.Contains(ehlo, "SIZE 100") {
		t.Errorf("EHLO does not advertise SIZE 100:\n%s", ehlo)
	}
	for i := range 3 {
		c.Cmd("MAIL FROM:<>", 250)
		c.Cmd("RCPT TO:<anyone@anywhere.test>", 250)
		c.Data("Subject: "+strings.Repeat("x", i), 250)
	}
	c.Cmd("MAIL FROM:<a@example.net>", 250)
	c.Cmd("RCPT TO:<b@example.test>", 250)
	if text := c.Data(strings.Repeat("y", 200), 552); !strings.HasPrefix(text, "5.3.4 ") {
		t.Errorf("too large: %q", text)
	}
	c.Cmd("QUIT", 221)

	if s.Count() != 3 {
		t.Errorf("count %d, want 3", s.Count())
	}
	msgs := s.Messages()
	if len(msgs) != 2 || string(msgs[0].Data) != "Subject: x\r\n" || string(msgs[1].Data) != "Subject: xx\r\n" {
		t.Errorf("stored %d messages, want the newest 2: %q", len(msgs), msgs)
	}
}

// TestSetDown checks the outage simulation: while down, connections are
// refused and open sessions are dropped; up again serves on the same address.
func TestSetDown(t *testing.T) {
	s := start(t, Options{Domains: []string{"example.test"}})
	addr := s.Addr()

	open := testutil.Dial(t, addr, testutil.DialOptions{})
	open.Expect(220)
	if err := s.SetDown(true); err != nil {
		t.Fatal(err)
	}
	open.ExpectClosed()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Fatal("connect succeeded while down")
	}

	if err := s.SetDown(false); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Fatalf("address changed from %s to %s", addr, s.Addr())
	}
	c := testutil.Dial(t, addr, testutil.DialOptions{})
	c.Expect(220)
	c.Cmd("HELO client.example.net", 250)
	c.Cmd("MAIL FROM:<a@example.net>", 250)
	c.Cmd("RCPT TO:<whoever@example.test>", 250)
	c.Data("Subject: after the outage\n", 250)
	if err := s.WaitCount(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
}

func TestWaitCountContext(t *testing.T) {
	s := start(t, Options{})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- s.WaitCount(ctx, 1) }()
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("WaitCount returned nil after cancel with no message")
	}
}

func TestClose(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	s, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cancel() // closes the server, racing with the explicit Close below
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDown(false); err == nil {
		t.Error("SetDown after Close succeeded")
	}
}
