// Package delivery is the delivery manager: it keeps the state of every
// downstream server (up or down, since when, the last error), decides
// which servers a transaction tries and in what order (primaries, then
// failovers, skipping those that are down), checks every server
// actively, counts the failures of real traffic, and raises the
// mail_server_down and org_down events. The connections themselves are
// internal/relay's; the Manager is the relay.Router of every transaction.
// See README.md.
package delivery

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"mxguard/internal/address"
	"mxguard/internal/metrics"
	"mxguard/internal/relay"
)

// Event types raised by the delivery manager (INTERFACE.md §3).
const (
	EventServerDown = "mail_server_down"
	EventOrgDown    = "org_down"
)

// OrgSourceDefault is the org_down source when Options.Hostname is empty;
// otherwise the source is the hostname: the gateway's own name stands for
// the organisation's mail entry point, and tells apart cluster nodes that
// share one event store.
const OrgSourceDefault = "all-servers"

// syncTimeout bounds the event writes of one sync: the store must not hold
// a transaction (or a check round) hostage.
const syncTimeout = 10 * time.Second

// Clock gives the manager its notion of now for state changes; tests
// inject a fake one. (detect.Clock satisfies it.)
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// EventSink records the delivery manager's events; the detection engine
// implements it, so they land in the same store and reach the same
// observers as attack events.
type EventSink interface {
	StartEvent(ctx context.Context, typ, source, service string, detail map[string]any) (int64, error)
	EndEvent(ctx context.Context, id int64) error
}

// EventResumer is optionally implemented by an EventSink whose events
// outlive a restart: ActiveEvent returns the ID of the active event of typ
// and source that a previous run left open (0 when there is none), so the
// Manager ends it when the server turns out to be up instead of leaving it
// active for ever, or keeps it instead of opening a second one.
type EventResumer interface {
	ActiveEvent(ctx context.Context, typ, source string) (int64, error)
}

// Downstream is what the manager needs of the relay (*relay.Relay):
// transactions over a route, health checks on the same client, and idle
// connections dropped when their server goes down or away.
type Downstream interface {
	Begin(ctx context.Context, rt relay.Router, from address.Mailbox, o relay.MailOptions) (*relay.Txn, error)
	Probe(ctx context.Context, addr string, timeout time.Duration) error
	CloseIdle(addr string)
}

var _ Downstream = (*relay.Relay)(nil)

// Server is one downstream server as configured.
type Server struct {
	Address string // host:port exactly as configured; also the source of its mail_server_down event
	Role    string // "primary" or "failover"
}

// Options configures a Manager.
type Options struct {
	// Servers are tried in order, primaries first, then failovers, each in
	// configured order; servers that are down are skipped.
	Servers []Server
	Relay   Downstream // required
	// Hostname is the source of the org_down event; empty:
	// OrgSourceDefault.
	Hostname string
	Logger   *slog.Logger
	// CheckInterval is the period of the active health checks run by Run
	// (delivery.check_interval), default 5s.
	CheckInterval time.Duration
	// CheckTimeout bounds one check from connect to QUIT, default 5s but
	// never more than CheckInterval, so rounds do not pile up.
	CheckTimeout time.Duration
	// DownAfter consecutive failures (checks or real traffic) mark a server
	// down (delivery.down_after), default 3.
	DownAfter int
	Clock     Clock            // stamps state changes; nil: wall clock
	Events    EventSink        // records mail_server_down and org_down; nil: none
	Metrics   *metrics.Metrics // mxguard_server_up; may be nil
	// OnOrgDown is called once when every server is down, with the time the
	// last one went down; OnOrgUp once when a server is up again after
	// that. They are called in order, one at a time, and must return
	// quickly without calling back into the Manager on the same goroutine.
	OnOrgDown func(since time.Time)
	OnOrgUp   func()
}

// Manager keeps the delivery servers' state and routes transactions.
type Manager struct {
	o      Options
	clock  Clock
	orgSrc string // source of the org_down event

	mu sync.Mutex
	// servers is replaced as a whole by SetServers and never modified in
	// place, so it can be iterated after the lock is released; the
	// *server values it points to are guarded by mu.
	servers []*server
	byAddr  map[string]*server
	// route lists the addresses of the servers that are up, in order;
	// replaced as a whole on every change, so Route hands it out.
	route []string
	// retired are removed servers whose event is still open.
	retired  []*server
	orgDown  bool      // every server is down
	orgSince time.Time // when the last one went down
	// What sync has made the outside world see: the open org_down event
	// and whether OnOrgDown was called without OnOrgUp since.
	orgEvent    int64
	orgNotified bool

	// syncMu serialises sync, so events and callbacks happen one at a
	// time and in the order of the state changes.
	syncMu   sync.Mutex
	initOnce sync.Once
}

