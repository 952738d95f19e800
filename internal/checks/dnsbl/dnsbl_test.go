package dnsbl

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"mxguard/internal/pipeline"
	"mxguard/internal/resolver"
	"mxguard/internal/testutil"
)

func TestParseEntry(t *testing.T) {
	for _, tc := range []struct {
		in     string
		zone   string
		weight int
		filter string
	}{
		{"zen.spamhaus.org", "zen.spamhaus.org", 1, ""},
		{"zen.spamhaus.org*3", "zen.spamhaus.org", 3, ""},
		{"b.barracudacentral.org=127.0.0.[2..11]*2", "b.barracudacentral.org", 2, "127.0.0.[2..11]"},
		{"swl.spamhaus.org*-4", "swl.spamhaus.org", -4, ""},
		{"list.dnswl.org=127.[0..255].[0..255].[2;3]*-6", "list.dnswl.org", -6, "127.[0..255].[0..255].[2;3]"},
		{"BL.Example.TEST.=127.0.0.2", "bl.example.test", 1, "127.0.0.2"},
	} {
		e, err := ParseEntry(tc.in)
		if err != nil || e.Zone != tc.zone || e.Weight != tc.weight || (e.Filter == nil) != (tc.filter == "") || (e.Filter != nil && e.Filter.String() != tc.filter) {
			t.Errorf("ParseEntry(%q) = %+v, %v", tc.in, e, err)
		}
	}
	for _, bad := range []string{"", "localhost", "zen.spamhaus.org*", "zen.spamhaus.org*0", "zen.spamhaus.org*x",
		"zen.spamhaus.org*99999", "a..b", "-a.b", "a b.c", "z.test=127.0.0", "z.test=127.0.0.256", "z.test=127.0.0.[3..2]",
		"z.test=127.0.0.[2", "z.test=127.0.0.2.1", "z.test=127.0.0.+2", strings.Repeat("a.", 100) + "test"} {
		if e, err := ParseEntry(bad); err == nil {
			t.Errorf("ParseEntry(%q) = %+v, nil error", bad, e)
		}
	}
}

func TestFilterAndListing(t *testing.T) {
	f, err := ParseFilter("127.[0..255].0.[2;4..6]")
	if err != nil {
		t.Fatal(err)
	}
	for a, want := range map[string]bool{"127.9.0.2": true, "127.0.0.5": true, "127.0.0.3": false, "127.0.1.2": false, "128.0.0.2": false, "::1": false} {
		if f.Match(netip.MustParseAddr(a)) != want {
			t.Errorf("%s matches %s: %v", f, a, !want)
		}
	}
	for a, want := range map[string]bool{"127.0.0.2": true, "127.0.1.10": true, "127.255.255.254": false, "10.1.2.3": false, "192.0.2.1": false} {
		if listing(netip.MustParseAddr(a)) != want {
			t.Errorf("listing(%s) = %v", a, !want)
		}
	}
}

// TestQueryName follows RFC 5782 §2.1 and §2.4.
func TestQueryName(t *testing.T) {
	for addr, want := range map[string]string{
		"192.0.2.99":                "99.2.0.192.bl.test",
		"::ffff:192.0.2.99":         "99.2.0.192.bl.test",
		"2001:db8:1:2:3:4:567:89ab": "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.test",
	} {
		if got := queryName(netip.MustParseAddr(addr), "bl.test"); got != want {
			t.Errorf("queryName(%s) = %s, want %s", addr, got, want)
		}
	}
}

func session(addr string) *pipeline.Session {
	return &pipeline.Session{Listener: "smtp", Addr: netip.MustParseAddr(addr)}
}

