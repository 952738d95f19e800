package gateway_test

import (
	"context"
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
// real headless Chromium, as an operator would: log in, find the attack,
// sort, open it, check its block, suspend the spool. The unit tests read
// the HTML; this one proves a browser accepts the cookie, follows the
// redirects, passes the cross-origin checks on form posts and renders the
// pages.
func TestConsoleInBrowser(t *testing.T) {
	_, err := os.Stat(chromiumPath)
	testutil.RequireComponent(t, "chromium", err == nil, "apt-get install chromium")

	e := start(t, `rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 2, actions: [block], block_for: 1h}
`)
	// Two harvesters; the first keeps knocking after its block, so its
	// event has the larger impact and sorting by impact must put it first
	// whatever the start times.
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
	harvest("127.0.0.61", 4)
	harvest("127.0.0.60", 0)
	l := e.events("type=directory_harvest&sort=impact&order=desc")
	if l.Total != 2 || l.Events[0].Source != "127.0.0.61" || l.Events[0].Impact <= l.Events[1].Impact {
		t.Fatalf("events before the browser: %+v", l)
	}

	b := newBrowser(t)
	base := "http://" + e.gw.AdminAddr()
	began := time.Now()

	// An anonymous visit lands on the login form; the token takes us to
	// the events.
	b.do("open the console", chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)))
	b.do("log in", chromedp.SendKeys(chromedp.CSS(`input[name="token"]`), token),
		chromedp.Click(chromedp.CSS(`section.login button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`table.events`)))
	if loc := b.location(); loc != base+"/events" {
		t.Errorf("after login at %s, want %s/events", loc, base)
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
	rows := b.text("events table", `table.events tbody`)
	for _, want := range []string{"directory_harvest", "127.0.0.60", "127.0.0.61", "harvest", "active"} {
		if !strings.Contains(rows, want) {
			t.Errorf("events table lacks %q:\n%s", want, rows)
		}
	}
	b.screenshot("console-events.png")

	// The impact header sorts largest first; its link then flips to
	// ascending, which is how we know the new page is there.
	b.do("sort by impact", chromedp.Click(chromedp.CSS(`table.events th a[href*="sort=impact"]`)),
		chromedp.WaitVisible(chromedp.CSS(`table.events th a[href*="sort=impact"][href*="order=asc"]`)))
	// (Headers are upper-cased by the style sheet, and Text reads what is shown.)
	if h := b.text("impact header", `table.events th a[href*="sort=impact"]`); !strings.EqualFold(h, "Impact ▼") {
		t.Errorf("impact header %q, want %q", h, "Impact ▼")
	}
	if src := b.text("first source", `table.events tbody tr:first-child td.mono`); src != "127.0.0.61" {
		t.Errorf("largest impact first: first row is %s, want 127.0.0.61", src)
	}

	b.do("open the event", chromedp.Click(chromedp.CSS(`table.events tbody tr:first-child td:first-child a`)),
		chromedp.WaitVisible(chromedp.CSS(`dl.fields`)))
	wantID := fmt.Sprintf("Event #%d", l.Events[0].ID)
	if h := b.text("event title", `main h1`); !strings.HasPrefix(h, wantID) || !strings.Contains(h, "active") {
		t.Errorf("event page title %q, want %s … active", h, wantID)
	}
	if d := b.text("event fields", `dl.fields`); !strings.Contains(d, "127.0.0.61") || !strings.Contains(d, "directory_harvest") {
		t.Errorf("event fields:\n%s", d)
	}

	b.do("go to blocks", chromedp.Click(chromedp.CSS(`header.top nav a[href="/blocks"]`)),
		chromedp.WaitVisible(chromedp.CSS(`form[action="/blocks/remove"]`)))
	if blocks := b.text("blocks table", `main table tbody`); !strings.Contains(blocks, "127.0.0.61") || !strings.Contains(blocks, "127.0.0.60") {
		t.Errorf("blocks table lacks the harvesters:\n%s", blocks)
	}

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
	b.do("back to the events", chromedp.Navigate(base+"/events"),
		chromedp.WaitVisible(chromedp.CSS(`input[name="token"]`)))
	t.Logf("browser session took %v", time.Since(began).Round(time.Millisecond))
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
		chromedp.WindowSize(1280, 800),
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

func (b *browser) text(what, css string) string {
	b.t.Helper()
	s, err := chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(css)))
	if err != nil {
		b.t.Fatalf("browser: read %s (%s): %v", what, css, err)
	}
	return strings.TrimSpace(s)
}

func (b *browser) location() string {
	b.t.Helper()
	loc, err := chromedp.Run(b.ctx, chromedp.Location())
	if err != nil {
		b.t.Fatalf("browser: location: %v", err)
	}
	return loc
}

// screenshot saves the whole page as PNG (quality 100 means PNG) in the
// test's temp dir and, when MXGUARD_SCREENSHOTS names a directory, there.
func (b *browser) screenshot(name string) {
	b.t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("browser: screenshot %s: %v", name, err)
	}
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