var _ relay.Router = (*Manager)(nil)

// server is the health state of one configured server; guarded by
// Manager.mu.
type server struct {
	Server
	up      bool
	since   time.Time // of the current state
	lastErr string    // the last failure, kept after recovery
	fails   int       // consecutive failures
	removed bool      // no longer configured
	event   int64     // the open mail_server_down event, 0 if none
}

// ServerStatus is one server in Servers and GET /api/v1/servers
// (INTERFACE.md §5).
type ServerStatus struct {
	Address   string    `json:"address"`
	Role      string    `json:"role"`
	State     string    `json:"state"` // "up" or "down"
	Since     time.Time `json:"since"` // start of the current state
	LastError string    `json:"last_error"`
}

// New returns a Manager; every server starts up.
func New(o Options) *Manager {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	orgSrc := o.Hostname
	if orgSrc == "" {
		orgSrc = OrgSourceDefault
	}
	if o.CheckInterval <= 0 {
		o.CheckInterval = 5 * time.Second
	}
	if o.CheckTimeout <= 0 {
		o.CheckTimeout = min(5*time.Second, o.CheckInterval)
	}
	if o.DownAfter <= 0 {
		o.DownAfter = 3
	}
	m := &Manager{o: o, clock: o.Clock, orgSrc: orgSrc}
	if m.clock == nil {
		m.clock = systemClock{}
	}
	m.mu.Lock()
	m.setServersLocked(o.Servers)
	m.mu.Unlock()
	return m
}

// Begin opens a downstream transaction from sender from on the first
// server that is up and can be reached (see relay.Relay.Begin). When no
// server can take it the error wraps relay.ErrUnavailable.
func (m *Manager) Begin(ctx context.Context, from address.Mailbox, o relay.MailOptions) (*relay.Txn, error) {
	return m.o.Relay.Begin(ctx, m, from, o)
}

// Route lists the servers that are up, in the order they are tried.
func (m *Manager) Route() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.route
}

// SetServers replaces the server list (config reload). A server that
// stays keeps its state; a new one starts up; the open event of a removed
// one is ended.
func (m *Manager) SetServers(servers []Server) {
	m.mu.Lock()
	removed := m.setServersLocked(servers)
	m.mu.Unlock()
	m.closeIdle(removed)
	m.sync(context.Background())
}

// setServersLocked installs a new server list, reusing the state of the
// servers that stay. It returns the addresses of the removed ones.
func (m *Manager) setServersLocked(list []Server) []string {
	now := m.clock.Now()
	old := m.byAddr
	m.byAddr = make(map[string]*server, len(list))
	servers := make([]*server, 0, len(list))
	for _, cfg := range list {
		s := old[cfg.Address]
		if s == nil {
			s = &server{Server: cfg, up: true, since: now}
			m.setGauge(s)
		}
		s.Role = cfg.Role
		m.byAddr[cfg.Address] = s
		servers = append(servers, s)
	}
	var removed []string
	for _, s := range m.servers {
		if m.byAddr[s.Address] == s {
			continue // stays
		}
		s.removed = true
		removed = append(removed, s.Address)
		if s.event != 0 {
			m.retired = append(m.retired, s)
		}
		if m.o.Metrics != nil {
			m.o.Metrics.ServerUp.DeleteLabelValues(s.Address)
		}
	}
	m.servers = servers
	m.updateLocked(now)
	return removed
}

func (m *Manager) setGauge(s *server) {
	if m.o.Metrics == nil {
		return
	}
	v := 0.0
	if s.up {
		v = 1
	}
	m.o.Metrics.ServerUp.WithLabelValues(s.Address).Set(v)
}

// markUpLocked records a success of s: the failure count restarts, and a
// down server is up again. It reports whether the state changed.
func (m *Manager) markUpLocked(s *server, now time.Time) bool {
	s.fails = 0
	if s.up || s.removed {
		return false
	}
	s.up, s.since = true, now
	m.setGauge(s)
	m.o.Logger.Info("delivery server up", "server", s.Address, "role", s.Role)
	m.updateLocked(now)
	return true
}

