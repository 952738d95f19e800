// Package checks assembles the check pipeline. The order of the checks is
// decided here and only here: cheap, local decisions first, network
// look-ups later, content scanners last.
package checks

import (
	"fmt"
	"log/slog"

	"mxguard/internal/checks/blocklist"
	"mxguard/internal/checks/dnsbl"
	"mxguard/internal/checks/relaydomains"
	"mxguard/internal/config"
	"mxguard/internal/metrics"
	"mxguard/internal/pipeline"
	"mxguard/internal/resolver"
)

// Deps are the inputs the checks are built from.
type Deps struct {
	Config   *config.Config
	Blocker  blocklist.Blocker
	Resolver *resolver.Resolver // every DNS look-up (dnsbl, reverse DNS)
	Metrics  *metrics.Metrics
	Logger   *slog.Logger
}

// Build returns the chain in its fixed order:
//
//	connect: blocklist (blocks, static addresses, host names by reverse DNS), dnsbl
//	rcpt:    relay_domains
func Build(d Deps) (*pipeline.Chain, error) {
	cfg := d.Config
	log := d.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &pipeline.Chain{Metrics: d.Metrics}
	c.Connect = append(c.Connect, &blocklist.Check{
		Static: cfg.BlockedPrefixes(), Blocker: d.Blocker,
		Hosts: cfg.BlockedHosts(), Reverse: d.Resolver, Log: log.With("check", "blocklist"),
	})
	if len(cfg.DNSBL.Zones) > 0 {
		bl, err := dnsbl.New(dnsbl.Options{Zones: cfg.DNSBL.Zones, Threshold: cfg.DNSBL.Threshold,
			Resolver: d.Resolver, Log: log.With("check", "dnsbl")})
		if err != nil {
			return nil, fmt.Errorf("dnsbl: %w", err)
		}
		c.Connect = append(c.Connect, bl)
	}
	c.Rcpt = append(c.Rcpt, relaydomains.New(cfg.Domains))
	return c, nil
}
