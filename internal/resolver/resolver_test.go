package resolver

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"mxguard/internal/testutil"
)

func TestLookups(t *testing.T) {
	ns := testutil.StartDNS(t)
	ns.Add(t,
		"mail.example.net. 300 IN A 192.0.2.25",
		"mail.example.net. 300 IN AAAA 2001:db8::25",
		"25.2.0.192.in-addr.arpa. 300 IN PTR mail.example.net.",
		"25.2.0.192.in-addr.arpa. 300 IN PTR Other.Example.NET.",
		"5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 300 IN PTR v6.example.net.",
	)
	r := New(Options{Server: ns.Addr})
	ctx := context.Background()
	if a, err := r.A(ctx, "MAIL.example.net"); err != nil || !slices.Equal(a, []netip.Addr{netip.MustParseAddr("192.0.2.25")}) {
		t.Errorf("A = %v, %v", a, err)
	}
	if a, err := r.AAAA(ctx, "mail.example.net."); err != nil || !slices.Equal(a, []netip.Addr{netip.MustParseAddr("2001:db8::25")}) {
		t.Errorf("AAAA = %v, %v", a, err)
	}
	if n, err := r.PTR(ctx, netip.MustParseAddr("::ffff:192.0.2.25")); err != nil || !slices.Equal(n, []string{"mail.example.net", "other.example.net"}) {
		t.Errorf("PTR v4 = %v, %v", n, err)
	}
	if n, err := r.PTR(ctx, netip.MustParseAddr("2001:db8::25")); err != nil || !slices.Equal(n, []string{"v6.example.net"}) {
		t.Errorf("PTR v6 = %v, %v", n, err)
	}
	if a, err := r.A(ctx, "nothing.example.net"); err != nil || len(a) != 0 {
		t.Errorf("NXDOMAIN = %v, %v", a, err)
	}
	// No data: the name exists with another type.
	if a, err := r.AAAA(ctx, "25.2.0.192.in-addr.arpa"); err != nil || len(a) != 0 {
		t.Errorf("no data = %v, %v", a, err)
	}
}

// TestCache: answers live for their TTL within MinTTL..MaxTTL, NXDOMAIN
// for the SOA's negative TTL; the fake clock moves them past it.
func TestCache(t *testing.T) {
	ns := testutil.StartDNS(t)
	ns.Add(t,
		"short.test. 1 IN A 192.0.2.1",     // below MinTTL
		"mid.test. 120 IN A 192.0.2.2",     // inside the bounds
		"long.test. 604800 IN A 192.0.2.3", // a week: above MaxTTL
		"test. 3600 IN SOA ns.test. admin.test. 1 3600 600 86400 90",
	)
	clock := testutil.NewFakeClock()
	r := New(Options{Server: ns.Addr, MinTTL: time.Minute, MaxTTL: time.Hour, Now: clock.Now})
	ctx := context.Background()
	ask := func() {
		for _, n := range []string{"short.test", "mid.test", "long.test", "gone.test"} {
			if _, err := r.A(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
	}
	counts := func() []int {
		return []int{ns.Queries("short.test"), ns.Queries("mid.test"), ns.Queries("long.test"), ns.Queries("gone.test")}
	}
	for _, step := range []struct {
		advance time.Duration
		want    []int
	}{
		{0, []int{1, 1, 1, 1}},
		{59 * time.Second, []int{1, 1, 1, 1}}, // all cached
		{2 * time.Second, []int{2, 1, 1, 1}},  // 61s: short (MinTTL 60s) asked again
		{30 * time.Second, []int{2, 1, 1, 2}}, // 91s: gone (negative TTL 90s) again; short (asked at 61s) cached
		{30 * time.Second, []int{3, 2, 1, 2}}, // 121s: mid (120s) and short again
		{time.Hour, []int{4, 3, 2, 3}},        // past MaxTTL: long again
	} {
		clock.Advance(step.advance)
		ask()
		if got := counts(); !slices.Equal(got, step.want) {
			t.Fatalf("after +%s: queries %v, want %v", step.advance, got, step.want)
		}
	}
}

// TestFailures: SERVFAIL, silence and no server are errors (the caller
// never blocks on them) and are not cached; concurrent look-ups of one
// name send one query.
func TestFailures(t *testing.T) {
	ns := testutil.StartDNS(t)
	ns.Fail("broken.test", dns.RcodeServerFailure)
	ns.Hang("slow.test")
	r := New(Options{Server: ns.Addr, Timeout: 200 * time.Millisecond})
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, err := r.A(ctx, "broken.test"); err == nil {
			t.Error("SERVFAIL: nil error")
		}
	}
	if n := ns.Queries("broken.test"); n != 2 {
		t.Errorf("SERVFAIL queried %d times, want 2 (not cached)", n)
	}
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = r.A(ctx, "slow.test")
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err == nil {
			t.Fatal("no answer: nil error")
		}
	}
	if n := ns.Queries("slow.test"); n > 2 {
		// One query per look-up round (a caller arriving after the first
		// timed out starts a second).
		t.Errorf("20 concurrent look-ups sent %d queries", n)
	}
	// A caller that gives up early is not held by the query.
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	go r.A(ctx, "slow.test")
	if _, err := r.A(short, "slow.test"); !errors.Is(err, context.DeadlineExceeded) && err == nil {
		t.Errorf("cancelled look-up: %v", err)
	}

	conf := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(conf, []byte("# no nameserver\n"), 0o644)
	if _, err := New(Options{ResolvConf: conf}).A(ctx, "x.test"); !errors.Is(err, ErrNoServers) {
		t.Errorf("no servers: %v", err)
	}
	if _, err := New(Options{ResolvConf: "/nonexistent"}).A(ctx, "x.test"); !errors.Is(err, ErrNoServers) {
		t.Errorf("no resolv.conf: %v", err)
	}
}

