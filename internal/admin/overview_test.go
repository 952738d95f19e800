package admin

import (
	"context"
	"encoding/xml"
	"io"
	"maps"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"mxguard/internal/detect"
	"mxguard/internal/events"
	"mxguard/internal/metrics"
	"mxguard/internal/testutil"
)

// withRecent gives the fixture's metrics a ring on its fake clock.
func withRecent(o *Options) { o.Metrics.Recent = metrics.NewRecent(o.Clock) }

// insert stores e in the fixture's store and returns it with its id.
func (f *fixture) insert(t *testing.T, e events.Event) events.Event {
	t.Helper()
	if err := f.store.Insert(context.Background(), &e); err != nil {
		t.Fatal(err)
	}
	return e
}

// The overview lists what is active now, by type, shadow events marked;
// counts the blocks; draws the hour; shows servers and spool. Its live
// fragment is the same part alone, and needs a session (401 without: the
// script then reloads into the login form).
func TestConsoleOverview(t *testing.T) {
	f := newFixture(t, withRecent, func(o *Options) {
		o.Servers = func() []ServerView {
			return []ServerView{{Address: "10.1.1.1:25", Role: "primary", State: "down", Since: t0.Add(-5 * time.Minute), LastError: "dial: refused"}}
		}
		o.Spool = &fakeSpool{view: SpoolView{State: "spooling", Messages: 3, Bytes: 2048}}
	})
	shadow := f.insert(t, events.Event{Type: "dos", Rule: "dos-try", Mode: events.ModeShadow, Status: events.StatusActive,
		StartedAt: t0.Add(-time.Minute), Source: "198.51.100.77", Impact: 9, Actions: []string{"block"}})
	if _, err := f.engine.AddBlock(context.Background(), "203.0.113.7", time.Hour, "harvest"); err != nil {
		t.Fatal(err)
	}
	f.srv.o.Metrics.Message("inbound", "relayed")
	f.srv.o.Metrics.Connection("smtp", "blocked")

	r := f.browser(t, "GET", "/overview", "")
	wantPage(t, r, 200,
		`<span class="big">3</span> attacks active`, `<span class="big">1</span> sources blocked`,
		// by type: one each of directory_harvest, brute_force and dos (shadow)
		`directory_harvest <strong>1</strong>`, `dos <strong>1</strong> (1 shadow)`,
		`href="/events/`+itoa(shadow.ID)+`">198.51.100.77</a>`, `<span class="badge shadow"`,
		"203.0.113.7", "2001:db8:1:2::/64",
		"10.1.1.1:25", `<span class="badge down">down</span>`, "dial: refused",
		`id="overview-spool">spooling</span> 3 messages`,
		"<svg", `<span class="big">1</span> messages passed, <strong>0</strong> refused, <strong>1</strong> connections refused`,
		`data-live="/overview/live"`, `<script src="/static/live.js" defer></script>`, `aria-current="page">Overview`)
	if strings.Contains(r.body, "198.51.100.1") {
		t.Error("an ended event is on the overview")
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP %q: want the console's own scripts only", csp)
	}

	// The fragment: the live part without the layout, current.
	live := f.browser(t, "GET", "/overview/live", "")
	wantPage(t, live, 200, `<span class="big">3</span> attacks active`, "198.51.100.77", "<svg")
	if strings.Contains(live.body, "<html") || strings.Contains(live.body, "<nav") || strings.Contains(live.body, "data-live") {
		t.Errorf("the fragment carries the page around it:\n%s", live.body)
	}
	f.insert(t, events.Event{Type: "mailbomb", Rule: "bomb", Status: events.StatusActive, StartedAt: t0, Source: "192.0.2.200", Impact: 1})
	wantPage(t, f.browser(t, "GET", "/overview/live", ""), 200, `<span class="big">4</span> attacks active`, "192.0.2.200")

	if r := f.do(t, "GET", "/overview/live", ""); r.status != 401 || r.header.Get("Location") != "" {
		t.Errorf("fragment without a session: %d to %q, want 401", r.status, r.header.Get("Location"))
	}
	if r := f.do(t, "GET", "/overview", ""); r.status != 303 || r.header.Get("Location") != "/login?next=%2Foverview" {
		t.Errorf("overview without a session: %d to %q", r.status, r.header.Get("Location"))
	}
	js := f.do(t, "GET", "/static/live.js", "")
	if js.status != 200 || !strings.Contains(js.header.Get("Content-Type"), "javascript") || !strings.Contains(js.body, "data-live") {
		t.Errorf("live.js: %d %q", js.status, js.header.Get("Content-Type"))
	}
}

