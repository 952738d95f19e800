package spool

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mxguard/internal/metrics"
	"mxguard/internal/reply"
)

// Mode is what the front end does with a new transaction.
type Mode int

// Modes of a Decision.
const (
	// ModePassThrough relays the transaction to the downstream in session.
	ModePassThrough Mode = iota
	// ModeSpool accepts the message into the spool (Spool.Put, then 250).
	ModeSpool
	// ModeRefuse answers Decision.Reply.
	ModeRefuse
)

// Decision is the manager's answer for one transaction.
type Decision struct {
	Mode  Mode
	Reply *reply.Reply // ModeRefuse only; Cause says why, for the log
}

// State is the spool state of INTERFACE.md §5.
type State string

// States, in the precedence Status uses (first that applies wins):
//
//	suspended   the operator suspended the spool: no spooling (451 4.4.1
//	            while every server is down) and no unspooling; new mail
//	            still passes through while a server is up
//	delay       every server is down and spool.delay has not passed since
//	            the start of org_down: 451 4.4.1
//	full        every server is down, the delay is over, and the spool
//	            is full (Spool.Full: max_size reached, or a message was
//	            refused for lack of room since the last one left):
//	            452 4.3.1
//	spooling    every server is down, the delay is over: mail is spooled
//	unspooling  a server is up, messages wait and release is on
//	            (auto_unspool, or an unspool request)
//	off         a server is up and nothing is being released; with
//	            messages > 0 this means "held": auto_unspool is false and
//	            nobody asked for an unspool yet
const (
	StateOff        State = "off"
	StateDelay      State = "delay"
	StateSpooling   State = "spooling"
	StateSuspended  State = "suspended"
	StateFull       State = "full"
	StateUnspooling State = "unspooling"
)

// Status is the JSON of GET /api/v1/spool. Held bounces (held.go) are not
// in it: they are not in the spool; mxguard_spool_held_bounces counts them.
type Status struct {
	State    State `json:"state"`
	Messages int   `json:"messages"`
	Bytes    int64 `json:"bytes"`
	MaxBytes int64 `json:"max_bytes"`
}

// Causes carried by the replies of Decide, for the front end's log.
var (
	errDelay     = errors.New("spool: every server down, spool delay running")
	errSuspended = errors.New("spool: every server down, spooling suspended")
)

// ManagerOptions configures a Manager.
type ManagerOptions struct {
	Spool *Spool
	// Delay is spool.delay: how long after the start of org_down mail is
	// deferred before it is spooled, so that a short outage costs nothing.
	Delay time.Duration
	// UnspoolRate is unspool_rate in messages per second; 0 or less means
	// the default, 50.
	UnspoolRate int
	AutoUnspool bool
	Deliver     Deliverer
	Clock       Clock            // nil: system clock
	Logger      *slog.Logger     // nil: discard
	Metrics     *metrics.Metrics // nil: no redelivery counter
	// Hostname names us in bounces (Reporting-MTA, MAILER-DAEMON@).
	Hostname string
	// Workers bounds concurrent deliveries while unspooling; default 4.
	Workers int
	// Backoff gives the wait before the next attempt after the n-th
	// failed one (n >= 1); nil means DefaultBackoff.
	Backoff func(n int) time.Duration
	// MaxAge is how long a message may stay before a temporary failure
	// turns into a bounce (4.4.7); default 5 days, Postfix's
	// maximal_queue_lifetime, within RFC 5321 §4.5.4.1's "at least 4-5
	// days".
	MaxAge time.Duration
}

// Defaults of ManagerOptions.
const (
	DefaultUnspoolRate = 50
	DefaultWorkers     = 4
	DefaultMaxAge      = 5 * 24 * time.Hour
)

// Manager is the spool state machine and the unspooler. The delivery
// manager reports OrgDown/OrgUp, the SMTP front end asks Decide for each
// transaction, the operator calls Suspend, Resume and Unspool (Handler),
// and Run releases the spool.
type Manager struct {
	o           ManagerOptions
	log         *slog.Logger
	clock       Clock
	rate        float64
	burst       float64
	wake        chan struct{}
	redelivered prometheus.Counter     // nil without metrics
	heldTotal   prometheus.Counter     // nil without metrics
	dropped     *prometheus.CounterVec // reason; nil without metrics

	mu        sync.Mutex
	orgDown   bool
	downSince time.Time
	suspended bool
	requested bool // unspool asked for by the operator
	noServer  bool // a delivery of this round found no server: pause
	tokens    float64
	refilled  time.Time
}

