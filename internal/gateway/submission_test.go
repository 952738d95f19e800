package gateway_test

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"mxguard/internal/mailsink"
	"mxguard/internal/testutil"
	"mxguard/internal/users"
)

// submissionEnv is a gateway with the submission listener, alice's
// account in its users file, in front of a downstream that takes mail for
// any domain (the organisation's outbound relay).
func submissionEnv(t *testing.T, rules string) *env {
	t.Helper()
	sink, err := mailsink.Start(t.Context(), mailsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	dir := t.TempDir()
	usersFile := filepath.Join(dir, "users")
	if _, err := users.Add(usersFile, "alice@example.test", "correct horse", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	return startWith(t, fmt.Sprintf("listen: {smtp: 127.0.0.1:0, admin: 127.0.0.1:0, submission: 127.0.0.1:0}\nauth: {users_file: %s}\n%s", usersFile, rules), sink, dir)
}

// swaks runs swaks against addr from ip and returns its transcript and
// exit code.
func swaks(t *testing.T, addr, ip string, args ...string) (string, int) {
	t.Helper()
	path, err := exec.LookPath("swaks")
	testutil.RequireComponent(t, "swaks", err == nil, "apt-get install swaks")
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(path, append([]string{"--server", host, "--port", port, "--local-interface", ip,
		"--ehlo", "laptop.example.test", "--timeout", "20"}, args...)...)
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	t.Logf("swaks %s (exit %d):\n%s", strings.Join(args, " "), code, out)
	return string(out), code
}

func auth(mech, user, pw string) []string {
	return []string{"--tls", "--auth", mech, "--auth-user", user, "--auth-password", pw}
}

// Authenticated mail goes to any domain, pass-through; AUTH is offered
// only after STARTTLS; the MX listener never offers it.
func TestSubmissionRelaysAuthenticatedMail(t *testing.T) {
	e := submissionEnv(t, "")
	sub := e.gw.SubmissionAddr()
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		out, code := swaks(t, sub, "127.0.0.130", append(auth(mech, "Alice@Example.test", "correct horse"),
			"--from", "alice@example.test", "--to", "partner@elsewhere.example", "--body", "sent with "+mech)...)
		if code != 0 || !strings.Contains(out, "235 2.0.0") || !strings.Contains(out, "250 2.0.0 Ok: queued as") {
			t.Fatalf("AUTH %s: exit %d", mech, code)
		}
	}
	msgs := e.sink.Messages()
	if len(msgs) != 2 || msgs[0].To[0] != "partner@elsewhere.example" || !strings.Contains(string(msgs[1].Data), "sent with LOGIN") {
		t.Fatalf("downstream got %+v", msgs)
	}

	// Before STARTTLS: no AUTH in EHLO, AUTH and MAIL refused 530 5.7.0.
	c := testutil.Dial(t, sub, testutil.DialOptions{LocalIP: "127.0.0.131"})
	c.Expect(220)
	if ehlo := c.Cmd("EHLO laptop.example.test", 250); strings.Contains(ehlo, "AUTH") {
		t.Errorf("AUTH advertised before STARTTLS: %q", ehlo)
	}
	c.Cmd("AUTH PLAIN "+base64.StdEncoding.EncodeToString([]byte("\x00alice@example.test\x00correct horse")), 530)
	c.Cmd("MAIL FROM:<alice@example.test>", 530)
	c.Cmd("QUIT", 221)

	// Wrong password: 535 5.7.8; no mail without AUTH.
	if out, _ := swaks(t, sub, "127.0.0.132", append(auth("PLAIN", "alice@example.test", "wrong"), "--to", "x@elsewhere.example")...); !strings.Contains(out, "535 5.7.8") {
		t.Error("wrong password not refused 535 5.7.8")
	}
	if out, _ := swaks(t, sub, "127.0.0.133", "--tls", "--from", "alice@example.test", "--to", "x@elsewhere.example"); !strings.Contains(out, "530 5.7.0") {
		t.Error("MAIL without AUTH over TLS not refused 530 5.7.0")
	}

	// The MX listener: no AUTH, even over TLS.
	if out, code := swaks(t, e.gw.SMTPAddr(), "127.0.0.134", append(auth("PLAIN", "alice@example.test", "correct horse"), "--to", "alice@example.test")...); code == 0 || strings.Contains(out, "235 ") {
		t.Errorf("the MX listener took AUTH (exit %d)", code)
	}
	if len(e.sink.Messages()) != 2 {
		t.Errorf("%d messages downstream, want still 2", len(e.sink.Messages()))
	}
}

// Malformed AUTH gets a clear 5xx (trusted 127.0.0.1 may AUTH without
// TLS, which makes the raw exchange visible).
func TestSubmissionMalformedAuth(t *testing.T) {
	e := submissionEnv(t, "")
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	c := testutil.Dial(t, e.gw.SubmissionAddr(), testutil.DialOptions{LocalIP: "127.0.0.1"})
	c.Expect(220)
	if ehlo := c.Cmd("EHLO relay.example.test", 250); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Errorf("AUTH not advertised to a trusted client: %q", ehlo)
	}
	for _, tc := range []struct {
		line string
		code int
	}{
		{"AUTH CRAM-MD5", 504},
		{"AUTH PLAIN " + b64("no separators"), 501},
		{"AUTH PLAIN " + b64("a\x00b\x00c\x00d"), 501},
		{"AUTH PLAIN " + b64("\x00alice@example.test\x00"), 501},
		{"AUTH PLAIN " + b64("\x00"+strings.Repeat("u", 300)+"\x00pw"), 500},
		{"AUTH PLAIN " + b64("admin@example.test\x00alice@example.test\x00correct horse"), 535},
		{"AUTH PLAIN !!!not-base64!!!", 501}, // RFC 4954 §4 (smtpd rewrites it before go-smtp decodes it)
		{"AUTH", 502},
	} {
		c.Cmd(tc.line, tc.code)
	}
	c.Cmd("AUTH LOGIN", 334)
	c.Cmd(b64("alice@example.test"), 334)
	c.Cmd(b64("correct horse"), 235)
	c.Cmd("AUTH PLAIN "+b64("\x00alice@example.test\x00correct horse"), 503)
	c.Cmd("MAIL FROM:<alice@example.test>", 250)
	c.Cmd("QUIT", 221)
}

