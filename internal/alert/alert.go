// Package alert tells operators about events (INTERFACE.md §2 alerts,
// DESIGN.md "Alerts"): a webhook (JSON, HMAC-signed) and an email per
// event start and end, capped per channel at max_per_minute over any 60 s,
// with one digest a minute for what goes past the cap. Sending happens on
// one goroutine per channel behind a bounded queue, so an alert never
// delays mail: Notify never blocks. See README.md.
package alert

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mxguard/internal/events"
	"mxguard/internal/metrics"
	"mxguard/internal/ruletype"
)

// Kinds of alert message (the webhook body's "alert").
const (
	Started = "started"
	Ended   = "ended"
	Digest  = "digest"
)

// Channel names (the metrics' channel label).
const (
	ChannelWebhook = "webhook"
	ChannelEmail   = "email"
)

// Results counted in mxguard_alerts_total.
const (
	resultSent    = "sent"
	resultFailed  = "failed"
	resultDropped = "dropped"
)

const (
	// DefaultMaxPerMinute is alerts.max_per_minute's default.
	DefaultMaxPerMinute = 20
	// capWindow is the span max_per_minute counts over, and the least time
	// between two digests of a channel.
	capWindow = time.Minute
	// queueSize bounds what waits for a channel's goroutine; maxDigest
	// bounds one digest. Past them an alert is dropped and counted.
	queueSize = 1024
	maxDigest = 1000
)

// Clock gives the dispatcher its notion of now (the rate cap); tests
// inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Settings are what alerts.* configures; Configure replaces them on a
// reload.
type Settings struct {
	Webhook Webhook
	Email   Email
	// MinImpact: an "ended" alert is sent only for an event whose impact
	// reached it (started alerts are always sent).
	MinImpact int64
	// MaxPerMinute caps the messages of each channel over any 60 s;
	// 0 means DefaultMaxPerMinute.
	MaxPerMinute int
	// ConsoleURL is the web console's base ("http://127.0.0.1:8025"); the
	// email links each event as ConsoleURL/events/ID. Empty: no link.
	ConsoleURL string
	// Hostname names this host in the email's EHLO and Message-ID.
	Hostname string
}

// Webhook is alerts.webhook: the URL to POST to, and the HMAC secret
// ("" sends unsigned).
type Webhook struct{ URL, Secret string }

// Email is alerts.email: recipients, sender (envelope and From) and the
// SMTP server (host:port) that relays the mail.
type Email struct {
	To     []string
	From   string
	Server string
}

// Options configure a Dispatcher.
type Options struct {
	Settings Settings
	Clock    Clock            // nil: the system clock
	Logger   *slog.Logger     // nil: discard
	Metrics  *metrics.Metrics // may be nil
	Version  string           // in the webhook's User-Agent
	// Timeout bounds one delivery attempt (an HTTP request, an SMTP
	// transaction); default 10 s.
	Timeout time.Duration
	// Attempts is how often a message is tried when it fails temporarily
	// (connection refused, timeout, HTTP 5xx or 429, SMTP 4xx); default 4.
	// Backoff is the wait before the first retry, doubled for each next
	// one; default 1 s (1 s, 2 s, 4 s).
	Attempts int
	Backoff  time.Duration
	// Tick is how often a channel looks whether its digest is due;
	// default 1 s.
	Tick time.Duration
}

// Dispatcher sends alerts; Notify is safe for concurrent use.
type Dispatcher struct {
	o        Options
	log      *slog.Logger
	settings atomic.Pointer[Settings]
	channels []*channel
	started  atomic.Bool
}

