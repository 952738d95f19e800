package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"mxguard/internal/address"
	"mxguard/internal/delivery"
	"mxguard/internal/mailsink"
	"mxguard/internal/metrics"
	"mxguard/internal/relay"
	"mxguard/internal/testutil"
)

// fakeClock is the shared settable test clock.
type fakeClock = testutil.FakeClock

func newFakeClock() *fakeClock { return testutil.NewFakeClock() }

// fakeSink records the events it is asked for as log lines
// ("start mail_server_down 127.0.0.1:2526", "end org_down mx.example.test").
type fakeSink struct {
	mu        sync.Mutex
	log       []string
	open      map[int64]string // id → "type source"
	next      int64
	failStart error
	resume    map[string]int64 // "type source" → id a previous run left open
	ended     chan int64       // optional: each ended id
}

func newFakeSink() *fakeSink { return &fakeSink{open: make(map[int64]string)} }

var (
	_ delivery.EventSink    = (*fakeSink)(nil)
	_ delivery.EventResumer = (*fakeSink)(nil)
)

func (s *fakeSink) StartEvent(_ context.Context, typ, source, service string, _ map[string]any) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failStart != nil {
		return 0, s.failStart
	}
	if service != "smtp" {
		return 0, fmt.Errorf("service %q, want smtp", service)
	}
	s.next++
	s.open[s.next] = typ + " " + source
	s.log = append(s.log, "start "+typ+" "+source)
	return s.next, nil
}

func (s *fakeSink) EndEvent(_ context.Context, id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev, ok := s.open[id]
	if !ok {
		return fmt.Errorf("event %d is not open", id)
	}
	delete(s.open, id)
	s.log = append(s.log, "end "+ev)
	if s.ended != nil {
		s.ended <- id
	}
	return nil
}

func (s *fakeSink) ActiveEvent(_ context.Context, typ, source string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.resume[typ+" "+source]
	if id != 0 {
		s.open[id] = typ + " " + source
	}
	return id, nil
}

// take returns the events logged since the last take.
func (s *fakeSink) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.log
	s.log = nil
	return l
}

func (s *fakeSink) openCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

