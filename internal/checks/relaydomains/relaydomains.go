// Package relaydomains refuses recipients outside the configured `domains`
// unless the client may relay (trusted network or authenticated), so the
// gateway is never an open relay (RFC 5321 §3.6.2, RFC 2505).
package relaydomains

import (
	"context"
	"strings"

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
func (c *Check) CheckRcpt(_ context.Context, s *pipeline.Session, rcpt string) *reply.Reply {
	if s.Trusted || s.Account != "" || c.Local(rcpt) {
		return nil
	}
	r := reply.RelayDenied
	r.Text = "<" + rcpt + ">: Relay access denied"
	return &r
}

// Local reports whether rcpt is in one of our domains. The bare
// "postmaster" (RFC 5321 §4.5.1) is always ours.
func (c *Check) Local(rcpt string) bool {
	at := strings.LastIndexByte(rcpt, '@')
	if at < 0 {
		return strings.EqualFold(rcpt, "postmaster")
	}
	_, ok := c.domains[strings.ToLower(strings.TrimSuffix(rcpt[at+1:], "."))]
	return ok
}
