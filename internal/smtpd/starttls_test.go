package smtpd

import (
	"crypto/tls"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"

	"mxguard/internal/testutil"
)

// TestCommandsWatchedOverTLS: after STARTTLS (a Go TLS client) an
// untrusted client's source route is refused 554 5.7.1 and never reaches
// the downstream, a bare <postmaster> goes on as postmaster@example.test,
// and message lines are still no commands — conn sees the plaintext
// (starttls.go). The session before TLS is forgotten (RFC 3207 §4.2):
// MAIL right after the handshake needs a new EHLO first.
func TestCommandsWatchedOverTLS(t *testing.T) {
	d, down := newDownstreamRecorder(t)
	ts := startTestServer(t, serverOpts{downstream: down, tls: true, adjust: []func(*Options, *Settings){func(_ *Options, s *Settings) {
		s.Domains = []string{"example.test"}
	}}})
	c := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: "127.0.0.24"})
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	c.StartTLS(&tls.Config{InsecureSkipVerify: true})
	c.Cmd("MAIL FROM:<sender@remote.test>", 502) // go-smtp: EHLO first
	ehlo := c.Cmd("EHLO client.test", 250)
	if strings.Contains(ehlo, "STARTTLS") {
		t.Errorf("STARTTLS offered again over TLS: %q", ehlo)
	}
	c.Cmd("STARTTLS", 502)
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	text := c.Cmd("RCPT TO:<@evil.test:alice@example.test>", 554)
	wantEnhanced(t, text, "5.7.1")
	c.Cmd("RCPT TO:<@a.test,@b.test:bob@example.test>", 554)
	c.Cmd("RCPT TO:<Postmaster>", 250)
	c.Data("Subject: over TLS\n\nRCPT TO:<@x.test:alice@example.test>\n", 250)
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Cmd("QUIT", 221)

	d.wantRcpts(t, "RCPT TO:<postmaster@example.test>", "RCPT TO:<alice@example.test>")
}

// TestSTARTTLSInjection: commands pipelined after STARTTLS in plaintext
// are dropped, never run inside the TLS session (RFC 3207 §4.2; the
// attack of CVE-2011-0411).
func TestSTARTTLSInjection(t *testing.T) {
	d, down := newDownstreamRecorder(t)
	ts := startTestServer(t, serverOpts{downstream: down, tls: true})
	conn, r := rawSession(t, ts.addr, "EHLO client.test")
	conn.Write([]byte("STARTTLS\r\nEHLO injected.test\r\nMAIL FROM:<injected@remote.test>\r\n"))
	if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "220 ") || r.Buffered() != 0 {
		t.Fatalf("STARTTLS: %q %v, %d octets more", l, err, r.Buffered())
	}
	tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	// Were the injected EHLO and MAIL run over TLS, this RCPT would be
	// taken; it gets go-smtp's "introduce yourself" instead.
	tc.Write([]byte("RCPT TO:<alice@example.test>\r\nQUIT\r\n"))
	buf := make([]byte, 4096)
	var got string
	for !strings.Contains(got, "221") {
		n, err := tc.Read(buf)
		got += string(buf[:n])
		if err != nil {
			break
		}
	}
	if !strings.HasPrefix(got, "502 ") {
		t.Errorf("RCPT after the injection got %q, want 502 (no EHLO, no MAIL over TLS)", got)
	}
	for _, l := range d.envelope() {
		if strings.Contains(l, "injected") {
			t.Errorf("downstream got %q", l)
		}
	}
}

// TestSwaksTLSSourceRoute: swaks, over STARTTLS, with a source-routed
// recipient from an untrusted client gets 554 5.7.1.
func TestSwaksTLSSourceRoute(t *testing.T) {
	path, err := exec.LookPath("swaks")
	testutil.RequireComponent(t, "swaks", err == nil, "apt-get install swaks")
	_, down := newDownstreamRecorder(t)
	ts := startTestServer(t, serverOpts{downstream: down, tls: true})
	host, port, _ := strings.Cut(ts.addr, ":")
	out, _ := exec.Command(path, "--server", host, "--port", port, "--local-interface", "127.0.0.26",
		"--tls", "--from", "sender@remote.test", "--to", "@evil.test:alice@example.test",
		"--quit-after", "RCPT", "--timeout", "5").CombinedOutput()
	if !strings.Contains(string(out), "<~* 554 5.7.1 ") {
		t.Errorf("swaks --tls with a source route:\n%s", out)
	}
}

// TestSTARTTLSAfterReload: a session opened before a reload still gets
// its STARTTLS (its generation's post-TLS server stays open), and new
// sessions get the new settings.
func TestSTARTTLSAfterReload(t *testing.T) {
	ts := startTestServer(t, serverOpts{tls: true})
	c := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: "127.0.0.27"})
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	set := *ts.srv.cur.Load().set
	set.Hostname = "mx2.test"
	ts.srv.Reload(&set)
	c.StartTLS(&tls.Config{InsecureSkipVerify: true})
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Cmd("QUIT", 221)

	n := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: "127.0.0.28"})
	if g := n.Expect(220); !strings.HasPrefix(g, "mx2.test ") {
		t.Errorf("greeting after the reload: %q", g)
	}
	n.Cmd("EHLO client.test", 250)
	n.StartTLS(&tls.Config{InsecureSkipVerify: true})
	n.Cmd("EHLO client.test", 250)
	n.Cmd("QUIT", 221)
}

