package gateway_test

import (
	"strings"
	"testing"
	"time"

	"mxguard/internal/testutil"
)

// Password guessing over IMAP and POP3 against a real Dovecot that asks
// mxguard (listen.auth_policy) is detected with the built-in brute_force
// rule, listed as an event, and blocks the guesser everywhere: Dovecot
// refuses it even with the right password, and mxguard's own SMTP
// listener refuses its connections.
func TestDovecotGuessingBlocksSMTP(t *testing.T) {
	e := start(t, "listen: {smtp: 127.0.0.1:0, admin: 127.0.0.1:0, auth_policy: 127.0.0.1:0}\nauth: {policy_api_key: dovecot-secret-key}\n")
	dv := testutil.StartDovecot(t, testutil.DovecotOptions{
		PolicyURL: "http://" + e.gw.AuthPolicyAddr() + "/", PolicyAPIKey: "dovecot-secret-key",
		Users: map[string]string{"alice": "secret", "bob": "hunter2"},
	})
	const guesser, colleague = "127.0.0.61", "127.0.0.62"
	// The built-in rule: 20 different wrong passwords within 10 minutes
	// on one service; repeats of one password would count once.
	for i := range 20 {
		pw := "guess" + strings.Repeat("x", i)
		var got string
		if i%2 == 0 {
			got = dv.IMAPLogin(t, guesser, "alice", pw)
		} else {
			got = dv.POP3Login(t, guesser, "bob", pw)
		}
		if strings.Contains(got, "OK") {
			t.Fatalf("guess %d succeeded: %q", i, got)
		}
	}
	// 10 IMAP and 10 POP3 failures: below 20 on each service.
	if evs := e.events("type=brute_force"); evs.Total != 0 {
		t.Fatalf("events after 10 IMAP and 10 POP3 failures: %+v, want none", evs)
	}
	for i := range 10 {
		dv.IMAPLogin(t, guesser, "alice", "more"+strings.Repeat("y", i))
	}
	var evs eventList
	deadline := time.Now().Add(10 * time.Second)
	for evs = e.events("type=brute_force"); evs.Total == 0 && time.Now().Before(deadline); evs = e.events("type=brute_force") {
		time.Sleep(10 * time.Millisecond)
	}
	if evs.Total != 1 || evs.Events[0].Source != guesser || evs.Events[0].Service != "imap" {
		t.Fatalf("events: %+v, want one brute_force for %s on imap", evs, guesser)
	}
	// The evidence: Dovecot's reports of failed IMAP logins, never a
	// password or its hash.
	whats, texts := e.evidence("type=brute_force")
	if len(texts) != 16 || !everyOne(whats, func(w string) bool { return w == "auth_failed" }) ||
		!everyOne(texts, func(s string) bool {
			return s == `imap login "alice": authentication failed (Dovecot auth policy report)` && !strings.Contains(s, "guess")
		}) {
		t.Errorf("brute_force evidence: %q %q", whats, texts)
	}
	if got := dv.POP3Login(t, guesser, "alice", "secret"); !strings.HasPrefix(got, "-ERR [AUTH]") {
		t.Errorf("POP3 with the right password from the blocked source: %q", got)
	}
	c := e.dial(guesser)
	c.Expect(421)
	if got := dv.IMAPLogin(t, colleague, "alice", "secret"); !strings.HasPrefix(got, "a1 OK") {
		t.Errorf("alice from %s: %q, want OK", colleague, got)
	}
	c = e.dial(colleague)
	c.Expect(220)
}