// Without servers, spool, suspensions or traffic counts, the overview
// says so rather than showing zeros that look like facts.
func TestConsoleOverviewBare(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Metrics = nil })
	wantPage(t, f.browser(t, "GET", "/overview", ""), 200,
		"This instance does not report delivery servers.", "This instance has no spool.",
		"This instance does not count traffic.", "No source is blocked.")
}

// svgDoc is what the test reads of the chart.
type svgDoc struct {
	XMLName xml.Name `xml:"svg"`
	ViewBox string   `xml:"viewBox,attr"`
	Groups  []struct {
		Title string `xml:"title"`
		Rects []struct {
			Class  string `xml:"class,attr"`
			Height int    `xml:"height,attr"`
			Y      int    `xml:"y,attr"`
		} `xml:"rect"`
		Circles []struct {
			Class string `xml:"class,attr"`
		} `xml:"circle"`
	} `xml:"g"`
}

var svgElement = regexp.MustCompile(`(?s)<svg .*?</svg>`)

// The chart is valid SVG with one group per minute of the last hour, the
// fake clock's counts in the right minutes, bars scaled to the busiest.
func TestConsoleChart(t *testing.T) {
	f := newFixture(t, withRecent)
	m := f.srv.o.Metrics
	// 09:58: 4 relayed, 2 rejected; 09:59: a refused connection; 10:00
	// (now): 1 spooled.
	f.clock.Advance(-2 * time.Minute)
	for range 4 {
		m.Message("inbound", "relayed")
	}
	m.Message("inbound", "rejected")
	m.Message("outbound", "rejected")
	f.clock.Advance(time.Minute)
	m.Connection("smtp", "limit")
	f.clock.Advance(time.Minute)
	m.Message("inbound", "spooled")

	body := f.browser(t, "GET", "/overview/live", "").body
	svgText := svgElement.FindString(body)
	if svgText == "" {
		t.Fatalf("no svg:\n%s", body)
	}
	var doc svgDoc
	dec := xml.NewDecoder(strings.NewReader(svgText))
	dec.Strict = true
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("the chart is not well-formed XML: %v\n%s", err, svgText)
	}
	if _, err := dec.Token(); err != io.EOF {
		t.Errorf("content after the svg element: %v", err)
	}
	if len(doc.Groups) != metrics.RecentMinutes {
		t.Fatalf("%d minute groups, want %d", len(doc.Groups), metrics.RecentMinutes)
	}
	heights := func(i int) map[string]int {
		h := map[string]int{}
		for _, r := range doc.Groups[i].Rects {
			h[r.Class] = r.Height
		}
		for _, c := range doc.Groups[i].Circles {
			h[c.Class]++
		}
		return h
	}
	n := metrics.RecentMinutes
	for i, want := range map[int]struct {
		title string
		h     map[string]int
	}{
		n - 3: {"09:58: 4 passed, 2 refused, 0 connections refused", map[string]int{"hit": chartHeight, "passed": 80, "refused": 40}},
		n - 2: {"09:59: 0 passed, 0 refused, 1 connections refused", map[string]int{"hit": chartHeight, "conn": 1}},
		n - 1: {"10:00: 1 passed, 0 refused, 0 connections refused", map[string]int{"hit": chartHeight, "passed": 20}},
		0:     {"09:01: 0 passed, 0 refused, 0 connections refused", map[string]int{"hit": chartHeight}},
	} {
		if g := doc.Groups[i]; g.Title != want.title {
			t.Errorf("minute %d: title %q, want %q", i, g.Title, want.title)
		}
		if h := heights(i); !maps.Equal(h, want.h) {
			t.Errorf("minute %d (%s): bars %v, want %v", i, want.title, h, want.h)
		}
	}
	for i := 1; i < n-3; i++ {
		if h := heights(i); len(h) != 1 {
			t.Errorf("quiet minute %d has bars %v", i, h)
		}
	}
	// The scale label is the busiest minute: 6 messages.
	if !strings.Contains(svgText, `text-anchor="end">6</text>`) {
		t.Errorf("scale label 6 missing:\n%s", svgText)
	}
}

