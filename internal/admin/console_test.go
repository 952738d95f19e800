package admin

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"mxguard/internal/ruletype"
)

// browser adds the fixture's session cookie and, to a post, the session's
// CSRF token and a same-origin Origin, as a browser posting a console form
// does.
func (f *fixture) browser(t *testing.T, method, path, form string, header ...string) reply {
	t.Helper()
	return f.as(t, f.session, method, path, form, header...)
}

// as is browser for the session si.
func (f *fixture) as(t *testing.T, si sessionInfo, method, path, form string, header ...string) reply {
	t.Helper()
	h := append([]string{"Cookie", cookieName + "=" + si.id}, header...)
	if method == "POST" {
		form = strings.TrimPrefix(form+"&csrf="+si.csrf, "&")
		h = append([]string{"Content-Type", "application/x-www-form-urlencoded", "Origin", f.url}, h...)
	}
	return f.do(t, method, path, form, h...)
}

// login posts the token to the login form and returns the answer.
func (f *fixture) login(t *testing.T, token string) reply {
	t.Helper()
	return f.do(t, "POST", "/login", url.Values{"token": {token}, "next": {"/blocks"}}.Encode(),
		"Content-Type", "application/x-www-form-urlencoded")
}

var csrfField = regexp.MustCompile(`<input type="hidden" name="csrf" value="([0-9a-f]{64})">`)

// loginSession logs in through the form and returns the session as a
// browser sees it: the cookie, and the CSRF token of the forms.
func (f *fixture) loginSession(t *testing.T) sessionInfo {
	t.Helper()
	r := f.login(t, testToken)
	var si sessionInfo
	for _, c := range (&http.Response{Header: r.header}).Cookies() {
		if c.Name == cookieName {
			si.id = c.Value
		}
	}
	if r.status != http.StatusSeeOther || si.id == "" {
		t.Fatalf("login: %d, cookies %q", r.status, r.header.Values("Set-Cookie"))
	}
	page := f.as(t, si, "GET", "/blocks", "")
	m := csrfField.FindStringSubmatch(page.body)
	if m == nil {
		t.Fatalf("no CSRF field in the blocks page:\n%s", page.body)
	}
	si.csrf = m[1]
	return si
}

func wantPage(t *testing.T, r reply, status int, contains ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d\n%s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	for _, s := range contains {
		if !strings.Contains(r.body, s) {
			t.Errorf("page lacks %q\n%s", s, r.body)
		}
	}
}

func TestConsoleLogin(t *testing.T) {
	f := newFixture(t)

	r := f.do(t, "GET", "/events?type=dos", "")
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/login?next="+url.QueryEscape("/events?type=dos") {
		t.Fatalf("anonymous visit: %d to %q", r.status, r.header.Get("Location"))
	}
	wantPage(t, f.do(t, "GET", "/login?next=%2Fevents", ""), 200, `name="token"`, `value="/events"`)

	post := func(form url.Values) reply {
		return f.do(t, "POST", "/login", form.Encode(), "Content-Type", "application/x-www-form-urlencoded")
	}
	r = post(url.Values{"token": {"wrong"}, "next": {"/events"}})
	wantPage(t, r, http.StatusUnauthorized, "Wrong token.")
	if r.header.Get("Set-Cookie") != "" {
		t.Error("a wrong token got a cookie")
	}

	r = post(url.Values{"token": {testToken}, "next": {"/events?type=dos"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/events?type=dos" {
		t.Fatalf("login: %d to %q", r.status, r.header.Get("Location"))
	}
	// The cookie is an opaque session id: neither the token nor its hash.
	c := r.header.Get("Set-Cookie")
	for _, want := range []string{"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=86400"} {
		if !strings.Contains(c, want) {
			t.Errorf("cookie %q lacks %q", c, want)
		}
	}
	if !regexp.MustCompile(`^` + cookieName + `=[0-9a-f]{64};`).MatchString(c) {
		t.Errorf("cookie %q is not %s=<64 hex digits>", c, cookieName)
	}
	sum := sha256.Sum256([]byte(testToken))
	if strings.Contains(c, testToken) || strings.Contains(c, url.QueryEscape(testToken)) || strings.Contains(c, hex.EncodeToString(sum[:])) {
		t.Errorf("cookie %q carries the token", c)
	}

	// Off-site next values must not turn the login into an open redirect.
	for _, next := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example", "events"} {
		r = post(url.Values{"token": {testToken}, "next": {next}})
		if loc := r.header.Get("Location"); loc != "/overview" {
			t.Errorf("next %q redirected to %q", next, loc)
		}
	}

	si := f.loginSession(t)
	wantPage(t, f.as(t, si, "GET", "/blocks", ""), 200, `action="/logout"`)
	r = f.as(t, si, "POST", "/logout", "")
	if r.status != http.StatusSeeOther || !strings.Contains(r.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("logout: %d cookie %q", r.status, r.header.Get("Set-Cookie"))
	}
	// Logout ends the session on the server: the old cookie is dead.
	if r := f.as(t, si, "GET", "/blocks", ""); r.status != http.StatusSeeOther {
		t.Errorf("the session cookie still works after logout: %d", r.status)
	}
	if r := f.do(t, "GET", "/blocks", "", "Cookie", cookieName+"=wrong"); r.status != http.StatusSeeOther {
		t.Errorf("a wrong cookie reached the console: %d", r.status)
	}
	// The cookie of earlier versions held the token itself: it logs no
	// one in, and is deleted.
	r = f.do(t, "GET", "/blocks", "", "Cookie", legacyCookie+"="+testToken)
	if r.status != http.StatusSeeOther || !strings.Contains(r.header.Get("Set-Cookie"), legacyCookie+"=; Path=/; Max-Age=0") {
		t.Errorf("legacy token cookie: %d, Set-Cookie %q", r.status, r.header.Get("Set-Cookie"))
	}
}