// New builds a dispatcher; Run sends what Notify queues.
func New(o Options) *Dispatcher {
	if o.Clock == nil {
		o.Clock = systemClock{}
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Attempts <= 0 {
		o.Attempts = 4
	}
	if o.Backoff <= 0 {
		o.Backoff = time.Second
	}
	if o.Tick <= 0 {
		o.Tick = time.Second
	}
	d := &Dispatcher{o: o, log: o.Logger}
	d.Configure(o.Settings)
	d.channels = []*channel{
		d.newChannel(ChannelWebhook, newWebhook(o), func(s *Settings) bool { return s.Webhook.URL != "" }),
		d.newChannel(ChannelEmail, newMailer(o), func(s *Settings) bool { return len(s.Email.To) > 0 }),
	}
	return d
}

// Configure applies new settings (a reload): the next message of each
// channel goes where they say. Alerts already queued keep their place.
func (d *Dispatcher) Configure(s Settings) {
	s.Email.To = slices.Clone(s.Email.To)
	if s.MaxPerMinute <= 0 {
		s.MaxPerMinute = DefaultMaxPerMinute
	}
	d.settings.Store(&s)
}

func (d *Dispatcher) current() *Settings { return d.settings.Load() }

// Notify queues the alert of an event that started or ended (kind Started
// or Ended) for every configured channel, and returns at once. An event
// alerts when it lists the alert action (the engine records it for the
// rules that alert and for the system events) and is not of a shadow rule
// (INTERFACE.md §3: a shadow event takes no action, no alert); an ended
// one only when its impact reached min_impact.
func (d *Dispatcher) Notify(kind string, ev events.Event) {
	s := d.current()
	switch {
	case kind != Started && kind != Ended:
		return
	case ev.Mode == events.ModeShadow || !slices.Contains(ev.Actions, ruletype.ActionAlert):
		return
	case kind == Ended && ev.Impact < s.MinImpact:
		return
	}
	for _, c := range d.channels {
		if c.enabled(s) {
			c.enqueue(item{kind: kind, ev: ev})
		}
	}
}

// Run sends the queued alerts until ctx is done: one goroutine per
// channel, so a slow webhook never holds up the email.
func (d *Dispatcher) Run(ctx context.Context) {
	if !d.started.CompareAndSwap(false, true) {
		panic("alert: Run called twice")
	}
	var wg sync.WaitGroup
	for _, c := range d.channels {
		wg.Go(func() { c.run(ctx) })
	}
	wg.Wait()
}

// message is what one delivery sends: the alert of one event, or a digest.
type message struct {
	kind   string // Started, Ended or Digest
	events []events.Event
}

// deliverer sends a message once; an error wrapping errPermanent is not
// retried (HTTP 4xx, SMTP 5xx).
type deliverer interface {
	deliver(ctx context.Context, s *Settings, m message) error
}

// errPermanent marks a failure that another attempt would repeat.
var errPermanent = errors.New("permanent failure")

type item struct {
	kind string
	ev   events.Event
}

// channel is one way of alerting, its queue, rate cap and digest.
type channel struct {
	d       *Dispatcher
	name    string
	out     deliverer
	enabled func(*Settings) bool
	queue   chan item
	counts  [3]prometheus.Counter // sent, failed, dropped; nil without metrics

	// Owned by the channel's goroutine (run).
	sent       []time.Time    // when each message of the last capWindow went out, oldest first
	pending    []events.Event // past the cap, for the next digest
	lastDigest time.Time

	dropLog atomic.Int64 // unix ns of the last "dropped" log line
}

func (d *Dispatcher) newChannel(name string, out deliverer, enabled func(*Settings) bool) *channel {
	c := &channel{d: d, name: name, out: out, enabled: enabled, queue: make(chan item, queueSize)}
	if m := d.o.Metrics; m != nil {
		for i, r := range []string{resultSent, resultFailed, resultDropped} {
			c.counts[i] = m.Alerts.WithLabelValues(name, r)
		}
	}
	return c
}

func (c *channel) count(result int, n int) {
	if c.counts[result] != nil {
		c.counts[result].Add(float64(n))
	}
}

// enqueue never blocks: a full queue drops the alert, counted and logged
// (at most one line a second, so a storm does not flood the log).
func (c *channel) enqueue(it item) {
	select {
	case c.queue <- it:
	default:
		c.dropped(1, "queue full")
	}
}

func (c *channel) dropped(n int, why string) {
	c.count(2, n)
	now := time.Now().UnixNano()
	if last := c.dropLog.Load(); now-last >= int64(time.Second) && c.dropLog.CompareAndSwap(last, now) {
		c.d.log.Warn("alert: alerts dropped", "channel", c.name, "count", n, "why", why)
	}
}

func (c *channel) run(ctx context.Context) {
	t := time.NewTicker(c.d.o.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if n := len(c.pending) + len(c.queue); n > 0 {
				c.d.log.Warn("alert: unsent alerts at shutdown", "channel", c.name, "count", n)
			}
			return
		case it := <-c.queue:
			c.take(ctx, it)
		case <-t.C:
			c.digestIfDue(ctx)
		}
	}
}

