package spool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/metrics"
	"mxguard/internal/reply"
)

type fixture struct {
	clock *fakeClock
	spool *Spool
	dir   string
	rec   *recorder
	m     *Manager
}

func newFixture(t *testing.T, o ManagerOptions, so Options) *fixture {
	t.Helper()
	f := &fixture{clock: newFakeClock(), rec: &recorder{}}
	so.Clock = f.clock
	f.spool, f.dir = openSpool(t, so)
	o.Spool, o.Clock, o.Deliver = f.spool, f.clock, f.rec
	if o.Delay == 0 {
		o.Delay = 5 * time.Minute
	}
	o.Hostname = "mx.example.test"
	f.m = NewManager(o)
	return f
}

// put spools message n from a@example.org to rcpts (default b@example.test).
func (f *fixture) put(t *testing.T, n int, rcpts ...string) string {
	t.Helper()
	if len(rcpts) == 0 {
		rcpts = []string{"b@example.test"}
	}
	return mustPut(t, f.spool, Envelope{From: "a@example.org", Recipients: rcpts}, testMessage(n))
}

func wantReply(t *testing.T, d Decision, want reply.Reply) {
	t.Helper()
	if d.Mode != ModeRefuse || d.Reply == nil || d.Reply.Code != want.Code || d.Reply.Enhanced != want.Enhanced {
		t.Fatalf("Decide = %+v, want refusal %d %v", d, want.Code, want.Enhanced)
	}
}

func TestDelayTimer(t *testing.T) {
	f := newFixture(t, ManagerOptions{Delay: 5 * time.Minute}, Options{})
	if d := f.m.Decide(); d.Mode != ModePassThrough {
		t.Fatalf("servers up: %+v", d)
	}
	// org_down started 1 minute before the manager heard of it: the delay
	// counts from the event's start.
	f.m.OrgDown(f.clock.Now().Add(-time.Minute))
	wantReply(t, f.m.Decide(), reply.ServersDown)
	if s := f.m.Status().State; s != StateDelay {
		t.Errorf("state = %s, want delay", s)
	}
	f.clock.Advance(4*time.Minute - time.Nanosecond)
	wantReply(t, f.m.Decide(), reply.ServersDown)
	f.m.OrgDown(f.clock.Now()) // a repeated report does not restart the timer
	f.clock.Advance(time.Nanosecond)
	if d := f.m.Decide(); d.Mode != ModeSpool {
		t.Fatalf("after the delay: %+v", d)
	}
	if s := f.m.Status().State; s != StateSpooling {
		t.Errorf("state = %s, want spooling", s)
	}
	f.m.OrgUp()
	if d := f.m.Decide(); d.Mode != ModePassThrough {
		t.Fatalf("after OrgUp: %+v", d)
	}
	// A new outage starts a new delay.
	f.m.OrgDown(f.clock.Now())
	wantReply(t, f.m.Decide(), reply.ServersDown)
}

func TestSuspendResume(t *testing.T) {
	f := newFixture(t, ManagerOptions{Delay: time.Minute}, Options{})
	f.m.OrgDown(f.clock.Now().Add(-time.Hour))
	f.m.Suspend()
	d := f.m.Decide()
	wantReply(t, d, reply.ServersDown)
	if !errors.Is(d.Reply, errSuspended) {
		t.Errorf("cause = %v", d.Reply.Cause)
	}
	if s := f.m.Status().State; s != StateSuspended {
		t.Errorf("state = %s, want suspended", s)
	}
	f.m.Resume()
	if d := f.m.Decide(); d.Mode != ModeSpool {
		t.Fatalf("after Resume: %+v", d)
	}
}

