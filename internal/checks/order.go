// Package checks assembles the check pipeline. The order of the checks is
// decided here and only here: cheap, local decisions first, network
// look-ups later, content scanners last.
package checks

import (
	"fmt"
	"log/slog"

	"mxguard/internal/checks/attach"
	"mxguard/internal/checks/blocklist"
	"mxguard/internal/checks/builtin"
	"mxguard/internal/checks/clamd"
	"mxguard/internal/checks/dnsbl"
	"mxguard/internal/checks/eicar"
	"mxguard/internal/checks/gtube"
	"mxguard/internal/checks/relaydomains"
	"mxguard/internal/checks/rspamd"
	"mxguard/internal/checks/scanner"
	"mxguard/internal/checks/spamd"
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
//	data:    builtin (gtube, eicar, attach), clamd, rspamd, spamd
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

	// Data: the built-in checks always run (INTERFACE.md §3), in one MIME
	// walk; then the scanners, fastest first, so a virus costs no spam
	// scan: clamd (milliseconds), rspamd (tens of ms), spamd (hundreds).
	c.Data = append(c.Data, builtin.New(gtube.Inspector{}, eicar.Inspector{}, attach.New(cfg.Content.BlockedAttachments)))
	ct := cfg.Content
	so := scanner.Options{Timeout: ct.Timeout, MaxConcurrency: ct.MaxConcurrency, OnFailure: scanner.OnFailure(ct.OnFailure), Log: log.With("check", "content")}
	if d.Metrics != nil {
		so.Scans = d.Metrics.Scans
	}
	if ct.Clamd != "" {
		cl, err := clamd.Parse(ct.Clamd)
		if err != nil {
			return nil, err
		}
		c.Data = append(c.Data, clamd.New(cl, so))
	}
	if ct.Rspamd != "" {
		rc, err := rspamd.NewClient(ct.Rspamd, rspamd.Options{MaxConns: so.MaxConcurrency})
		if err != nil {
			return nil, err
		}
		c.Data = append(c.Data, rspamd.New(rc, so))
	}
	if ct.Spamd != "" {
		c.Data = append(c.Data, spamd.New(&spamd.Client{Address: ct.Spamd}, so))
	}
	return c, nil
}
