package authpolicy

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"mxguard/internal/config"
	"mxguard/internal/detect"
	"mxguard/internal/events"
	"mxguard/internal/testutil"
)

// startedEvents collects the events an engine starts.
type startedEvents struct {
	mu  sync.Mutex
	evs []events.Event
}

func (s *startedEvents) onChange(c detect.Change) {
	if c.Type == detect.ChangeEventStarted && c.Event != nil {
		s.mu.Lock()
		s.evs = append(s.evs, *c.Event)
		s.mu.Unlock()
	}
}

func (s *startedEvents) list() []events.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]events.Event(nil), s.evs...)
}

// waitEvents waits (bounded) until n events started.
func waitEvents(t *testing.T, seen *startedEvents, n int) []events.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(seen.list()) < n && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return seen.list()
}

func newEngine(t testing.TB, rules []config.Rule, seen *startedEvents) *detect.Engine {
	t.Helper()
	eng, err := detect.New(context.Background(), detect.Options{Rules: rules, OnChange: seen.onChange})
	if err != nil {
		t.Fatal(err)
	}
	// Run's writer stores events and reports them to OnChange.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { eng.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return eng
}

// A real Dovecot asks mxguard before and after every login. Failed IMAP
// and POP3 logins from one source, counted per service, make a
// brute_force event that blocks it; Dovecot then refuses that source on
// IMAP and POP3 even with the right password, while a good user from
// another source logs in.
func TestDovecotBruteForce(t *testing.T) {
	seen := &startedEvents{}
	eng := newEngine(t, []config.Rule{{Name: "brute_force", Type: "brute_force", Window: 10 * time.Minute,
		Threshold: 3, Actions: []string{"block"}, BlockFor: time.Hour}}, seen)
	s, err := New(Options{Engine: eng, APIKey: "testkey123"})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, s)
	dv := testutil.StartDovecot(t, testutil.DovecotOptions{
		PolicyURL: "http://" + addr + "/", PolicyAPIKey: "testkey123",
		Users: map[string]string{"alice": "secret", "bob": "hunter2"},
	})

	const attacker, office = "127.0.0.31", "127.0.0.32"
	for i, pw := range []string{"123456", "password"} {
		if got := dv.IMAPLogin(t, attacker, "alice", pw); !strings.Contains(got, "AUTHENTICATIONFAILED") {
			t.Fatalf("IMAP guess %d: %q, want an authentication failure", i, got)
		}
	}
	for i, pw := range []string{"qwerty", "letmein"} {
		if got := dv.POP3Login(t, attacker, "bob", pw); !strings.HasPrefix(got, "-ERR") {
			t.Fatalf("POP3 guess %d: %q, want -ERR", i, got)
		}
	}
	if evs := seen.list(); len(evs) != 0 {
		t.Fatalf("events after 2 IMAP and 2 POP3 failures: %+v, want none (threshold 3 per service)", evs)
	}
	if got := dv.POP3Login(t, attacker, "bob", "dragon"); !strings.HasPrefix(got, "-ERR") {
		t.Fatalf("third POP3 guess: %q", got)
	}
	// Dovecot's report may reach us just after its answer to the client.
	evs := waitEvents(t, seen, 1)
	if len(evs) != 1 || evs[0].Type != "brute_force" || evs[0].Source != attacker || evs[0].Service != "pop3" {
		t.Fatalf("events after 3 failed POP3 logins: %+v, want one brute_force for %s on pop3", evs, attacker)
	}
	// Blocked on every service, even with the right password.
	if got := dv.IMAPLogin(t, attacker, "alice", "secret"); !strings.HasPrefix(got, "a1 NO [ALERT] "+msgBlocked) {
		t.Errorf("IMAP with the right password from the blocked source: %q, want NO [ALERT] %s", got, msgBlocked)
	}
	if got := dv.POP3Login(t, attacker, "alice", "secret"); !strings.HasPrefix(got, "-ERR [AUTH] "+msgBlocked) {
		t.Errorf("POP3 with the right password from the blocked source: %q, want -ERR [AUTH] %s", got, msgBlocked)
	}
	// Others are not affected.
	if got := dv.IMAPLogin(t, office, "bob", "hunter2"); !strings.HasPrefix(got, "a1 OK") {
		t.Errorf("bob from %s: %q, want OK", office, got)
	}
	if got := dv.POP3Login(t, office, "alice", "secret"); !strings.HasPrefix(got, "+OK") {
		t.Errorf("alice over POP3 from %s: %q, want +OK", office, got)
	}
	if n := len(seen.list()); n != 1 {
		t.Errorf("%d events, want still 1 (refused logins are impact, not new failures)", n)
	}
}

// A phone polling IMAP and POP3 with last month's password: Dovecot's
// pwhash is the same every time, so it counts once per service and never
// blocks the office it sits in.
func TestDovecotSamePassword(t *testing.T) {
	seen := &startedEvents{}
	eng := newEngine(t, []config.Rule{{Name: "brute_force", Type: "brute_force", Window: 10 * time.Minute,
		Threshold: 3, Actions: []string{"block"}, BlockFor: time.Hour}}, seen)
	s, _ := New(Options{Engine: eng})
	dv := testutil.StartDovecot(t, testutil.DovecotOptions{PolicyURL: "http://" + serve(t, s) + "/"})
	const phone = "127.0.0.35"
	for range 4 {
		dv.IMAPLogin(t, phone, "alice", "old-password")
		dv.POP3Login(t, phone, "alice", "old-password")
	}
	if got := dv.IMAPLogin(t, phone, "alice", "secret"); !strings.HasPrefix(got, "a1 OK") {
		t.Errorf("login with the new password after 8 retries of the old one: %q, want OK", got)
	}
	if evs := seen.list(); len(evs) != 0 {
		t.Errorf("events: %+v, want none", evs)
	}
}

// A Dovecot sending the wrong X-API-Key gets 401 on every request: nothing
// is counted, and with auth_policy_reject_on_fail = no its logins go on.
func TestDovecotWrongKey(t *testing.T) {
	seen := &startedEvents{}
	eng := newEngine(t, []config.Rule{{Name: "brute_force", Type: "brute_force", Window: 10 * time.Minute,
		Threshold: 2, Actions: []string{"block"}, BlockFor: time.Hour}}, seen)
	s, _ := New(Options{Engine: eng, APIKey: "the-right-key"})
	addr := serve(t, s)
	dv := testutil.StartDovecot(t, testutil.DovecotOptions{PolicyURL: "http://" + addr + "/", PolicyAPIKey: "a-wrong-key"})
	for _, pw := range []string{"a", "b", "c"} {
		dv.IMAPLogin(t, "127.0.0.33", "alice", pw)
	}
	if got := dv.IMAPLogin(t, "127.0.0.33", "alice", "secret"); !strings.HasPrefix(got, "a1 OK") {
		t.Errorf("login after failures with a wrong policy key: %q, want OK (nothing counted)", got)
	}
	if evs := seen.list(); len(evs) != 0 {
		t.Errorf("events: %+v, want none", evs)
	}
	if !strings.Contains(dv.Log(), "401") {
		t.Errorf("Dovecot's log does not show the 401:\n%s", dv.Log())
	}
}