func TestFullRefuses(t *testing.T) {
	f := newFixture(t, ManagerOptions{}, Options{MaxBytes: 400})
	f.m.OrgDown(f.clock.Now().Add(-time.Hour))
	if d := f.m.Decide(); d.Mode != ModeSpool {
		t.Fatalf("empty spool: %+v", d)
	}
	f.put(t, 1)
	if d := f.m.Decide(); d.Mode != ModeSpool {
		t.Fatalf("room left: %+v", d)
	}
	// The next message does not fit: refused by Put, and from then on by
	// Decide, before the clients send their DATA.
	if _, err := putBytes(f.spool, context.Background(), Envelope{From: "a@example.org"}, testMessage(2)); !errors.Is(err, ErrFull) {
		t.Fatalf("Put = %v, want ErrFull", err)
	}
	d := f.m.Decide()
	wantReply(t, d, reply.SpoolFull)
	if !errors.Is(d.Reply, ErrFull) {
		t.Errorf("cause = %v", d.Reply.Cause)
	}
	st := f.m.Status()
	if st.State != StateFull || st.Messages != 1 || st.MaxBytes != 400 {
		t.Errorf("Status = %+v", st)
	}
	// A message leaving makes room again.
	if err := f.spool.Remove(f.spool.List()[0].ID); err != nil {
		t.Fatal(err)
	}
	if d := f.m.Decide(); d.Mode != ModeSpool {
		t.Errorf("after a removal: %+v", d)
	}
}

func TestStatePrecedence(t *testing.T) {
	type setup struct {
		down, inDelay, suspended, full, backlog, auto, requested bool
	}
	for _, tc := range []struct {
		name string
		s    setup
		want State
		mode Mode
	}{
		{"up, empty", setup{}, StateOff, ModePassThrough},
		{"up, backlog, auto", setup{backlog: true, auto: true}, StateUnspooling, ModePassThrough},
		{"up, backlog, held", setup{backlog: true}, StateOff, ModePassThrough},
		{"up, backlog, requested", setup{backlog: true, requested: true}, StateUnspooling, ModePassThrough},
		{"up, backlog, auto, suspended", setup{backlog: true, auto: true, suspended: true}, StateSuspended, ModePassThrough},
		{"down, delay", setup{down: true, inDelay: true}, StateDelay, ModeRefuse},
		{"down, delay, full", setup{down: true, inDelay: true, full: true}, StateDelay, ModeRefuse},
		{"down, delay, suspended", setup{down: true, inDelay: true, suspended: true}, StateSuspended, ModeRefuse},
		{"down, spooling", setup{down: true}, StateSpooling, ModeSpool},
		{"down, full", setup{down: true, full: true, backlog: true}, StateFull, ModeRefuse},
		{"down, full, suspended", setup{down: true, full: true, suspended: true}, StateSuspended, ModeRefuse},
		{"down, backlog, auto", setup{down: true, backlog: true, auto: true}, StateSpooling, ModeSpool},
	} {
		t.Run(tc.name, func(t *testing.T) {
			so := Options{}
			if tc.s.full {
				so.MaxBytes = 400
			}
			f := newFixture(t, ManagerOptions{AutoUnspool: tc.s.auto}, so)
			if tc.s.backlog || tc.s.full {
				f.put(t, 1)
			}
			if tc.s.full {
				if _, err := putBytes(f.spool, context.Background(), Envelope{}, testMessage(2)); !errors.Is(err, ErrFull) {
					t.Fatalf("Put = %v, want ErrFull", err)
				}
			}
			if tc.s.down {
				since := f.clock.Now().Add(-time.Hour)
				if tc.s.inDelay {
					since = f.clock.Now()
				}
				f.m.OrgDown(since)
			}
			if tc.s.suspended {
				f.m.Suspend()
			}
			if tc.s.requested {
				f.m.Unspool()
			}
			if got := f.m.Status().State; got != tc.want {
				t.Errorf("state = %s, want %s", got, tc.want)
			}
			if got := f.m.Decide().Mode; got != tc.mode {
				t.Errorf("mode = %d, want %d", got, tc.mode)
			}
		})
	}
}

