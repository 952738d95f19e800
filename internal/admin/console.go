package admin

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"mxguard/internal/duration"
	"mxguard/internal/events"
)

//go:embed templates/*.html static/*
var assets embed.FS

// cookieName holds the console login: an opaque session id (session.go).
const cookieName = "mxguard_session"

// legacyCookie held the admin token itself in earlier versions; a browser
// that still sends it gets it deleted.
const legacyCookie = "mxguard_token"

// consoleLimit is the console's page size: the most the API serves
// (DESIGN.md: "the console shows up to 500 at a time").
const consoleLimit = events.MaxLimit

// console is the server-rendered web console: plain HTML forms, so it
// works in any browser and through any proxy; the one script (the
// overview's live refresh, static/live.js) only adds to a complete page.
type console struct {
	s      *Server
	pages  map[string]*template.Template
	csrf   *http.CrossOriginProtection
	static http.Handler
}

// page is what every template receives.
type page struct {
	Title    string
	Nav      string // active navigation entry
	LoggedIn bool
	CSRF     string // the session's CSRF token, posted back by every form
	Version  string
	Flash    string
	Error    string
	Data     any
}

func newConsole(s *Server) *console {
	c := &console{s: s, pages: map[string]*template.Template{}, csrf: http.NewCrossOriginProtection()}
	funcs := template.FuncMap{
		"when":     formatTime,
		"whenPtr":  func(t *time.Time) string { return formatTime(deref(t)) },
		"relative": s.relative,
		"join":     strings.Join,
		"size":     formatSize,
		"approx":   approxSize,
		"isIP":     isIPOrPrefix,
		"seconds":  func(n int64) string { return duration.Format(time.Duration(n) * time.Second) },
		"sub":      func(a, b int) int { return a - b },
		"half":     func(x, w int) int { return x + w/2 },
	}
	for _, name := range []string{"login", "overview", "events", "event", "blocks", "suspensions", "rules", "status", "connections", "error"} {
		c.pages[name] = template.Must(template.New("layout.html").Funcs(funcs).
			ParseFS(assets, "templates/layout.html", "templates/parts.html", "templates/"+name+".html"))
	}
	c.csrf.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.renderError(w, r, http.StatusForbidden, "Cross-origin form submission refused.")
	}))
	static, err := fs.Sub(assets, "static")
	if err != nil {
		panic(err) // the embed pattern above guarantees the directory
	}
	c.static = http.StripPrefix("/static/", http.FileServerFS(static))
	return c
}

func (c *console) route(mux *http.ServeMux) {
	mux.Handle("GET /{$}", http.RedirectHandler(landing, http.StatusSeeOther))
	mux.Handle("GET /static/", c.static)
	mux.HandleFunc("GET /login", c.loginPage)
	mux.Handle("POST /login", c.protect(c.login))
	mux.Handle("POST /logout", c.protect(c.auth(c.logout)))
	mux.Handle("GET /overview", c.auth(c.overviewPage))
	mux.Handle("GET /overview/live", c.authFragment(c.overviewLive))
	mux.Handle("GET /events", c.auth(c.eventsPage))
	mux.Handle("GET /events/{id}", c.auth(c.eventPage))
	mux.Handle("GET /blocks", c.auth(c.blocksPage))
	mux.Handle("POST /blocks", c.protect(c.auth(c.addBlock)))
	mux.Handle("POST /blocks/remove", c.protect(c.auth(c.removeBlock)))
	mux.Handle("GET /suspensions", c.auth(c.suspensionsPage))
	mux.Handle("POST /suspensions", c.protect(c.auth(c.addSuspension)))
	mux.Handle("POST /suspensions/remove", c.protect(c.auth(c.removeSuspension)))
	mux.Handle("GET /rules", c.auth(c.rulesPage))
	mux.Handle("GET /status", c.auth(c.statusPage))
	mux.Handle("GET /connections", c.auth(c.connectionsPage))
	mux.Handle("POST /status/spool/{action}", c.protect(c.auth(c.spoolAction)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		c.renderError(w, r, http.StatusNotFound, "No such page.")
	})
}

// landing is the first page after login: the overview.
const landing = "/overview"

// --- authentication and CSRF ---

// sessionKey carries the request's session from auth to the handler and
// render.
type sessionKey struct{}

// current returns the request's live session, if any.
func (c *console) current(r *http.Request) (sessionInfo, bool) {
	if si, ok := r.Context().Value(sessionKey{}).(sessionInfo); ok {
		return si, true
	}
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return sessionInfo{}, false
	}
	return c.s.sessions.lookup(ck.Value, c.s.clock.Now())
}

