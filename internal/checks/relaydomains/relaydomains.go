// Package relaydomains refuses recipients outside the configured `domains`
// unless the client may relay (trusted network or authenticated), so the
// gateway is never an open relay (RFC 5321 §3.6.2, RFC 2505).
package relaydomains

import (
	"context"
	"strings"

	"mxguard/internal/address"
	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// Check implements pipeline.RcptCheck.
type Check struct {
	domains map[string]struct{}
}

var _ pipeline.RcptCheck = (*Check)(nil)

// New returns a check accepting the given domains (case-insensitive).
func New(domains []string) *Check {
	c := &Check{domains: make(map[string]struct{}, len(domains))}
	for _, d := range domains {
		c.domains[strings.ToLower(strings.TrimSuffix(d, "."))] = struct{}{}
	}
	return c
}

// Name is the metric label.
func (*Check) Name() string { return "relay_domains" }

// CheckRcpt answers 554 5.7.1 for a foreign domain from an untrusted client.
func (c *Check) CheckRcpt(_ context.Context, s *pipeline.Session, rcpt address.Mailbox) *reply.Reply {
	if s.MayRelay() || c.Local(rcpt) {
		return nil
	}
	return reply.RelayDenied.WithText("<" + rcpt.String() + ">: Relay access denied")
}

// Local reports whether rcpt is in one of our domains. The parser has
// lowercased the domain and removed a trailing dot; the bare "postmaster"
// (RFC 5321 §4.5.1) is always ours.
func (c *Check) Local(rcpt address.Mailbox) bool {
	if rcpt.Domain == "" {
		return rcpt.Local == "postmaster"
	}
	_, ok := c.domains[rcpt.Domain]
	return ok
}