// Impact presets beside the free field keep the other filters and set
// min_impact; the current one is marked. Shadow events carry a badge, and
// the node column appears when an event names its node.
func TestConsoleEventsPresetsShadowNode(t *testing.T) {
	f := newFixture(t)
	r := f.browser(t, "GET", "/events?type=dos&offset=0", "")
	for _, n := range []string{"100", "500", "1000"} {
		want := `href="/events?limit=500&amp;min_impact=` + n + `&amp;type=dos">over ` + n + `</a>`
		if !strings.Contains(r.body, want) {
			t.Errorf("preset over %s: page lacks %s", n, want)
		}
	}
	if strings.Contains(r.body, "<th>Node</th>") {
		t.Error("a node column with no event naming a node")
	}
	r = f.browser(t, "GET", "/events?min_impact=100", "")
	wantPage(t, r, 200, "1–2 of 2 events", "198.51.100.1", "203.0.113.7",
		`aria-current="true">over 100</a>`)
	if strings.Contains(r.body, "192.0.2.9") {
		t.Error("the impact preset let an event of impact 40 through")
	}
	wantPage(t, f.browser(t, "GET", "/events?min_impact=1000", ""), 200, "1–1 of 1 events", "198.51.100.1")

	sh := f.insert(t, events.Event{Type: "dos", Rule: "dos-try", Mode: events.ModeShadow, Status: events.StatusActive,
		StartedAt: t0, Source: "198.51.100.78", Impact: 2, Node: "mx2"})
	r = f.browser(t, "GET", "/events?source=198.51.100.78", "")
	wantPage(t, r, 200, `<span class="badge shadow"`, "<th>Node</th>", "<td>mx2</td>", `href="/events/`+itoa(sh.ID)+`"`)
	r = f.browser(t, "GET", "/events?source=203.0.113.7", "")
	if strings.Contains(r.body, `badge shadow`) {
		t.Error("an enforced event is marked shadow")
	}
}

