package demo

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"mxguard/internal/ruletype"
	"mxguard/internal/testutil"
)

// TestDemoShowsEveryAttack runs one fast round of the demo and checks that
// each attack was detected and blocked, that an event of every event type
// of internal/ruletype started (INTERFACE.md §1: the demo "produces every
// event type"), and that the outage went through failover, org_down, the
// spool delay, spooling and recovery.
func TestDemoShowsEveryAttack(t *testing.T) {
	var out testutil.LockedBuffer
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Admin: "127.0.0.1:0", Out: &out, Step: 800 * time.Millisecond, Cycle: time.Hour})
	}()
	want := []string{
		"EVENT STARTED  #1 directory_harvest from 127.0.0.60 (rule harvest-strict) SHADOW: would take alert, block, took nothing",
		"directory_harvest from 127.0.0.60 (rule harvest) actions: alert, block",
		"BLOCKED        127.0.0.60",
		"reconnects and is refused at once: 421 4.7.0",
		"dos from 127.0.0.61",
		"bad_sessions from 127.0.0.62",
		"mailbomb from 127.0.0.63",
		"127.0.0.64 RCPT TO:<victim%elsewhere.test@example.test>: 554 5.7.1",
		"127.0.0.64 RCPT TO:<@example.test:victim@elsewhere.test>: 554 5.7.1",
		"brute_force from 127.0.0.65 (rule guessing) actions: alert, block",
		"127.0.0.65 reconnects to submission and is refused at once: 421 4.7.0",
		"internal_spammer from carol@example.test (rule spammer) actions: alert, suspend",
		"SUSPENDED      carol@example.test",
		"MAIL FROM refused: 550 5.7.1 Account suspended",
		"4 messages (3 recipients each) went out before the account was suspended",
		"spam_attack from 127.0.0.67",
		"127.0.0.67 is now refused at connect: 421 4.7.0",
		"virus_outbreak from 127.0.0.68",
		"127.0.0.68 is now refused at connect: 421 4.7.0",
		"account_brute_force from bob@example.test (rule spraying) actions: alert",
		"none of them reached brute_force's threshold",
		"bounce_spammer from dave@example.test (rule stale-lists)",
		"refused 6 as unknown",
		"backscatter from 127.0.0.74 (rule backscatter)",
		"127.0.0.74 RCPT TO:<alice@example.test> with a null sender: 550 5.7.1",
		"outbound_queue from spool (rule queue)",
		"directory_harvest from 203.0.113.10",
		"Postfix is told 10 times \"550 5.1.1\", then for billing@example.test: 421 4.7.0",
		"mail_server_down from",
		"org_down from mx.example.test",
		"SPOOL          delay -> spooling",
		"NORMAL MAIL    accepted into the spool",
		"(the downstream said unknown before): 550 5.1.1",
		"the spool is empty",
		"attack round 1 done",
		// A webhook and an email for each attack and outage.
		// #1 is the shadow rule's: it alerts nobody (checked below).
		"ALERT webhook  started #2 directory_harvest from 127.0.0.60 (signature verified)",
		"ALERT email    to postmaster@example.test: [mxguard] directory_harvest started: 127.0.0.60",
		"ALERT webhook  ended   #2 directory_harvest from 127.0.0.60",
		"ALERT email    to postmaster@example.test: [mxguard] directory_harvest ended: 127.0.0.60",
		"ALERT webhook  started #", "virus_outbreak from 127.0.0.68 (signature verified)",
		"ALERT email    to postmaster@example.test: [mxguard] org_down started: mx.example.test",
		"the alert mail reads:\n           | directory_harvest from 127.0.0.60 started at ",
		"           | Console:  http://",
	}
	// One started event of every type, told by the narrator's event line.
	var started []*regexp.Regexp
	for _, typ := range ruletype.Names() {
		started = append(started, regexp.MustCompile(`EVENT STARTED  #\d+ `+typ+` from `))
	}
	deadline := time.Now().Add(140 * time.Second)
	for {
		s := out.String()
		missing := ""
		for _, w := range want {
			if !strings.Contains(s, w) {
				missing = w
				break
			}
		}
		for _, re := range started {
			if missing == "" && !re.MatchString(s) {
				missing = re.String()
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo output lacks %q:\n%s", missing, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s := out.String(); strings.Contains(s, "ALERT webhook  started #1 ") || strings.Contains(s, "ALERT webhook  ended   #1 ") {
		t.Errorf("the shadow rule's event #1 was alerted:\n%s", s)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if strings.Contains(s, "could not be sent") || strings.Contains(s, "did not get there in time") || strings.Contains(s, "not seen down in time") || strings.Contains(s, "in time)") {
		t.Errorf("the demo did not go as planned:\n%s", s)
	}
	if !strings.Contains(s, "messages reached the primary server") {
		t.Errorf("no closing summary:\n%s", s)
	}
}