func TestUnspoolOldestFirstAndPassThroughMeanwhile(t *testing.T) {
	f := newFixture(t, ManagerOptions{AutoUnspool: true, UnspoolRate: 1000, Workers: 1}, Options{})
	f.m.OrgDown(f.clock.Now().Add(-time.Hour))
	var ids []string
	for i := range 5 {
		ids = append(ids, f.put(t, i))
		f.clock.Advance(time.Second)
	}
	if n := f.m.RunOnce(context.Background()); n != 0 {
		t.Fatalf("delivered %d while every server is down", n)
	}
	f.m.OrgUp()
	if d := f.m.Decide(); d.Mode != ModePassThrough {
		t.Errorf("new mail while draining: %+v", d)
	}
	if s := f.m.Status().State; s != StateUnspooling {
		t.Errorf("state = %s", s)
	}
	if n := f.m.RunOnce(context.Background()); n != 5 {
		t.Fatalf("RunOnce handled %d, want 5", n)
	}
	var got []string
	for _, d := range f.rec.deliveries() {
		got = append(got, d.Env.ID)
		if !strings.Contains(d.Msg, "Subject: message") {
			t.Errorf("message delivered as %q", d.Msg)
		}
	}
	if !slices.Equal(got, ids) {
		t.Errorf("delivery order %v, want %v", got, ids)
	}
	if st := f.m.Status(); st.State != StateOff || st.Messages != 0 {
		t.Errorf("after draining: %+v", st)
	}
}

func TestUnspoolOnRequest(t *testing.T) {
	f := newFixture(t, ManagerOptions{UnspoolRate: 1000}, Options{})
	f.put(t, 1)
	f.m.OrgDown(f.clock.Now())
	f.m.Unspool() // made during the outage: kept for when a server is up
	if n := f.m.RunOnce(context.Background()); n != 0 {
		t.Fatalf("delivered %d while down", n)
	}
	f.m.OrgUp()
	if n := f.m.RunOnce(context.Background()); n != 1 {
		t.Fatalf("RunOnce = %d after the request", n)
	}
	f.m.RunOnce(context.Background()) // sees the empty spool: request done
	f.put(t, 2)
	if st := f.m.Status(); st.State != StateOff || st.Messages != 1 {
		t.Errorf("a new backlog after the drain is held again: %+v", st)
	}
	if n := f.m.RunOnce(context.Background()); n != 0 {
		t.Errorf("held message delivered without a request")
	}
}

func TestSuspendHoldsUnspool(t *testing.T) {
	f := newFixture(t, ManagerOptions{AutoUnspool: true}, Options{})
	f.put(t, 1)
	f.m.Suspend()
	if n := f.m.RunOnce(context.Background()); n != 0 {
		t.Fatalf("delivered %d while suspended", n)
	}
	f.m.Resume()
	if n := f.m.RunOnce(context.Background()); n != 1 {
		t.Fatalf("RunOnce after Resume = %d", n)
	}
}

func TestUnspoolRate(t *testing.T) {
	const rate, total = 20, 100
	f := newFixture(t, ManagerOptions{AutoUnspool: true, UnspoolRate: rate}, Options{})
	for i := range total {
		f.put(t, i)
	}
	start := f.clock.Now()
	delivered := 0
	for step := 0; delivered < total; step++ {
		if step > 1000 {
			t.Fatal("spool never drained")
		}
		delivered += f.m.RunOnce(context.Background())
		elapsed := f.clock.Now().Sub(start).Seconds()
		// Token bucket: rate per second plus a burst of rate/10.
		if limit := rate*elapsed + rate/10; float64(delivered) > limit {
			t.Fatalf("%d delivered after %.2fs, limit %.0f", delivered, elapsed, limit)
		}
		f.clock.Advance(10 * time.Millisecond)
	}
	if elapsed := f.clock.Now().Sub(start); elapsed < 4*time.Second || elapsed > 6*time.Second {
		t.Errorf("%d messages at %d/s took %v of fake time, want about 5s", total, rate, elapsed)
	}
}