// TestSubmissionBadBase64OverTLS: after STARTTLS, an untrusted client's
// AUTH responses that are not base64 get 501 5.5.2 (RFC 4954 §4), in the
// initial response and in a continuation; "*" cancels with 501; none of
// them counts as a failed login, and a correct AUTH still works after.
func TestSubmissionBadBase64OverTLS(t *testing.T) {
	e := submissionEnv(t, "")
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	c := testutil.Dial(t, e.gw.SubmissionAddr(), testutil.DialOptions{LocalIP: "127.0.0.142"})
	c.Expect(220)
	c.Cmd("EHLO phone.test", 250)
	c.StartTLS(&tls.Config{InsecureSkipVerify: true})
	if ehlo := c.Cmd("EHLO phone.test", 250); !strings.Contains(ehlo, "AUTH PLAIN LOGIN") {
		t.Fatalf("AUTH not advertised over TLS: %q", ehlo)
	}
	for _, text := range []string{
		c.Cmd("AUTH PLAIN !!!not-base64!!!", 501),
		c.Cmd("AUTH LOGIN "+b64("alice@example.test")[1:], 501),
		func() string { c.Cmd("AUTH LOGIN", 334); return c.Cmd("not base64 either", 501) }(),
		func() string {
			c.Cmd("AUTH LOGIN", 334)
			c.Cmd(b64("alice@example.test"), 334)
			return c.Cmd("cGFz c3dvcmQ=", 501)
		}(),
		func() string { c.Cmd("AUTH PLAIN", 334); return c.Cmd("%%%", 501) }(),
	} {
		if !strings.HasPrefix(text, "5.5.2 ") {
			t.Errorf("bad base64 answered %q, want 501 5.5.2", text)
		}
	}
	c.Cmd("AUTH LOGIN", 334)
	c.Cmd("*", 501)
	c.Cmd("AUTH PLAIN "+b64("\x00alice@example.test\x00correct horse"), 235)
	c.Cmd("QUIT", 221)
	m := e.metrics()
	if !strings.Contains(m, `mxguard_auth_total{result="malformed",service="submission"} 5`) ||
		!strings.Contains(m, `mxguard_auth_total{result="failure",service="submission"} 0`) {
		t.Errorf("want 5 malformed AUTH and no failed login:\n%s", grepLines(m, "mxguard_auth_total"))
	}
}