// The event page says why in words, lists the evidence escaped, and
// offers to unblock a blocked source (a CSRF-checked post).
func TestConsoleEventEvidence(t *testing.T) {
	f := newFixture(t)
	hostile := `RCPT TO:<x@example.test>: 550 5.1.1 <script>alert("evidence")</script>`
	e := f.insert(t, events.Event{Type: "directory_harvest", Rule: "harvest", Status: events.StatusActive,
		StartedAt: t0.Add(-time.Minute), Source: "203.0.113.50", Service: "smtp", Impact: 20, Actions: []string{"alert", "block"}, Node: "mx1",
		Detail: map[string]any{"threshold": 20, "window": "10m", "count": 20, "helo": `<img src=x onerror=alert(1)>`,
			"evidence": []any{
				map[string]any{"at": "2026-11-25T09:59:58.120Z", "what": "rcpt_unknown", "text": "RCPT TO:<guess1@example.test>: 550 5.1.1 unknown"},
				map[string]any{"at": "2026-11-25T09:59:59.500Z", "what": "rcpt_unknown", "text": hostile},
				"not an observation",
			}}})
	if _, err := f.engine.AddBlock(context.Background(), "203.0.113.50", time.Hour, "harvest"); err != nil {
		t.Fatal(err)
	}
	r := f.browser(t, "GET", "/events/"+itoa(e.ID), "")
	wantPage(t, r, 200,
		`<p class="because" id="because">Blocked because 20 unknown recipients in 10m (threshold 20).</p>`,
		"<dt>Node</dt><dd>mx1</dd>", "<dt>Mode</dt><dd>enforce",
		"09:59:58.120", "rcpt_unknown", "RCPT TO:&lt;guess1@example.test&gt;: 550 5.1.1 unknown",
		"&lt;script&gt;alert(&#34;evidence&#34;)&lt;/script&gt;", "&lt;img src=x onerror=alert(1)&gt;",
		`<form method="post" action="/blocks/remove" class="filters" id="unblock">`, `name="source" value="203.0.113.50"`,
		"Unblock 203.0.113.50")
	if strings.Contains(r.body, "<script>alert") || strings.Contains(r.body, "<img src=x") {
		t.Error("hostile evidence reached the page unescaped")
	}
	if strings.Contains(r.body, "not an observation") {
		t.Error("an evidence entry of the wrong shape was shown")
	}
	if strings.Contains(r.body, `action="/blocks" class="filters" id="block"`) {
		t.Error("a blocked source is offered a block")
	}

	// The unblock post without the session's CSRF token is refused and
	// the block stays.
	noCSRF := f.do(t, "POST", "/blocks/remove", "source=203.0.113.50",
		"Cookie", cookieName+"="+f.session.id, "Content-Type", "application/x-www-form-urlencoded", "Origin", f.url)
	if noCSRF.status != 403 || len(f.engine.Blocks()) != 1 {
		t.Fatalf("unblock without CSRF: %d, blocks %v", noCSRF.status, f.engine.Blocks())
	}
	un := f.browser(t, "POST", "/blocks/remove", "source=203.0.113.50")
	if un.status != 303 || len(f.engine.Blocks()) != 0 {
		t.Fatalf("unblock: %d, blocks %v", un.status, f.engine.Blocks())
	}
	r = f.browser(t, "GET", "/events/"+itoa(e.ID), "")
	wantPage(t, r, 200, `id="block"`, "Block 203.0.113.50 for")

	// A shadow rule's event says what it would have done; a server event
	// without a threshold has no sentence.
	sh := f.insert(t, events.Event{Type: "dos", Rule: "dos-try", Mode: events.ModeShadow, Status: events.StatusActive, StartedAt: t0,
		Source: "198.51.100.9", Impact: 3, Actions: []string{"block"}, Detail: map[string]any{"threshold": 50, "window": "1m", "count": 50}})
	wantPage(t, f.browser(t, "GET", "/events/"+itoa(sh.ID), ""), 200,
		"Would have blocked (shadow rule: nothing done) because 50 connections in 1m (threshold 50).", `<span class="badge shadow"`,
		"(recorded only: no action was taken)", "This event recorded no observations.")
	srv := f.insert(t, events.Event{Type: "mail_server_down", Rule: "mail_server_down", Status: events.StatusActive, StartedAt: t0, Source: "10.1.1.1:25"})
	if r := f.browser(t, "GET", "/events/"+itoa(srv.ID), ""); strings.Contains(r.body, `id="because"`) || strings.Contains(r.body, `id="block"`) {
		t.Errorf("server event: a because sentence or a block form:\n%s", r.body)
	}
}