func startSink(t *testing.T) *mailsink.Server {
	t.Helper()
	s, err := mailsink.Start(t.Context(), mailsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func setDown(t *testing.T, s *mailsink.Server, down bool) {
	t.Helper()
	if err := s.SetDown(down); err != nil {
		t.Fatal(err)
	}
}

// countingDialer counts dials per address, to tell "skipped" from "tried".
type countingDialer struct {
	mu    sync.Mutex
	dials map[string]int
}

func (d *countingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	if d.dials == nil {
		d.dials = make(map[string]int)
	}
	d.dials[addr]++
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func (d *countingDialer) count(addr string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dials[addr]
}

// send relays one message and returns the server that took it.
func send(t *testing.T, r *delivery.Manager) (string, error) {
	t.Helper()
	ctx := t.Context()
	txn, err := r.Begin(ctx, address.MustParse("sender@remote.test"), relay.MailOptions{})
	if err != nil {
		return "", err
	}
	if err := txn.Rcpt(ctx, address.MustParse("alice@example.test")); err != nil {
		txn.Abort()
		return "", err
	}
	if _, err := txn.Data(ctx, nil, strings.NewReader("Subject: health\r\n\r\nHello.\r\n")); err != nil {
		return "", err
	}
	return txn.Server(), nil
}

func mustSend(t *testing.T, r *delivery.Manager, want string) {
	t.Helper()
	got, err := send(t, r)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	if got != want {
		t.Fatalf("message went to %s, want %s", got, want)
	}
}

type harness struct {
	r     *delivery.Manager
	relay *relay.Relay
	clock *fakeClock
	sink  *fakeSink
	dial  *countingDialer
	m     *metrics.Metrics

	mu   sync.Mutex
	org  []string // OnOrgDown/OnOrgUp calls
	opts delivery.Options
}

func newHarness(t *testing.T, downAfter int, servers ...delivery.Server) *harness {
	t.Helper()
	return newHarnessWith(t, relay.Options{}, downAfter, servers...)
}

// newHarnessWith is newHarness with relay options (its Dial, Hostname and
// Metrics are the harness's).
func newHarnessWith(t *testing.T, ro relay.Options, downAfter int, servers ...delivery.Server) *harness {
	t.Helper()
	h := &harness{clock: newFakeClock(), sink: newFakeSink(), dial: &countingDialer{}, m: metrics.New()}
	ro.Hostname, ro.Metrics = "mx.example.test", h.m
	if ro.Dial == nil {
		ro.Dial = h.dial.dial
	}
	h.relay = relay.New(ro)
	t.Cleanup(func() { h.relay.Close() })
	h.opts = delivery.Options{
		Servers:      servers,
		Relay:        h.relay,
		Hostname:     "mx.example.test",
		DownAfter:    downAfter,
		CheckTimeout: 5 * time.Second,
		Clock:        h.clock,
		Events:       h.sink,
		Metrics:      h.m,
		OnOrgDown: func(since time.Time) {
			h.mu.Lock()
			h.org = append(h.org, "down since "+since.Format(time.TimeOnly))
			h.mu.Unlock()
		},
		OnOrgUp: func() {
			h.mu.Lock()
			h.org = append(h.org, "up")
			h.mu.Unlock()
		},
	}
	h.r = delivery.New(h.opts)
	return h
}

func (h *harness) orgCalls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.org
	h.org = nil
	return l
}

// checks runs n rounds of checks, one minute apart.
func (h *harness) checks(t *testing.T, n int) {
	for range n {
		h.clock.Advance(time.Minute)
		h.r.CheckNow(t.Context())
	}
}

func (h *harness) state(t *testing.T, addr string) delivery.ServerStatus {
	t.Helper()
	for _, s := range h.r.Servers() {
		if s.Address == addr {
			return s
		}
	}
	t.Fatalf("no server %s in %+v", addr, h.r.Servers())
	return delivery.ServerStatus{}
}

func (h *harness) gauge(t *testing.T, addr string) float64 {
	t.Helper()
	mfs, err := h.m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mxguard_server_up" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == addr {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no mxguard_server_up{address=%q}", addr)
	return -1
}

func wantLog(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !reflect.DeepEqual(got, want) && (len(got) != 0 || len(want) != 0) {
		t.Errorf("%s:\n got %q\nwant %q", what, got, want)
	}
}

// A server is down after DownAfter consecutive failed checks, not before,
// and up again after one good check; the single server going down is an
// organisation outage.
func TestDownAfterConsecutiveFailures(t *testing.T) {
	for _, downAfter := range []int{1, 3} {
		t.Run(fmt.Sprint("down_after=", downAfter), func(t *testing.T) {
			sink := startSink(t)
			addr := sink.Addr()
			h := newHarness(t, downAfter, delivery.Server{Address: addr, Role: "primary"})
			start := h.clock.Now()

			h.checks(t, 2)
			if st := h.state(t, addr); st.State != "up" || !st.Since.Equal(start) || st.LastError != "" {
				t.Fatalf("healthy server: %+v", st)
			}
			setDown(t, sink, true)
			h.checks(t, downAfter-1)
			if st := h.state(t, addr); st.State != "up" {
				t.Fatalf("down after %d of %d failures", downAfter-1, downAfter)
			}
			// A success in between starts the count again.
			setDown(t, sink, false)
			h.checks(t, 1)
			setDown(t, sink, true)
			h.checks(t, downAfter-1)
			if st := h.state(t, addr); st.State != "up" {
				t.Fatalf("failures before a success were still counted: %+v", st)
			}
			wantLog(t, "events while up", h.sink.take())

			h.checks(t, 1)
			downAt := h.clock.Now()
			st := h.state(t, addr)
			if st.State != "down" || !st.Since.Equal(downAt) || !strings.Contains(st.LastError, "connection refused") {
				t.Fatalf("after %d failures: %+v", downAfter, st)
			}
			if g := h.gauge(t, addr); g != 0 {
				t.Errorf("mxguard_server_up = %v, want 0", g)
			}
			wantLog(t, "events", h.sink.take(), "start mail_server_down "+addr, "start org_down mx.example.test")
			wantLog(t, "org callbacks", h.orgCalls(), "down since "+downAt.Format(time.TimeOnly))

			// Still down: no second event, no second callback.
			h.checks(t, 2)
			wantLog(t, "events while down", h.sink.take())
			wantLog(t, "org callbacks while down", h.orgCalls())

			setDown(t, sink, false)
			h.checks(t, 1)
			st = h.state(t, addr)
			if st.State != "up" || !st.Since.Equal(h.clock.Now()) || !strings.Contains(st.LastError, "connection refused") {
				t.Fatalf("after one good check: %+v (the last error stays for the record)", st)
			}
			if g := h.gauge(t, addr); g != 1 {
				t.Errorf("mxguard_server_up = %v, want 1", g)
			}
			wantLog(t, "events", h.sink.take(), "end mail_server_down "+addr, "end org_down mx.example.test")
			wantLog(t, "org callbacks", h.orgCalls(), "up")
			mustSend(t, h.r, addr)
		})
	}
}

// Traffic goes to the primary, moves to the failover while the primary is
// down and comes back when it recovers, even though the failover then has
// idle pooled connections. org_down only starts when both are down.
func TestFailoverAndBack(t *testing.T) {
	primary, failover := startSink(t), startSink(t)
	p, f := primary.Addr(), failover.Addr()
	h := newHarness(t, 2, delivery.Server{Address: p, Role: "primary"}, delivery.Server{Address: f, Role: "failover"})

	mustSend(t, h.r, p)
	setDown(t, primary, true)
	h.checks(t, 2)
	if st := h.r.Servers(); st[0].State != "down" || st[1].State != "up" {
		t.Fatalf("states: %+v", st)
	}
	wantLog(t, "events", h.sink.take(), "start mail_server_down "+p)
	dials := h.dial.count(p)
	for range 3 {
		mustSend(t, h.r, f)
	}
	if n := h.dial.count(p) - dials; n != 0 {
		t.Errorf("the down primary was dialed %d times by traffic", n)
	}
	if n := failover.Count(); n != 3 {
		t.Errorf("failover received %d messages, want 3", n)
	}

	setDown(t, failover, true)
	h.checks(t, 2)
	wantLog(t, "events", h.sink.take(), "start mail_server_down "+f, "start org_down mx.example.test")
	wantLog(t, "org callbacks", h.orgCalls(), "down since "+h.clock.Now().Format(time.TimeOnly))

	// The failover comes back first: org_down ends, traffic goes there.
	setDown(t, failover, false)
	h.checks(t, 1)
	wantLog(t, "events", h.sink.take(), "end mail_server_down "+f, "end org_down mx.example.test")
	wantLog(t, "org callbacks", h.orgCalls(), "up")
	mustSend(t, h.r, f) // leaves an idle connection to the failover

	setDown(t, primary, false)
	h.checks(t, 1)
	wantLog(t, "events", h.sink.take(), "end mail_server_down "+p)
	mustSend(t, h.r, p)
	if n := primary.Count(); n != 2 {
		t.Errorf("primary received %d messages, want 2", n)
	}
}

// Failures of real traffic count like failed checks: the primary goes down
// without any check, and while it is down traffic does not try it.
func TestPassiveFailures(t *testing.T) {
	primary, failover := startSink(t), startSink(t)
	p, f := primary.Addr(), failover.Addr()
	h := newHarness(t, 3, delivery.Server{Address: p, Role: "primary"}, delivery.Server{Address: f, Role: "failover"})

	setDown(t, primary, true)
	for i := 1; i <= 3; i++ {
		mustSend(t, h.r, f)
		if n := h.dial.count(p); n != i {
			t.Fatalf("message %d: primary dialed %d times", i, n)
		}
	}
	if st := h.state(t, p); st.State != "down" {
		t.Fatalf("primary after 3 refused connections: %+v", st)
	}
	wantLog(t, "events", h.sink.take(), "start mail_server_down "+p)
	mustSend(t, h.r, f)
	if n := h.dial.count(p); n != 3 {
		t.Errorf("primary dialed %d times, want 3: a down server is skipped", n)
	}
	setDown(t, primary, false)
	h.checks(t, 1)
	mustSend(t, h.r, p)
}

// A connection that breaks in the middle of a transaction counts as a
// failure of its server.
func TestBrokenConnectionCounts(t *testing.T) {
	sink := startSink(t)
	addr := sink.Addr()
	h := newHarness(t, 1, delivery.Server{Address: addr, Role: "primary"})
	txn, err := h.r.Begin(t.Context(), address.MustParse("sender@remote.test"), relay.MailOptions{})
	if err != nil {
		t.Fatal(err)
	}
	setDown(t, sink, true) // closes the open session too
	if err := txn.Rcpt(t.Context(), address.MustParse("alice@example.test")); err == nil {
		t.Fatal("RCPT on a closed connection succeeded")
	}
	// MAIL goes out with the first RCPT: the break shows on either.
	if st := h.state(t, addr); st.State != "down" || !strings.Contains(st.LastError, "MAIL") && !strings.Contains(st.LastError, "RCPT") {
		t.Errorf("after a broken connection: %+v", st)
	}
}

// Every server down: Begin fails at once with ErrUnavailable and dials
// nothing; a check still brings a server back.
func TestAllDownFailsFast(t *testing.T) {
	a, b := startSink(t), startSink(t)
	h := newHarness(t, 1, delivery.Server{Address: a.Addr(), Role: "primary"}, delivery.Server{Address: b.Addr(), Role: "failover"})
	setDown(t, a, true)
	setDown(t, b, true)
	h.checks(t, 1)
	dials := h.dial.count(a.Addr()) + h.dial.count(b.Addr())
	_, err := h.r.Begin(t.Context(), address.MustParse("sender@remote.test"), relay.MailOptions{})
	if !errors.Is(err, relay.ErrUnavailable) {
		t.Fatalf("Begin with every server down: %v, want ErrUnavailable", err)
	}
	if n := h.dial.count(a.Addr()) + h.dial.count(b.Addr()) - dials; n != 0 {
		t.Errorf("Begin dialed %d times with every server down", n)
	}
	setDown(t, b, false)
	h.checks(t, 1)
	mustSend(t, h.r, b.Addr())
}

// What makes a check fail: the greeting or EHLO refused, a protocol
// error, a refused QUIT, or silence until the check timeout.
func TestCheckFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		script  testutil.Script
		wantErr string
	}{
		{"greeting 554", testutil.Script{"greeting": "554 5.3.2 no service"}, "554"},
		{"greeting 421", testutil.Script{"greeting": "421 4.3.2 shutting down"}, "421"},
		{"EHLO refused", testutil.Script{"EHLO": "451 4.3.0 try later"}, "451"},
		{"EHLO garbled", testutil.Script{"EHLO": "hello"}, "malformed reply"},
		{"QUIT refused", testutil.Script{"QUIT": "500 what"}, "QUIT: SMTP error 500"},
		{"silent", testutil.Script{"greeting": testutil.Silence}, "greeting: no answer within 300ms"},
		{"silent at EHLO", testutil.Script{"EHLO": testutil.Silence}, "EHLO: no answer within 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := testutil.ScriptedSMTP(t, tc.script).Addr()
			h := newHarness(t, 1, delivery.Server{Address: addr, Role: "primary"})
			h.opts.CheckTimeout = 300 * time.Millisecond
			h.r = delivery.New(h.opts)
			h.checks(t, 1)
			st := h.state(t, addr)
			if st.State != "down" || !strings.Contains(st.LastError, tc.wantErr) {
				t.Errorf("state %+v, want down with %q in last_error", st, tc.wantErr)
			}
		})
	}
}