func TestBackoffSchedule(t *testing.T) {
	f := newFixture(t, ManagerOptions{AutoUnspool: true}, Options{})
	f.rec.answer = func(Envelope) error { return smtpErr(451, [3]int{4, 3, 0}, "try later") }
	id := f.put(t, 1)
	want := []time.Duration{1, 2, 4, 8, 16, 32, 60, 60}
	for i, w := range want {
		if n := f.m.RunOnce(context.Background()); n != 1 {
			t.Fatalf("attempt %d: RunOnce = %d", i+1, n)
		}
		env := f.spool.List()[0]
		if env.ID != id || env.Attempts != i+1 || !strings.Contains(env.LastError, "451") {
			t.Fatalf("after attempt %d: %+v", i+1, env)
		}
		if got := env.NextAttempt.Sub(f.clock.Now()); got != w*time.Minute {
			t.Errorf("after attempt %d: next in %v, want %v", i+1, got, w*time.Minute)
		}
		f.clock.Advance(w*time.Minute - time.Second)
		if n := f.m.RunOnce(context.Background()); n != 0 {
			t.Fatalf("retried %v early", time.Second)
		}
		f.clock.Advance(time.Second)
	}
	if len(f.rec.deliveries()) != len(want) {
		t.Errorf("%d attempts, want %d", len(f.rec.deliveries()), len(want))
	}
	// A connection error is temporary too, and success ends it.
	f.rec.answer = func(Envelope) error { return errors.New("dial tcp: connection refused") }
	f.m.RunOnce(context.Background())
	if l := f.spool.List(); len(l) != 1 || !strings.Contains(l[0].LastError, "refused") {
		t.Fatalf("after a connection error: %+v", l)
	}
	f.clock.Advance(time.Hour)
	f.rec.answer = nil
	f.m.RunOnce(context.Background())
	if n, _ := f.spool.Stats(); n != 0 {
		t.Errorf("message still spooled after 250")
	}
}

func TestDefaultBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 6: 32 * time.Minute, 7: time.Hour, 1000: time.Hour} {
		if got := DefaultBackoff(n); got != want {
			t.Errorf("DefaultBackoff(%d) = %v, want %v", n, got, want)
		}
	}
}

// dsnOf checks that the spool holds exactly one message, a DSN to to, and
// returns its text.
func dsnOf(t *testing.T, f *fixture, to string) string {
	t.Helper()
	l := f.spool.List()
	if len(l) != 1 || l[0].From != "" || !slices.Equal(l[0].Recipients, []string{to}) {
		t.Fatalf("spool = %+v, want one bounce to %s", l, to)
	}
	f.rec.answer = nil
	f.m.RunOnce(context.Background())
	d := f.rec.deliveries()
	return d[len(d)-1].Msg
}

func TestPermanentFailureBounces(t *testing.T) {
	f := newFixture(t, ManagerOptions{AutoUnspool: true}, Options{})
	f.rec.answer = func(Envelope) error { return smtpErr(550, [3]int{5, 1, 1}, "User unknown") }
	orig := f.put(t, 7)
	f.m.RunOnce(context.Background())
	if _, _, err := f.spool.Open(orig); !errors.Is(err, ErrNotFound) {
		t.Errorf("refused message still spooled: %v", err)
	}
	dsn := dsnOf(t, f, "a@example.org")
	for _, want := range []string{
		"To: <a@example.org>\r\n",
		"Content-Type: multipart/report; report-type=delivery-status;",
		"Content-Type: message/delivery-status\r\n",
		"Reporting-MTA: dns; mx.example.test\r\n",
		"Final-Recipient: rfc822; b@example.test\r\n",
		"Action: failed\r\n",
		"Status: 5.1.1\r\n",
		"Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n",
		"Content-Type: text/rfc822-headers\r\n\r\nFrom: a@example.org\r\n",
		"Subject: message 7\r\n",
	} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
	if strings.Contains(dsn, "body of message") {
		t.Error("DSN returns the body; only the headers belong in text/rfc822-headers")
	}
	if n, _ := f.spool.Stats(); n != 0 {
		t.Errorf("spool not empty after the bounce was delivered")
	}
}

func TestMaxAgeBounce(t *testing.T) {
	f := newFixture(t, ManagerOptions{AutoUnspool: true}, Options{})
	f.rec.answer = func(Envelope) error { return smtpErr(451, [3]int{4, 3, 0}, "still busy") }
	young := mustPut(t, f.spool, Envelope{From: "y@example.org", Recipients: []string{"b@example.test"}, Received: f.clock.Now().Add(-DefaultMaxAge + time.Minute)}, testMessage(1))
	mustPut(t, f.spool, Envelope{From: "old@example.org", Recipients: []string{"b@example.test"}, Received: f.clock.Now().Add(-DefaultMaxAge)}, testMessage(2))
	f.m.RunOnce(context.Background())
	l := f.spool.List()
	if len(l) != 2 || l[0].ID != young || l[1].From != "" {
		t.Fatalf("spool = %+v, want the young message and a bounce", l)
	}
	if err := f.spool.Remove(young); err != nil {
		t.Fatal(err)
	}
	dsn := dsnOf(t, f, "old@example.org")
	for _, want := range []string{"Status: 4.4.7\r\n", "Diagnostic-Code: smtp; 451 4.3.0 still busy\r\n"} {
		if !strings.Contains(dsn, want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn)
		}
	}
}

