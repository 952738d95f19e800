package gateway_test

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mxguard/internal/config"
	"mxguard/internal/events"
	"mxguard/internal/gateway"
	"mxguard/internal/mailsink"
	"mxguard/internal/testutil"
)

// With storage.driver postgres a harvest is recorded in the shared
// database: the API shows the event and the block, a second gateway on
// the same database (another node, its own data_dir) shows them too and
// refuses the source at once. The DSN's password (the private cluster
// trusts loopback and ignores it) shows in no log line and no answer.
func TestPostgresStore(t *testing.T) {
	const pw = "hunter2-pg-secret"
	dsn := strings.Replace(pg.Database(t), "postgres@", "postgres:"+pw+"@", 1)
	sink, err := mailsink.Start(t.Context(), mailsink.Options{Mailboxes: []string{"alice@example.test"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	var logs testutil.LockedBuffer
	node := func(name string) *env {
		t.Helper()
		dir := t.TempDir()
		yaml := testConfig(sink.Addr(), fmt.Sprintf(`storage: {driver: postgres, dsn: "%s", retention: 30d}
cluster: {node: %s}
rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 3, actions: [block], block_for: 1h}
`, dsn, name), dir)
		cfg, err := config.Parse("test.yaml", []byte(yaml))
		if err != nil {
			t.Fatalf("config: %v\n%s", err, yaml)
		}
		gw, err := gateway.Start(t.Context(), cfg, gateway.Options{
			Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { gw.Close() })
		return &env{t: t, gw: gw, dir: dir, sink: sink}
	}
	mx1 := node("mx1")
	c := mx1.session("127.0.0.60")
	for i := 1; i <= 3; i++ {
		c.Cmd(fmt.Sprintf("RCPT TO:<guess%d@example.test>", i), 550)
	}
	c.Cmd("RCPT TO:<alice@example.test>", 421)
	c.ExpectClosed()
	l := mx1.events("type=directory_harvest")
	if l.Total != 1 || l.Events[0].Source != "127.0.0.60" || l.Events[0].ID == 0 {
		t.Fatalf("events on mx1: %+v", l)
	}
	id := l.Events[0].ID

	mx2 := node("mx2")
	code, body := mx2.api("GET", fmt.Sprintf("/api/v1/events/%d", id), "")
	if code != 200 || !strings.Contains(body, `"source":"127.0.0.60"`) || !strings.Contains(body, `"node":"mx1"`) {
		t.Errorf("mx2 reads event %d: %d %s", id, code, body)
	}
	code, body = mx2.api("GET", "/api/v1/blocks", "")
	if code != 200 || !strings.Contains(body, `"source":"127.0.0.60"`) {
		t.Errorf("mx2 blocks: %d %s", code, body)
	}
	// The block was loaded from the shared store at start.
	c2 := mx2.dial("127.0.0.60")
	c2.Expect(421)
	c2.ExpectClosed()
	mx2.session("127.0.0.61").Cmd("RCPT TO:<alice@example.test>", 250)

	var answers []string
	for _, e := range []*env{mx1, mx2} {
		for _, path := range []string{"/api/v1/rules", "/api/v1/servers", "/api/v1/events", "/metrics"} {
			_, body := e.api("GET", path, "")
			answers = append(answers, body)
		}
	}
	if strings.Contains(logs.String(), pw) || strings.Contains(strings.Join(answers, "\n"), pw) {
		t.Error("the DSN's password shows in a log line or an API answer")
	}
}

// A database that cannot be reached at start is a clear error, without
// the password.
func TestPostgresStoreUnreachable(t *testing.T) {
	const pw = "hunter2-pg-secret"
	closed := testutil.FreeAddr(t)
	yaml := testConfig("127.0.0.1:25", fmt.Sprintf(`storage: {driver: postgres, dsn: "postgres://mxguard:%s@%s/mxguard?connect_timeout=2"}
`, pw, closed), t.TempDir())
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.Start(t.Context(), cfg, gateway.Options{Logger: testLogger(t)})
	if err == nil {
		gw.Close()
		t.Fatal("started without its database")
	}
	if !strings.Contains(err.Error(), "events store") || strings.Contains(err.Error(), pw) {
		t.Errorf("error = %v", err)
	}
}

// storage.retention runs in the gateway: an event that ended long ago is
// deleted soon after start and counted; an active one and a recent one
// stay. Both stores.
func TestRetention(t *testing.T) {
	for _, driver := range []string{"sqlite", "postgres"} {
		t.Run(driver, func(t *testing.T) {
			dir := t.TempDir()
			storage := "storage: {retention: 30d}\n"
			var s events.Store
			var err error
			if driver == "postgres" {
				dsn := pg.Database(t)
				storage = fmt.Sprintf("storage: {driver: postgres, dsn: %q, retention: 30d}\n", dsn)
				s, err = events.OpenPostgres(t.Context(), dsn)
			} else {
				s, err = events.OpenSQLite(t.Context(), filepath.Join(dir, "mxguard.db"))
			}
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			old := now.Add(-40 * 24 * time.Hour)
			seed := []events.Event{
				{Type: "dos", Rule: "dos", Status: events.StatusEnded, StartedAt: old, EndedAt: &old, Source: "192.0.2.1"},
				{Type: "dos", Rule: "dos", Status: events.StatusActive, StartedAt: old, Source: "192.0.2.2"},
				{Type: "dos", Rule: "dos", Status: events.StatusEnded, StartedAt: old, EndedAt: &now, Source: "192.0.2.3"},
			}
			for i := range seed {
				if err := s.Insert(t.Context(), &seed[i]); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			sink, err := mailsink.Start(t.Context(), mailsink.Options{Mailboxes: []string{"alice@example.test"}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sink.Close() })
			cfg, err := config.Parse("test.yaml", []byte(testConfig(sink.Addr(), storage, dir)))
			if err != nil {
				t.Fatal(err)
			}
			gw, err := gateway.Start(t.Context(), cfg, gateway.Options{Logger: testLogger(t), RetentionFirstRun: -1})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { gw.Close() })
			e := &env{t: t, gw: gw, dir: dir, sink: sink}
			waitFor(t, func() bool { return strings.Contains(e.metrics(), "mxguard_events_deleted_total 1\n") })
			if code, _ := e.api("GET", fmt.Sprintf("/api/v1/events/%d", seed[0].ID), ""); code != 404 {
				t.Errorf("the old ended event: %d, want 404", code)
			}
			for _, ev := range seed[1:] {
				if code, body := e.api("GET", fmt.Sprintf("/api/v1/events/%d", ev.ID), ""); code != 200 {
					t.Errorf("event %d (%s) must stay: %d %s", ev.ID, ev.Status, code, body)
				}
			}
		})
	}
}

// The database goes away mid-run (every connection cut, new ones
// refused): mail keeps flowing, a harvest is still detected and blocked
// from memory, the API answers; once the database is back the writer's
// retries store the event and the block.
func TestPostgresOutageKeepsMailFlowing(t *testing.T) {
	direct := pg.Database(t)
	proxy := testutil.StartCutProxy(t, pg.Addr())
	dsn := strings.Replace(direct, pg.Addr(), proxy.Addr(), 1)
	sink, err := mailsink.Start(t.Context(), mailsink.Options{Mailboxes: []string{"alice@example.test"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	dir := t.TempDir()
	cfg, err := config.Parse("test.yaml", []byte(testConfig(sink.Addr(), fmt.Sprintf(`storage: {driver: postgres, dsn: %q}
rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 3, actions: [block], block_for: 1h}
`, dsn), dir)))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.Start(t.Context(), cfg, gateway.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	e := &env{t: t, gw: gw, dir: dir, sink: sink}

	proxy.Cut()
	c := e.session("127.0.0.70")
	for i := 1; i <= 3; i++ {
		c.Cmd(fmt.Sprintf("RCPT TO:<guess%d@example.test>", i), 550)
	}
	c.Cmd("RCPT TO:<alice@example.test>", 421)
	c.ExpectClosed()
	e.dial("127.0.0.70").Expect(421)
	// Another sender's message is relayed while the database is down.
	ok := e.session("127.0.0.71")
	ok.Cmd("RCPT TO:<alice@example.test>", 250)
	ok.Data(string(testutil.Message("during the outage", "still delivered")), 250)
	ok.Cmd("QUIT", 221)
	// The block is in force from memory, and the API shows it.
	if code, body := e.api("GET", "/api/v1/blocks", ""); code != 200 || !strings.Contains(body, `"source":"127.0.0.70"`) {
		t.Errorf("blocks during the outage: %d %s", code, body)
	}

	proxy.Restore()
	waitFor(t, func() bool {
		code, body := e.api("GET", "/api/v1/events?type=directory_harvest", "")
		return code == 200 && strings.Contains(body, `"source":"127.0.0.70"`)
	})
	// The block reached the database too: a new node loads it.
	waitFor(t, func() bool {
		s, err := events.OpenPostgres(t.Context(), direct)
		if err != nil {
			return false
		}
		defer s.Close()
		bs, err := s.Blocks(t.Context())
		return err == nil && len(bs) == 1 && bs[0].Source == "127.0.0.70"
	})
}
