package queuemon

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"mxguard/internal/duration"
	"mxguard/internal/metrics"
)

// EventType is the event type the monitor raises.
const EventType = "outbound_queue"

// Interval is how often each queue is polled (INTERFACE.md §2: every 15s).
const Interval = 15 * time.Second

// Events is where the monitor records its events: the detection engine's
// events raised by components (detect.Engine.StartRuleEvent and friends).
type Events interface {
	StartRuleEvent(ctx context.Context, rule, typ, source, service string, detail map[string]any) (int64, error)
	EndEvent(ctx context.Context, id int64) error
	// ActiveEvent finds the event of typ and source a previous run left
	// active, 0 if none, so it is taken over instead of doubled.
	ActiveEvent(ctx context.Context, typ, source string) (int64, error)
}

// Clock gives the monitor its notion of now; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Rule is an outbound_queue rule.
type Rule struct {
	Name      string
	Queue     string // "spool", "dir:/path", "command:..."
	Threshold int
	// Window: the event ends once the queue has stayed below the
	// threshold for a whole window.
	Window time.Duration
}

// Options configure a Monitor.
type Options struct {
	Rules   []Rule
	Spool   SpoolFunc // mxguard's own spool; nil if there is none
	Events  Events
	Clock   Clock
	Logger  *slog.Logger
	Metrics *metrics.Metrics // may be nil
	// Sources replaces the queue a value names (tests); nil: Parse.
	Sources map[string]Source
}

// Monitor polls the queues of the outbound_queue rules.
type Monitor struct {
	events  Events
	clock   Clock
	log     *slog.Logger
	metrics *metrics.Metrics

	mu      sync.Mutex
	sources map[string]Source // queue value -> source
	rules   []*ruleState
}

type ruleState struct {
	Rule
	active     int64     // event id, 0 when none
	belowSince time.Time // first poll below the threshold while active
	lastErr    string    // the last poll error logged, so it is logged once
}

// New returns a Monitor for the rules; a queue value that names no source
// is an error.
func New(o Options) (*Monitor, error) {
	m := &Monitor{events: o.Events, clock: o.Clock, log: o.Logger, metrics: o.Metrics, sources: map[string]Source{}}
	if m.clock == nil {
		m.clock = systemClock{}
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	for _, r := range o.Rules {
		if _, ok := m.sources[r.Queue]; !ok {
			src, ok := o.Sources[r.Queue]
			if !ok {
				var err error
				if src, err = Parse(r.Queue, o.Spool); err != nil {
					return nil, fmt.Errorf("rule %s: %w", r.Name, err)
				}
			}
			m.sources[r.Queue] = src
			if m.metrics != nil {
				m.metrics.QueueMessages.WithLabelValues(r.Queue)
			}
		}
		m.rules = append(m.rules, &ruleState{Rule: r})
	}
	return m, nil
}

// Run polls every Interval until ctx ends; the first poll is at once.
func (m *Monitor) Run(ctx context.Context) {
	if len(m.rules) == 0 {
		return
	}
	t := time.NewTicker(Interval)
	defer t.Stop()
	for {
		m.Poll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll takes one snapshot of every queue and starts or ends events.
func (m *Monitor) Poll(ctx context.Context) {
	m.mu.Lock()
	defer m.mu.Unlock()
	snaps := map[string]Snapshot{}
	failed := map[string]error{}
	for q, src := range m.sources {
		s, err := src.Snapshot(ctx)
		if err != nil {
			failed[q] = err
			continue
		}
		snaps[q] = s
		if m.metrics != nil {
			m.metrics.QueueMessages.WithLabelValues(q).Set(float64(s.Messages))
		}
	}
	now := m.clock.Now()
	for _, r := range m.rules {
		if err, bad := failed[r.Queue]; bad {
			// A queue that cannot be read starts and ends nothing.
			if r.lastErr != err.Error() {
				m.log.Error("queue monitor: cannot read the queue", "rule", r.Name, "queue", r.Queue, "err", err)
				r.lastErr = err.Error()
			}
			continue
		}
		if r.lastErr != "" {
			m.log.Info("queue monitor: queue readable again", "rule", r.Name, "queue", r.Queue)
			r.lastErr = ""
		}
		m.judge(ctx, r, snaps[r.Queue], now)
	}
}

func (m *Monitor) judge(ctx context.Context, r *ruleState, s Snapshot, now time.Time) {
	if s.Messages >= r.Threshold {
		r.belowSince = time.Time{}
		if r.active != 0 {
			return
		}
		if id, err := m.events.ActiveEvent(ctx, EventType, r.Queue); err == nil && id != 0 {
			r.active = id // a previous run's event goes on
			return
		}
		detail := map[string]any{
			"rule": r.Name, "queue": r.Queue, "threshold": r.Threshold, "window": duration.Format(r.Window),
			"count": s.Messages, "top_senders": s.Senders,
		}
		if s.Sampled > 0 {
			detail["senders_sampled"] = s.Sampled
		}
		id, err := m.events.StartRuleEvent(ctx, r.Name, EventType, r.Queue, "", detail)
		if err != nil {
			m.log.Error("queue monitor: record event; retried at the next poll", "rule", r.Name, "queue", r.Queue, "err", err)
			return
		}
		r.active = id
		attrs := []any{"rule", r.Name, "queue", r.Queue, "messages", s.Messages, "threshold", r.Threshold}
		for i, sc := range s.Senders {
			attrs = append(attrs, fmt.Sprintf("sender%d", i+1), fmt.Sprintf("%s (%d)", sc.Sender, sc.Messages))
		}
		m.log.Warn("queue monitor: outbound queue over its threshold", attrs...)
		return
	}
	if r.active == 0 {
		return
	}
	if r.belowSince.IsZero() {
		r.belowSince = now
	}
	if now.Sub(r.belowSince) < r.Window {
		return
	}
	if err := m.events.EndEvent(ctx, r.active); err != nil {
		m.log.Error("queue monitor: end event; retried at the next poll", "rule", r.Name, "id", r.active, "err", err)
		return
	}
	m.log.Info("queue monitor: outbound queue back below its threshold", "rule", r.Name, "queue", r.Queue, "messages", s.Messages)
	r.active, r.belowSince = 0, time.Time{}
}