// A failed event write is retried at the next check, and no event is
// written twice.
func TestEventWriteRetried(t *testing.T) {
	sink := startSink(t)
	addr := sink.Addr()
	h := newHarness(t, 1, delivery.Server{Address: addr, Role: "primary"})
	h.sink.failStart = errors.New("database is locked")
	setDown(t, sink, true)
	h.checks(t, 1)
	wantLog(t, "events while the store fails", h.sink.take())
	wantLog(t, "org callbacks do not wait for the store", h.orgCalls(), "down since "+h.clock.Now().Format(time.TimeOnly))
	h.sink.failStart = nil
	h.checks(t, 1)
	wantLog(t, "events", h.sink.take(), "start mail_server_down "+addr, "start org_down mx.example.test")
	h.checks(t, 1)
	wantLog(t, "events", h.sink.take())
}

// Events a previous run left open are taken over: a server that is up
// ends its event at the first check, one still down keeps it.
func TestResumeOpenEvents(t *testing.T) {
	up, down := startSink(t), startSink(t)
	setDown(t, down, true)
	h := newHarness(t, 3, delivery.Server{Address: up.Addr(), Role: "primary"}, delivery.Server{Address: down.Addr(), Role: "failover"})
	h.sink.resume = map[string]int64{
		"mail_server_down " + up.Addr():   41,
		"mail_server_down " + down.Addr(): 42,
	}
	h.sink.ended = make(chan int64, 4)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		h.r.Run(ctx)
		close(done)
	}()
	select {
	case id := <-h.sink.ended:
		if id != 41 {
			t.Errorf("ended event %d, want 41", id)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the open event of the server that is up was not ended")
	}
	cancel()
	<-done
	if st := h.state(t, down.Addr()); st.State != "down" {
		t.Errorf("server down before the restart and still failing: %+v", st)
	}
	wantLog(t, "events", h.sink.take(), "end mail_server_down "+up.Addr())
	if n := h.sink.openCount(); n != 1 {
		t.Errorf("%d events open, want 1 (42)", n)
	}
}

// SetServers keeps the state of servers that stay and ends the event of a
// removed one.
func TestSetServers(t *testing.T) {
	a, b := startSink(t), startSink(t)
	h := newHarness(t, 1, delivery.Server{Address: a.Addr(), Role: "primary"}, delivery.Server{Address: b.Addr(), Role: "failover"})
	setDown(t, b, true)
	h.checks(t, 1)
	wantLog(t, "events", h.sink.take(), "start mail_server_down "+b.Addr())
	c := startSink(t)
	h.r.SetServers([]delivery.Server{{Address: c.Addr(), Role: "primary"}, {Address: a.Addr(), Role: "failover"}})
	wantLog(t, "events", h.sink.take(), "end mail_server_down "+b.Addr())
	got := h.r.Servers()
	if len(got) != 2 || got[0].Address != c.Addr() || got[1].Address != a.Addr() || got[1].Role != "failover" {
		t.Errorf("servers after reload: %+v", got)
	}
	mustSend(t, h.r, c.Addr())
}