// markFailedLocked records a failure of s; the DownAfter-th in a row marks
// it down. It reports whether the state changed; the caller then closes
// the server's idle connections: they are as dead as the server, or soon
// will be.
func (m *Manager) markFailedLocked(s *server, err error, now time.Time) bool {
	s.fails++
	s.lastErr = err.Error()
	if !s.up || s.removed || s.fails < m.o.DownAfter {
		return false
	}
	s.up, s.since = false, now
	m.setGauge(s)
	m.o.Logger.Warn("delivery server down", "server", s.Address, "role", s.Role, "failures", s.fails, "err", s.lastErr)
	m.updateLocked(now)
	return true
}

// updateLocked derives the route and the organisation state from the
// servers'.
func (m *Manager) updateLocked(now time.Time) {
	route := make([]string, 0, len(m.servers))
	for _, s := range m.servers {
		if s.up {
			route = append(route, s.Address)
		}
	}
	m.route = route
	all := len(m.servers) > 0 && len(route) == 0
	switch {
	case all && !m.orgDown:
		m.orgDown, m.orgSince = true, now
		m.o.Logger.Error("every delivery server is down")
	case !all && m.orgDown:
		m.orgDown = false
		m.o.Logger.Info("a delivery server is up again")
	}
}

// Succeeded records a passive success: a connection that greeted and
// answered EHLO (relay.Router).
func (m *Manager) Succeeded(ctx context.Context, addr string) {
	m.mu.Lock()
	changed := false
	if s := m.byAddr[addr]; s != nil {
		changed = m.markUpLocked(s, m.clock.Now())
	}
	m.mu.Unlock()
	if changed {
		m.sync(ctx)
	}
}

// Failed records a passive failure: real traffic could not reach addr,
// or its connection broke or broke the protocol (relay.Router).
func (m *Manager) Failed(ctx context.Context, addr string, err error) {
	m.mu.Lock()
	changed := false
	if s := m.byAddr[addr]; s != nil {
		changed = m.markFailedLocked(s, err, m.clock.Now())
	}
	m.mu.Unlock()
	if changed {
		m.closeIdle([]string{addr})
		m.sync(ctx)
	}
}

func (m *Manager) closeIdle(addrs []string) {
	if m.o.Relay == nil {
		return
	}
	for _, a := range addrs {
		m.o.Relay.CloseIdle(a)
	}
}

// Init takes over the events a previous run left open and runs a first
// round of checks, so the servers' state (and OnOrgDown) is known before
// traffic and the spool rely on it. Run calls it if the caller did not.
func (m *Manager) Init(ctx context.Context) {
	m.initOnce.Do(func() {
		m.resume(ctx)
		m.CheckNow(ctx)
	})
}

// Run checks every server now and then every CheckInterval until ctx is
// done. Run it once per Manager.
func (m *Manager) Run(ctx context.Context) {
	m.Init(ctx)
	t := time.NewTicker(m.o.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.CheckNow(ctx)
	}
}

// CheckNow runs one round of active checks, all servers in parallel, and
// applies the results in server order; down servers are checked too, that
// is how they come back. A check that failed for a local reason
// (relay.ErrLocal) counts neither way. It returns once the resulting
// events are written and callbacks made.
func (m *Manager) CheckNow(ctx context.Context) {
	m.mu.Lock()
	servers := m.servers
	m.mu.Unlock()
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() { errs[i] = m.o.Relay.Probe(ctx, s.Address, m.o.CheckTimeout) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // shutting down: an interrupted check says nothing about a server
	}
	now := m.clock.Now()
	var dead []string
	m.mu.Lock()
	for i, s := range servers {
		switch {
		case errs[i] == nil:
			m.markUpLocked(s, now)
		case errors.Is(errs[i], relay.ErrLocal):
			m.o.Logger.Error("health check not made: local resource shortage", "server", s.Address, "err", errs[i])
		case m.markFailedLocked(s, errs[i], now):
			dead = append(dead, s.Address)
		}
	}
	m.mu.Unlock()
	m.closeIdle(dead)
	// Always: besides this round's changes, it retries event writes that
	// failed before.
	m.sync(ctx)
}

