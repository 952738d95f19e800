package spool

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/metrics"
)

// refuseAll makes the downstream refuse every recipient for good.
func refuseAll(Envelope) error {
	return smtpErr(550, [3]int{5, 1, 1}, "User unknown in virtual mailbox table")
}

// TestRefusedBounceIsHeld: a forged local sender's message is refused at
// unspool; the bounce to that sender is refused too. It must not vanish
// nor be bounced again: it waits in bounces/ with its reason, survives a
// restart, and an unspool request delivers it once the downstream takes
// it.
func TestRefusedBounceIsHeld(t *testing.T) {
	m := metrics.New()
	f := newFixture(t, ManagerOptions{AutoUnspool: true, Metrics: m}, Options{Metrics: m})
	f.rec.answer = refuseAll
	f.put(t, 1)
	f.m.RunOnce(context.Background()) // the message: refused, DSN queued
	l := f.spool.List()
	if len(l) != 1 || !l[0].isDSN() {
		t.Fatalf("spool = %+v, want the DSN", l)
	}
	dsn := l[0].ID
	f.m.RunOnce(context.Background()) // the DSN: refused, held

	if n, _ := f.spool.Stats(); n != 0 {
		t.Fatalf("spool holds %d messages, want 0 (the DSN moved to bounces/)", n)
	}
	if got := len(f.rec.deliveries()); got != 2 {
		t.Fatalf("%d delivery attempts, want 2 (no bounce of the bounce)", got)
	}
	if n, _ := f.spool.HeldBounces(); n != 1 {
		t.Errorf("held bounces = %d, want 1", n)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "bounces", dsn+".msg")); err != nil {
		t.Errorf("held file: %v", err)
	}
	why, err := os.ReadFile(filepath.Join(f.dir, "bounces", dsn+".reason"))
	if err != nil || !strings.Contains(string(why), "<a@example.org>: 5.1.1 smtp; 550 5.1.1 User unknown") {
		t.Errorf("reason file = %q, %v", why, err)
	}
	if v := promtest.ToFloat64(f.m.heldTotal); v != 1 {
		t.Errorf("mxguard_spool_bounces_held_total = %v, want 1", v)
	}
	if v := promtest.ToFloat64(f.m.dropped.WithLabelValues(dropNullSender)) + promtest.ToFloat64(f.m.dropped.WithLabelValues(dropHeldFull)); v != 0 {
		t.Errorf("dropped = %v, want 0", v)
	}
	want := "# HELP mxguard_spool_held_bounces Bounces waiting in the spool's bounces area for the operator.\n# TYPE mxguard_spool_held_bounces gauge\nmxguard_spool_held_bounces 1\n"
	if err := promtest.GatherAndCompare(m.Registry, strings.NewReader(want), "mxguard_spool_held_bounces"); err != nil {
		t.Error(err)
	}

	// Nothing releases it on its own.
	f.clock.Advance(24 * time.Hour)
	if n := f.m.RunOnce(context.Background()); n != 0 {
		t.Errorf("RunOnce handled %d messages with only a held bounce", n)
	}

	// A restart finds it.
	f.spool.Close()
	s2, err := Open(f.dir, Options{Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if n, _ := s2.HeldBounces(); n != 1 {
		t.Fatalf("after reopen: %d held, want 1", n)
	}
	rec := &recorder{}
	m2 := NewManager(ManagerOptions{Spool: s2, Clock: f.clock, Deliver: rec, AutoUnspool: true})

	// The operator fixed the downstream and asks for an unspool.
	m2.Unspool()
	if n, _ := s2.HeldBounces(); n != 0 {
		t.Errorf("after unspool: %d still held", n)
	}
	m2.RunOnce(context.Background())
	d := rec.deliveries()
	if len(d) != 1 || d[0].Env.ID != dsn || d[0].Env.From != "" || d[0].Env.Recipients[0] != "a@example.org" || !strings.Contains(d[0].Msg, "Status: 5.1.1") {
		t.Fatalf("deliveries after unspool = %+v", d)
	}
	if n, _ := s2.Stats(); n != 0 {
		t.Errorf("the released bounce is still spooled after its 250")
	}
	if _, err := os.Stat(filepath.Join(f.dir, "bounces", dsn+".reason")); !os.IsNotExist(err) {
		t.Errorf("reason file left after release: %v", err)
	}
}

// TestExpiredBounceIsHeld: a bounce the downstream keeps deferring until
// MaxAge is held too, with status 4.4.7.
func TestExpiredBounceIsHeld(t *testing.T) {
	f := newFixture(t, ManagerOptions{AutoUnspool: true, MaxAge: time.Hour}, Options{})
	f.rec.answer = refuseAll
	f.put(t, 1)
	f.m.RunOnce(context.Background())
	f.rec.answer = func(Envelope) error { return smtpErr(451, [3]int{4, 3, 0}, "try later") }
	for range 20 {
		f.clock.Advance(10 * time.Minute)
		f.m.RunOnce(context.Background())
		if n, _ := f.spool.HeldBounces(); n == 1 {
			break
		}
	}
	if n, _ := f.spool.HeldBounces(); n != 1 {
		t.Fatalf("held = %d, want the expired bounce", n)
	}
	ents, _ := os.ReadDir(filepath.Join(f.dir, "bounces"))
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".reason") {
			b, _ := os.ReadFile(filepath.Join(f.dir, "bounces", e.Name()))
			if !strings.Contains(string(b), "4.4.7") {
				t.Errorf("reason %q lacks 4.4.7", b)
			}
		}
	}
}

// TestHeldAreaFull: past a tenth of max_size, a refused bounce is dropped,
// counted with its reason, and the spool moves on.
func TestHeldAreaFull(t *testing.T) {
	m := metrics.New()
	f := newFixture(t, ManagerOptions{AutoUnspool: true, Metrics: m}, Options{MaxBytes: 4000})
	f.rec.answer = refuseAll
	f.put(t, 1)
	f.m.RunOnce(context.Background())
	f.m.RunOnce(context.Background())
	if n, _ := f.spool.HeldBounces(); n != 0 {
		t.Errorf("held %d bounces in a 400-byte area", n)
	}
	if n, _ := f.spool.Stats(); n != 0 {
		t.Errorf("spool holds %d messages", n)
	}
	if v := promtest.ToFloat64(f.m.dropped.WithLabelValues(dropHeldFull)); v != 1 {
		t.Errorf("dropped{held_full} = %v, want 1", v)
	}
}

// TestNoBounceOfBounce: a message that came in with the null sender
// (someone else's bounce) and is refused at unspool is never bounced
// (RFC 5321 §6.1); it is dropped and counted.
func TestNoBounceOfBounce(t *testing.T) {
	m := metrics.New()
	f := newFixture(t, ManagerOptions{AutoUnspool: true, Metrics: m}, Options{})
	f.rec.answer = refuseAll
	mustPut(t, f.spool, Envelope{From: "", Recipients: []string{"b@example.test"}, Source: "192.0.2.7"}, testMessage(1))
	f.m.RunOnce(context.Background())
	if n, _ := f.spool.Stats(); n != 0 {
		t.Errorf("spool holds %d messages", n)
	}
	if n, _ := f.spool.HeldBounces(); n != 0 {
		t.Errorf("someone else's bounce was held")
	}
	if v := promtest.ToFloat64(f.m.dropped.WithLabelValues(dropNullSender)); v != 1 {
		t.Errorf("dropped{null_sender} = %v, want 1", v)
	}
	if len(f.rec.deliveries()) != 1 {
		t.Errorf("deliveries = %d, want 1", len(f.rec.deliveries()))
	}
}