// auth sends a visitor without a live session to the login form, and back
// to the page they asked for afterwards. A form post must also carry the
// session's CSRF token: SameSite=Strict already keeps other sites' posts
// without the cookie, the token is for browsers and proxies that do not
// honour it.
func (c *console) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		dropLegacyCookie(w, r)
		si, ok := c.current(r)
		if !ok {
			next := landing
			if r.Method == http.MethodGet {
				next = r.URL.RequestURI()
			}
			http.Redirect(w, r, "/login?next="+url.QueryEscape(next), http.StatusSeeOther)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), sessionKey{}, si))
		if r.Method == http.MethodPost && !csrfOK(r.PostFormValue("csrf"), si.csrf) {
			c.renderError(w, r, http.StatusForbidden, "This form is out of date or did not come from this console. Reload the page and try again.")
			return
		}
		h(w, r)
	}
}

// authFragment is auth for the fragments a page's script fetches: without
// a live session it answers 401 (the script then reloads the page, which
// goes to the login form) rather than redirecting the fetch to it.
func (c *console) authFragment(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		si, ok := c.current(r)
		if !ok {
			http.Error(w, "not logged in", http.StatusUnauthorized)
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, si)))
	}
}

// protect guards every console form post: the body is bounded (413 past
// maxBody) and parsed, and cross-origin posts are refused by
// http.CrossOriginProtection (Sec-Fetch-Site, then Origin against Host)
// and, for old browsers that send neither, by the Referer's host.
func (c *console) protect(h http.HandlerFunc) http.Handler {
	inner := c.csrf.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if err := r.ParseForm(); err != nil {
			if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
				c.renderError(w, r, http.StatusRequestEntityTooLarge, "The form is too large.")
				return
			}
			c.renderError(w, r, http.StatusBadRequest, "The form could not be read.")
			return
		}
		h(w, r)
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Sec-Fetch-Site") == "" && r.Header.Get("Origin") == "" {
			if ref := r.Header.Get("Referer"); ref != "" {
				if u, err := url.Parse(ref); err != nil || u.Host != r.Host {
					c.renderError(w, r, http.StatusForbidden, "Cross-origin form submission refused.")
					return
				}
			}
		}
		inner.ServeHTTP(w, r)
	})
}

// safeNext keeps the post-login redirect on this site: a path, never a
// scheme-relative //host or a backslash variant browsers treat alike.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return landing
	}
	if u, err := url.Parse(next); err != nil || u.Host != "" || u.Scheme != "" {
		return landing
	}
	return next
}

