package gateway_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mxguard/internal/testutil"
)

// TestPostfixPolicyHarvest protects a stock Postfix, kept as the MX, with
// mxguard's policy server (listen.policy), placed as docs/postfix-policy.md
// recommends. Postfix relays example.test to a sink; mxguard knows the
// recipients from recipients.file. A harvest through Postfix from
// 127.0.0.91 gets Postfix's "550 5.1.1 ... User unknown" for each guess
// (mxguard's answer), fires directory_harvest, and is then refused with
// 421 4.7.0 (Postfix disconnects it), in this session and the next;
// meanwhile 127.0.0.92's mail goes through Postfix to the sink. Sizes come
// from END-OF-MESSAGE (smtpd_end_of_data_restrictions): two large messages
// from 127.0.0.93 fire mailbomb, and its next recipient is refused.
func TestPostfixPolicyHarvest(t *testing.T) {
	dir := t.TempDir()
	rcpts := filepath.Join(dir, "recipients.txt")
	if err := os.WriteFile(rcpts, []byte("alice@example.test\nbob@example.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sink := testutil.ScriptedSMTP(t, testutil.Script{})
	e := startAt(t, sink.Addr(), `listen: {smtp: 127.0.0.1:0, admin: 127.0.0.1:0, policy: 127.0.0.1:0}
recipients: {file: `+rcpts+`}
rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 4, actions: [block], block_for: 1h}
  - {name: bomb, type: mailbomb, window: 10m, threshold: 2, min_size: 20KB, actions: [block], block_for: 1h}
`, dir)
	pf := testutil.StartPostfix(t, testutil.PostfixOptions{
		RelayTo: sink.Addr(),
		Policy:  e.gw.PolicyAddr(),
		// 127.0.0.1 only: the test's other loopback addresses are
		// Internet clients, judged by the policy server.
		Main: map[string]string{"mynetworks": "127.0.0.1/32"},
	})
	dial := func(ip string) *testutil.SMTPClient { return postfixSession(t, pf, ip) }

	h := dial("127.0.0.91")
	h.Cmd("RCPT TO:<alice@example.test>", 250)
	for _, guess := range []string{"admin", "info", "sales", "webmaster"} {
		text := h.Cmd("RCPT TO:<"+guess+"@example.test>", 550)
		if !strings.HasPrefix(text, "5.1.1 <"+guess+"@example.test>: Recipient address rejected: ") {
			t.Errorf("guess %s: Postfix answered 550 %s, want 5.1.1 with Postfix's recipient context", guess, text)
		}
	}
	text := h.Cmd("RCPT TO:<bob@example.test>", 421)
	if !strings.HasPrefix(text, "4.7.0 ") {
		t.Errorf("blocked harvester: 421 %s, want 4.7.0", text)
	}
	h.ExpectClosed()
	// Its next session: Postfix greets (it asks the policy at RCPT), and
	// refuses the first recipient.
	h = dial("127.0.0.91")
	h.Cmd("RCPT TO:<alice@example.test>", 421)
	h.ExpectClosed()

	ok := dial("127.0.0.92")
	ok.Cmd("RCPT TO:<bob@example.test>", 250)
	ok.Cmd("RCPT TO:<typo@example.test>", 550)
	ok.Data("Subject: via postfix\r\nMessage-ID: <policy-1@remote.test>\r\n\r\nHello Bob.\r\n", 250)
	ok.Cmd("QUIT", 221)
	sink.WaitLine(t, "RCPT TO:<bob@example.test>", 30*time.Second)
	for _, l := range sink.Lines() {
		if strings.Contains(l, "typo@") || strings.Contains(l, "webmaster@") {
			t.Errorf("the sink was asked about a refused recipient: %q", l)
		}
	}

	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("B", 98)+"\r\n", 250)
	bomber := dial("127.0.0.93")
	for i := range 2 {
		bomber.Cmd("RCPT TO:<alice@example.test>", 250)
		bomber.Data(big, 250)
		if i == 0 {
			bomber.Cmd("MAIL FROM:<sender@remote.test>", 250)
		}
	}
	bomber.Cmd("MAIL FROM:<sender@remote.test>", 250)
	bomber.Cmd("RCPT TO:<alice@example.test>", 421)
	if evs := e.events("type=mailbomb"); evs.Total != 1 || evs.Events[0].Source != "127.0.0.93" {
		t.Errorf("mailbomb events: %+v, want one of 127.0.0.93", evs)
	}

	evs := e.events("type=directory_harvest")
	if evs.Total != 1 || evs.Events[0].Source != "127.0.0.91" || evs.Events[0].Impact < 2 {
		t.Errorf("events: %+v, want one directory_harvest of 127.0.0.91 with the two refusals as impact", evs)
	}
	_, metrics := e.api("GET", "/metrics", "")
	for _, want := range []string{
		`mxguard_policy_requests_total{action="421",front_end="postfix"} 3`,
		`mxguard_policy_requests_total{action="reject",front_end="postfix"} 5`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if log := pf.Log(); !strings.Contains(log, "reject: RCPT from unknown[127.0.0.91]: 550 5.1.1") {
		t.Errorf("Postfix's log shows no policy refusal of the harvester:\n%s", log)
	}
}

// TestPolicyReload: a reload reaches the Postfix policy server: a client
// added to the static blocklist is refused at its next SMTP session, one
// removed from it is judged again, on the same policy connection.
func TestPolicyReload(t *testing.T) {
	e, f := startFromFile(t, "listen: {smtp: 127.0.0.1:0, admin: 127.0.0.1:0, policy: 127.0.0.1:0}\n")
	c, err := net.Dial("tcp", e.gw.PolicyAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	ask := func(port string) string {
		t.Helper()
		fmt.Fprintf(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=203.0.113.5\nclient_port=%s\n"+
			"server_address=127.0.0.1\nserver_port=25\nrecipient=alice@example.test\ninstance=i.%s\n\n", port, port)
		line, err := r.ReadString('\n')
		if err == nil {
			_, err = r.ReadString('\n')
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(line)
	}
	if got := ask("1"); got != "action=DUNNO" {
		t.Fatalf("before the reload: %q", got)
	}
	reload := func(extra string) {
		t.Helper()
		f.write(f.yaml("listen: {smtp: 127.0.0.1:0, admin: 127.0.0.1:0, policy: 127.0.0.1:0}\n" + extra))
		if code, body := e.api("POST", "/api/v1/reload", ""); code != 200 {
			t.Fatalf("reload: %d %s", code, body)
		}
	}
	reload("blocklist: [203.0.113.0/24]\n")
	if got := ask("2"); !strings.HasPrefix(got, "action=421 4.7.0 ") {
		t.Errorf("blocklisted by the reload: %q", got)
	}
	reload("")
	if got := ask("3"); got != "action=DUNNO" {
		t.Errorf("after the blocklist entry was removed: %q", got)
	}
}

// TestPostfixPolicyAccounts: Postfix's SASL users (a real Dovecot's auth
// service) reach the account rules through sasl_username at
// END-OF-MESSAGE: alice's third message makes internal_spammer suspend her,
// and her next message is refused 550 5.7.1 at end of data, by Postfix on
// mxguard's word; the three before reached the sink.
func TestPostfixPolicyAccounts(t *testing.T) {
	dv := testutil.StartDovecot(t, testutil.DovecotOptions{AuthListener: true, Users: map[string]string{"alice@example.test": "alice-secret"}})
	sink := testutil.ScriptedSMTP(t, testutil.Script{})
	e := startAt(t, sink.Addr(), `listen: {smtp: 127.0.0.1:0, admin: 127.0.0.1:0, policy: 127.0.0.1:0}
rules:
  - {name: spammer, type: internal_spammer, window: 10m, threshold: 3, actions: [suspend], block_for: 1h}
`, t.TempDir())
	pf := testutil.StartPostfix(t, testutil.PostfixOptions{
		RelayTo: sink.Addr(),
		Policy:  e.gw.PolicyAddr(),
		Main: map[string]string{
			"mynetworks":             "127.0.0.1/32",
			"smtpd_sasl_auth_enable": "yes",
			"smtpd_sasl_type":        "dovecot",
			"smtpd_sasl_path":        "inet:" + dv.AuthAddr(),
		},
	})
	send := func(i int) (string, int) {
		return swaks(t, pf.Addr(), "127.0.0.95", "--auth", "PLAIN", "--auth-user", "alice@example.test", "--auth-password", "alice-secret",
			"--from", "alice@example.test", "--to", "bob@example.test", "--body", fmt.Sprintf("message %d", i))
	}
	for i := 1; i <= 3; i++ {
		if out, code := send(i); code != 0 || !strings.Contains(out, "235 ") {
			t.Fatalf("message %d of alice: exit %d", i, code)
		}
	}
	out, code := send(4)
	if code == 0 || !strings.Contains(out, "550 5.7.1") {
		t.Errorf("message 4 of the suspended account: exit %d, want 550 5.7.1 at end of data", code)
	}
	_, body := e.api("GET", "/api/v1/suspensions", "")
	if !strings.Contains(body, `"account":"alice@example.test"`) {
		t.Errorf("suspensions: %s", body)
	}
	n := 0
	for _, l := range sink.Lines() {
		if strings.HasPrefix(l, "MAIL FROM:") {
			n++
		}
	}
	if n != 3 {
		t.Errorf("%d messages reached the sink, want 3", n)
	}
}

// TestPostfixPolicyFailOpen runs the main.cf lines of
// docs/postfix-policy.md as written (the per-service { ... } form,
// Postfix 3.0 and later): mxguard is asked and refuses a harvester's
// guess; once mxguard is stopped, Postfix lets mail through
// (default_action=DUNNO, fail open) instead of deferring it.
func TestPostfixPolicyFailOpen(t *testing.T) {
	dir := t.TempDir()
	rcpts := filepath.Join(dir, "recipients.txt")
	if err := os.WriteFile(rcpts, []byte("alice@example.test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sink := testutil.ScriptedSMTP(t, testutil.Script{})
	e := startAt(t, sink.Addr(), "listen: {smtp: 127.0.0.1:0, admin: 127.0.0.1:0, policy: 127.0.0.1:0}\nrecipients: {file: "+rcpts+"}\n", dir)
	check := "check_policy_service { inet:" + e.gw.PolicyAddr() + ", timeout=10s, default_action=DUNNO }"
	pf := testutil.StartPostfix(t, testutil.PostfixOptions{
		RelayTo: sink.Addr(),
		Main: map[string]string{
			"mynetworks":                     "127.0.0.1/32",
			"smtpd_recipient_restrictions":   "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination, " + check,
			"smtpd_end_of_data_restrictions": check,
			"smtpd_policy_service_timeout":   "10s",
		},
	})
	c := postfixSession(t, pf, "127.0.0.96")
	c.Cmd("RCPT TO:<guess@example.test>", 550)
	c.Cmd("QUIT", 221)

	if err := e.gw.Close(); err != nil {
		t.Fatal(err)
	}
	c = postfixSession(t, pf, "127.0.0.97")
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Data("Subject: while mxguard is down\r\n\r\nfail open\r\n", 250)
	c.Cmd("QUIT", 221)
	sink.WaitLine(t, "RCPT TO:<alice@example.test>", 30*time.Second)
	if !strings.Contains(pf.Log(), "problem talking to server") {
		t.Errorf("Postfix's log does not show the policy server down:\n%s", pf.Log())
	}
}

// postfixSession connects to Postfix from ip and gets to the point of
// RCPT, where Postfix asks the policy server.
func postfixSession(t *testing.T, pf *testutil.Postfix, ip string) *testutil.SMTPClient {
	t.Helper()
	c := testutil.Dial(t, pf.Addr(), testutil.DialOptions{LocalIP: ip})
	c.Expect(220)
	c.Cmd("EHLO client.remote.test", 250)
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	return c
}