// Password guessing over submission: a phone retrying its old password is
// counted once and never blocked; a guesser is blocked at its 5th
// different password, on the submission and the MX listener.
func TestSubmissionBruteForce(t *testing.T) {
	e := submissionEnv(t, "rules:\n  - {name: bf, type: brute_force, window: 10m, threshold: 5, actions: [block], block_for: 1h}\n")
	sub := e.gw.SubmissionAddr()
	const phone, guesser = "127.0.0.140", "127.0.0.141"
	for range 8 {
		if out, _ := swaks(t, sub, phone, append(auth("PLAIN", "alice@example.test", "last month's password"), "--quit-after", "AUTH")...); !strings.Contains(out, "535 5.7.8") {
			t.Fatal("old password not refused 535 5.7.8")
		}
	}
	if out, code := swaks(t, sub, phone, append(auth("PLAIN", "alice@example.test", "correct horse"), "--quit-after", "AUTH")...); code != 0 || !strings.Contains(out, "235 ") {
		t.Fatalf("the phone with the new password: exit %d", code)
	}
	for i := range 4 {
		if out, _ := swaks(t, sub, guesser, append(auth("PLAIN", "alice@example.test", fmt.Sprint("guess", i)), "--quit-after", "AUTH")...); !strings.Contains(out, "535 5.7.8") {
			t.Fatalf("guess %d not refused 535", i)
		}
	}
	if out, _ := swaks(t, sub, guesser, append(auth("PLAIN", "alice@example.test", "guess4"), "--quit-after", "AUTH")...); !strings.Contains(out, "421 4.7.0") {
		t.Error("the 5th different password did not end the session with 421 4.7.0")
	}
	evs := e.events("type=brute_force")
	if evs.Total != 1 || evs.Events[0].Source != guesser || evs.Events[0].Service != "submission" {
		t.Fatalf("events %+v, want one brute_force of %s on submission", evs, guesser)
	}
	// The evidence: the five guesses, each with the login and our 535,
	// never a password.
	ev := e.event(evs.Events[0].ID)
	list, _ := ev.Detail["evidence"].([]any)
	if len(list) != 5 {
		t.Fatalf("evidence %v, want the 5 guesses", list)
	}
	for _, o := range list {
		m := o.(map[string]any)
		text, _ := m["text"].(string)
		if m["what"] != "auth_failed" || !strings.HasPrefix(text, `AUTH as "alice@example.test": 535 5.7.8 `) || strings.Contains(text, "guess") {
			t.Errorf("evidence %v, want the login and 535 5.7.8, no password", m)
		}
	}
	for _, addr := range []string{sub, e.gw.SMTPAddr()} {
		c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: guesser})
		c.Expect(421)
	}
	if m := e.metrics(); !strings.Contains(m, `mxguard_auth_total{result="failure",service="submission"} 13`) {
		t.Error("mxguard_auth_total failures of submission are not 13 (8 from the phone, 5 guesses)")
	}
}