func (c *console) loginPage(w http.ResponseWriter, r *http.Request) {
	dropLegacyCookie(w, r)
	next := safeNext(r.URL.Query().Get("next"))
	if _, ok := c.current(r); ok {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	c.render(w, r, http.StatusOK, "login", page{Title: "Log in", Data: next})
}

// login checks the token and starts a fresh session (a session id the
// browser had before is never reused: no session fixation). Wrong tokens
// count against the client's address (throttle.go).
func (c *console) login(w http.ResponseWriter, r *http.Request) {
	next := safeNext(r.PostFormValue("next"))
	key, now := clientKey(r), c.s.clock.Now()
	if wait := c.s.throttle.wait(key, now); wait > 0 {
		setRetryAfter(w, wait)
		c.render(w, r, http.StatusTooManyRequests, "login", page{Title: "Log in", Data: next,
			Error: "Too many wrong tokens from your address. Try again in " + duration.Format(roundUp(wait)) + "."})
		return
	}
	token := strings.TrimSpace(r.PostFormValue("token"))
	if !c.s.tokenOK(token) {
		msg := "Wrong token."
		if c.s.token.Load().empty {
			msg = "The console is disabled: no admin token is configured."
		} else {
			c.s.failed(r, key, now, "console")
		}
		c.render(w, r, http.StatusUnauthorized, "login", page{Title: "Log in", Error: msg, Data: next})
		return
	}
	c.s.throttle.reset(key)
	if ck, err := r.Cookie(cookieName); err == nil {
		c.s.sessions.remove(ck.Value)
	}
	si := c.s.sessions.create(now)
	http.SetCookie(w, c.cookie(r, cookieName, si.id, int(sessionMax/time.Second)))
	http.Redirect(w, r, next, http.StatusSeeOther)
}

func (c *console) logout(w http.ResponseWriter, r *http.Request) {
	if si, ok := c.current(r); ok {
		c.s.sessions.remove(si.id)
	}
	http.SetCookie(w, c.cookie(r, cookieName, "", -1))
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// cookie is a console cookie: never readable by script (HttpOnly), never
// sent with another site's request (SameSite=Strict), only over TLS when
// the console is served over TLS.
func (c *console) cookie(r *http.Request, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	}
}

// dropLegacyCookie deletes the cookie in which earlier versions kept the
// admin token itself.
func dropLegacyCookie(w http.ResponseWriter, r *http.Request) {
	if _, err := r.Cookie(legacyCookie); err == nil {
		http.SetCookie(w, &http.Cookie{Name: legacyCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	}
}

// --- pages ---

// eventsView is the events page: the filter form, the table and paging.
type eventsView struct {
	Query      events.Query
	Since      string // as typed, so "24h" stays "24h"
	MinImpact  string
	Types      []string
	Limits     []int
	Events     []events.Event
	Total      int
	From, To   int
	Prev, Next string
	Sort       map[string]sortLink // by sort field
	Presets    []presetLink        // minimum impact shortcuts
	HasNode    bool                // an event on the page names its node
}

// impactPresets are the minimum impacts offered as one-click filters
// beside the free field.
var impactPresets = []int64{100, 500, 1000}

// presetLink is one impact filter shortcut.
type presetLink struct {
	Label   string
	URL     string
	Current bool
}

// sortLink is one sortable column header.
type sortLink struct {
	URL   string
	Arrow string
}

func (c *console) eventsPage(w http.ResponseWriter, r *http.Request) {
	params := r.URL.Query()
	for k, vs := range params {
		if len(vs) == 1 && strings.TrimSpace(vs[0]) == "" {
			delete(params, k) // keep paging and sort links short
		}
	}
	if params.Get("limit") == "" {
		params.Set("limit", strconv.Itoa(consoleLimit))
	}
	v := eventsView{
		Since: params.Get("since"), MinImpact: params.Get("min_impact"),
		Types: events.Types, Limits: []int{events.DefaultLimit, events.MaxLimit},
		Events: []events.Event{},
	}
	p := page{Title: "Events", Nav: "events", Data: &v}
	status := http.StatusOK
	q, res, err := c.s.queryEvents(r.Context(), params)
	if err != nil {
		status, p.Error = c.s.classify(r, err)
		// Show the form as submitted, so the mistake can be fixed.
		q = events.Query{Type: params.Get("type"), Source: params.Get("source"), Status: params.Get("status"),
			Sort: events.SortStartedAt, Order: events.OrderDesc, Limit: consoleLimit}
	}
	v.Query, v.Events, v.Total = q, res.Events, res.Total
	if len(v.Events) > 0 {
		v.From, v.To = q.Offset+1, q.Offset+len(v.Events)
	}
	if q.Offset > 0 {
		v.Prev = eventsURL(params, "offset", strconv.Itoa(max(q.Offset-q.Limit, 0)))
	}
	if q.Offset+len(v.Events) < v.Total {
		v.Next = eventsURL(params, "offset", strconv.Itoa(q.Offset+q.Limit))
	}
	for _, n := range impactPresets {
		txt := strconv.FormatInt(n, 10)
		v.Presets = append(v.Presets, presetLink{Label: "over " + txt, Current: err == nil && q.MinImpact == n,
			URL: eventsURL(params, "min_impact", txt, "offset", "")})
	}
	v.HasNode = slices.ContainsFunc(v.Events, func(e events.Event) bool { return e.Node != "" })
	v.Sort = map[string]sortLink{}
	// A first click sorts dates and impact newest/largest first, names
	// alphabetically; a click on the sorted column flips its order.
	for f, first := range map[string]string{
		events.SortStartedAt: events.OrderDesc, events.SortImpact: events.OrderDesc,
		events.SortType: events.OrderAsc, events.SortSource: events.OrderAsc,
	} {
		var l sortLink
		if f == q.Sort {
			l.Arrow, first = "▼", events.OrderAsc
			if q.Order == events.OrderAsc {
				l.Arrow, first = "▲", events.OrderDesc
			}
		}
		l.URL = eventsURL(params, "sort", f, "order", first, "offset", "")
		v.Sort[f] = l
	}
	c.render(w, r, status, "events", p)
}

// eventsURL is /events with params changed by key, value pairs; an empty
// value removes the key.
func eventsURL(params url.Values, kv ...string) string {
	u := url.Values{}
	for k, vs := range params {
		u[k] = vs
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			u.Del(kv[i])
		} else {
			u.Set(kv[i], kv[i+1])
		}
	}
	return "/events?" + u.Encode()
}

// blocksView is the blocks page; Form keeps a refused submission's values.
type blocksView struct {
	Blocks []events.Block
	Form   struct{ Source, For, Reason string }
}

func (c *console) blocksPage(w http.ResponseWriter, r *http.Request) {
	p := page{Title: "Blocks", Nav: "blocks"}
	q := r.URL.Query()
	if s := q.Get("added"); s != "" {
		p.Flash = "Blocked " + s + "."
	} else if s := q.Get("removed"); s != "" {
		p.Flash = "Unblocked " + s + "."
	}
	v := blocksView{Blocks: c.s.blocks()}
	v.Form.For = duration.Format(defaultBlockFor)
	p.Data = &v
	c.render(w, r, http.StatusOK, "blocks", p)
}

// addBlock and removeBlock answer with a redirect (post/redirect/get), so a
// reload of the page does not post the form again.
func (c *console) addBlock(w http.ResponseWriter, r *http.Request) {
	source, forText, reason := r.PostFormValue("source"), r.PostFormValue("for"), r.PostFormValue("reason")
	b, err := c.s.addBlock(r.Context(), source, forText, reason)
	if err != nil {
		status, msg := c.s.classify(r, err)
		v := blocksView{Blocks: c.s.blocks()}
		v.Form.Source, v.Form.For, v.Form.Reason = source, forText, reason
		c.render(w, r, status, "blocks", page{Title: "Blocks", Nav: "blocks", Error: msg, Data: &v})
		return
	}
	http.Redirect(w, r, "/blocks?added="+url.QueryEscape(b.Source), http.StatusSeeOther)
}

func (c *console) removeBlock(w http.ResponseWriter, r *http.Request) {
	c.remove(w, r, "source", "/blocks", c.s.removeBlock)
}

// remove ends the block or suspension whose key the form posts in field,
// and redirects back to page with a note.
func (c *console) remove(w http.ResponseWriter, r *http.Request, field, page string, remove func(context.Context, string) error) {
	key := r.PostFormValue(field)
	if err := remove(r.Context(), key); err != nil {
		status, msg := c.s.classify(r, err)
		c.renderError(w, r, status, msg)
		return
	}
	http.Redirect(w, r, page+"?removed="+url.QueryEscape(key), http.StatusSeeOther)
}

func (c *console) rulesPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, r, http.StatusOK, "rules", page{Title: "Rules", Nav: "rules", Data: c.s.rules()})
}

