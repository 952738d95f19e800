package admin

import (
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"mxguard/internal/testutil"
)

// Wrong tokens lock the client's address out after freeFailures: the
// login and the API answer 429 with Retry-After, without looking at the
// token, until the lockout ends; each further lockout doubles; a success
// clears the address; other addresses are not affected.
func TestLoginThrottle(t *testing.T) {
	f := newFixture(t)
	for range freeFailures {
		wantPage(t, f.login(t, "wrong-guess"), http.StatusUnauthorized, "Wrong token.")
	}
	// Locked out: even the right token is refused, and so is the API.
	r := f.login(t, testToken)
	wantPage(t, r, http.StatusTooManyRequests, "Too many wrong tokens", "Try again in 30s")
	if ra := r.header.Get("Retry-After"); ra != "30" {
		t.Errorf("Retry-After %q, want 30", ra)
	}
	if r.header.Get("Set-Cookie") != "" {
		t.Error("a locked-out login got a cookie")
	}
	r = f.api(t, "GET", "/api/v1/blocks", "")
	if msg := wantError(t, r, http.StatusTooManyRequests); !strings.Contains(msg, "retry in 30s") {
		t.Errorf("API 429 text %q", msg)
	}
	if r := f.do(t, "GET", "/debug/pprof/", "", "Authorization", "Bearer "+testToken); r.status != http.StatusTooManyRequests {
		t.Errorf("pprof while locked out: %d", r.status)
	}
	// Another host is not locked out.
	if r := f.doFrom(t, "127.0.0.2", "GET", "/api/v1/blocks", "", "Authorization", "Bearer "+testToken); r.status != 200 {
		t.Errorf("another address: %d, want 200", r.status)
	}

	f.clock.Advance(29 * time.Second)
	if r := f.login(t, testToken); r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "1" {
		t.Errorf("1s before the end of the lockout: %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	// The next round of failures locks out twice as long.
	f.clock.Advance(time.Second)
	for range freeFailures {
		f.login(t, "wrong-guess")
	}
	if r := f.login(t, testToken); r.header.Get("Retry-After") != "60" {
		t.Errorf("second lockout: %d, Retry-After %q, want 60", r.status, r.header.Get("Retry-After"))
	}

	// After it, a success clears the address: the count starts over.
	f.clock.Advance(time.Minute)
	if r := f.login(t, testToken); r.status != http.StatusSeeOther {
		t.Fatalf("right token after the lockout: %d", r.status)
	}
	for range freeFailures - 1 {
		f.login(t, "wrong-guess")
	}
	if r := f.api(t, "GET", "/api/v1/blocks", ""); r.status != 200 {
		t.Errorf("after a success and %d failures: %d, want 200", freeFailures-1, r.status)
	}
}

// Wrong bearer tokens count like wrong logins; a request without any
// bearer token is no guess and does not.
func TestAPIThrottle(t *testing.T) {
	f := newFixture(t)
	for range 2 * freeFailures {
		if r := f.do(t, "GET", "/api/v1/blocks", ""); r.status != 401 {
			t.Fatalf("no token: %d", r.status)
		}
	}
	if r := f.api(t, "GET", "/api/v1/blocks", ""); r.status != 200 {
		t.Fatalf("requests without a token locked the address out: %d", r.status)
	}
	for range freeFailures {
		f.do(t, "GET", "/api/v1/blocks", "", "Authorization", "Bearer wrong-guess")
	}
	r := f.api(t, "GET", "/api/v1/blocks", "")
	wantError(t, r, http.StatusTooManyRequests)
	if r.header.Get("Retry-After") != "30" {
		t.Errorf("Retry-After %q", r.header.Get("Retry-After"))
	}
	// Failures spread wider than the window do not add up.
	f.clock.Advance(30 * time.Second)
	for range freeFailures - 1 {
		f.do(t, "GET", "/api/v1/blocks", "", "Authorization", "Bearer wrong-guess")
	}
	f.clock.Advance(failWindow)
	for range freeFailures - 1 {
		f.do(t, "GET", "/api/v1/blocks", "", "Authorization", "Bearer wrong-guess")
	}
	if r := f.api(t, "GET", "/api/v1/blocks", ""); r.status != 200 {
		t.Errorf("%d failures in each of two windows: %d, want 200", freeFailures-1, r.status)
	}
}

// IPv4 addresses are throttled one by one, IPv6 by /64.
func TestClientKey(t *testing.T) {
	for _, tc := range []struct{ remote, want string }{
		{"192.0.2.7:4711", "192.0.2.7/32"},
		{"[2001:db8:1:2:aaaa::1]:4711", "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.7]:4711", "192.0.2.7/32"},
		{"not-an-address", "invalid Prefix"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if got := clientKey(r).String(); got != tc.want {
			t.Errorf("%s: key %s, want %s", tc.remote, got, tc.want)
		}
	}
}

// The table stays bounded under failures from more addresses than it
// holds, and an address locked out is not the one pruned to make room.
func TestThrottleBounded(t *testing.T) {
	th := newThrottle()
	now := t0
	attacker := netip.MustParsePrefix("203.0.113.7/32")
	for range freeFailures {
		th.fail(attacker, now)
	}
	for i := range maxClients + 500 {
		now = now.Add(time.Millisecond)
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		th.fail(netip.PrefixFrom(a, 32), now)
	}
	if n := th.len(); n > maxClients {
		t.Errorf("%d addresses tracked, at most %d", n, maxClients)
	}
	if th.wait(attacker, now) == 0 {
		t.Error("the locked-out address was pruned to make room")
	}
	// Quiet for forgetAfter after its lockout, an address starts over.
	now = now.Add(firstLockout + forgetAfter)
	for range freeFailures {
		th.fail(attacker, now)
	}
	if d := th.wait(attacker, now); d != firstLockout {
		t.Errorf("lockout after a quiet hour: %v, want %v", d, firstLockout)
	}
}

// A client that sends its request head a byte at a time is cut off at
// ReadHeaderTimeout; an ordinary request on the same server is served.
func TestSlowlorisDisconnected(t *testing.T) {
	f := newFixture(t)
	srv := f.srv.HTTPServer(HTTPLimits{ReadHeaderTimeout: 300 * time.Millisecond})
	if srv.ReadTimeout <= 0 || srv.WriteTimeout <= 0 || srv.IdleTimeout <= 0 || srv.MaxHeaderBytes != 64<<10 {
		t.Errorf("defaults not filled: %+v", srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	d := testutil.Slowloris(t, ln.Addr().String(), 20*time.Millisecond, 10*time.Second)
	// The bound that matters is Slowloris's: cut off, not held for 10 s.
	// The server's timer starts at accept, a little before the client's,
	// so only a close far earlier than the timeout is a failure (a
	// connection refused outright rather than timed out).
	if d < 100*time.Millisecond {
		t.Errorf("closed after %v, long before the 300ms header timeout", d)
	}
	t.Logf("slowloris client cut off after %v", d)
	resp, err := http.Get("http://" + ln.Addr().String() + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("healthz: %d", resp.StatusCode)
	}
}

// Bodies past maxBody are refused with 413, by the API and the console.
func TestBodyLimit(t *testing.T) {
	f := newFixture(t)
	big := `{"source": "192.0.2.1", "reason": "` + strings.Repeat("x", maxBody) + `"}`
	wantError(t, f.api(t, "POST", "/api/v1/blocks", big), http.StatusRequestEntityTooLarge)
	r := f.browser(t, "POST", "/blocks", "source=192.0.2.1&reason="+strings.Repeat("x", maxBody))
	wantPage(t, r, http.StatusRequestEntityTooLarge, "too large")
	if len(f.engine.Blocks()) != 0 {
		t.Error("an oversized request took effect")
	}
}