// TestScores runs the weighted scoring against an in-process DNS server
// through the real resolver: weights add up per matching entry, allowlist
// zones subtract, filters select answer codes, error codes and hijacked
// answers list nothing, and a failing or silent zone adds nothing.
func TestScores(t *testing.T) {
	ns := testutil.StartDNS(t)
	ns.Add(t,
		"bl.test. 300 IN SOA ns.bl.test. admin.bl.test. 1 3600 600 86400 300",
		"1.2.0.192.bl.test. 300 IN A 127.0.0.2",       // bl only: 2
		"2.2.0.192.bl.test. 300 IN A 127.0.0.2",       // bl + bl2 low code: 3
		"2.2.0.192.bl2.test. 300 IN A 127.0.0.3",      //
		"3.2.0.192.bl2.test. 300 IN A 127.0.0.10",     // bl2 high code: 5
		"4.2.0.192.bl.test. 300 IN A 127.0.0.2",       // bl + bl2 + allow: 3 - 3
		"4.2.0.192.bl2.test. 300 IN A 127.0.0.2",      //
		"4.2.0.192.allow.test. 300 IN A 127.0.10.1",   //
		"5.2.0.192.bl.test. 300 IN A 127.255.255.254", // "query refused": not a listing
		"6.2.0.192.bl.test. 300 IN A 198.51.100.1",    // NXDOMAIN rewritten by a resolver
		"7.2.0.192.bl2.test. 300 IN A 127.0.0.99",     // bl2 code no filter matches
		"7.2.0.192.bl.test. 300 IN A 127.0.0.2",       //
		"8.2.0.192.bl2.test. 300 IN A 127.0.0.10",     // listed, but bl hangs
		"8.2.0.192.bl.test. 300 IN A 127.0.0.2",       //
		// (queryName's nibble form is checked by TestQueryName)
		queryName(netip.MustParseAddr("2001:db8::5"), "bl2.test")+". 300 IN A 127.0.0.10",
	)
	ns.Fail("9.2.0.192.bl2.test", dns.RcodeServerFailure)
	ns.Add(t, "9.2.0.192.bl.test. 300 IN A 127.0.0.2")
	ns.Hang("8.2.0.192.bl.test")
	c, err := New(Options{
		Zones:     []string{"bl.test*2", "bl2.test=127.0.0.[2..3]", "bl2.test=127.0.0.10*5", "allow.test*-3"},
		Threshold: 3,
		Resolver:  resolver.New(resolver.Options{Server: ns.Addr, Timeout: 300 * time.Millisecond}),
		Wait:      time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		addr   string
		score  int
		by     string // zone in the reply; "" = admitted
		failed []string
	}{
		{"192.0.2.1", 2, "", nil},
		{"192.0.2.2", 3, "bl.test", nil},
		{"192.0.2.3", 5, "bl2.test", nil},
		{"192.0.2.4", 0, "", nil},
		{"192.0.2.5", 0, "", nil},
		{"192.0.2.6", 0, "", nil},
		{"192.0.2.7", 2, "", nil},
		{"192.0.2.8", 5, "bl2.test", []string{"bl.test"}},
		{"192.0.2.9", 2, "", []string{"bl2.test"}},
		{"192.0.2.10", 0, "", nil},
		{"2001:db8::5", 5, "bl2.test", nil},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			res := c.Score(context.Background(), netip.MustParseAddr(tc.addr))
			if res.Score != tc.score || !slices.Equal(res.Failed, tc.failed) {
				t.Errorf("Score = %+v, want %d, failed %v", res, tc.score, tc.failed)
			}
			r := c.CheckConnect(context.Background(), session(tc.addr))
			switch {
			case tc.by == "" && r != nil:
				t.Errorf("refused: %v", r)
			case tc.by != "" && (r == nil || r.Code != 554 || r.Enhanced != [3]int{5, 7, 1} || r.Check != Name || r.Close):
				t.Errorf("reply %v, want 554 5.7.1 by dnsbl, connection kept", r)
			case tc.by != "" && !strings.HasSuffix(r.Text, "blocked using "+tc.by):
				t.Errorf("reply %q does not name %s", r.Text, tc.by)
			}
		})
	}
	// Answers are cached: a second connection asks nothing.
	before := ns.Queries("2.2.0.192.bl.test")
	c.CheckConnect(context.Background(), session("192.0.2.2"))
	if after := ns.Queries("2.2.0.192.bl.test"); after != before {
		t.Errorf("cached answer queried again (%d -> %d)", before, after)
	}
	// Trusted and allowlisted clients are never looked up, nor clients of
	// the submission listener.
	for _, s := range []*pipeline.Session{{Addr: netip.MustParseAddr("192.0.2.33"), Trusted: true},
		{Addr: netip.MustParseAddr("192.0.2.33"), Allowlisted: true}, {Addr: netip.MustParseAddr("192.0.2.33"), Listener: "submission"}} {
		if r := c.CheckConnect(context.Background(), s); r != nil {
			t.Errorf("refused %+v: %v", s, r)
		}
	}
	if n := ns.Queries("33.2.0.192.bl.test"); n != 0 {
		t.Errorf("trusted client looked up %d times", n)
	}
}