// TestHangupOverTLS: the hangup watch works below conn's TLS layer: a
// client that drops its TLS session while the downstream stalls on its
// RCPT takes the downstream call with it, and the server is not blamed.
func TestHangupOverTLS(t *testing.T) {
	down := testutil.ScriptedSMTP(t, testutil.Script{"RCPT": testutil.Silence})
	ts := startTestServer(t, serverOpts{downstream: down.Addr(), downAfter: 1, tls: true})
	c := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: "127.0.0.29"})
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	c.StartTLS(&tls.Config{InsecureSkipVerify: true})
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<a@remote.test>", 250)
	c.Send("RCPT TO:<alice@example.test>\r\n")
	down.WaitLine(t, "RCPT TO:<alice@example.test>", 10*time.Second)
	c.Close()
	down.WaitHangups(t, 1, 10*time.Second)
	if st := ts.dm.Servers()[0]; st.State != "up" || st.LastError != "" {
		t.Errorf("server blamed: %+v", st)
	}
}

// TestSTARTTLSBeforeEHLOLeftover: after a STARTTLS go-smtp answers 220
// itself (before EHLO), what the client sends is TLS data. go-smtp's
// handshake reads only the start of it and fails; the rest must be
// dropped, never handed to go-smtp as commands conn did not frame (its
// source route would go unwatched, RFC 3207 §4.2).
func TestSTARTTLSBeforeEHLOLeftover(t *testing.T) {
	d, down := newDownstreamRecorder(t)
	ts := startTestServer(t, serverOpts{downstream: down, tls: true})
	conn, r := rawSession(t, ts.addr, "STARTTLS")
	// Not a TLS record: go-smtp's handshake fails on its first header,
	// having read one buffer of this; the commands sit past that buffer.
	blob := "JUNK!" + strings.Repeat("X", 1500) + "\r\nEHLO injected.test\r\n" +
		"MAIL FROM:<injected@remote.test>\r\nRCPT TO:<@evil.test:alice@example.test>\r\n"
	conn.Write([]byte(blob))
	got, err := readUntil(r, "", "550 ")
	if err != nil {
		t.Fatalf("before the handshake error: %q %v", got, err)
	}
	conn.Write([]byte("QUIT\r\n"))
	got, _ = readUntil(r, got, "221 ")
	_, after, _ := strings.Cut(got, "550 ")
	if strings.Contains(after, "\r\n250") || !strings.Contains(after, "221 ") {
		t.Errorf("after the failed handshake the TLS data ran as commands: %q", after)
	}
	for _, l := range d.envelope() {
		if strings.Contains(l, "injected") || strings.Contains(l, "alice") {
			t.Errorf("downstream got %q", l)
		}
	}
}

// TestSTARTTLSFoldedVerb: go-smtp upper-cases the whole line before it
// looks for STARTTLS, so "ſTARTTLS" (U+017F upper-cases to S) is a
// STARTTLS to it. conn must take it as one too: were it left to
// go-smtp, its handshake would read one buffer of the next line and run
// the rest ("RCPT TO:<@evil.test:...>") as a command conn never saw.
// That buffer is a Go allocation size class (576 octets with Go 1.2x's
// crypto/tls); the test tries the classes around it, one session each.
func TestSTARTTLSFoldedVerb(t *testing.T) {
	d, down := newDownstreamRecorder(t)
	ts := startTestServer(t, serverOpts{downstream: down, tls: true})
	for _, class := range []int{512, 576, 640, 704, 768, 896, 1024, 1152, 1280} {
		conn, r := rawSession(t, ts.addr, "EHLO client.test", "MAIL FROM:<sender@remote.test>", "\u017fTARTTLS")
		conn.Write([]byte("JUNK!" + strings.Repeat("X", class-5) + "RCPT TO:<@evil.test:alice@example.test>\r\nQUIT\r\n"))
		got, _ := readUntil(r, "", "221 ")
		if strings.Contains(got, "\r\n250") || strings.HasPrefix(got, "250") {
			t.Errorf("%d: a line cut by go-smtp's handshake ran as a command: %q", class, got)
		}
		conn.Close()
	}
	for _, l := range d.envelope() {
		if strings.Contains(l, "alice") {
			t.Errorf("downstream got %q", l)
		}
	}
}

// readUntil reads from r, after got, until what was read holds want or
// the connection ends; it returns all that was read.
func readUntil(r io.Reader, got, want string) (string, error) {
	buf := make([]byte, 4096)
	for !strings.Contains(got, want) {
		n, err := r.Read(buf)
		got += string(buf[:n])
		if err != nil {
			return got, err
		}
	}
	return got, nil
}
