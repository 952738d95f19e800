package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"mxguard/internal/config"
	"mxguard/internal/events"
	"mxguard/internal/metrics"
	"mxguard/internal/ruletype"
	"mxguard/internal/testutil"
)

const testToken = "s3cret-admin-token-6d2f"

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// fakeEngine keeps blocks in a map; it canonicalizes CIDRs the way the real
// engine does, so the console and API round trips are realistic.
type fakeEngine struct {
	mu      sync.Mutex
	blocks  map[string]events.Block
	lastFor time.Duration
	flushes int
	refuse  error
	rules   []config.Rule
}

var _ Engine = (*fakeEngine)(nil)

func (f *fakeEngine) Flush(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.flushes++
	return nil
}

func (f *fakeEngine) Blocks() []events.Block {
	f.mu.Lock()
	defer f.mu.Unlock()
	var bs []events.Block
	for _, b := range f.blocks {
		bs = append(bs, b)
	}
	return bs
}

func (f *fakeEngine) AddBlock(_ context.Context, source string, d time.Duration, reason string) (events.Block, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refuse != nil {
		return events.Block{}, f.refuse
	}
	if p, err := netip.ParsePrefix(source); err == nil {
		source = p.Masked().String()
	}
	b := events.Block{Source: source, Reason: reason, CreatedAt: t0, ExpiresAt: t0.Add(d), Manual: true}
	f.blocks[source] = b
	f.lastFor = d
	return b, nil
}

func (f *fakeEngine) RemoveBlock(_ context.Context, source string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.blocks[source]; !ok {
		return events.ErrNotFound
	}
	delete(f.blocks, source)
	return nil
}

func (f *fakeEngine) Rules() []config.Rule { return f.rules }

type fixture struct {
	srv     *Server
	clock   *testutil.FakeClock // starts at t0
	session sessionInfo         // a console login, for browser()
	url     string
	engine  *fakeEngine
	store   *events.SQLiteStore
	reload  func(context.Context) error
	events  []events.Event // as inserted, with IDs
}

// newFixture starts the admin handler on a real listener (escaped paths go
// through the real HTTP stack) over a real SQLite store holding five events.
// Each with func may set further options before the handler is built.
func newFixture(t *testing.T, with ...func(*Options)) *fixture {
	t.Helper()
	ctx := context.Background()
	store, err := events.OpenSQLite(ctx, filepath.Join(t.TempDir(), "events.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	f := &fixture{store: store, engine: &fakeEngine{blocks: map[string]events.Block{}, rules: []config.Rule{
		{Name: "harvest", Type: "directory_harvest", Window: 10 * time.Minute, Threshold: 20, Actions: []string{"block"}, BlockFor: time.Hour},
		{Name: "bomb", Type: "mailbomb", Window: 90 * time.Second, Threshold: 5, MinSize: 500 * 1000, BlockFor: 30 * time.Minute, Mode: "shadow"},
	}}}
	ended := t0.Add(-time.Hour)
	for _, e := range []events.Event{
		{Type: "directory_harvest", Rule: "harvest", Status: events.StatusActive, StartedAt: t0.Add(-10 * time.Minute), Source: "203.0.113.7", Service: "smtp", Impact: 137, Actions: []string{"block"}},
		{Type: "dos", Rule: "dos", Status: events.StatusEnded, StartedAt: t0.Add(-2 * time.Hour), EndedAt: &ended, Source: "198.51.100.1", Impact: 5000},
		{Type: "brute_force", Rule: "bf", Status: events.StatusActive, StartedAt: t0.Add(-30 * time.Minute), Source: "2001:db8:1:2::/64", Service: "imap", Impact: 12},
		{Type: "spam_attack", Rule: "spam", Status: events.StatusEnded, StartedAt: t0.Add(-3 * time.Hour), EndedAt: &ended, Source: "<script>alert(1)</script>", Impact: 3},
		{Type: "directory_harvest", Rule: "harvest", Status: events.StatusEnded, StartedAt: t0.Add(-4 * time.Hour), EndedAt: &ended, Source: "192.0.2.9", Impact: 40, Detail: map[string]any{"recipients": 41.0}},
	} {
		if err := store.Insert(ctx, &e); err != nil {
			t.Fatal(err)
		}
		f.events = append(f.events, e)
	}
	f.clock = testutil.NewFakeClock()
	o := Options{
		Engine: f.engine, Store: store, Metrics: metrics.New(), Token: testToken, Version: "v1.2.3",
		Reload: func(ctx context.Context) error { return f.reload(ctx) },
		Clock:  f.clock,
	}
	for _, w := range with {
		w(&o)
	}
	f.srv = New(o)
	f.session = f.srv.sessions.create(f.clock.Now())
	f.reload = func(context.Context) error { return nil }
	hs := httptest.NewServer(f.srv)
	t.Cleanup(hs.Close)
	f.url = hs.URL
	return f
}

