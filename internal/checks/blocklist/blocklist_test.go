package blocklist

import (
	"context"
	"net/netip"
	"testing"

	"github.com/miekg/dns"

	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
	"mxguard/internal/resolver"
	"mxguard/internal/testutil"
)

type fakeBlocker struct {
	blocked map[netip.Addr]bool
	refused int
}

func (f *fakeBlocker) Blocked(a netip.Addr) bool { return f.blocked[a] }
func (f *fakeBlocker) Refused(netip.Addr)        { f.refused++ }

func TestCheckConnect(t *testing.T) {
	dyn := netip.MustParseAddr("198.51.100.7")
	fb := &fakeBlocker{blocked: map[netip.Addr]bool{dyn: true}}
	c := &Check{Static: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}, Blocker: fb}
	tests := []struct {
		name string
		s    pipeline.Session
		want string // "" = admitted
	}{
		{"clean", pipeline.Session{Addr: netip.MustParseAddr("192.0.2.1")}, ""},
		{"static", pipeline.Session{Addr: netip.MustParseAddr("203.0.113.9")}, reply.Blocklisted.Text},
		{"dynamic", pipeline.Session{Addr: dyn}, reply.Blocked.Text},
		{"trusted wins", pipeline.Session{Addr: netip.MustParseAddr("203.0.113.9"), Trusted: true}, ""},
		{"allowlist wins", pipeline.Session{Addr: dyn, Allowlisted: true}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.CheckConnect(context.Background(), &tt.s)
			got := ""
			if r != nil {
				got = r.Text
				if r.Code != 421 || r.Enhanced != [3]int{4, 7, 0} {
					t.Errorf("reply %s, want 421 4.7.0", r.Error())
				}
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if fb.refused != 1 {
		t.Errorf("refusals reported to the engine = %d, want 1 (the dynamic block only)", fb.refused)
	}
}

// TestHostNames: host entries match the forward-confirmed reverse name
// from an in-process DNS server; a PTR that does not resolve back, a
// failing look-up or a trusted client is never refused by name.
func TestHostNames(t *testing.T) {
	ns := testutil.StartDNS(t)
	ns.Add(t,
		"10.2.0.192.in-addr.arpa. 300 IN PTR mail.bad.example.",
		"mail.bad.example. 300 IN A 192.0.2.10",
		"11.2.0.192.in-addr.arpa. 300 IN PTR relay7.spammy.example.",
		"relay7.spammy.example. 300 IN A 192.0.2.11",
		"12.2.0.192.in-addr.arpa. 300 IN PTR mail.bad.example.", // claims the name, not confirmed
		"13.2.0.192.in-addr.arpa. 300 IN PTR spammy.example.",   // the parent itself
		"spammy.example. 300 IN A 192.0.2.13",
		"14.2.0.192.in-addr.arpa. 300 IN PTR mx.good.example.",
		"mx.good.example. 300 IN A 192.0.2.14",
	)
	ns.Fail("15.2.0.192.in-addr.arpa", dns.RcodeServerFailure)
	c := &Check{Hosts: []string{"mail.bad.example", ".spammy.example"}, Reverse: resolver.New(resolver.Options{Server: ns.Addr})}
	for addr, refused := range map[string]bool{
		"192.0.2.10": true, "192.0.2.11": true, "192.0.2.12": false, "192.0.2.13": false,
		"192.0.2.14": false, "192.0.2.15": false, "192.0.2.16": false,
	} {
		r := c.CheckConnect(context.Background(), &pipeline.Session{Addr: netip.MustParseAddr(addr)})
		if (r != nil) != refused || r != nil && (r.Code != 421 || r.Enhanced != [3]int{4, 7, 0}) {
			t.Errorf("%s: %v, want refused %v (421 4.7.0)", addr, r, refused)
		}
	}
	if r := c.CheckConnect(context.Background(), &pipeline.Session{Addr: netip.MustParseAddr("192.0.2.10"), Trusted: true}); r != nil {
		t.Errorf("trusted refused by name: %v", r)
	}
	if !MatchHost([]string{"mail.bad.example"}, "MAIL.Bad.Example.") || MatchHost([]string{".bad.example"}, "notbad.example") {
		t.Error("MatchHost")
	}
}
