// Package blocklist refuses, at connect, sources that are blocked: the
// temporary blocks of the detection engine and the static `blocklist` of the
// configuration. Trusted and allowlisted sources are never refused here.
package blocklist

import (
	"context"
	"net/netip"

	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// Blocker is what the check needs of the detection engine.
type Blocker interface {
	Blocked(addr netip.Addr) bool
	// Refused counts the refusal toward the impact of the blocking event.
	Refused(addr netip.Addr)
}

// Check implements pipeline.ConnectCheck.
type Check struct {
	Static  []netip.Prefix
	Blocker Blocker
}

var _ pipeline.ConnectCheck = (*Check)(nil)

// Name is the metric label.
func (*Check) Name() string { return "blocklist" }

// CheckConnect answers 421 4.7.0 to a blocked source (INTERFACE.md §4).
func (c *Check) CheckConnect(_ context.Context, s *pipeline.Session) *reply.Reply {
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
	return nil
}
