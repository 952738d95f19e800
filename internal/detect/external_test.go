package detect

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"mxguard/internal/config"
	"mxguard/internal/events"
	"mxguard/internal/metrics"
)

func gaugeOf(t *testing.T, m *metrics.Metrics, name, typ string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, x := range mf.GetMetric() {
			if x.GetLabel()[0].GetValue() != typ {
				continue
			}
			if x.Counter != nil {
				return x.GetCounter().GetValue()
			}
			return x.GetGauge().GetValue()
		}
	}
	return 0
}

func openSQLite(t *testing.T, path string) events.Store {
	t.Helper()
	st, err := events.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Events raised by another component (the delivery manager) are stored,
// counted and reported like the engine's own, and end when told to, not
// after a quiet window.
func TestExternalEventLifecycle(t *testing.T) {
	ctx := context.Background()
	m := metrics.New()
	st := openSQLite(t, filepath.Join(t.TempDir(), "events.db"))
	r := newRig(t, Options{Store: st, Metrics: m, Node: "mx1"})
	started := r.clock.Now()

	id, err := r.StartEvent(ctx, "mail_server_down", "127.0.0.1:2526", "smtp", map[string]any{"role": "primary"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	want := events.Event{
		ID: id, Type: "mail_server_down", Mode: events.ModeEnforce, Status: events.StatusActive, StartedAt: started,
		Source: "127.0.0.1:2526", Service: "smtp", Actions: []string{}, Node: "mx1", Detail: map[string]any{"role": "primary"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stored\n got %+v\nwant %+v", got, want)
	}
	if n := gaugeOf(t, m, "mxguard_events_total", "mail_server_down"); n != 1 {
		t.Errorf("mxguard_events_total = %v", n)
	}
	if n := gaugeOf(t, m, "mxguard_events_active", "mail_server_down"); n != 1 {
		t.Errorf("mxguard_events_active = %v", n)
	}

	// Not a counted event: housekeeping a day later leaves it active.
	r.clock.Advance(24 * time.Hour)
	r.Tick(ctx)
	if got, _ := st.Get(ctx, id); got.Status != events.StatusActive {
		t.Fatalf("Tick ended an external event: %+v", got)
	}

	if err := r.EndEvent(ctx, id); err != nil {
		t.Fatal(err)
	}
	got, _ = st.Get(ctx, id)
	if got.Status != events.StatusEnded || got.EndedAt == nil || !got.EndedAt.Equal(r.clock.Now()) {
		t.Errorf("after EndEvent: %+v", got)
	}
	if n := gaugeOf(t, m, "mxguard_events_active", "mail_server_down"); n != 0 {
		t.Errorf("mxguard_events_active = %v after the end", n)
	}
	if err := r.EndEvent(ctx, id); !errors.Is(err, events.ErrNotFound) {
		t.Errorf("second EndEvent: %v, want ErrNotFound", err)
	}
	if ts := r.changes.types(); !reflect.DeepEqual(ts, []string{ChangeEventStarted, ChangeEventEnded}) {
		t.Errorf("OnChange: %v", ts)
	}
	r.changes.mu.Lock()
	ended := r.changes.cs[1].Event
	r.changes.mu.Unlock()
	if ended.ID != id || ended.Type != "mail_server_down" || ended.Source != "127.0.0.1:2526" || ended.Status != events.StatusEnded {
		t.Errorf("event_ended change: %+v", ended)
	}
}

// The engine's own types are not for StartEvent: two writers of one type
// would contradict each other.
func TestStartEventRefusesRuleTypes(t *testing.T) {
	r := newRig(t, Options{})
	for _, typ := range []string{"directory_harvest", "dos", ""} {
		if _, err := r.StartEvent(context.Background(), typ, "192.0.2.1", "smtp", nil); err == nil {
			t.Errorf("StartEvent(%q) accepted", typ)
		}
	}
	if n := len(r.store.events()); n != 0 {
		t.Errorf("%d events stored", n)
	}
}

// Without a store, IDs still identify events.
func TestExternalEventWithoutStore(t *testing.T) {
	clock := newFakeClock()
	e, err := New(context.Background(), Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	a, err1 := e.StartEvent(context.Background(), "mail_server_down", "a:25", "smtp", nil)
	b, err2 := e.StartEvent(context.Background(), "org_down", "mx.example.test", "smtp", nil)
	if err := errors.Join(err1, err2); err != nil || a == b || a == 0 {
		t.Fatalf("ids %d, %d: %v", a, b, err)
	}
	if id, err := e.ActiveEvent(context.Background(), "org_down", "mx.example.test"); id != b || err != nil {
		t.Errorf("ActiveEvent = %d, %v; want %d", id, err, b)
	}
	if err := errors.Join(e.EndEvent(context.Background(), a), e.EndEvent(context.Background(), b)); err != nil {
		t.Fatal(err)
	}
}

// After a restart the component finds the event the previous run left
// open (the engine leaves types it does not count alone) and can end it.
func TestActiveEventAfterRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "events.db")
	st := openSQLite(t, path)
	first := newRig(t, Options{Store: st})
	down, err := first.StartEvent(ctx, "mail_server_down", "127.0.0.1:2526", "smtp", nil)
	if err != nil {
		t.Fatal(err)
	}
	org, err := first.StartEvent(ctx, "org_down", "mx.example.test", "smtp", nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.StartEvent(ctx, "mail_server_down", "127.0.0.1:2527", "smtp", nil); err != nil {
		t.Fatal(err)
	}
	first.Flush(ctx)

	m := metrics.New()
	second := newRig(t, Options{Store: st, Metrics: m})
	for _, tc := range []struct {
		typ, source string
		want        int64
	}{
		{"mail_server_down", "127.0.0.1:2526", down},
		{"org_down", "mx.example.test", org},
		{"mail_server_down", "127.0.0.1:9999", 0},
		{"org_down", "127.0.0.1:2526", 0},
	} {
		id, err := second.ActiveEvent(ctx, tc.typ, tc.source)
		if err != nil || id != tc.want {
			t.Errorf("ActiveEvent(%s, %s) = %d, %v; want %d", tc.typ, tc.source, id, err, tc.want)
		}
	}
	// Asking twice does not count the event twice.
	if _, err := second.ActiveEvent(ctx, "org_down", "mx.example.test"); err != nil {
		t.Fatal(err)
	}
	if n := gaugeOf(t, m, "mxguard_events_active", "org_down"); n != 1 {
		t.Errorf("mxguard_events_active{org_down} = %v, want 1", n)
	}
	if err := second.EndEvent(ctx, org); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.Get(ctx, org); got.Status != events.StatusEnded {
		t.Errorf("resumed event not ended: %+v", got)
	}
	if n := gaugeOf(t, m, "mxguard_events_active", "org_down"); n != 0 {
		t.Errorf("mxguard_events_active{org_down} = %v after the end", n)
	}
	if _, err := second.ActiveEvent(ctx, "dos", "192.0.2.1"); err == nil {
		t.Error("ActiveEvent accepted a rule type")
	}
}

// The alert action is recorded in the event the rule fires, for trusted
// sources too (never blocked, their rules may still alert), and reaches
// OnChange with it: the alert dispatcher listens there. Events of other
// components list the system actions, or those of their rule.
func TestAlertActionRecorded(t *testing.T) {
	ctx := context.Background()
	harvest := rule("h", "directory_harvest", 10*time.Minute, 2, "alert", "block")
	queue := rule("q", "outbound_queue", 10*time.Minute, 100, "alert")
	quiet := rule("q2", "outbound_queue", 10*time.Minute, 100)
	r := newRig(t, Options{Rules: []config.Rule{harvest, queue, quiet}, Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		SystemActions: []string{"alert"}})
	r.observeN(2, Observation{Kind: KindUnknownRecipient, Addr: addr("192.0.2.7"), Refused: true})
	r.observeN(2, Observation{Kind: KindUnknownRecipient, Addr: addr("127.0.0.5"), Refused: true})
	evs := r.eventsOf(t, "h")
	if len(evs) != 2 || !slices.Equal(evs[0].Actions, []string{"alert", "block"}) || !slices.Equal(evs[1].Actions, []string{"alert"}) {
		t.Fatalf("events %+v, want [alert block] for 192.0.2.7 and [alert] for the trusted 127.0.0.5", evs)
	}
	r.changes.mu.Lock()
	var started []string
	for _, c := range r.changes.cs {
		if c.Type == ChangeEventStarted {
			started = append(started, c.Event.Source+":"+strings.Join(c.Event.Actions, ","))
		}
	}
	r.changes.mu.Unlock()
	if !slices.Equal(started, []string{"192.0.2.7:alert,block", "127.0.0.5:alert"}) {
		t.Errorf("OnChange started events %v", started)
	}

	for _, c := range []struct {
		rule, typ string
		want      []string
	}{{"", "org_down", []string{"alert"}}, {"q", "outbound_queue", []string{"alert"}}, {"q2", "outbound_queue", []string{}}} {
		id, err := r.StartRuleEvent(ctx, c.rule, c.typ, "spool", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := r.store.Get(ctx, id); !slices.Equal(got.Actions, c.want) {
			t.Errorf("%s event of rule %q: actions %v, want %v", c.typ, c.rule, got.Actions, c.want)
		}
	}
	// A reload without alert channels: system events list nothing.
	if err := r.Reconfigure(Options{Rules: []config.Rule{harvest}}); err != nil {
		t.Fatal(err)
	}
	id, err := r.StartEvent(ctx, "mail_server_down", "127.0.0.1:2526", "smtp", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := r.store.Get(ctx, id); len(got.Actions) != 0 {
		t.Errorf("mail_server_down without alert channels lists %v", got.Actions)
	}
}