// take sends an alert at once while the channel is under its cap and no
// digest is waiting (alerts keep their order); otherwise it joins the
// next digest.
func (c *channel) take(ctx context.Context, it item) {
	s := c.d.current()
	if !c.enabled(s) {
		return // turned off by a reload since it was queued
	}
	now := c.d.o.Clock.Now()
	c.prune(now)
	if len(c.pending) == 0 && len(c.sent) < s.MaxPerMinute {
		c.send(ctx, s, now, message{kind: it.kind, events: []events.Event{it.ev}})
		return
	}
	if len(c.pending) >= maxDigest {
		c.dropped(1, "digest full")
		return
	}
	c.pending = append(c.pending, it.ev)
}

// digestIfDue sends the waiting digest once the cap has room again and a
// minute has passed since the last digest: a storm costs one message a
// minute per channel past the cap.
func (c *channel) digestIfDue(ctx context.Context) {
	if len(c.pending) == 0 {
		return
	}
	s := c.d.current()
	if !c.enabled(s) {
		c.pending = nil
		return
	}
	now := c.d.o.Clock.Now()
	c.prune(now)
	if len(c.sent) >= s.MaxPerMinute || now.Sub(c.lastDigest) < capWindow {
		return
	}
	evs := c.pending
	c.pending = nil
	c.lastDigest = now
	c.send(ctx, s, now, message{kind: Digest, events: evs})
}

// prune forgets the sends older than the cap's window.
func (c *channel) prune(now time.Time) {
	i := 0
	for i < len(c.sent) && now.Sub(c.sent[i]) >= capWindow {
		i++
	}
	c.sent = append(c.sent[:0], c.sent[i:]...)
}

// send delivers m, retrying temporary failures with exponential backoff
// (bounded attempts), and counts the result. The attempt counts toward the
// cap whatever its outcome.
func (c *channel) send(ctx context.Context, s *Settings, now time.Time, m message) {
	c.sent = append(c.sent, now)
	wait := c.d.o.Backoff
	var err error
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, c.d.o.Timeout)
		err = c.out.deliver(actx, s, m)
		cancel()
		if err == nil {
			c.count(0, 1)
			c.d.log.Info("alert: sent", "channel", c.name, "alert", m.kind, "events", eventIDs(m.events), "attempts", attempt)
			return
		}
		if errors.Is(err, errPermanent) || attempt >= c.d.o.Attempts || ctx.Err() != nil {
			break
		}
		c.d.log.Debug("alert: retrying", "channel", c.name, "alert", m.kind, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		wait *= 2
	}
	c.count(1, 1)
	c.d.log.Error("alert: failed", "channel", c.name, "alert", m.kind, "events", eventIDs(m.events), "err", err)
}

func eventIDs(evs []events.Event) string {
	if len(evs) == 1 {
		return fmt.Sprint(evs[0].ID)
	}
	return fmt.Sprintf("%d events from %d", len(evs), evs[0].ID)
}