// TestTruncated: an answer too big for UDP comes over TCP.
func TestTruncated(t *testing.T) {
	ns := testutil.StartDNS(t)
	for i := 1; i <= 150; i++ {
		ns.Add(t, fmt.Sprintf("many.test. 300 IN A 192.0.2.%d", i))
	}
	a, err := New(Options{Server: ns.Addr}).A(context.Background(), "many.test")
	if err != nil || len(a) != 150 {
		t.Errorf("A = %d addresses, %v", len(a), err)
	}
}

// TestBounded: the cache never holds more than MaxEntries.
func TestBounded(t *testing.T) {
	ns := testutil.StartDNS(t)
	r := New(Options{Server: ns.Addr, MaxEntries: 50})
	for i := 0; i < 200; i++ {
		r.A(context.Background(), fmt.Sprintf("n%d.test", i))
		if r.Len() > 50 {
			t.Fatalf("cache holds %d entries", r.Len())
		}
	}
}

// TestConfirmed: only a PTR name that resolves back to the address counts.
func TestConfirmed(t *testing.T) {
	ns := testutil.StartDNS(t)
	ns.Add(t,
		"25.2.0.192.in-addr.arpa. 300 IN PTR mail.example.net.",
		"25.2.0.192.in-addr.arpa. 300 IN PTR liar.example.org.",
		"mail.example.net. 300 IN A 192.0.2.25",
		"liar.example.org. 300 IN A 198.51.100.1",
		"26.2.0.192.in-addr.arpa. 300 IN PTR spoofed.example.net.",
		"6.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 300 IN PTR v6.example.net.",
		"v6.example.net. 300 IN AAAA 2001:db8::6",
		"v6.example.net. 300 IN A 192.0.2.6",
	)
	r := New(Options{Server: ns.Addr})
	for addr, want := range map[string][]string{
		"192.0.2.25":  {"mail.example.net"},
		"192.0.2.26":  nil, // PTR without a forward record
		"192.0.2.27":  nil, // no PTR
		"2001:db8::6": {"v6.example.net"},
	} {
		got, err := r.Confirmed(context.Background(), netip.MustParseAddr(addr))
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("Confirmed(%s) = %v, %v; want %v", addr, got, err, want)
		}
	}
}