func TestRecipientErrors(t *testing.T) {
	f := newFixture(t, ManagerOptions{AutoUnspool: true}, Options{})
	f.rec.answer = func(env Envelope) error {
		var re RecipientErrors
		for _, r := range env.Recipients {
			switch r {
			case "gone@example.test":
				re = append(re, RecipientError{r, smtpErr(550, [3]int{5, 1, 1}, "User unknown")})
			case "busy@example.test":
				re = append(re, RecipientError{r, smtpErr(452, [3]int{4, 2, 2}, "Mailbox full")})
			}
		}
		if re == nil {
			return nil
		}
		return re
	}
	id := f.put(t, 1, "ok@example.test", "gone@example.test", "busy@example.test")
	f.m.RunOnce(context.Background())
	var orig, dsn Envelope
	for _, e := range f.spool.List() {
		if e.ID == id {
			orig = e
		} else {
			dsn = e
		}
	}
	if !slices.Equal(orig.Pending(), []string{"busy@example.test"}) || orig.Attempts != 1 {
		t.Fatalf("after a partial delivery: %+v", orig)
	}
	if dsn.From != "" || !slices.Equal(dsn.Recipients, []string{"a@example.org"}) {
		t.Fatalf("bounce = %+v", dsn)
	}
	f.clock.Advance(time.Minute)
	f.m.RunOnce(context.Background())
	d := f.rec.deliveries()
	var retried []string
	for _, x := range d[1:] {
		if x.Env.ID == id {
			retried = x.Env.Recipients
		}
	}
	if !slices.Equal(retried, []string{"busy@example.test"}) {
		t.Errorf("retry went to %v, want only the deferred recipient", retried)
	}
}