type reply struct {
	status int
	header http.Header
	body   string
}

// do sends a request without following redirects.
func (f *fixture) do(t *testing.T, method, path, body string, header ...string) reply {
	t.Helper()
	return f.doFrom(t, "", method, path, body, header...)
}

// doFrom is do from the local address ip ("": any), to play another host.
func (f *fixture) doFrom(t *testing.T, ip, method, path, body string, header ...string) reply {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if ip != "" {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		c.Transport = &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{resp.StatusCode, resp.Header, string(b)}
}

func (f *fixture) api(t *testing.T, method, path, body string) reply {
	t.Helper()
	return f.do(t, method, path, body, "Authorization", "Bearer "+testToken)
}

// decode parses a JSON answer, failing on anything else.
func decode[T any](t *testing.T, r reply) T {
	t.Helper()
	var v T
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json (body %q)", ct, r.body)
	}
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
	return v
}

func wantError(t *testing.T, r reply, status int) string {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %q)", r.status, status, r.body)
	}
	e := decode[map[string]any](t, r)
	msg, ok := e["error"].(string)
	if !ok || msg == "" {
		t.Fatalf("body %q has no error text", r.body)
	}
	return msg
}

func TestAuth(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		name, method, path string
		header             []string
		status             int
	}{
		{"no token", "GET", "/api/v1/events", nil, 401},
		{"wrong token", "GET", "/api/v1/events", []string{"Authorization", "Bearer nope"}, 401},
		{"token prefix", "GET", "/api/v1/events", []string{"Authorization", "Bearer s3cret"}, 401},
		{"basic scheme", "GET", "/api/v1/blocks", []string{"Authorization", "Basic " + testToken}, 401},
		{"token cookie is not enough for the API", "GET", "/api/v1/blocks", []string{"Cookie", legacyCookie + "=" + testToken}, 401},
		{"session cookie is not enough for the API", "GET", "/api/v1/blocks", []string{"Cookie", cookieName + "=" + f.session.id}, 401},
		{"unknown path without token", "GET", "/api/v1/nothing", nil, 401},
		{"good token", "GET", "/api/v1/events", []string{"Authorization", "Bearer " + testToken}, 200},
		{"healthz is open", "GET", "/healthz", nil, 200},
		{"metrics is open", "GET", "/metrics", nil, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(t, tc.method, tc.path, "", tc.header...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d (body %q)", r.status, tc.status, r.body)
			}
			if tc.status == 401 {
				wantError(t, r, 401)
			}
		})
	}
	if r := f.do(t, "GET", "/healthz", ""); r.body != "ok" {
		t.Errorf("healthz body %q, want ok", r.body)
	}
	if r := f.do(t, "GET", "/metrics", ""); !strings.Contains(r.body, "mxguard_blocks_active") {
		t.Errorf("metrics lack mxguard_blocks_active:\n%s", r.body)
	}
}

// An empty token is a wiring mistake; it must close the API, not open it.
func TestEmptyTokenClosesAPI(t *testing.T) {
	s := New(Options{Engine: &fakeEngine{}, Token: ""})
	for _, h := range []string{"Bearer ", "Bearer", ""} {
		req := httptest.NewRequest("GET", "/api/v1/blocks", nil)
		req.Header.Set("Authorization", h)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code != 401 {
			t.Errorf("Authorization %q: status %d, want 401", h, w.Code)
		}
	}
}

