package detect

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"mxguard/internal/config"
)

func authFailure(src, service, login string, pw uint64) Observation {
	return Observation{Kind: KindAuthFailure, Addr: addr(src), Service: service, Account: login, Password: pw, Refused: true}
}

// The same wrong password again within the window counts once: a phone
// polling with an old password never blocks its office's NAT; new
// passwords (a guesser) count in full.
func TestSamePasswordCountsOnce(t *testing.T) {
	bf := rule("bf", "brute_force", 10*time.Minute, 5, "block")
	r := newRig(t, Options{Rules: []config.Rule{bf}})
	old := r.PasswordKey("alice", "last-months-password")
	for i := range 100 {
		if r.Observe(authFailure("198.51.100.7", "submission", "alice", old)) {
			t.Fatalf("blocked after %d retries of one password", i+1)
		}
		r.clock.Advance(5 * time.Second)
	}
	if evs := r.eventsOf(t, "bf"); len(evs) != 0 {
		t.Fatalf("events %+v", evs)
	}
	// Colleagues behind the same NAT with their own stale passwords count
	// once each: with alice, four stay below 5.
	for _, u := range []string{"bob", "carol", "dave"} {
		for range 10 {
			r.Observe(authFailure("198.51.100.7", "submission", u, r.PasswordKey(u, "stale-"+u)))
		}
	}
	if r.Blocked(addr("198.51.100.7")) {
		t.Fatal("an office NAT with four stale clients was blocked")
	}
	// A guesser: every attempt a new password.
	for i := range 5 {
		r.Observe(authFailure("203.0.113.9", "submission", "alice", r.PasswordKey("alice", fmt.Sprint("guess", i))))
	}
	if !r.Blocked(addr("203.0.113.9")) {
		t.Fatal("5 different wrong passwords did not block")
	}
	// After a window the old password counts again, once.
	r.clock.Advance(10 * time.Minute)
	for range 3 {
		r.Observe(authFailure("198.51.100.7", "submission", "alice", old))
	}
	if r.Blocked(addr("198.51.100.7")) {
		t.Fatal("NAT blocked after a window")
	}
	// Without a fingerprint every failure counts (nothing to compare).
	for range 5 {
		r.Observe(authFailure("192.0.2.99", "imap", "alice", 0))
	}
	if !r.Blocked(addr("192.0.2.99")) {
		t.Error("failures without fingerprints were not counted")
	}
}

// account_brute_force counts the failures for one account from any number
// of sources: password spraying from a botnet, each bot trying twice.
func TestAccountBruteForce(t *testing.T) {
	bf := rule("bf", "brute_force", 10*time.Minute, 5, "block")
	abf := rule("abf", "account_brute_force", time.Hour, 20, "alert")
	r := newRig(t, Options{Rules: []config.Rule{bf, abf}})
	for i := range 20 {
		src := fmt.Sprintf("203.0.113.%d", i+1)
		r.Observe(authFailure(src, "imap", "Alice@Example.TEST", r.DovecotPasswordKey("Alice@Example.TEST", fmt.Sprintf("%04x", 2*i))))
		r.Observe(authFailure(src, "pop3", "alice@example.test", r.DovecotPasswordKey("alice@example.test", fmt.Sprintf("%04x", 2*i+1))))
		if i < 9 && len(r.eventsOf(t, "abf")) != 0 {
			t.Fatalf("account event after %d failures", 2*(i+1))
		}
	}
	evs := r.eventsOf(t, "abf")
	if len(evs) != 1 || evs[0].Type != "account_brute_force" || evs[0].Source != "alice@example.test" {
		t.Fatalf("account events %+v, want one for alice@example.test (the login lowercased)", evs)
	}
	if !slices.Equal(evs[0].Actions, []string{"alert"}) {
		t.Errorf("actions %v, want [alert] (its default: no block, no suspension of the victim)", evs[0].Actions)
	}
	if len(r.eventsOf(t, "bf")) != 0 {
		t.Error("no single source reached the per-source threshold, yet brute_force fired")
	}
	// A user whose devices all keep one old password, from many
	// addresses (a phone roaming between networks), counts once.
	r2 := newRig(t, Options{Rules: []config.Rule{abf}})
	old := r2.PasswordKey("bob", "old")
	for i := range 50 {
		r2.Observe(authFailure(fmt.Sprintf("198.51.100.%d", i+1), "submission", "bob", old))
	}
	if evs := r2.eventsOf(t, "abf"); len(evs) != 0 {
		t.Errorf("one old password from 50 addresses: %+v", evs)
	}
}

// A brute_force event survives a restart with its service: the restored
// event goes on counting impact for that source and service.
func TestBruteForceRestart(t *testing.T) {
	bf := rule("bf", "brute_force", 10*time.Minute, 3, "block")
	r := newRig(t, Options{Rules: []config.Rule{bf}})
	for i := range 3 {
		r.Observe(authFailure("203.0.113.5", "pop3", "x", uint64(i+1)))
	}
	if err := r.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	e2, err := New(context.Background(), Options{Rules: []config.Rule{bf}, Store: r.store, Clock: r.clock})
	if err != nil {
		t.Fatal(err)
	}
	if !e2.Blocked(addr("203.0.113.5")) {
		t.Fatal("block lost at restart")
	}
	e2.Observe(authFailure("203.0.113.5", "pop3", "x", 99))
	if err := e2.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	evs := r.store.events()
	if len(evs) != 1 || evs[0].Impact != 2 || evs[0].Service != "pop3" {
		t.Errorf("after restart: %+v, want the one event, impact 2 (its trigger and the new refused attempt)", evs)
	}
}

func TestAccountName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"alice", "alice"},
		{"Alice", "alice"},
		{"ALICE@Example.TEST", "alice@example.test"},
		{"\xffbob", "\uFFFDbob"},
		{strings.Repeat("é", 200), strings.Repeat("é", 128)},
		{strings.Repeat("x", 300), strings.Repeat("x", 256)},
	} {
		if got := AccountName(tc.in); got != tc.want {
			t.Errorf("AccountName(%.20q) = %.20q (%d bytes), want %.20q", tc.in, got, len(got), tc.want)
		}
	}
	if testing.AllocsPerRun(100, func() { AccountName("alice@example.test") }) != 0 {
		t.Error("a lowercase login allocates")
	}
	e := newRig(t, Options{}).Engine
	if e.PasswordKey("Alice", "pw") != e.PasswordKey("alice", "pw") || e.PasswordKey("alice", "pw") == e.PasswordKey("alice", "pw2") {
		t.Error("PasswordKey does not follow the account and the password")
	}
	if e.DovecotPasswordKey("alice", "") != 0 {
		t.Error("an empty pwhash has a fingerprint")
	}
}
