// Package blocklist refuses, at connect, sources that are blocked: the
// temporary blocks of the detection engine and the static `blocklist` of the
// configuration, by address or by host name (forward-confirmed reverse
// DNS). Trusted and allowlisted sources are never refused here.
package blocklist

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// Blocker is what the check needs of the detection engine.
type Blocker interface {
	Blocked(addr netip.Addr) bool
	// Refused counts the refusal toward the impact of the blocking event.
	Refused(addr netip.Addr)
}

// Reverse is what the check needs of internal/resolver for host names.
type Reverse interface {
	// Confirmed returns the client's forward-confirmed reverse DNS names.
	Confirmed(ctx context.Context, addr netip.Addr) ([]string, error)
}

// Check implements pipeline.ConnectCheck.
type Check struct {
	Static  []netip.Prefix
	Blocker Blocker
	// Hosts are the blocklist entries that are host names, lowercased:
	// "mail.example.net" blocks that name, ".example.net" every name
	// below example.net. They match the client's forward-confirmed
	// reverse DNS name, looked up through Reverse.
	Hosts   []string
	Reverse Reverse
	// Timeout bounds the reverse look-up of one connection; default 2s.
	// A failed or slow look-up never blocks.
	Timeout time.Duration
	Log     *slog.Logger // nil: slog.Default
}

var _ pipeline.ConnectCheck = (*Check)(nil)

// Name is the metric label.
func (*Check) Name() string { return "blocklist" }

// CheckConnect answers 421 4.7.0 to a blocked source (INTERFACE.md §4).
func (c *Check) CheckConnect(ctx context.Context, s *pipeline.Session) *reply.Reply {
	if s.Trusted || s.Allowlisted {
		return nil
	}
	if c.Blocker != nil && c.Blocker.Blocked(s.Addr) {
		c.Blocker.Refused(s.Addr)
		r := reply.Blocked
		return &r
	}
	for _, p := range c.Static {
		if p.Contains(s.Addr) {
			r := reply.Blocklisted
			return &r
		}
	}
	if len(c.Hosts) > 0 && c.Reverse != nil {
		if name := c.hostMatch(ctx, s.Addr); name != "" {
			return reply.Blocklisted.With(fmt.Errorf("blocklist: client name %s", name))
		}
	}
	return nil
}

func (c *Check) hostMatch(ctx context.Context, addr netip.Addr) string {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	names, err := c.Reverse.Confirmed(ctx, addr)
	if err != nil {
		log := c.Log
		if log == nil {
			log = slog.Default()
		}
		log.DebugContext(ctx, "blocklist: reverse DNS failed, host names not checked", "addr", addr, "err", err)
		return ""
	}
	for _, n := range names {
		if MatchHost(c.Hosts, n) {
			return n
		}
	}
	return ""
}

// MatchHost reports whether name is one of hosts: an equal entry, or an
// entry ".domain" with name below domain (as Postfix's ".domain" tables
// match subdomains).
func MatchHost(hosts []string, name string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	for _, h := range hosts {
		if strings.HasPrefix(h, ".") {
			if strings.HasSuffix(name, h) {
				return true
			}
		} else if name == h {
			return true
		}
	}
	return false
}