// The suspensions page lists, adds and lifts, every post with the CSRF
// token; an account event offers to lift its account's suspension.
func TestConsoleSuspensions(t *testing.T) {
	clock := testutil.NewFakeClock()
	eng, err := detect.New(context.Background(), detect.Options{Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(o *Options) { o.Suspensions, o.Clock = eng, clock })
	wantPage(t, f.browser(t, "GET", "/suspensions", ""), 200, "No account is suspended.", `name="for" value="1h"`,
		`aria-current="page">Suspensions`)

	r := f.browser(t, "POST", "/suspensions", url.Values{"account": {"Mallory@Example.test"}, "for": {"2h"}, "reason": {"<b>phished</b>"}}.Encode())
	if r.status != 303 || r.header.Get("Location") != "/suspensions?added=mallory%40example.test" {
		t.Fatalf("add: %d to %q: %s", r.status, r.header.Get("Location"), r.body)
	}
	if !eng.Suspended("mallory@example.test") {
		t.Fatal("not suspended in the engine")
	}
	wantPage(t, f.browser(t, "GET", r.header.Get("Location"), ""), 200,
		"Suspended mallory@example.test.", "&lt;b&gt;phished&lt;/b&gt;", "in 2h", "1 suspended",
		`<form method="post" action="/suspensions/remove">`)
	wantPage(t, f.browser(t, "POST", "/suspensions", url.Values{"account": {"a b"}}.Encode()), 400, "bad account", `value="a b"`)

	// An account event offers to lift.
	e := f.insert(t, events.Event{Type: "internal_spammer", Rule: "spammer", Status: events.StatusActive, StartedAt: t0,
		Source: "mallory@example.test", Service: "submission", Impact: 500, Actions: []string{"suspend"},
		Detail: map[string]any{"threshold": 500, "window": "1h", "count": 500}})
	wantPage(t, f.browser(t, "GET", "/events/"+itoa(e.ID), ""), 200,
		"Suspended because 500 messages in 1h", `id="lift"`, `name="account" value="mallory@example.test"`, "Lift the suspension")

	noCSRF := f.do(t, "POST", "/suspensions/remove", "account=mallory@example.test",
		"Cookie", cookieName+"="+f.session.id, "Content-Type", "application/x-www-form-urlencoded", "Origin", f.url)
	if noCSRF.status != 403 || !eng.Suspended("mallory@example.test") {
		t.Fatalf("lift without CSRF: %d", noCSRF.status)
	}
	cross := f.browser(t, "POST", "/suspensions/remove", "account=mallory@example.test", "Origin", "https://evil.example")
	if cross.status != 403 || !eng.Suspended("mallory@example.test") {
		t.Fatalf("cross-origin lift: %d", cross.status)
	}
	r = f.browser(t, "POST", "/suspensions/remove", "account=mallory@example.test")
	if r.status != 303 || eng.Suspended("mallory@example.test") {
		t.Fatalf("lift: %d %s", r.status, r.body)
	}
	wantPage(t, f.browser(t, "GET", r.header.Get("Location"), ""), 200, "Lifted the suspension of mallory@example.test.", "No account is suspended.")
	wantPage(t, f.browser(t, "POST", "/suspensions/remove", "account=mallory@example.test"), 404, "no suspension for mallory@example.test")
}

func TestConsoleSuspensionsUnavailable(t *testing.T) {
	f := newFixture(t)
	wantPage(t, f.browser(t, "GET", "/suspensions", ""), 200, "This instance does not suspend accounts.")
	wantPage(t, f.browser(t, "POST", "/suspensions", "account=a"), 503, "does not suspend")
}

// Past overviewActiveLimit active events the overview lists the newest,
// says its counts by type are of those, and links to all of them.
func TestConsoleOverviewMany(t *testing.T) {
	f := newFixture(t)
	for i := range overviewActiveLimit {
		f.insert(t, events.Event{Type: "dos", Rule: "dos", Status: events.StatusActive,
			StartedAt: t0.Add(time.Duration(i) * time.Second), Source: "192.0.2." + itoa(int64(i+1)), Impact: 1})
	}
	r := f.browser(t, "GET", "/overview", "")
	total := overviewActiveLimit + 2 // the fixture's two active events
	wantPage(t, r, 200, `<span class="big">`+itoa(int64(total))+`</span> attacks active`,
		"(of the "+itoa(overviewActiveLimit)+" newest)", `All `+itoa(int64(total))+` active events →`,
		"dos <strong>"+itoa(overviewActiveLimit)+"</strong>", "192.0.2.50")
	if strings.Contains(r.body, "203.0.113.7") {
		t.Error("the overview lists more than the newest active events")
	}
}
