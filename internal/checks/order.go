// Package checks assembles the check pipeline. The order of the checks is
// decided here and only here: cheap, local decisions first, network
// look-ups later, content scanners last.
package checks

import (
	"net/netip"

	"mxguard/internal/checks/blocklist"
	"mxguard/internal/checks/relaydomains"
	"mxguard/internal/metrics"
	"mxguard/internal/pipeline"
)

// Deps are the inputs the checks are built from.
type Deps struct {
	Domains   []string
	Blocklist []netip.Prefix
	Blocker   blocklist.Blocker
	Metrics   *metrics.Metrics
}

// Build returns the chain in its fixed order.
func Build(d Deps) *pipeline.Chain {
	return &pipeline.Chain{
		Connect: []pipeline.ConnectCheck{
			&blocklist.Check{Static: d.Blocklist, Blocker: d.Blocker},
		},
		Rcpt: []pipeline.RcptCheck{
			relaydomains.New(d.Domains),
		},
		Metrics: d.Metrics,
	}
}
