package relay

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"time"
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

// Clock gives the relay its notion of now for state changes; tests inject
// a fake one. (detect.Clock satisfies it.)
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
// Relay ends it when the server turns out to be up instead of leaving it
// active for ever, or keeps it instead of opening a second one.
type EventResumer interface {
	ActiveEvent(ctx context.Context, typ, source string) (int64, error)
}

// server is the health state of one configured server; guarded by
// Relay.mu.
type server struct {
	Server
	up      bool
	since   time.Time // of the current state
	lastErr string    // the last failure, kept after recovery
	fails   int       // consecutive failures
	removed bool      // no longer configured
	idle    []*pooled
	event   int64 // the open mail_server_down event, 0 if none
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

// setServersLocked installs a new server list, reusing the state of the
// servers that stay. It returns the idle connections to close.
func (r *Relay) setServersLocked(list []Server) []*pooled {
	now := r.clock.Now()
	old := make(map[string]*server, len(r.servers))
	for _, s := range r.servers {
		old[s.Address] = s
	}
	servers := make([]*server, 0, len(list))
	for _, cfg := range list {
		s := old[cfg.Address]
		if s == nil {
			s = &server{Server: cfg, up: true, since: now}
			r.setGauge(s)
		}
		s.Role = cfg.Role
		delete(old, cfg.Address)
		servers = append(servers, s)
	}
	var idle []*pooled
	for _, s := range r.servers {
		if old[s.Address] != s {
			continue // stays
		}
		s.removed = true
		idle = append(idle, s.idle...)
		s.idle = nil
		if s.event != 0 {
			r.retired = append(r.retired, s)
		}
		if r.o.Metrics != nil {
			r.o.Metrics.ServerUp.DeleteLabelValues(s.Address)
		}
	}
	r.servers = servers
	r.updateOrgLocked(now)
	return idle
}

func (r *Relay) setGauge(s *server) {
	if r.o.Metrics == nil {
		return
	}
	v := 0.0
	if s.up {
		v = 1
	}
	r.o.Metrics.ServerUp.WithLabelValues(s.Address).Set(v)
}

// markUpLocked records a success of s: the failure count restarts, and a
// down server is up again. It reports whether the state changed.
func (r *Relay) markUpLocked(s *server, now time.Time) bool {
	s.fails = 0
	if s.up || s.removed {
		return false
	}
	s.up, s.since = true, now
	r.setGauge(s)
	r.o.Logger.Info("delivery server up", "server", s.Address, "role", s.Role)
	r.updateOrgLocked(now)
	return true
}

// markFailedLocked records a failure of s; the DownAfter-th in a row marks
// it down. It reports whether the state changed and returns the idle
// connections to close: they are as dead as the server, or soon will be.
func (r *Relay) markFailedLocked(s *server, err error, now time.Time) (bool, []*pooled) {
	s.fails++
	s.lastErr = err.Error()
	if !s.up || s.removed || s.fails < r.o.DownAfter {
		return false, nil
	}
	s.up, s.since = false, now
	idle := s.idle
	s.idle = nil
	r.setGauge(s)
	r.o.Logger.Warn("delivery server down", "server", s.Address, "role", s.Role, "failures", s.fails, "err", s.lastErr)
	r.updateOrgLocked(now)
	return true, idle
}

// updateOrgLocked derives the organisation state from the servers'.
func (r *Relay) updateOrgLocked(now time.Time) {
	all := len(r.servers) > 0
	for _, s := range r.servers {
		if s.up {
			all = false
			break
		}
	}
	switch {
	case all && !r.orgDown:
		r.orgDown, r.orgSince = true, now
		r.o.Logger.Error("every delivery server is down")
	case !all && r.orgDown:
		r.orgDown = false
		r.o.Logger.Info("a delivery server is up again")
	}
}

// succeeded records a passive success: a connection that greeted and
// answered EHLO.
func (r *Relay) succeeded(ctx context.Context, s *server) {
	r.mu.Lock()
	changed := r.markUpLocked(s, r.clock.Now())
	r.mu.Unlock()
	if changed {
		r.sync(ctx)
	}
}

// failed records a passive failure: real traffic could not reach s, or
// its connection broke.
func (r *Relay) failed(ctx context.Context, s *server, err error) {
	r.mu.Lock()
	changed, idle := r.markFailedLocked(s, err, r.clock.Now())
	r.mu.Unlock()
	closeAll(idle)
	if changed {
		r.sync(ctx)
	}
}

func closeAll(idle []*pooled) {
	for _, p := range idle {
		p.c.close()
	}
}

// Init takes over the events a previous run left open and runs a first
// round of checks, so the servers' state (and OnOrgDown) is known before
// traffic and the spool rely on it. Run calls it if the caller did not.
func (r *Relay) Init(ctx context.Context) {
	r.initOnce.Do(func() {
		r.resume(ctx)
		r.CheckNow(ctx)
	})
}

// Run checks every server now and then every CheckInterval until ctx is
// done. Run it once per Relay.
func (r *Relay) Run(ctx context.Context) {
	r.Init(ctx)
	t := time.NewTicker(r.o.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.CheckNow(ctx)
	}
}

// CheckNow runs one round of active checks, all servers in parallel, and
// applies the results in server order; down servers are checked too, that
// is how they come back. It returns once the resulting events are written
// and callbacks made.
func (r *Relay) CheckNow(ctx context.Context) {
	r.mu.Lock()
	servers := r.servers
	r.mu.Unlock()
	errs := make([]error, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Go(func() { errs[i] = r.check(ctx, s.Address) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // shutting down: an interrupted check says nothing about a server
	}
	now := r.clock.Now()
	var idle []*pooled
	r.mu.Lock()
	for i, s := range servers {
		if errs[i] == nil {
			r.markUpLocked(s, now)
			continue
		}
		_, dead := r.markFailedLocked(s, errs[i], now)
		idle = append(idle, dead...)
	}
	r.mu.Unlock()
	closeAll(idle)
	// Always: besides this round's changes, it retries event writes that
	// failed before.
	r.sync(ctx)
}

// check is one active health check: connect, read the greeting, EHLO,
// QUIT, all within CheckTimeout. A 4xx or 5xx greeting or EHLO reply
// fails it like a refused connection (RFC 5321 §3.1: a 554 greeting
// means no service here).
func (r *Relay) check(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, r.o.CheckTimeout)
	defer cancel()
	conn, err := r.dials(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	// The client sets a deadline per command; closing the connection
	// when ctx ends bounds the check as a whole.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	failed := func(stage string, err error) error {
		if ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded) {
			// Whichever of the two deadlines fired first, "use of
			// closed network connection" or "i/o timeout" would
			// tell the operator less.
			return fmt.Errorf("%s: no answer within %v", stage, r.o.CheckTimeout)
		}
		return fmt.Errorf("%s: %w", stage, err)
	}
	c, err := newClient(conn, r.o.Hostname, r.o.CheckTimeout)
	if err != nil {
		conn.Close()
		return failed("greeting/EHLO", err)
	}
	defer c.close()
	if _, err := c.cmd(221, "QUIT"); err != nil {
		return failed("QUIT", err)
	}
	return nil
}

// resume takes over the events a previous run left open (EventResumer). A
// server whose mail_server_down event is still open starts down, as the
// previous run last saw it: the first check, made right after, brings it
// back and ends the event, or confirms it without a second event.
func (r *Relay) resume(ctx context.Context) {
	res, ok := r.o.Events.(EventResumer)
	if !ok {
		return
	}
	r.mu.Lock()
	servers := r.servers
	r.mu.Unlock()
	for _, s := range servers {
		id := r.lookUp(ctx, res, EventServerDown, s.Address)
		if id == 0 {
			continue
		}
		now := r.clock.Now()
		r.mu.Lock()
		if s.event == 0 && s.up && !s.removed {
			s.event = id
			s.up, s.since, s.fails = false, now, r.o.DownAfter
			s.lastErr = "down when the previous run stopped"
			r.setGauge(s)
			r.updateOrgLocked(now)
		}
		r.mu.Unlock()
	}
	if id := r.lookUp(ctx, res, EventOrgDown, r.orgSrc); id != 0 {
		r.mu.Lock()
		if r.orgEvent == 0 {
			r.orgEvent = id
		}
		r.mu.Unlock()
	}
}

func (r *Relay) lookUp(ctx context.Context, res EventResumer, typ, source string) int64 {
	id, err := res.ActiveEvent(ctx, typ, source)
	if err != nil {
		r.o.Logger.Error("relay: look up open event", "type", typ, "source", source, "err", err)
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
func (r *Relay) sync(ctx context.Context) {
	r.syncMu.Lock()
	defer r.syncMu.Unlock()
	// The change may come from a client session about to end; its event
	// must still be written.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), syncTimeout)
	defer cancel()

	// Callbacks first: they decide what happens to mail (spool delay).
	r.mu.Lock()
	orgDown, orgSince, notified := r.orgDown, r.orgSince, r.orgNotified
	r.orgNotified = orgDown
	r.mu.Unlock()
	switch {
	case orgDown && !notified && r.o.OnOrgDown != nil:
		r.o.OnOrgDown(orgSince)
	case !orgDown && notified && r.o.OnOrgUp != nil:
		r.o.OnOrgUp()
	}
	if r.o.Events == nil {
		return
	}

	r.mu.Lock()
	servers := slices.Concat(r.servers, r.retired)
	r.mu.Unlock()
	for _, s := range servers {
		r.mu.Lock()
		down, id := !s.up && !s.removed, s.event
		detail := map[string]any{"role": s.Role, "failures": s.fails, "error": s.lastErr}
		r.mu.Unlock()
		id, ok := r.syncEvent(ctx, EventServerDown, s.Address, down, id, detail)
		if ok {
			r.mu.Lock()
			s.event = id
			r.mu.Unlock()
		}
	}

	r.mu.Lock()
	r.retired = slices.DeleteFunc(r.retired, func(s *server) bool { return s.event == 0 })
	down, id := r.orgDown, r.orgEvent
	addrs := make([]string, len(r.servers))
	for i, s := range r.servers {
		addrs[i] = s.Address
	}
	r.mu.Unlock()
	if id, ok := r.syncEvent(ctx, EventOrgDown, r.orgSrc, down, id, map[string]any{"servers": addrs}); ok {
		r.mu.Lock()
		r.orgEvent = id
		r.mu.Unlock()
	}
}

// syncEvent opens (open, no id) or ends (not open, id) one event. It
// returns the new id and whether it changed.
func (r *Relay) syncEvent(ctx context.Context, typ, source string, open bool, id int64, detail map[string]any) (int64, bool) {
	switch {
	case open && id == 0:
		id, err := r.o.Events.StartEvent(ctx, typ, source, "smtp", detail)
		if err != nil {
			r.o.Logger.Error("relay: start event (retried at the next check)", "type", typ, "source", source, "err", err)
			return 0, false
		}
		return id, true
	case !open && id != 0:
		if err := r.o.Events.EndEvent(ctx, id); err != nil {
			r.o.Logger.Error("relay: end event (retried at the next check)", "type", typ, "source", source, "id", id, "err", err)
			return id, false
		}
		return 0, true
	}
	return id, false
}

// Servers returns the state of every configured server, in the order they
// are tried.
func (r *Relay) Servers() []ServerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]ServerStatus, len(r.servers))
	for i, s := range r.servers {
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