// Every console form carries the session's CSRF token; a post without it,
// or with another session's, changes nothing.
func TestConsoleCSRFToken(t *testing.T) {
	f := newFixture(t)
	a, b := f.loginSession(t), f.loginSession(t)
	if a.id == b.id || a.csrf == b.csrf {
		t.Fatal("two logins share a session id or CSRF token")
	}
	form := url.Values{"source": {"192.0.2.1"}}.Encode()
	for _, tc := range []struct {
		name string
		csrf string
	}{{"no token", ""}, {"another session's", b.csrf}, {"garbage", "x"}} {
		r := f.as(t, sessionInfo{id: a.id, csrf: tc.csrf}, "POST", "/blocks", form)
		wantPage(t, r, http.StatusForbidden, "This form is out of date")
		if len(f.engine.Blocks()) != 0 {
			t.Fatalf("%s: the post took effect", tc.name)
		}
	}
	if r := f.as(t, a, "POST", "/blocks", form); r.status != http.StatusSeeOther {
		t.Fatalf("post with the session's token: %d %s", r.status, r.body)
	}
	// The forms of every page carry it.
	sp := &fakeSpool{view: SpoolView{State: "off", Messages: 1}}
	g := newFixture(t, func(o *Options) { o.Spool = sp })
	si := g.loginSession(t)
	for _, path := range []string{"/blocks", "/status", "/events/" + itoa(g.events[0].ID)} {
		page := g.as(t, si, "GET", path, "").body
		forms := strings.Count(page, `<form method="post"`)
		if n := strings.Count(page, `name="csrf" value="`+si.csrf+`"`); forms == 0 || n != forms {
			t.Errorf("%s: %d post forms, %d carry the CSRF token", path, forms, n)
		}
	}
}

// A session ends after sessionIdle without use, or sessionMax after the
// login, whichever comes first; and when the token changes.
func TestConsoleSessionExpiry(t *testing.T) {
	f := newFixture(t)
	si := f.loginSession(t)
	alive := func() bool { return f.as(t, si, "GET", "/rules", "").status == 200 }

	f.clock.Advance(sessionIdle - time.Minute)
	if !alive() {
		t.Fatal("session ended before its idle time")
	}
	f.clock.Advance(sessionIdle - time.Minute) // used just now: idle time starts again
	if !alive() {
		t.Fatal("a used session ended")
	}
	f.clock.Advance(sessionMax - 2*(sessionIdle-time.Minute)) // exactly sessionMax after login
	if alive() {
		t.Error("session outlived sessionMax")
	}

	si = f.loginSession(t)
	f.clock.Advance(sessionIdle)
	if alive() {
		t.Error("session outlived sessionIdle without use")
	}

	// Reloading the same token keeps sessions; a new token ends them.
	si = f.loginSession(t)
	f.srv.SetToken(testToken)
	if !alive() {
		t.Error("reloading the same token ended the session")
	}
	f.srv.SetToken("rotated-admin-token-1a2b3c")
	if alive() {
		t.Error("the session survived a token rotation")
	}
}

