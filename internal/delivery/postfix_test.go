package delivery_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"mxguard/internal/address"
	"mxguard/internal/delivery"
	"mxguard/internal/detect"
	"mxguard/internal/events"
	"mxguard/internal/relay"
	"mxguard/internal/testutil"
)

// TestPostfixOutage runs the delivery manager against a real Postfix that
// the test stops and starts, with the detection engine and an SQLite store
// recording the events as in the gateway: after down_after failed checks
// the server is down and mail_server_down and org_down are active; Begin
// fails fast; once Postfix is back one check brings it up, both events end
// and mail flows again.
func TestPostfixOutage(t *testing.T) {
	pf := testutil.StartPostfix(t, testutil.PostfixOptions{})
	ctx := t.Context()
	store, err := events.OpenSQLite(ctx, filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	clock := newFakeClock()
	engine, err := detect.New(ctx, detect.Options{Store: store, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	var org []string
	rl := relay.New(relay.Options{Hostname: "mx.example.test"})
	t.Cleanup(func() { rl.Close() })
	r := delivery.New(delivery.Options{
		Servers:   []delivery.Server{{Address: pf.Addr(), Role: "primary"}},
		Relay:     rl,
		Hostname:  "mx.example.test",
		DownAfter: 2,
		Clock:     clock,
		Events:    engine,
		OnOrgDown: func(time.Time) { org = append(org, "down") },
		OnOrgUp:   func() { org = append(org, "up") },
	})
	active := func(typ string) []events.Event {
		t.Helper()
		res, err := store.Query(ctx, events.Query{Type: typ, Status: events.StatusActive})
		if err != nil {
			t.Fatal(err)
		}
		return res.Events
	}

	mustSend(t, r, pf.Addr())
	pf.WaitDelivered(t, "alice@example.test", 1, 30*time.Second)

	pf.Stop()
	// Real traffic notices first: one failure of two.
	if _, err := send(t, r); !errors.Is(err, relay.ErrUnavailable) {
		t.Fatalf("send while Postfix is stopped: %v, want ErrUnavailable", err)
	}
	if st := r.Servers()[0]; st.State != "up" || st.LastError == "" {
		t.Fatalf("after one failure: %+v", st)
	}
	clock.Advance(5 * time.Second)
	r.CheckNow(ctx)
	st := r.Servers()[0]
	if st.State != "down" || !st.Since.Equal(clock.Now()) {
		t.Fatalf("after the failed check: %+v", st)
	}
	down, orgDown := active(delivery.EventServerDown), active(delivery.EventOrgDown)
	if len(down) != 1 || down[0].Source != pf.Addr() || down[0].Service != "smtp" {
		t.Fatalf("active mail_server_down events: %+v", down)
	}
	if len(orgDown) != 1 || orgDown[0].Source != "mx.example.test" {
		t.Fatalf("active org_down events: %+v", orgDown)
	}
	if _, err := r.Begin(ctx, address.MustParse("sender@remote.test"), relay.MailOptions{}); !errors.Is(err, relay.ErrUnavailable) {
		t.Fatalf("Begin with every server down: %v", err)
	}

	pf.Start()
	clock.Advance(5 * time.Second)
	r.CheckNow(ctx)
	if st := r.Servers()[0]; st.State != "up" {
		t.Fatalf("after Postfix is back: %+v", st)
	}
	if n := len(active(delivery.EventServerDown)) + len(active(delivery.EventOrgDown)); n != 0 {
		t.Errorf("%d events still active after recovery", n)
	}
	for _, ev := range []events.Event{down[0], orgDown[0]} {
		got, err := store.Get(context.Background(), ev.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status != events.StatusEnded || got.EndedAt == nil || !got.EndedAt.Equal(clock.Now()) {
			t.Errorf("event after recovery: %+v", got)
		}
	}
	if len(org) != 2 || org[0] != "down" || org[1] != "up" {
		t.Errorf("org callbacks: %v", org)
	}
	mustSend(t, r, pf.Addr())
	pf.WaitDelivered(t, "alice@example.test", 2, 30*time.Second)
}