// A compromised account starts spamming: the internal_spammer rule
// suspends it (its next message gets 550 5.7.1), the suspension is listed
// by the API with its event, and lifting it lets the account send again.
func TestSubmissionSuspendsSpammer(t *testing.T) {
	e := submissionEnv(t, "rules:\n  - {name: outbound, type: internal_spammer, window: 1h, threshold: 3, actions: [suspend], block_for: 1h}\n")
	sub := e.gw.SubmissionAddr()
	send := func(to string) (string, int) {
		return swaks(t, sub, "127.0.0.150", append(auth("LOGIN", "alice@example.test", "correct horse"),
			"--from", "alice@example.test", "--to", to)...)
	}
	if _, code := send("a@one.example,b@two.example"); code != 0 {
		t.Fatal("first message refused")
	}
	if _, code := send("c@three.example"); code != 0 {
		t.Fatal("second message refused")
	}
	out, code := send("d@four.example")
	if code == 0 || !strings.Contains(out, "550 5.7.1 Account suspended") {
		t.Fatalf("4th recipient: exit %d, want 550 5.7.1 at MAIL", code)
	}
	evs := e.events("type=internal_spammer")
	if evs.Total != 1 || evs.Events[0].Source != "alice@example.test" || strings.Join(evs.Events[0].Actions, ",") != "suspend" {
		t.Fatalf("events %+v", evs)
	}
	// The evidence: one line per recipient sent, naming the client.
	list, _ := e.event(evs.Events[0].ID).Detail["evidence"].([]any)
	if len(list) != 3 {
		t.Fatalf("evidence %v, want the 3 recipients", list)
	}
	for _, o := range list {
		m := o.(map[string]any)
		if text, _ := m["text"].(string); m["what"] != "account_message" || !strings.HasPrefix(text, "from 127.0.0.150: MAIL FROM:<alice@example.test> (") {
			t.Errorf("evidence %v", m)
		}
	}
	code2, body := e.api("GET", "/api/v1/suspensions", "")
	if code2 != 200 || !strings.Contains(body, `"account":"alice@example.test"`) || !strings.Contains(body, fmt.Sprintf(`"event_id":%d`, evs.Events[0].ID)) {
		t.Fatalf("suspensions: %d %s", code2, body)
	}
	if code, body := e.api("DELETE", "/api/v1/suspensions/alice@example.test", ""); code != 204 {
		t.Fatalf("lift: %d %s", code, body)
	}
	if _, code := send("e@five.example"); code != 0 {
		t.Error("the account cannot send after the operator lifted the suspension")
	}
	if n := len(e.sink.Messages()); n != 3 {
		t.Errorf("%d messages downstream, want 3", n)
	}
}

// auth.downstream in front of a real Postfix whose SASL is a real
// Dovecot's auth service: the password is the downstream's, checked by
// relaying AUTH; the authenticated mail is delivered by that Postfix.
func TestSubmissionDownstreamAuth(t *testing.T) {
	dv := testutil.StartDovecot(t, testutil.DovecotOptions{AuthListener: true, Users: map[string]string{"alice@example.test": "postfix-side secret"}})
	pf := testutil.StartPostfix(t, testutil.PostfixOptions{Main: map[string]string{
		"smtpd_sasl_auth_enable": "yes",
		"smtpd_sasl_type":        "dovecot",
		"smtpd_sasl_path":        "inet:" + dv.AuthAddr(),
	}})
	e := startAt(t, pf.Addr(), "listen: {smtp: 127.0.0.1:0, admin: 127.0.0.1:0, submission: 127.0.0.1:0}\nauth: {downstream: true}\n", t.TempDir())
	sub := e.gw.SubmissionAddr()
	if out, _ := swaks(t, sub, "127.0.0.170", append(auth("PLAIN", "alice@example.test", "wrong"), "--quit-after", "AUTH")...); !strings.Contains(out, "535 5.7.8") {
		t.Error("a password the downstream refuses was not refused 535 5.7.8")
	}
	out, code := swaks(t, sub, "127.0.0.171", append(auth("LOGIN", "alice@example.test", "postfix-side secret"),
		"--from", "alice@example.test", "--to", "bob@example.test", "--body", "checked by the downstream")...)
	if code != 0 || !strings.Contains(out, "235 ") {
		t.Fatalf("AUTH relayed to Postfix: exit %d", code)
	}
	files := pf.WaitDelivered(t, "bob@example.test", 1, 30*time.Second)
	if b, err := os.ReadFile(files[0]); err != nil || !strings.Contains(string(b), "checked by the downstream") {
		t.Errorf("delivered: %v %q", err, b)
	}
	if !strings.Contains(dv.Log(), "alice@example.test") {
		t.Errorf("Dovecot's auth did not see the login:\n%s", dv.Log())
	}
}
