package admin

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

// someSessions: 3 from 192.0.2.7 (one stuck at the greeting), 2 from one
// IPv6 /64, 1 from 198.51.100.1, in no order.
func someSessions() []SessionView {
	v := func(id uint64, addr, source, state string, age time.Duration) SessionView {
		return SessionView{ID: id, Addr: netip.MustParseAddr(addr), Source: source, Listener: "smtp", State: state,
			StartedAt: t0.Add(-age), IdleFor: 3, Helo: "h" + fmt.Sprint(id), BytesIn: 100 * int64(id)}
	}
	return []SessionView{
		v(1, "198.51.100.1", "198.51.100.1", "data", time.Minute),
		v(2, "192.0.2.7", "192.0.2.7", "greeting", 5*time.Minute),
		v(3, "2001:db8:1:2::5", "2001:db8:1:2::/64", "rcpt", time.Minute),
		v(4, "192.0.2.7", "192.0.2.7", "helo", 7*time.Minute),
		v(5, "2001:db8:1:2::9", "2001:db8:1:2::/64", "mail", 2*time.Minute),
		v(6, "192.0.2.7", "192.0.2.7", "idle", time.Minute),
	}
}

func TestSessionsAPI(t *testing.T) {
	list := someSessions
	f := newFixture(t, func(o *Options) { o.Sessions = func() []SessionView { return list() } })
	got := decode[SessionList](t, f.api(t, "GET", "/api/v1/sessions", ""))
	var order []uint64
	for _, s := range got.Sessions {
		order = append(order, s.ID)
	}
	// Busiest source first, oldest session first within it.
	if got.Total != 6 || fmt.Sprint(order) != "[4 2 6 5 3 1]" {
		t.Errorf("total %d, order %v: want 6, [4 2 6 5 3 1]", got.Total, order)
	}
	if fmt.Sprint(got.BySource) != "[{192.0.2.7 3} {2001:db8:1:2::/64 2} {198.51.100.1 1}]" {
		t.Errorf("by_source %v", got.BySource)
	}

	// The JSON fields of INTERFACE.md §5, and nothing else.
	raw := decode[struct{ Sessions []map[string]any }](t, f.api(t, "GET", "/api/v1/sessions?source=198.51.100.1", ""))
	s := raw.Sessions[0]
	want := map[string]any{"id": 1.0, "source": "198.51.100.1", "listener": "smtp", "state": "data",
		"started_at": "2026-11-25T09:59:00Z", "idle_for": 3.0, "helo": "h1", "tls": false, "bytes_in": 100.0}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Errorf("session JSON %v, want %v", s, want)
	}

	for _, tc := range []struct {
		source string
		total  int
	}{
		{"192.0.2.7", 3},
		{"2001:db8:1:2::9", 1},     // one address of the /64
		{"2001:db8:1:2::/64", 2},   // the source as listed
		{"2001:db8::/32", 2},       // a wider prefix
		{"::ffff:198.51.100.1", 1}, // IPv4-mapped
		{"203.0.113.1", 0},
	} {
		got := decode[SessionList](t, f.api(t, "GET", "/api/v1/sessions?source="+url.QueryEscape(tc.source), ""))
		if got.Total != tc.total || len(got.Sessions) != tc.total {
			t.Errorf("source=%s: total %d, %d listed, want %d", tc.source, got.Total, len(got.Sessions), tc.total)
		}
	}
	wantError(t, f.api(t, "GET", "/api/v1/sessions?source=nonsense", ""), 400)

	// At most 500 listed; total counts all.
	list = func() []SessionView {
		var many []SessionView
		for i := range 700 {
			many = append(many, SessionView{ID: uint64(i), Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}),
				Source: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}).String(), State: "greeting"})
		}
		return many
	}
	got = decode[SessionList](t, f.api(t, "GET", "/api/v1/sessions", ""))
	if got.Total != 700 || len(got.Sessions) != maxSessionsListed || len(got.BySource) != maxSessionsListed {
		t.Errorf("700 sessions: total %d, %d listed, %d sources; want 700, 500, 500", got.Total, len(got.Sessions), len(got.BySource))
	}
}

func TestSessionsAPIWithoutListener(t *testing.T) {
	f := newFixture(t)
	wantError(t, f.api(t, "GET", "/api/v1/sessions", ""), http.StatusServiceUnavailable)
	wantPage(t, f.browser(t, "GET", "/connections", ""), 200, "does not report SMTP sessions")
}

// TestConsoleConnections: the page lists the busiest sources with a Block
// button each (a form post to /blocks with the CSRF token), and the
// sessions; the button blocks the source.
func TestConsoleConnections(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Sessions = someSessions })
	r := f.browser(t, "GET", "/connections", "")
	wantPage(t, r, 200,
		`href="/connections" aria-current="page"`,
		`<a href="/connections?source=192.0.2.7">192.0.2.7</a>`, `<td class="num">3</td>`,
		`<span class="badge state-greeting">greeting</span>`, `<td class="mono">h4</td>`, "5m ago",
		"6 open sessions from 3 sources.", "6 open, busiest sources first")
	if strings.Index(r.body, ">192.0.2.7<") > strings.Index(r.body, ">198.51.100.1<") {
		t.Error("the busiest source is not listed first")
	}
	forms := strings.Count(r.body, `<form method="post" action="/blocks">`+`<input type="hidden" name="csrf" value="`+f.session.csrf+`">`)
	if forms != 3 {
		t.Errorf("%d block forms with the CSRF token, want one per source (3)", forms)
	}

	post := f.browser(t, "POST", "/blocks", url.Values{"source": {"2001:db8:1:2::/64"}, "for": {"1h"},
		"reason": {"blocked from the connections page (2 open sessions)"}}.Encode())
	if post.status != http.StatusSeeOther {
		t.Fatalf("block: %d %s", post.status, post.body)
	}
	if b, ok := f.engine.blocks["2001:db8:1:2::/64"]; !ok || f.engine.lastFor != time.Hour {
		t.Errorf("blocks %v, for %v: want 2001:db8:1:2::/64 for 1h", f.engine.blocks, f.engine.lastFor)
	} else if !strings.Contains(b.Reason, "connections page") {
		t.Errorf("reason %q", b.Reason)
	}

	wantPage(t, f.browser(t, "GET", "/connections?source=198.51.100.1", ""), 200, "1 open session from 1 source matching 198.51.100.1.", "1 open, busiest sources first", `<td class="mono">h1</td>`)
	wantPage(t, f.browser(t, "GET", "/connections?source=203.0.113.9", ""), 200, "No SMTP session is open from 203.0.113.9.")
	wantPage(t, f.browser(t, "GET", "/connections?source=bad", ""), 400, "is not an IP address or CIDR")
}
