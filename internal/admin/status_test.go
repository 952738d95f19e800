package admin

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSpool records the operator requests and moves between the states
// the way the spool manager does for them.
type fakeSpool struct {
	mu       sync.Mutex
	view     SpoolView
	requests []string
}

var _ SpoolControl = (*fakeSpool)(nil)

func (f *fakeSpool) View() SpoolView {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.view
}

func (f *fakeSpool) request(action, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, action)
	f.view.State = state
}

func (f *fakeSpool) Suspend() { f.request("suspend", "suspended") }
func (f *fakeSpool) Resume()  { f.request("resume", "off") }
func (f *fakeSpool) Unspool() { f.request("unspool", "unspooling") }

func TestConsoleStatus(t *testing.T) {
	sp := &fakeSpool{view: SpoolView{State: "off", Messages: 3, Bytes: 3 << 20, MaxBytes: 10 << 30}}
	f := newFixture(t, func(o *Options) {
		o.Spool = sp
		o.Servers = func() []ServerView {
			return []ServerView{
				{Address: "10.0.0.5:25", Role: "primary", State: "up", Since: t0.Add(-2 * time.Hour), LastError: "dial tcp 10.0.0.5:25: i/o timeout"},
				{Address: "10.0.0.6:25", Role: "failover", State: "down", Since: t0.Add(-90 * time.Second), LastError: "greeting/EHLO: 554 no service"},
			}
		}
	})
	wantPage(t, f.browser(t, "GET", "/status", ""), 200,
		`href="/status" aria-current="page"`,
		`<td class="mono">10.0.0.5:25</td>`, `<span class="badge up">up</span>`, "2h ago",
		`<span class="badge down">down</span>`, "1m30s ago", "greeting/EHLO: 554 no service",
		`<span class="badge off" id="spool-state">off</span>`, "Held:", `<dd id="spool-messages">3</dd>`,
		"3 MiB of 10GiB", "&lt;1%", `action="/status/spool/suspend"`, `action="/status/spool/unspool"`)

	for _, tc := range []struct{ action, state, flash, button string }{
		{"suspend", "suspended", "Spool suspended", `action="/status/spool/resume"`},
		{"resume", "off", "Spool resumed.", `action="/status/spool/suspend"`},
		{"unspool", "unspooling", "Unspool requested", `<span class="badge unspooling"`},
	} {
		r := f.browser(t, "POST", "/status/spool/"+tc.action, "")
		if r.status != http.StatusSeeOther || r.header.Get("Location") != "/status?done="+tc.action {
			t.Fatalf("%s: %d to %q: %s", tc.action, r.status, r.header.Get("Location"), r.body)
		}
		wantPage(t, f.browser(t, "GET", r.header.Get("Location"), ""), 200, tc.flash, tc.button)
	}
	if got := strings.Join(sp.requests, ","); got != "suspend,resume,unspool" {
		t.Errorf("spool got %s", got)
	}

	wantPage(t, f.browser(t, "POST", "/status/spool/flush", ""), 404, "No such spool action.")
	// The buttons are forms like the others: a foreign site cannot press them.
	if r := f.browser(t, "POST", "/status/spool/suspend", "", "Origin", "https://evil.example"); r.status != 403 {
		t.Errorf("cross-origin suspend: %d", r.status)
	}
	if len(sp.requests) != 3 {
		t.Errorf("refused posts reached the spool: %v", sp.requests)
	}
}

// Without a relay or spool the page says so rather than showing an empty
// table, and the spool buttons are gone.
func TestConsoleStatusWithoutComponents(t *testing.T) {
	f := newFixture(t)
	r := f.browser(t, "GET", "/status", "")
	wantPage(t, r, 200, "does not report delivery servers", "has no spool")
	if strings.Contains(r.body, "/status/spool/") {
		t.Error("spool buttons without a spool")
	}
	wantPage(t, f.browser(t, "POST", "/status/spool/suspend", ""), 404, "has no spool")
}

func TestApproxSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1 KiB", 1536: "1.5 KiB", 3 << 20: "3 MiB", 10 << 30: "10 GiB", 1 << 50: "1024 TiB",
	} {
		if got := approxSize(n); got != want {
			t.Errorf("approxSize(%d) = %q, want %q", n, got, want)
		}
	}
}
