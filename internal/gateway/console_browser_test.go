package gateway_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"mxguard/internal/events"
	"mxguard/internal/spool"
	"mxguard/internal/testutil"
)

// chromiumPath is where Debian's chromium package puts the browser
// (scripts/test installs it).
const chromiumPath = "/usr/bin/chromium"

// screenshotsEnv names a directory that receives the test's screenshots,
// for a human (or CI artifact) to look at; they always land in the test's
// temp dir too.
const screenshotsEnv = "MXGUARD_SCREENSHOTS"

// TestConsoleInBrowser drives the web console of a running gateway with a
// real headless Chromium, as an operator on call would: log in, find the
// attack on the overview (and see a new one appear without a reload),
// filter the events by an impact preset, open the attack, read why it was
// blocked, unblock it, and check the source may connect again; then the
// suspensions, rules and status pages. The unit tests read the HTML; this
// one proves a browser accepts the cookie, follows the redirects, runs the
// live refresh under the page's CSP, passes the cross-origin checks on
// form posts, never runs hostile text as markup, and renders the pages.
func TestConsoleInBrowser(t *testing.T) {
	_, err := os.Stat(chromiumPath)
	testutil.RequireComponent(t, "chromium", err == nil, "apt-get install chromium")

	e := start(t, `rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 2, actions: [block], block_for: 1h}
`)
	ctx := t.Context()
	// A message passes, so the chart has traffic to draw.
	for _, id := range []string{"m1", "m2"} {
		c := e.session("127.0.0.20")
		c.Cmd("RCPT TO:<alice@example.test>", 250)
		c.Data("Subject: hello\r\nMessage-ID: <"+id+"@remote.test>\r\n\r\nHi.\r\n", 250)
		c.Cmd("QUIT", 221)
	}
	// Two harvesters; the first keeps knocking after its block (each
	// refused connection adds to its impact), past the "over 100" preset.
	harvest := func(ip string, knocks int) {
		c := e.session(ip)
		c.Cmd("RCPT TO:<guess1@example.test>", 550)
		c.Cmd("RCPT TO:<guess2@example.test>", 550)
		c.Cmd("RCPT TO:<alice@example.test>", 421)
		c.ExpectClosed()
		for range knocks {
			c := e.dial(ip)
			c.Expect(421)
			c.ExpectClosed()
		}
	}
	const big, small = "127.0.0.61", "127.0.0.60"
	harvest(big, 110)
	harvest(small, 0)
	l := e.events("type=directory_harvest&sort=impact&order=desc")
	if l.Total != 2 || l.Events[0].Source != big || l.Events[0].Impact <= 100 || l.Events[1].Impact >= 100 {
		t.Fatalf("events before the browser: %+v", l)
	}
	attack := l.Events[0]

	// A shadow rule's event, with hostile text in its evidence (a client
	// writes what it likes into RCPT and HELO): the browser must show it
	// as text, never run it.
	const hostile = `RCPT TO:<x@example.test>: 550 5.1.1 <img src=x onerror="document.title='pwned'"><script>document.title='pwned'</script>`
	shadow := events.Event{Type: "dos", Rule: "dos-try", Mode: events.ModeShadow, Status: events.StatusActive,
		StartedAt: time.Now().Add(-time.Minute), Source: "127.0.0.70", Service: "smtp", Impact: 7, Actions: []string{"block"},
		Detail: map[string]any{"threshold": 30, "window": "1m", "count": 30, "evidence": []any{
			map[string]any{"at": time.Now().UTC().Format(time.RFC3339Nano), "what": "connect", "text": hostile}}}}
	if err := e.gw.Store.Insert(ctx, &shadow); err != nil {
		t.Fatal(err)
	}
	if code, body := e.api("POST", "/api/v1/suspensions", `{"account": "mallory@example.test", "for": "2h", "reason": "phished password"}`); code != 201 {
		t.Fatalf("suspend: %d %s", code, body)
	}

	b := newBrowser(t)
	base := "http://" + e.gw.AdminAddr()
	began := time.Now()

	// An anonymous visit lands on the login form; the token takes us to
	// the overview.
	b.do("open the console", chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)))
	b.screenshot("console-login.png")
	b.do("log in", chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), token),
		chromedp.Click(chromedp.CSS(`section.login button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#live table.active`)))
	if loc := b.location(); loc != base+"/overview" {
		t.Errorf("after login at %s, want %s/overview", loc, base)
	}
	// What the browser keeps is an opaque session id, not the token.
	jar, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatalf("browser: cookies: %v", err)
	}
	if len(jar.Cookies) != 1 {
		t.Fatalf("browser holds %d cookies, want 1: %+v", len(jar.Cookies), jar.Cookies)
	}
	if c := jar.Cookies[0]; c.Name != "mxguard_session" || len(c.Value) != 64 || strings.Contains(c.Value, token) ||
		!c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict {
		t.Errorf("session cookie %+v: want mxguard_session, 64 hex digits, HttpOnly, SameSite=Strict", c)
	}

	// The overview: the attack is there, with the shadow one marked.
	active := b.text("active attacks", `#live table.active tbody`)
	for _, want := range []string{"directory_harvest", big, small, "127.0.0.70", "shadow", "block"} {
		if !strings.Contains(active, want) {
			t.Errorf("active attacks lack %q:\n%s", want, active)
		}
	}
	if n := b.text("active card", `#card-active .big`); n != "3" {
		t.Errorf("active attacks card %q, want 3", n)
	}
	if n := b.text("blocks card", `#card-blocks .big`); n != "2" {
		t.Errorf("blocks card %q, want 2", n)
	}
	if tr := strings.Join(strings.Fields(b.text("traffic card", `#card-traffic`)), " "); !strings.HasPrefix(tr, "2 messages passed, 0 refused, 110 connections refused") {
		t.Errorf("traffic card %q, want 2 messages passed, 0 refused, 110 connections refused", tr)
	}
	if n := b.eval("chart bars", `document.querySelectorAll('#live figure.chart svg rect.passed').length`); n < 1 {
		t.Errorf("the chart draws %d bars of passed messages, want at least one", n)
	}
	if s := b.text("servers", `#live ul.servers`); !strings.Contains(s, e.sink.Addr()) || !strings.Contains(s, "up") {
		t.Errorf("overview servers lack %s up:\n%s", e.sink.Addr(), s)
	}
	b.screenshot("console-overview.png")

	// A new attack appears without a reload: the script swaps in the
	// live fragment (the marker set on this page's window survives).
	b.eval("mark the page", `(window.mxguardMarker = 1)`)
	harvest("127.0.0.62", 0)
	fresh := e.events("source=127.0.0.62")
	if fresh.Total != 1 {
		t.Fatalf("events of 127.0.0.62: %+v", fresh)
	}
	b.do("live refresh", chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`#live table.active a[href="/events/%d"]`, fresh.Events[0].ID))))
	if b.eval("marker", `window.mxguardMarker || 0`) != 1 {
		t.Error("the page was reloaded, not refreshed in place")
	}
	if n := b.text("active card", `#card-active .big`); n != "4" {
		t.Errorf("active attacks card after the refresh %q, want 4", n)
	}

	// The events, filtered by the "over 100" preset: only the big
	// harvester is left.
	b.do("go to events", chromedp.Click(chromedp.CSS(`header.top nav a[href="/events"]`)),
		chromedp.WaitVisible(chromedp.CSS(`table.events`)))
	b.screenshot("console-events.png")
	b.do("impact preset", chromedp.Click(chromedp.CSS(`a.preset[href$="min_impact=100"]`)),
		chromedp.WaitVisible(chromedp.CSS(`a.preset[aria-current="true"]`)))
	if loc := b.location(); !strings.Contains(loc, "min_impact=100") {
		t.Errorf("preset went to %s, want min_impact=100", loc)
	}
	rows := b.text("filtered events", `table.events tbody`)
	if !strings.Contains(rows, big) || strings.Contains(rows, small) || strings.Contains(rows, "127.0.0.62") {
		t.Errorf("over 100: want only %s:\n%s", big, rows)
	}
	if c := b.text("count", `p.count`); c != "1–1 of 1 events" {
		t.Errorf("count %q", c)
	}

	// The attack's page says why in words, with its evidence.
	b.do("open the event", chromedp.Click(chromedp.CSS(`table.events tbody tr:first-child td:first-child a`)),
		chromedp.WaitVisible(chromedp.CSS(`#because`)))
	wantID := fmt.Sprintf("Event #%d", attack.ID)
	if h := b.text("event title", `main h1`); !strings.HasPrefix(h, wantID) || !strings.Contains(h, "active") {
		t.Errorf("event page title %q, want %s … active", h, wantID)
	}
	if why := b.text("because", `#because`); why != "Blocked because 2 unknown recipients in 10m (threshold 2)." {
		t.Errorf("because %q", why)
	}
	stored := e.event(attack.ID)
	evidence, _ := stored.Detail["evidence"].([]any)
	if len(evidence) != 2 {
		t.Fatalf("stored evidence %v, want the 2 guesses that fired the rule", stored.Detail["evidence"])
	}
	shown := b.text("evidence", `table.evidence tbody`)
	for _, ev := range evidence {
		txt, _ := ev.(map[string]any)["text"].(string)
		if !strings.Contains(txt, "550 5.1.1") || !strings.Contains(shown, txt) {
			t.Errorf("evidence %q (a refused RCPT) not shown:\n%s", txt, shown)
		}
	}
	b.screenshot("console-event.png")

	// Unblock from the event page: the block list no longer has it and
	// the source may connect again.
	b.do("unblock", chromedp.Click(chromedp.CSS(`#unblock button`)),
		chromedp.WaitVisible(chromedp.CSS(`p.flash`)))
	if f := b.text("flash", `p.flash`); f != "Unblocked "+big+"." {
		t.Errorf("flash %q", f)
	}
	if blocks := b.text("blocks table", `main table tbody`); strings.Contains(blocks, big) || !strings.Contains(blocks, small) {
		t.Errorf("blocks after unblocking %s:\n%s", big, blocks)
	}
	c := e.dial(big)
	c.Expect(220)
	c.Cmd("QUIT", 221)
	b.screenshot("console-blocks.png")

	// The shadow event's hostile evidence is text on the page, and ran
	// nothing.
	b.do("open the shadow event", chromedp.Navigate(fmt.Sprintf("%s/events/%d", base, shadow.ID)),
		chromedp.WaitVisible(chromedp.CSS(`table.evidence`)))
	if shown := b.text("hostile evidence", `table.evidence tbody td.wrap`); shown != hostile {
		t.Errorf("evidence shown as %q, want the text %q", shown, hostile)
	}
	if n := b.eval("markup from evidence", `document.querySelectorAll('main img, main script').length`); n != 0 {
		t.Errorf("evidence text became %d elements", n)
	}
	if title := b.title(); title != fmt.Sprintf("Event %d · mxguard", shadow.ID) {
		t.Errorf("title %q: the evidence ran", title)
	}
	if why := b.text("because", `#because`); !strings.HasPrefix(why, "Would have blocked (shadow rule: nothing done) because 30 connections in 1m") {
		t.Errorf("shadow because %q", why)
	}

	b.do("go to suspensions", chromedp.Click(chromedp.CSS(`header.top nav a[href="/suspensions"]`)),
		chromedp.WaitVisible(chromedp.CSS(`form[action="/suspensions/remove"]`)))
	if s := b.text("suspensions", `main table tbody`); !strings.Contains(s, "mallory@example.test") || !strings.Contains(s, "phished password") {
		t.Errorf("suspensions:\n%s", s)
	}
	b.screenshot("console-suspensions.png")
	b.do("lift", chromedp.Click(chromedp.CSS(`form[action="/suspensions/remove"] button`)),
		chromedp.WaitVisible(chromedp.CSS(`p.flash`)))
	if e.gw.Engine.Suspended("mallory@example.test") {
		t.Error("mallory is still suspended after the lift")
	}

	// A client holding a session open shows on the Connections page.
	held := e.session("127.0.0.80")
	b.do("go to connections", chromedp.Click(chromedp.CSS(`header.top nav a[href="/connections"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#sessions-total`)))
	if s := b.text("busiest sources", `table.sources tbody`); !strings.Contains(s, "127.0.0.80") {
		t.Errorf("connections lack the open session of 127.0.0.80:\n%s", s)
	}
	b.screenshot("console-connections.png")
	held.Cmd("QUIT", 221)

	b.do("go to rules", chromedp.Click(chromedp.CSS(`header.top nav a[href="/rules"]`)),
		chromedp.WaitVisible(chromedp.CSS(`main table`)))
	if r := b.text("rules", `main table tbody`); !strings.Contains(r, "harvest") || !strings.Contains(r, "10m") {
		t.Errorf("rules:\n%s", r)
	}
	b.screenshot("console-rules.png")

	b.do("go to status", chromedp.Click(chromedp.CSS(`header.top nav a[href="/status"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#spool-state`)))
	if s := b.text("servers", `table.servers tbody`); !strings.Contains(s, e.sink.Addr()) || !strings.Contains(s, "up") {
		t.Errorf("servers table lacks %s up:\n%s", e.sink.Addr(), s)
	}
	if st := b.text("spool state", `#spool-state`); st != "off" {
		t.Errorf("spool state %q before suspend, want off", st)
	}
	b.do("suspend the spool", chromedp.Click(chromedp.CSS(`#spool-suspend`)),
		chromedp.WaitVisible(chromedp.CSS(`#spool-resume`)))
	if st := b.text("spool state", `#spool-state`); st != "suspended" {
		t.Errorf("spool state %q after suspend, want suspended", st)
	}
	if f := b.text("flash", `p.flash`); !strings.HasPrefix(f, "Spool suspended") {
		t.Errorf("flash %q", f)
	}
	if st := e.gw.Spool.Status().State; st != spool.StateSuspended {
		t.Errorf("the gateway's spool is %s, want suspended", st)
	}
	b.screenshot("console-status.png")

	// Logging out ends the session: the console asks for the token again.
	b.do("log out", chromedp.Click(chromedp.CSS(`form.logout button`)),
		chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)))
	b.do("back to the overview", chromedp.Navigate(base+"/overview"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)))
	t.Logf("browser session took %v", time.Since(began).Round(time.Millisecond))
}