// The session table is bounded: past maxSessions the least recently used
// go, the ones in use stay.
func TestSessionTableBounded(t *testing.T) {
	tab := newSessions()
	now := t0
	first := tab.create(now)
	var last sessionInfo
	for range maxSessions + 10 {
		now = now.Add(time.Second)
		if _, ok := tab.lookup(first.id, now); !ok { // kept in use
			t.Fatal("the session in use was evicted")
		}
		last = tab.create(now)
	}
	if n := tab.len(); n != maxSessions {
		t.Errorf("%d sessions, want %d", n, maxSessions)
	}
	if _, ok := tab.lookup(last.id, now); !ok {
		t.Error("the newest session was evicted")
	}
	if _, ok := tab.lookup(strings.Repeat("0", 64), now); ok {
		t.Error("an unknown id has a session")
	}
}

func TestConsoleEvents(t *testing.T) {
	f := newFixture(t)
	r := f.browser(t, "GET", "/events", "")
	wantPage(t, r, 200,
		`<select name="type">`, `name="source"`, `name="status"`, `name="min_impact"`, `name="since"`, `<option value="500" selected>`,
		"1–5 of 5 events", "203.0.113.7", `<span class="badge active">active</span>`, `<td class="num">137</td>`,
		"2026-11-25 09:50:00", `href="/events/`+itoa(f.events[0].ID)+`"`,
		// the date column is sorted descending: its link flips to ascending
		`href="/events?limit=500&amp;order=asc&amp;sort=started_at">Started ▼`,
		`href="/events?limit=500&amp;order=desc&amp;sort=impact">Impact `,
		"&lt;script&gt;alert(1)&lt;/script&gt;")
	if strings.Contains(r.body, "<script>") {
		t.Error("an event source reached the page unescaped")
	}
	// The type filter offers every event type of the one table of types.
	for _, typ := range ruletype.Names() {
		if !strings.Contains(r.body, `<option value="`+typ+`"`) {
			t.Errorf("the type filter lacks %s", typ)
		}
	}

	r = f.browser(t, "GET", "/events?type=directory_harvest&source=&status=&min_impact=&since=&limit=100&sort=impact&order=asc", "")
	wantPage(t, r, 200, "1–2 of 2 events", `<option value="directory_harvest" selected>`, `<option value="100" selected>`,
		`Impact ▲`, "192.0.2.9")
	if strings.Contains(r.body, "198.51.100.1") {
		t.Error("the type filter let a dos event through")
	}

	r = f.browser(t, "GET", "/events?limit=100&sort=impact&order=asc&limit=2", "")
	wantPage(t, r, 400, "limit given 2 times")

	// paging: 2 per page over 5 events
	r = f.browser(t, "GET", "/events?sort=impact&order=asc&offset=2&limit=2", "")
	wantPage(t, r, 200, "3–4 of 5 events", `href="/events?limit=2&amp;offset=0&amp;order=asc&amp;sort=impact">← Previous`,
		`href="/events?limit=2&amp;offset=4&amp;order=asc&amp;sort=impact">Next →`)

	wantPage(t, f.browser(t, "GET", "/events?min_impact=lots", ""), 400, `min_impact`, "0 of 0 events")
}

func TestConsoleEventPage(t *testing.T) {
	f := newFixture(t)
	e := f.events[4]
	wantPage(t, f.browser(t, "GET", "/events/"+itoa(e.ID), ""), 200,
		"Event #"+itoa(e.ID), "directory_harvest", "192.0.2.9", "recipients", "41",
		`<input type="hidden" name="source" value="192.0.2.9">`)
	wantPage(t, f.browser(t, "GET", "/events/4242", ""), 404, "no event 4242")
	wantPage(t, f.browser(t, "GET", "/events/x", ""), 400, "bad event id")
}