func TestAPIRouting(t *testing.T) {
	f := newFixture(t)
	if msg := wantError(t, f.api(t, "GET", "/api/v1/nothing", ""), 404); msg != "no such endpoint: /api/v1/nothing" {
		t.Errorf("404 text %q", msg)
	}
	r := f.api(t, "PUT", "/api/v1/events", "")
	if msg := wantError(t, r, 405); !strings.HasPrefix(msg, "method PUT not allowed on /api/v1/events (allowed: GET") {
		t.Errorf("405 text %q", msg)
	}
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "GET") {
		t.Errorf("405 Allow header %q lacks GET", allow)
	}
	r = f.api(t, "GET", "/api/v1/reload", "")
	wantError(t, r, 405)
	if allow := r.header.Get("Allow"); allow != "POST" {
		t.Errorf("405 Allow header %q, want POST", allow)
	}
}

func TestEvents(t *testing.T) {
	f := newFixture(t)
	id := func(i int) int64 { return f.events[i].ID }
	for _, tc := range []struct {
		query string
		total int
		ids   []int64
	}{
		{"", 5, []int64{id(0), id(2), id(1), id(3), id(4)}},
		{"?order=asc", 5, []int64{id(4), id(3), id(1), id(2), id(0)}},
		{"?type=directory_harvest", 2, []int64{id(0), id(4)}},
		{"?status=active", 2, []int64{id(0), id(2)}},
		{"?source=198.51.100.1", 1, []int64{id(1)}},
		{"?min_impact=40&sort=impact", 3, []int64{id(1), id(0), id(4)}},
		{"?sort=impact&order=asc&limit=2", 5, []int64{id(3), id(2)}},
		{"?sort=impact&order=asc&limit=2&offset=2", 5, []int64{id(4), id(0)}},
		{"?since=" + t0.Add(-time.Hour).Format(time.RFC3339), 2, []int64{id(0), id(2)}},
		{"?type=mailbomb", 0, []int64{}},
		{"?type=&source=&status=", 5, []int64{id(0), id(2), id(1), id(3), id(4)}},
	} {
		t.Run(tc.query, func(t *testing.T) {
			r := f.api(t, "GET", "/api/v1/events"+tc.query, "")
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if !strings.Contains(r.body, `"events":[`) {
				t.Errorf("events is not a list: %s", r.body)
			}
			res := decode[events.Result](t, r)
			ids := []int64{}
			for _, e := range res.Events {
				ids = append(ids, e.ID)
			}
			if res.Total != tc.total || !slices.Equal(ids, tc.ids) {
				t.Errorf("total %d ids %v, want total %d ids %v", res.Total, ids, tc.total, tc.ids)
			}
		})
	}
	if f.engine.flushes == 0 {
		t.Error("events were listed without flushing the engine first")
	}
	for _, bad := range []string{"?sort=rule", "?order=up", "?limit=x", "?min_impact=-1", "?since=yesterday", "?status=open", "?offset=-5", "?type=a&type=b"} {
		t.Run("bad"+bad, func(t *testing.T) { wantError(t, f.api(t, "GET", "/api/v1/events"+bad, ""), 400) })
	}
}

