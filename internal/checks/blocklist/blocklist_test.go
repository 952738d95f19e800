package blocklist

import (
	"context"
	"net/netip"
	"testing"

	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
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