// event is GET /api/v1/events/ID.
func (e *env) event(id int64) events.Event {
	e.t.Helper()
	code, body := e.api("GET", fmt.Sprintf("/api/v1/events/%d", id), "")
	if code != 200 {
		e.t.Fatalf("event %d: %d %s", id, code, body)
	}
	var ev events.Event
	if err := json.Unmarshal([]byte(body), &ev); err != nil {
		e.t.Fatal(err)
	}
	return ev
}

// browser is one headless Chromium with one tab, private to a test: its
// own profile, TMPDIR and XDG dirs under the test's temp dir, so nothing is
// left in /tmp (Chromium's singleton links) or in $HOME (crash-report and
// dconf dirs), or shared between runs.
type browser struct {
	t     *testing.T
	ctx   context.Context
	shots string // the test's screenshot dir
}

// browserWidth is the window's width: a laptop's 1280x800.
const browserWidth = 1280

// browserBudget bounds the whole session: a start takes 1 to 3 s and each
// page well under one, so a minute only runs out when something hangs.
const browserBudget = time.Minute

func newBrowser(t *testing.T) *browser {
	t.Helper()
	dir := t.TempDir()
	profile, tmp, xdg := filepath.Join(dir, "profile"), filepath.Join(dir, "tmp"), filepath.Join(dir, "xdg")
	for _, d := range []string{profile, tmp, xdg} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Chromium's output goes to a file (the allocator's goroutine writes,
	// the cleanup reads) and is shown only when the test failed: a normal
	// run prints dozens of harmless D-Bus errors.
	out, err := os.Create(filepath.Join(dir, "chromium.log"))
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		// Some of these are chromedp's defaults too; named here because
		// the test relies on them, whatever a later chromedp defaults to.
		chromedp.Headless,
		// As root (the test container, CI) Chromium refuses to start
		// with its sandbox.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		// No traffic of its own: the test must not depend on, or
		// wait for, the network.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(profile),
		chromedp.Env("TMPDIR="+tmp, "XDG_CONFIG_HOME="+xdg, "XDG_CACHE_HOME="+xdg),
		chromedp.WindowSize(browserWidth, 800),
		chromedp.CombinedOutput(out),
	)
	ctx, cancel := context.WithTimeout(context.Background(), browserBudget)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelTab := chromedp.NewContext(actx)
	// Registered before the start, so a browser that starts but fails
	// the first command is still stopped.
	t.Cleanup(func() {
		var proc *os.Process
		if c := chromedp.FromContext(bctx); c != nil && c.Browser != nil {
			proc = c.Browser.Process()
		}
		// Closing the tab's context ends the browser (it was the first
		// tab); the allocator's cancel waits for the process to exit.
		cancelTab()
		cancelAlloc()
		cancel()
		if proc != nil {
			if err := proc.Signal(syscall.Signal(0)); !errors.Is(err, os.ErrProcessDone) {
				t.Errorf("chromium (pid %d) still running after the test: %v", proc.Pid, err)
				_ = proc.Kill()
			}
		}
		out.Close()
		if t.Failed() {
			log, _ := os.ReadFile(out.Name())
			t.Logf("chromium output:\n%s", log)
		}
	})
	b := &browser{t: t, ctx: bctx, shots: dir}
	began := time.Now()
	b.do("start chromium")
	t.Logf("chromium started in %v", time.Since(began).Round(time.Millisecond))
	return b
}