func TestConsoleBlocks(t *testing.T) {
	f := newFixture(t)
	wantPage(t, f.browser(t, "GET", "/blocks", ""), 200, "No source is blocked.", `name="for" value="1h"`)

	r := f.browser(t, "POST", "/blocks", url.Values{"source": {"10.0.0.0/8"}, "for": {"2h"}, "reason": {"abuse desk"}}.Encode())
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/blocks?added=10.0.0.0%2F8" {
		t.Fatalf("add: %d to %q: %s", r.status, r.header.Get("Location"), r.body)
	}
	wantPage(t, f.browser(t, "GET", r.header.Get("Location"), ""), 200,
		"Blocked 10.0.0.0/8.", "abuse desk", "in 2h", `value="10.0.0.0/8"`, "1 blocked")

	wantPage(t, f.browser(t, "POST", "/blocks", url.Values{"source": {"not-an-ip"}, "for": {"1h"}}.Encode()), 400,
		"bad source", `value="not-an-ip"`)

	r = f.browser(t, "POST", "/blocks/remove", url.Values{"source": {"10.0.0.0/8"}}.Encode())
	if r.status != http.StatusSeeOther {
		t.Fatalf("remove: %d %s", r.status, r.body)
	}
	wantPage(t, f.browser(t, "POST", "/blocks/remove", url.Values{"source": {"10.0.0.0/8"}}.Encode()), 404, "no block for 10.0.0.0/8")
}

func TestConsoleCSRF(t *testing.T) {
	f := newFixture(t)
	form := url.Values{"source": {"192.0.2.1"}}.Encode()
	for _, tc := range []struct {
		name   string
		header []string
		status int
	}{
		{"foreign origin", []string{"Origin", "https://evil.example"}, 403},
		{"cross-site fetch", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, 403},
		{"foreign referer only", []string{"Origin", "", "Referer", "https://evil.example/page"}, 403},
		{"same-origin fetch", []string{"Sec-Fetch-Site", "same-origin"}, 303},
		{"same-origin referer only", []string{"Origin", "", "Referer", "REFERER"}, 303},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := append([]string{}, tc.header...)
			for i := range h {
				h[i] = strings.ReplaceAll(h[i], "REFERER", f.url+"/blocks")
			}
			r := f.browser(t, "POST", "/blocks", form, h...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
		})
	}
	if r := f.do(t, "POST", "/login", url.Values{"token": {testToken}}.Encode(),
		"Content-Type", "application/x-www-form-urlencoded", "Origin", "https://evil.example"); r.status != 403 {
		t.Errorf("cross-origin login: %d, want 403", r.status)
	}
}

func TestConsolePages(t *testing.T) {
	f := newFixture(t)
	wantPage(t, f.browser(t, "GET", "/rules", ""), 200, "harvest", "10m", "500KB", "1m30s", `<tr class="shadow">`, `<span class="badge shadow">shadow</span>`,
		"recipients rejected as unknown (550 5.1.1, ours or the downstream&#39;s), per source")
	if r := f.browser(t, "GET", "/", ""); r.status != http.StatusSeeOther || r.header.Get("Location") != "/overview" {
		t.Errorf("/: %d to %q", r.status, r.header.Get("Location"))
	}
	wantPage(t, f.browser(t, "GET", "/nowhere", ""), 404, "No such page.")
	r := f.do(t, "GET", "/static/style.css", "")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/css") {
		t.Errorf("style.css: %d %q", r.status, r.header.Get("Content-Type"))
	}
	if csp := f.browser(t, "GET", "/rules", "").header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("CSP %q", csp)
	}
}

// A token with characters a cookie cannot hold raw still logs in (the
// cookie never holds the token).
func TestConsoleLoginOddToken(t *testing.T) {
	const odd = `p@ss; word,"x"\\-long-enough`
	s := New(Options{Engine: &fakeEngine{}, Token: odd})
	req := httptest.NewRequest("POST", "/login", strings.NewReader(url.Values{"token": {odd}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, req)
	cookies := w.Result().Cookies()
	if w.Code != http.StatusSeeOther || len(cookies) != 1 {
		t.Fatalf("login: %d, cookies %v", w.Code, cookies)
	}
	req = httptest.NewRequest("GET", "/rules", nil)
	req.AddCookie(cookies[0])
	w = httptest.NewRecorder()
	s.ServeHTTP(w, req)
	if w.Code != 200 {
		t.Errorf("rules with the login cookie: %d", w.Code)
	}
}