// NewManager returns a manager in state off (servers assumed up until the
// delivery manager says otherwise).
func NewManager(o ManagerOptions) *Manager {
	m := &Manager{o: o, log: o.Logger, clock: o.Clock, wake: make(chan struct{}, 1)}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.clock == nil {
		m.clock = systemClock{}
	}
	if m.o.UnspoolRate <= 0 {
		m.o.UnspoolRate = DefaultUnspoolRate
	}
	if m.o.Workers <= 0 {
		m.o.Workers = DefaultWorkers
	}
	if m.o.Backoff == nil {
		m.o.Backoff = DefaultBackoff
	}
	if m.o.MaxAge <= 0 {
		m.o.MaxAge = DefaultMaxAge
	}
	if m.o.Hostname == "" {
		m.o.Hostname = "localhost"
	}
	m.rate = float64(m.o.UnspoolRate)
	// A tenth of a second's worth of burst lets the workers overlap
	// deliveries while any one-second window stays within 1.1 × rate.
	m.burst = max(1, m.rate/10)
	if o.Metrics != nil {
		reg := o.Metrics.Registry
		m.redelivered = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mxguard_spool_redeliveries_total",
			Help: "Spooled messages delivered again after a crash interrupted their delivery (possible duplicates).",
		}))
		m.heldTotal = register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mxguard_spool_bounces_held_total",
			Help: "Bounces (DSNs) the downstream refused or never took, moved to the spool's bounces area for the operator.",
		}))
		m.dropped = register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxguard_spool_bounces_dropped_total",
			Help: "Undeliverable messages with the null sender that were dropped, by reason (null_sender: an incoming bounce, which is never bounced; held_full: our bounce, with the bounces area full).",
		}, []string{"reason"}))
		if m.dropped != nil {
			m.dropped.WithLabelValues(dropNullSender)
			m.dropped.WithLabelValues(dropHeldFull)
		}
		register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mxguard_spool_held_bounces",
			Help: "Bounces waiting in the spool's bounces area for the operator.",
		}, func() float64 { n, _ := m.o.Spool.HeldBounces(); return float64(n) }))
		// The limit beside mxguard_spool_bytes, so an alert can say "80 %
		// full" without knowing the configuration.
		register(reg, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mxguard_spool_max_bytes",
			Help: "The spool's size limit in bytes (spool.max_size); 0: no limit.",
		}, func() float64 { return float64(m.o.Spool.MaxBytes()) }))
	}
	return m
}

// register registers c, or returns the collector already registered
// under its name (a second manager on the same registry, after a reload).
func register[C prometheus.Collector](reg *prometheus.Registry, c C) C {
	if err := reg.Register(c); err != nil {
		var zero C
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
		return zero
	}
	return c
}

// OrgDown reports that every delivery server is down since since, the
// start of the org_down event: the delay timer counts from there
// (INTERFACE.md §3). Repeated calls keep the first since.
func (m *Manager) OrgDown(since time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.orgDown {
		m.orgDown, m.downSince = true, since
	}
}

// OrgUp reports that a delivery server is up again: new mail passes
// through at once and the backlog is released (if release is on).
func (m *Manager) OrgUp() {
	m.mu.Lock()
	m.orgDown = false
	m.mu.Unlock()
	m.poke()
}

// Suspend stops spooling (451 4.4.1 while every server is down) and
// unspooling until Resume.
func (m *Manager) Suspend() {
	m.mu.Lock()
	m.suspended = true
	m.mu.Unlock()
}

// Resume undoes Suspend.
func (m *Manager) Resume() {
	m.mu.Lock()
	m.suspended = false
	m.mu.Unlock()
	m.poke()
}

// Unspool asks for the backlog to be released even when auto_unspool is
// false. The request stays until the spool is empty: made while every
// server is down, or while suspended, it takes effect when a server is up
// and the spool resumed.
//
// It also puts the held bounces back into the spool for one more attempt
// (see held.go), for the operator who fixed what made the downstream
// refuse them.
func (m *Manager) Unspool() {
	if n, err := m.o.Spool.releaseHeld(); err != nil {
		m.log.Error("spool: cannot release held bounces", "released", n, "err", err)
	} else if n > 0 {
		m.log.Info("spool: held bounces back in the spool", "messages", n)
	}
	m.mu.Lock()
	m.requested = true
	m.mu.Unlock()
	m.poke()
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Decide tells the front end what to do with a new transaction.
func (m *Manager) Decide() Decision {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.orgDown {
		// Even while a backlog drains: new mail goes through at once.
		return Decision{Mode: ModePassThrough}
	}
	switch m.stateLocked() {
	case StateDelay:
		return Decision{Mode: ModeRefuse, Reply: reply.ServersDown.With(errDelay)}
	case StateSuspended:
		return Decision{Mode: ModeRefuse, Reply: reply.ServersDown.With(errSuspended)}
	case StateFull:
		return Decision{Mode: ModeRefuse, Reply: reply.SpoolFull.With(ErrFull)}
	default:
		return Decision{Mode: ModeSpool}
	}
}

// Status returns the state and the spool's size.
func (m *Manager) Status() Status {
	m.mu.Lock()
	st := m.stateLocked()
	m.mu.Unlock()
	n, b := m.o.Spool.Stats()
	return Status{State: st, Messages: n, Bytes: b, MaxBytes: m.o.Spool.MaxBytes()}
}

// stateLocked applies the precedence documented at State.
func (m *Manager) stateLocked() State {
	n, _ := m.o.Spool.Stats()
	switch {
	case m.suspended:
		return StateSuspended
	case m.orgDown && m.clock.Now().Before(m.downSince.Add(m.o.Delay)):
		return StateDelay
	case m.orgDown && m.o.Spool.Full():
		return StateFull
	case m.orgDown:
		return StateSpooling
	case n > 0 && (m.o.AutoUnspool || m.requested):
		return StateUnspooling
	default:
		return StateOff
	}
}

// Reconfigure applies a reloaded configuration: spool.delay (for an
// outage in progress too, still counted from the start of org_down),
// unspool_rate and auto_unspool.
func (m *Manager) Reconfigure(delay time.Duration, unspoolRate int, autoUnspool bool) {
	m.mu.Lock()
	m.o.Delay, m.o.AutoUnspool = delay, autoUnspool
	if unspoolRate <= 0 {
		unspoolRate = DefaultUnspoolRate
	}
	m.o.UnspoolRate = unspoolRate
	m.rate = float64(unspoolRate)
	m.burst = max(1, m.rate/10)
	m.tokens = min(m.tokens, m.burst)
	m.mu.Unlock()
	m.poke()
}

// releasing reports whether the unspooler may deliver now.
func (m *Manager) releasing() bool {
	return !m.orgDown && !m.suspended && (m.o.AutoUnspool || m.requested)
}