// A journal line without a later deferral marks the message as possibly
// delivered: its next delivery is counted as a redelivery.
func TestRedeliveryCounted(t *testing.T) {
	f := newFixture(t, ManagerOptions{}, Options{})
	a := f.put(t, 1)
	b := f.put(t, 2)
	for _, env := range f.spool.List() {
		f.spool.startAttempt(&env)
	}
	if err := f.spool.Defer(b, f.clock.Now(), "451"); err != nil { // b's attempt ended
		t.Fatal(err)
	}
	f.spool.Close()
	s2, err := Open(f.dir, Options{Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	for _, e := range s2.List() {
		if e.Redelivery != (e.ID == a) {
			t.Errorf("%s: Redelivery = %v", e.ID, e.Redelivery)
		}
	}
	mx := metrics.New()
	m := NewManager(ManagerOptions{Spool: s2, Clock: f.clock, Deliver: f.rec, AutoUnspool: true, Metrics: mx})
	m.RunOnce(context.Background())
	if n, _ := s2.Stats(); n != 0 {
		t.Fatalf("spool not drained")
	}
	c, err := testutil.GatherAndCount(mx.Registry, "mxguard_spool_redeliveries_total")
	if err != nil || c != 1 {
		t.Fatalf("redeliveries metric: %d, %v", c, err)
	}
	if v := testutil.ToFloat64(m.redelivered); v != 1 {
		t.Errorf("redeliveries = %v, want 1", v)
	}
	// A second manager on the same registry (reload) shares the counter.
	if m2 := NewManager(ManagerOptions{Spool: s2, Metrics: mx}); m2.redelivered != m.redelivered {
		t.Error("second manager did not reuse the registered counter")
	}
}

// The operator requests (POST /api/v1/spool/{action}, served by admin)
// move the spool between the states Status reports.
func TestOperatorRequests(t *testing.T) {
	f := newFixture(t, ManagerOptions{}, Options{MaxBytes: 1 << 20})
	f.put(t, 1)
	_, b := f.spool.Stats()
	if got, want := f.m.Status(), (Status{State: StateOff, Messages: 1, Bytes: b, MaxBytes: 1 << 20}); got != want {
		t.Fatalf("Status = %+v, want %+v", got, want)
	}
	for _, tc := range []struct {
		request func()
		state   State
	}{{f.m.Suspend, StateSuspended}, {f.m.Resume, StateOff}, {f.m.Unspool, StateUnspooling}} {
		tc.request()
		if st := f.m.Status(); st.State != tc.state || st.Messages != 1 {
			t.Errorf("after the request: %+v, want state %s", st, tc.state)
		}
	}
}

// Run wakes up on OrgUp and drains with the system clock.
func TestRunDrains(t *testing.T) {
	s, _ := openSpool(t, Options{})
	rec := &recorder{}
	m := NewManager(ManagerOptions{Spool: s, AutoUnspool: true, UnspoolRate: 1000, Deliver: rec})
	m.OrgDown(time.Now())
	for i := range 20 {
		mustPut(t, s, Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, testMessage(i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx) }()
	m.OrgUp()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if n, _ := s.Stats(); n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not drain the spool")
		}
		time.Sleep(5 * time.Millisecond) // polling a real goroutine, not a window
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
	if len(rec.deliveries()) != 20 {
		t.Errorf("%d deliveries", len(rec.deliveries()))
	}
}

// A message damaged on disk is never handed on, and never retried forever:
// it goes to corrupt/ for the operator.
func TestDamagedMessageQuarantined(t *testing.T) {
	f := newFixture(t, ManagerOptions{AutoUnspool: true}, Options{})
	id := f.put(t, 1)
	p := filepath.Join(f.dir, id+msgExt)
	b, _ := os.ReadFile(p)
	b[len(b)-3] ^= 1
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if n := f.m.RunOnce(context.Background()); n != 1 {
		t.Fatalf("RunOnce = %d", n)
	}
	if len(f.rec.deliveries()) != 0 {
		t.Error("damaged message delivered")
	}
	if n, bytes := f.spool.Stats(); n != 0 || bytes != 0 {
		t.Errorf("Stats = %d, %d after quarantine", n, bytes)
	}
	if _, err := os.Stat(filepath.Join(f.dir, corruptDir, id+msgExt)); err != nil {
		t.Errorf("not in corrupt/: %v", err)
	}
}

// TestNoServerIsNoAttempt: a Deliverer that finds no server at all (every
// one down) does not cost the message an attempt nor a backoff: it is
// delivered as soon as a server is back.
func TestNoServerIsNoAttempt(t *testing.T) {
	s, _ := openSpool(t, Options{})
	clock := newFakeClock()
	down := true
	rec := &recorder{answer: func(Envelope) error {
		if down {
			return fmt.Errorf("%w: every delivery server is down", ErrNoServer)
		}
		return nil
	}}
	mustPut(t, s, Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, testMessage(1))
	m := NewManager(ManagerOptions{Spool: s, Clock: clock, Deliver: rec, AutoUnspool: true})
	m.RunOnce(context.Background())
	env := s.List()[0]
	if env.Attempts != 0 || !env.NextAttempt.IsZero() {
		t.Fatalf("no-server failure was counted as an attempt: %+v", env)
	}
	down = false
	m.RunOnce(context.Background()) // same instant: no backoff to wait for
	if n, _ := s.Stats(); n != 0 {
		t.Fatalf("message still spooled after the server came back")
	}
}

// TestReconfigure: a reload changes the delay of an outage in progress
// (still counted from the start of org_down) and the release switch.
func TestReconfigure(t *testing.T) {
	s, _ := openSpool(t, Options{})
	clock := newFakeClock()
	m := NewManager(ManagerOptions{Spool: s, Clock: clock, Delay: time.Hour, Deliver: &recorder{}})
	m.OrgDown(clock.Now())
	clock.Advance(10 * time.Minute)
	if d := m.Decide(); d.Mode != ModeRefuse {
		t.Fatalf("within the 1h delay: %+v", d)
	}
	m.Reconfigure(5*time.Minute, 10, true)
	if d := m.Decide(); d.Mode != ModeSpool {
		t.Fatalf("delay shortened to 5m, 10m into the outage: %+v", d)
	}
	if st := m.Status(); st.State != StateSpooling {
		t.Errorf("state %s, want spooling", st.State)
	}
}