// --- rendering ---

func (c *console) renderError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c.render(w, r, status, "error", page{Title: http.StatusText(status), Error: msg})
}

// render executes into a buffer first, so a template failure gives a clean
// 500 rather than half a page.
func (c *console) render(w http.ResponseWriter, r *http.Request, status int, name string, p page) {
	c.renderFragment(w, r, status, name, "layout.html", p)
}

// renderFragment is render of one template of a page: the whole page is
// its "layout.html", the overview's live part its "live".
func (c *console) renderFragment(w http.ResponseWriter, r *http.Request, status int, name, tmpl string, p page) {
	si, ok := c.current(r)
	p.LoggedIn, p.CSRF = ok, si.csrf
	p.Version = c.s.o.Version
	var buf bytes.Buffer
	if err := c.pages[name].ExecuteTemplate(&buf, tmpl, p); err != nil {
		c.s.log.ErrorContext(r.Context(), "admin: render console page", "page", name, "template", tmpl, "err", err)
		http.Error(w, "internal error, see the server log", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// The only script is the console's own file (no inline script, so an
	// escaping bug cannot run one); no framing (clickjacking), no foreign
	// resource, fetches only to this origin.
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// formatTime shows times in UTC, as mail logs of several hosts are compared.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "—"
	}
	return t.UTC().Format("2006-01-02 15:04:05")
}

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return *t
}

// relative says how far t is from now, at a precision a reader needs:
// "in 45m", "2h10m ago", "never" for a zero time.
func (s *Server) relative(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := t.Sub(s.clock.Now())
	unit := time.Second
	if d.Abs() >= time.Hour {
		unit = time.Minute
	}
	if d >= 0 {
		return "in " + duration.Format(d.Round(unit))
	}
	return duration.Format((-d).Round(unit)) + " ago"
}

// formatSize writes a byte count the way the configuration accepts it.
func formatSize(n int64) string {
	units := []struct {
		size int64
		name string
	}{{1 << 30, "GiB"}, {1e9, "GB"}, {1 << 20, "MiB"}, {1e6, "MB"}, {1 << 10, "KiB"}, {1e3, "KB"}}
	for _, u := range units {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

func isIPOrPrefix(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}
	_, err := netip.ParsePrefix(s)
	return err == nil
}
