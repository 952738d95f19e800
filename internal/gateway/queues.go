package gateway

import (
	"context"
	"fmt"
	"slices"

	"mxguard/internal/config"
	"mxguard/internal/queuemon"
)

// queueRules are the outbound_queue rules of cfg, for the queue monitor.
func queueRules(cfg *config.Config) []queuemon.Rule {
	var out []queuemon.Rule
	for _, r := range cfg.EffectiveRules() {
		if r.Type == queuemon.EventType {
			out = append(out, queuemon.Rule{Name: r.Name, Queue: r.Queue, Threshold: r.Threshold, Window: r.Window})
		}
	}
	return out
}

// startQueues (re)starts the queue monitor for the outbound_queue rules of
// cfg; an event in progress is taken over by the new monitor (ActiveEvent).
// Caller holds g.mu or is Start.
func (g *Gateway) startQueues(cfg *config.Config) error {
	rules := queueRules(cfg)
	if g.Queues != nil && slices.Equal(rules, g.queueRules) {
		return nil
	}
	m, err := queuemon.New(queuemon.Options{
		Rules:   rules,
		Spool:   g.spoolSenders,
		Events:  g.Engine,
		Logger:  g.o.Logger.With("component", "queuemon"),
		Metrics: g.Metrics,
	})
	if err != nil {
		return fmt.Errorf("queue monitor: %w", err)
	}
	if g.queueStop != nil {
		g.queueStop()
	}
	ctx, stop := context.WithCancel(context.Background())
	g.Queues, g.queueRules, g.queueStop = m, rules, stop
	g.goRun(func() { m.Run(ctx) })
	return nil
}

// spoolSenders lists the envelope senders of the spooled messages: the
// "spool" queue.
func (g *Gateway) spoolSenders() []string {
	envs := g.spoolStore.List()
	out := make([]string, len(envs))
	for i, e := range envs {
		out[i] = e.From
	}
	return out
}