// The event JSON of INTERFACE.md §3: lists and maps are never null.
func TestEventJSON(t *testing.T) {
	f := newFixture(t)
	r := f.api(t, "GET", "/api/v1/events/"+itoa(f.events[1].ID), "")
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	e := decode[map[string]any](t, r)
	for key, want := range map[string]any{
		"id": float64(f.events[1].ID), "type": "dos", "status": "ended", "source": "198.51.100.1",
		"impact": 5000.0, "actions": []any{}, "detail": map[string]any{}, "service": "", "rule": "dos",
	} {
		if !reflect.DeepEqual(e[key], want) {
			t.Errorf("%s = %#v, want %#v", key, e[key], want)
		}
	}
	if e["started_at"] != "2026-11-25T08:00:00Z" || e["ended_at"] != "2026-11-25T09:00:00Z" {
		t.Errorf("times %v %v", e["started_at"], e["ended_at"])
	}
	r = f.api(t, "GET", "/api/v1/events/"+itoa(f.events[0].ID), "")
	if e := decode[map[string]any](t, r); e["ended_at"] != nil {
		t.Errorf("active event ended_at %v, want null", e["ended_at"])
	}

	wantError(t, f.api(t, "GET", "/api/v1/events/999", ""), 404)
	for _, bad := range []string{"abc", "0", "-3", "1.5"} {
		wantError(t, f.api(t, "GET", "/api/v1/events/"+bad, ""), 400)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestBlocks(t *testing.T) {
	f := newFixture(t)
	if r := f.api(t, "GET", "/api/v1/blocks", ""); r.status != 200 || strings.TrimSpace(r.body) != `{"blocks":[]}` {
		t.Fatalf("empty list: %d %s", r.status, r.body)
	}

	for _, tc := range []struct {
		name, body string
		status     int
		source     string
		dur        time.Duration
	}{
		{"ip", `{"source":"203.0.113.9","for":"2h","reason":"manual test"}`, 201, "203.0.113.9", 2 * time.Hour},
		{"default for", `{"source":"203.0.113.10"}`, 201, "203.0.113.10", time.Hour},
		{"cidr", `{"source":"10.1.2.3/8","for":"30m"}`, 201, "10.0.0.0/8", 30 * time.Minute},
		{"ipv6 prefix", `{"source":"2001:db8:9::/48"}`, 201, "2001:db8:9::/48", time.Hour},
		{"bad json", `{"source":`, 400, "", 0},
		{"wrong type", `{"source":"1.2.3.4","for":60}`, 400, "", 0},
		{"trailing data", `{"source":"1.2.3.4"} {"source":"5.6.7.8"}`, 400, "", 0},
		{"not an object", `["1.2.3.4"]`, 400, "", 0},
		{"no source", `{"for":"1h"}`, 400, "", 0},
		{"bad source", `{"source":"mail.example.com"}`, 400, "", 0},
		{"bad duration", `{"source":"1.2.3.4","for":"1 hour"}`, 400, "", 0},
		{"negative duration", `{"source":"1.2.3.4","for":"-1h"}`, 400, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.api(t, "POST", "/api/v1/blocks", tc.body)
			if tc.status != 201 {
				wantError(t, r, tc.status)
				return
			}
			if r.status != 201 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			b := decode[events.Block](t, r)
			if b.Source != tc.source || f.engine.lastFor != tc.dur {
				t.Errorf("block %+v for %v, want %s for %v", b, f.engine.lastFor, tc.source, tc.dur)
			}
		})
	}

	list := decode[struct{ Blocks []events.Block }](t, f.api(t, "GET", "/api/v1/blocks", ""))
	if len(list.Blocks) != 4 {
		t.Errorf("listed %d blocks, want 4: %+v", len(list.Blocks), list.Blocks)
	}

	for _, tc := range []struct{ path, source string }{
		{"/api/v1/blocks/10.0.0.0%2F8", "10.0.0.0/8"},
		{"/api/v1/blocks/2001:db8:9::%2f48", "2001:db8:9::/48"},
		{"/api/v1/blocks/203.0.113.9", "203.0.113.9"},
		{"/api/v1/blocks/203.0.113.10", "203.0.113.10"},
	} {
		t.Run("delete "+tc.source, func(t *testing.T) {
			if r := f.api(t, "DELETE", tc.path, ""); r.status != 204 || r.body != "" {
				t.Fatalf("status %d body %q, want 204", r.status, r.body)
			}
			wantError(t, f.api(t, "DELETE", tc.path, ""), 404)
		})
	}

	f.engine.refuse = errors.New("127.0.0.1 is a trusted network")
	msg := wantError(t, f.api(t, "POST", "/api/v1/blocks", `{"source":"127.0.0.1"}`), 400)
	if !strings.Contains(msg, "trusted") {
		t.Errorf("refusal %q does not say why", msg)
	}
}

// A client that does not escape the slash of a CIDR still reaches it.
func TestDeleteUnescapedCIDR(t *testing.T) {
	f := newFixture(t)
	f.api(t, "POST", "/api/v1/blocks", `{"source":"10.0.0.0/8"}`)
	req := httptest.NewRequest("DELETE", "/api/v1/blocks/10.0.0.0/8", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	w := httptest.NewRecorder()
	f.srv.ServeHTTP(w, req)
	if w.Code != 204 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
}

func TestRules(t *testing.T) {
	f := newFixture(t)
	r := f.api(t, "GET", "/api/v1/rules", "")
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	got := decode[map[string][]map[string]any](t, r)["rules"]
	// What each type counts comes from the one table of types.
	harvest, _ := ruletype.Lookup("directory_harvest")
	bomb, _ := ruletype.Lookup("mailbomb")
	want := []map[string]any{
		{"name": "harvest", "type": "directory_harvest", "per": "source", "counts": harvest.Counts, "service": "", "window": "10m", "threshold": 20.0,
			"min_size": 0.0, "actions": []any{"block"}, "block_for": "1h", "queue": "", "mode": "enforce"},
		{"name": "bomb", "type": "mailbomb", "per": "source", "counts": bomb.Counts, "service": "", "window": "1m30s", "threshold": 5.0,
			"min_size": 500000.0, "actions": []any{}, "block_for": "30m", "queue": "", "mode": "shadow"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("rules\n got %v\nwant %v", got, want)
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 1: "1B", 500_000: "500KB", 10 << 20: "10MiB", 2e9: "2GB", 1536: "1536B", 1 << 30: "1GiB"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestReload(t *testing.T) {
	f := newFixture(t)
	r := f.api(t, "POST", "/api/v1/reload", "")
	if r.status != 200 || decode[map[string]string](t, r)["status"] != "reloaded" {
		t.Fatalf("reload ok: %d %s", r.status, r.body)
	}

	lines := []string{
		"/etc/mxguard.yaml:4: unknown key \"listn\" (did you mean listen?)",
		"/etc/mxguard.yaml:12: rules[0].window: bad duration \"ten\" (use Go syntax: 10m)",
	}
	f.reload = func(context.Context) error { return errors.New(strings.Join(lines, "\n") + "\n") }
	r = f.api(t, "POST", "/api/v1/reload", "")
	wantError(t, r, 400)
	if got := decode[struct{ Errors []string }](t, r).Errors; !slices.Equal(got, lines) {
		t.Errorf("errors %q, want %q", got, lines)
	}

	wantError(t, f.api(t, "GET", "/api/v1/reload", ""), 405)
	s := New(Options{Engine: f.engine, Token: testToken})
	req := httptest.NewRequest("POST", "/api/v1/reload", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != 503 {
		t.Errorf("reload without a Reload func: %d, want 503", w.Code)
	}
}

// GET /api/v1/servers answers the INTERFACE.md §5 shape from what the
// delivery manager reports (the gateway's end-to-end tests feed it from the
// real relay).
func TestServersAPI(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.Servers = func() []ServerView {
			return []ServerView{
				{Address: "127.0.0.1:2526", Role: "primary", State: "up", Since: t0},
				{Address: "127.0.0.1:2527", Role: "failover", State: "down", Since: t0.Add(time.Minute),
					LastError: "dial tcp 127.0.0.1:2527: connect: connection refused"},
			}
		}
	})
	wantError(t, f.do(t, "GET", "/api/v1/servers", ""), 401)
	r := f.api(t, "GET", "/api/v1/servers", "")
	got := decode[struct {
		Servers []map[string]any `json:"servers"`
	}](t, r)
	want := []map[string]any{
		{"address": "127.0.0.1:2526", "role": "primary", "state": "up", "since": "2026-11-25T10:00:00Z", "last_error": ""},
		{"address": "127.0.0.1:2527", "role": "failover", "state": "down", "since": "2026-11-25T10:01:00Z",
			"last_error": "dial tcp 127.0.0.1:2527: connect: connection refused"},
	}
	if r.status != 200 || !reflect.DeepEqual(got.Servers, want) {
		t.Errorf("%d\n got  %v\nwant %v", r.status, got.Servers, want)
	}
	wantError(t, f.api(t, "POST", "/api/v1/servers", ""), 405)

	none := newFixture(t)
	if msg := wantError(t, none.api(t, "GET", "/api/v1/servers", ""), 503); msg != "this instance reports no delivery servers" {
		t.Errorf("without servers: %q", msg)
	}
}

// GET /api/v1/spool and the three operator requests answer the spool's
// status (INTERFACE.md §5), each request reaching the spool manager once.
func TestSpoolAPI(t *testing.T) {
	sp := &fakeSpool{view: SpoolView{State: "off", Messages: 1, Bytes: 1234, MaxBytes: 1 << 20}}
	f := newFixture(t, func(o *Options) { o.Spool = sp })
	wantError(t, f.do(t, "GET", "/api/v1/spool", ""), 401)
	wantError(t, f.do(t, "POST", "/api/v1/spool/suspend", ""), 401)
	status := func(method, path string) (int, map[string]any) {
		t.Helper()
		r := f.api(t, method, path, "")
		if r.status != 200 {
			return r.status, nil
		}
		return r.status, decode[map[string]any](t, r)
	}
	code, v := status("GET", "/api/v1/spool")
	want := map[string]any{"state": "off", "messages": 1.0, "bytes": 1234.0, "max_bytes": float64(1 << 20)}
	if code != 200 || !reflect.DeepEqual(v, want) {
		t.Fatalf("GET = %d %v, want %v", code, v, want)
	}
	for _, tc := range []struct{ action, state string }{{"suspend", "suspended"}, {"resume", "off"}, {"unspool", "unspooling"}} {
		if code, v := status("POST", "/api/v1/spool/"+tc.action); code != 200 || v["state"] != tc.state || v["messages"] != 1.0 {
			t.Errorf("POST %s = %d %v, want state %s", tc.action, code, v, tc.state)
		}
	}
	if !slices.Equal(sp.requests, []string{"suspend", "resume", "unspool"}) {
		t.Errorf("spool got %v", sp.requests)
	}
	wantError(t, f.api(t, "GET", "/api/v1/spool/suspend", ""), 405)
	if msg := wantError(t, f.api(t, "POST", "/api/v1/spool/explode", ""), 404); !strings.Contains(msg, "explode") {
		t.Errorf("unknown action: %q", msg)
	}
	if len(sp.requests) != 3 {
		t.Errorf("a refused request reached the spool: %v", sp.requests)
	}
	none := newFixture(t)
	wantError(t, none.api(t, "GET", "/api/v1/spool", ""), 503)
	wantError(t, none.api(t, "POST", "/api/v1/spool/suspend", ""), 503)
}

// FuzzAddBlock feeds arbitrary bodies to POST /api/v1/blocks: whatever a
// client sends, the answer is 201 or a JSON 400, never a 500 or a panic.
func FuzzAddBlock(f *testing.F) {
	for _, seed := range []string{
		`{"source":"203.0.113.9","for":"2h","reason":"x"}`, `{"source":"10.0.0.0/8"}`, `{"source":"::1/200"}`,
		`{"source":"1.2.3.4","for":"-1h"}`, `{"for":60}`, `[]`, `null`, `{"source":"1.2.3.4"} trailing`, "",
	} {
		f.Add(seed)
	}
	s := New(Options{Engine: &fakeEngine{blocks: map[string]events.Block{}}, Token: testToken})
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/api/v1/blocks", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		if w.Code != 201 && w.Code != 400 {
			t.Fatalf("body %q: status %d", body, w.Code)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("body %q: answer is not JSON: %q", body, w.Body)
		}
	})
}