// do runs steps and stops the test on an error, naming the step.
func (b *browser) do(step string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		b.t.Fatalf("browser: %s: %v", step, err)
	}
}

// read runs one action that reads something of the page and stops the
// test on an error, naming what was read.
func read[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		b.t.Fatalf("browser: read %s: %v", what, err)
	}
	return v
}

func (b *browser) text(what, css string) string {
	b.t.Helper()
	return strings.TrimSpace(read(b, what+" ("+css+")", chromedp.Text(chromedp.CSS(css))))
}

// eval runs a script expression with a numeric result in the page.
func (b *browser) eval(what, expr string) int {
	b.t.Helper()
	return read(b, what+" ("+expr+")", chromedp.Evaluate[int](expr))
}

func (b *browser) title() string {
	b.t.Helper()
	return read(b, "title", chromedp.Title())
}

func (b *browser) location() string {
	b.t.Helper()
	return read(b, "location", chromedp.Location())
}

// screenshot saves the whole page as PNG (quality 100 means PNG) in the
// test's temp dir and, when MXGUARD_SCREENSHOTS names a directory, there.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	// Every page fits the 1280 px window: no sideways scrolling.
	if w := b.eval("page width", `document.documentElement.scrollWidth`); w > browserWidth {
		b.t.Errorf("%s: the page is %d px wide, more than the %d px window", name, w, browserWidth)
	}
	png := read(b, "screenshot "+name, chromedp.FullScreenshot(100))
	dirs := []string{b.shots}
	if d := os.Getenv(screenshotsEnv); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.t.Fatalf("%s: %v", screenshotsEnv, err)
		}
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		if err := os.WriteFile(filepath.Join(d, name), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
	b.t.Logf("screenshot %s: %d bytes", filepath.Join(dirs[len(dirs)-1], name), len(png))
}