// resume takes over the events a previous run left open (EventResumer). A
// server whose mail_server_down event is still open starts down, as the
// previous run last saw it: the first check, made right after, brings it
// back and ends the event, or confirms it without a second event.
func (m *Manager) resume(ctx context.Context) {
	res, ok := m.o.Events.(EventResumer)
	if !ok {
		return
	}
	m.mu.Lock()
	servers := m.servers
	m.mu.Unlock()
	for _, s := range servers {
		id := m.lookUp(ctx, res, EventServerDown, s.Address)
		if id == 0 {
			continue
		}
		now := m.clock.Now()
		m.mu.Lock()
		if s.event == 0 && s.up && !s.removed {
			s.event = id
			s.up, s.since, s.fails = false, now, m.o.DownAfter
			s.lastErr = "down when the previous run stopped"
			m.setGauge(s)
			m.updateLocked(now)
		}
		m.mu.Unlock()
	}
	if id := m.lookUp(ctx, res, EventOrgDown, m.orgSrc); id != 0 {
		m.mu.Lock()
		if m.orgEvent == 0 {
			m.orgEvent = id
		}
		m.mu.Unlock()
	}
}

func (m *Manager) lookUp(ctx context.Context, res EventResumer, typ, source string) int64 {
	id, err := res.ActiveEvent(ctx, typ, source)
	if err != nil {
		m.o.Logger.Error("delivery: look up open event", "type", typ, "source", source, "err", err)
		return 0
	}
	return id
}

// sync makes the outside world match the state: OnOrgDown/OnOrgUp once
// per organisation outage, a mail_server_down event open exactly while a
// server is down, an org_down event open exactly while all are. It is
// idempotent and runs after every state change (and every check round),
// so a failed event write is retried, and a server that went down and up
// again before sync ran leaves no trace.
func (m *Manager) sync(ctx context.Context) {
	m.syncMu.Lock()
	defer m.syncMu.Unlock()
	// The change may come from a client session about to end; its event
	// must still be written.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), syncTimeout)
	defer cancel()

	// Callbacks first: they decide what happens to mail (spool delay).
	m.mu.Lock()
	orgDown, orgSince, notified := m.orgDown, m.orgSince, m.orgNotified
	m.orgNotified = orgDown
	m.mu.Unlock()
	switch {
	case orgDown && !notified && m.o.OnOrgDown != nil:
		m.o.OnOrgDown(orgSince)
	case !orgDown && notified && m.o.OnOrgUp != nil:
		m.o.OnOrgUp()
	}
	if m.o.Events == nil {
		return
	}

	m.mu.Lock()
	servers := slices.Concat(m.servers, m.retired)
	m.mu.Unlock()
	for _, s := range servers {
		m.mu.Lock()
		down, id := !s.up && !s.removed, s.event
		detail := map[string]any{"role": s.Role, "failures": s.fails, "error": s.lastErr}
		m.mu.Unlock()
		id, ok := m.syncEvent(ctx, EventServerDown, s.Address, down, id, detail)
		if ok {
			m.mu.Lock()
			s.event = id
			m.mu.Unlock()
		}
	}

	m.mu.Lock()
	m.retired = slices.DeleteFunc(m.retired, func(s *server) bool { return s.event == 0 })
	down, id := m.orgDown, m.orgEvent
	addrs := make([]string, len(m.servers))
	for i, s := range m.servers {
		addrs[i] = s.Address
	}
	m.mu.Unlock()
	if id, ok := m.syncEvent(ctx, EventOrgDown, m.orgSrc, down, id, map[string]any{"servers": addrs}); ok {
		m.mu.Lock()
		m.orgEvent = id
		m.mu.Unlock()
	}
}

// syncEvent opens (open, no id) or ends (not open, id) one event. It
// returns the new id and whether it changed.
func (m *Manager) syncEvent(ctx context.Context, typ, source string, open bool, id int64, detail map[string]any) (int64, bool) {
	switch {
	case open && id == 0:
		id, err := m.o.Events.StartEvent(ctx, typ, source, "smtp", detail)
		if err != nil {
			m.o.Logger.Error("delivery: start event (retried at the next check)", "type", typ, "source", source, "err", err)
			return 0, false
		}
		return id, true
	case !open && id != 0:
		if err := m.o.Events.EndEvent(ctx, id); err != nil {
			m.o.Logger.Error("delivery: end event (retried at the next check)", "type", typ, "source", source, "id", id, "err", err)
			return id, false
		}
		return 0, true
	}
	return id, false
}

// Servers returns the state of every configured server, in the order they
// are tried.
func (m *Manager) Servers() []ServerStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]ServerStatus, len(m.servers))
	for i, s := range m.servers {
		// Whole seconds in UTC, like the events' times: checks run
		// seconds apart, finer digits would only be noise.
		since := s.since.UTC().Truncate(time.Second)
		st := ServerStatus{Address: s.Address, Role: s.Role, State: "up", Since: since, LastError: s.lastErr}
		if !s.up {
			st.State = "down"
		}
		out[i] = st
	}
	return out
}
