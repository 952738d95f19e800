package gateway_test

import (
	"crypto/tls"
	"net"
	"os/exec"
	"strings"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/testutil"
)

// Sessions under attack (issue 7, item 6): a STARTTLS client being
// blocked or timed out reads its 421 through TLS; a flood that fills the
// slots is seen by the dos rule. The limits themselves are tested in
// internal/smtpd.

var anyCert = &tls.Config{InsecureSkipVerify: true}

// tlsSession opens a session from ip and moves it to TLS with Go's
// crypto/tls client.
func (e *env) tlsSession(ip string) *testutil.SMTPClient {
	c := e.dial(ip)
	c.Expect(220)
	c.Cmd("EHLO tls-client.test", 250)
	c.StartTLS(anyCert)
	c.Cmd("EHLO tls-client.test", 250)
	return c
}

// expectFinal reads the 421 with enhanced code enh that ends a session,
// then the close (over TLS: a clean one).
func expectFinal(t *testing.T, c *testutil.SMTPClient, enh string) {
	t.Helper()
	if text := c.Expect(421); !strings.HasPrefix(text, enh+" ") {
		t.Errorf("want 421 %s, got 421 %s", enh, text)
	}
	c.ExpectClosed()
}

// TestSTARTTLSClientBlocked: a manual block (API) while a STARTTLS session
// is open; the client reads 421 4.7.0 through TLS at its next command, then
// a clean TLS close.
func TestSTARTTLSClientBlocked(t *testing.T) {
	e := start(t, "")
	c := e.tlsSession("127.0.0.120")
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	if code, body := e.api("POST", "/api/v1/blocks", `{"source":"127.0.0.120","for":"1h","reason":"blocked mid-TLS"}`); code != 201 {
		t.Fatalf("add block: %d %s", code, body)
	}
	c.Send("RCPT TO:<alice@example.test>\r\n")
	expectFinal(t, c, "4.7.0")
	if e.sink.Count() != 0 {
		t.Error("a blocked client's transaction reached the downstream")
	}
}

// TestSTARTTLSClientTimeout: the command timeout of a TLS session answers
// 421 4.4.2 through TLS.
func TestSTARTTLSClientTimeout(t *testing.T) {
	e := start(t, "timeouts: {greeting: 1s, command: 1s, data: 2s}\n")
	expectFinal(t, e.tlsSession("127.0.0.121"), "4.4.2")
}

// TestSwaksTLSClientBlocked: swaks over STARTTLS guesses a recipient; the
// harvest rule fires on it and blocks the source while the TLS session is
// open; swaks reads the 421 4.7.0 to its next RCPT as a TLS reply ("<~*"),
// with no TLS error.
func TestSwaksTLSClientBlocked(t *testing.T) {
	path, err := exec.LookPath("swaks")
	testutil.RequireComponent(t, "swaks", err == nil, "apt-get install swaks")
	e := start(t, `rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 1, actions: [block], block_for: 1h}
`)
	host, port, _ := net.SplitHostPort(e.gw.SMTPAddr())
	out, err := exec.Command(path, "--server", host, "--port", port, "--local-interface", "127.0.0.122",
		"--ehlo", "swaks.test", "--from", "sender@remote.test", "--tls",
		"--to", "guess@example.test,alice@example.test").CombinedOutput()
	t.Logf("swaks (%v):\n%s", err, out)
	transcript := string(out)
	if !strings.Contains(transcript, "<~* 550 5.1.1") {
		t.Fatal("swaks did not get the 550 5.1.1 through TLS")
	}
	before, _, found := strings.Cut(transcript, "<~* 421 4.7.0")
	if !found {
		t.Error("swaks did not read the 421 4.7.0 through TLS")
	}
	if strings.Contains(before, "\n***") {
		t.Error("swaks reported an error (\"***\") before the 421")
	}
	if l := e.events("type=directory_harvest&source=127.0.0.122"); l.Total != 1 {
		t.Errorf("harvest events: %+v", l)
	}
}

// TestBusyFloodBlocks: a flood that fills every slot is the attack: the
// connections refused as busy (421 4.3.2) count toward dos, whose block
// then refuses the source at connect (421 4.7.0) once a slot is free.
func TestBusyFloodBlocks(t *testing.T) {
	e := start(t, `limits: {max_connections: 2}
rules:
  - {name: flood, type: dos, window: 1m, threshold: 3, actions: [block], block_for: 10m}
`)
	holders := []*testutil.SMTPClient{e.dial("127.0.0.123"), e.dial("127.0.0.124")}
	for _, h := range holders {
		h.Expect(220)
	}
	for i := 0; i < 3; i++ {
		expectFinal(t, e.dial("127.0.0.125"), "4.3.2")
	}
	if n := promtest.ToFloat64(e.gw.Metrics.Connections.WithLabelValues("smtp", "busy")); n != 3 {
		t.Errorf("connections_total{result=busy} = %v, want 3", n)
	}
	l := e.events("type=dos&source=127.0.0.125")
	if l.Total != 1 {
		t.Fatalf("dos events for the flooding source: %+v", l)
	}
	// Once a slot is free, the flooder meets its block.
	holders[0].Cmd("QUIT", 221)
	var code int
	var text string
	waitFor(t, func() bool {
		c := e.dial("127.0.0.125")
		defer c.Close()
		code, text, _ = c.ReadReply()
		return code != 421 || !strings.HasPrefix(text, "4.3.2 ")
	})
	if code != 421 || !strings.HasPrefix(text, "4.7.0 ") {
		t.Errorf("blocked flooder with a free slot: want 421 4.7.0, got %d %s", code, text)
	}
	if ev := e.events("type=dos&source=127.0.0.125").Events[0]; ev.Impact < 1 {
		t.Errorf("dos event impact %d, want the refused connection counted", ev.Impact)
	}
}
