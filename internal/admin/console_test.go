package admin

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

var session = []string{"Cookie", cookieName + "=" + testToken}

// browser adds the login cookie and a same-origin Origin, as a browser
// posting a console form does.
func (f *fixture) browser(t *testing.T, method, path, form string, header ...string) reply {
	t.Helper()
	h := append([]string{"Cookie", session[1]}, header...)
	if method == "POST" {
		h = append([]string{"Content-Type", "application/x-www-form-urlencoded", "Origin", f.url}, h...)
	}
	return f.do(t, method, path, form, h...)
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
	c := r.header.Get("Set-Cookie")
	for _, want := range []string{cookieName + "=" + testToken, "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(c, want) {
			t.Errorf("cookie %q lacks %q", c, want)
		}
	}

	// Off-site next values must not turn the login into an open redirect.
	for _, next := range []string{"https://evil.example/", "//evil.example/x", "/\\evil.example", "events"} {
		r = post(url.Values{"token": {testToken}, "next": {next}})
		if loc := r.header.Get("Location"); loc != "/events" {
			t.Errorf("next %q redirected to %q", next, loc)
		}
	}

	r = f.browser(t, "POST", "/logout", "")
	if r.status != http.StatusSeeOther || !strings.Contains(r.header.Get("Set-Cookie"), "Max-Age=0") {
		t.Errorf("logout: %d cookie %q", r.status, r.header.Get("Set-Cookie"))
	}
	if r := f.do(t, "GET", "/blocks", "", "Cookie", cookieName+"=wrong"); r.status != http.StatusSeeOther {
		t.Errorf("a wrong cookie reached the console: %d", r.status)
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
	wantPage(t, f.browser(t, "GET", "/rules", ""), 200, "harvest", "10m", "500KB", "1m30s")
	if r := f.browser(t, "GET", "/", ""); r.status != http.StatusSeeOther || r.header.Get("Location") != "/events" {
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

// A token with characters a cookie cannot hold raw still logs in.
func TestConsoleLoginOddToken(t *testing.T) {
	const odd = `p@ss; word,"x"\`
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