// fakeResolver answers from a map it can change between calls.
type fakeResolver struct {
	mu sync.Mutex
	m  map[string][]netip.Addr
}

func (f *fakeResolver) A(_ context.Context, name string) ([]netip.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.m[name], nil
}

func (f *fakeResolver) set(name string, addrs ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[name] = nil
	for _, a := range addrs {
		f.m[name] = append(f.m[name], netip.MustParseAddr(a))
	}
}

// TestHealth: a zone that lists 127.0.0.1 lists everybody; it is
// disabled with a warning, and enabled again once it stops.
func TestHealth(t *testing.T) {
	fr := &fakeResolver{m: map[string][]netip.Addr{}}
	fr.set("2.0.0.127.good.test", "127.0.0.2")
	fr.set("1.0.0.127.world.test", "127.0.0.2")
	fr.set("2.0.0.127.world.test", "127.0.0.2")
	fr.set("7.2.0.192.world.test", "127.0.0.2")
	var log bytes.Buffer
	c, err := New(Options{Zones: []string{"good.test", "world.test", "quiet.test"}, Resolver: fr,
		Log: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if r := c.CheckConnect(context.Background(), session("192.0.2.7")); r == nil {
		t.Fatal("before the health check the listing counts")
	}
	c.CheckHealth(context.Background())
	if d := c.Disabled(); !slices.Equal(d, []string{"world.test"}) {
		t.Errorf("disabled %v", d)
	}
	if r := c.CheckConnect(context.Background(), session("192.0.2.7")); r != nil {
		t.Errorf("a disabled zone refused: %v", r)
	}
	out := log.String()
	if !strings.Contains(out, "zone=world.test") || !strings.Contains(out, "disabled") || !strings.Contains(out, "zone=quiet.test") {
		t.Errorf("log lacks the warnings:\n%s", out)
	}
	fr.set("1.0.0.127.world.test")
	c.CheckHealth(context.Background())
	if d := c.Disabled(); len(d) != 0 {
		t.Errorf("still disabled %v", d)
	}
	if r := c.CheckConnect(context.Background(), session("192.0.2.7")); r == nil {
		t.Error("a re-enabled zone does not count")
	}
}

// FuzzParseEntry: any item parses or fails cleanly; a parsed one has a
// zone that fits the IPv6 query name and a weight that is not zero.
func FuzzParseEntry(f *testing.F) {
	for _, s := range []string{"zen.spamhaus.org*3", "b.example=127.0.0.[2..11;20]*-2", "a.b=1.2.3.4", "x*", "=*"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := ParseEntry(s)
		if err != nil {
			return
		}
		if e.Weight == 0 || len(queryName(netip.MustParseAddr("2001:db8::1"), e.Zone)) > 253 || e.Zone != strings.ToLower(e.Zone) {
			t.Errorf("ParseEntry(%q) = %+v", s, e)
		}
	})
}
