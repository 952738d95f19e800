package detect

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"mxguard/internal/config"
	"mxguard/internal/events"
)

// externalEvents are the events other components raise through StartEvent,
// such as the delivery manager's mail_server_down and org_down. The engine
// does not count them; it records them in its store, its metrics and its
// OnChange stream like its own, so alerts, the console and the demo
// narrator see one stream of events.
type externalEvents struct {
	mu     sync.Mutex
	active map[int64]events.Event
}

func (x *externalEvents) add(rec events.Event) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.active[rec.ID]; ok {
		return false
	}
	if x.active == nil {
		x.active = make(map[int64]events.Event)
	}
	x.active[rec.ID] = rec
	return true
}

func (x *externalEvents) get(id int64) (events.Event, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	rec, ok := x.active[id]
	return rec, ok
}

func (x *externalEvents) find(typ, source string) int64 {
	x.mu.Lock()
	defer x.mu.Unlock()
	for id, rec := range x.active {
		if rec.Type == typ && rec.Source == source {
			return id
		}
	}
	return 0
}

// remove reports whether id was active, so that of two concurrent EndEvent
// calls only one counts and reports the end.
func (x *externalEvents) remove(id int64) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	_, ok := x.active[id]
	delete(x.active, id)
	return ok
}

// errOwnType refuses external events of the types the engine's rules
// raise: two writers of one event type would contradict each other.
func errOwnType(typ string) error {
	if typ == "" {
		return errors.New("detect: event without a type")
	}
	if _, ok := kindOf(typ); ok {
		return fmt.Errorf("detect: %s events are raised by the engine's own rules", typ)
	}
	return nil
}

// StartEvent records an event that another component detected, such as
// mail_server_down (source: the server address as configured). No rule
// raises such events, so rule is empty and its actions are
// Options.SystemActions (alert, when alerts are configured). The event is in the store when StartEvent returns: its
// caller is a background component that needs the ID, not an SMTP
// session. On a store error nothing is recorded and the caller may retry.
func (e *Engine) StartEvent(ctx context.Context, typ, source, service string, detail map[string]any) (int64, error) {
	return e.StartRuleEvent(ctx, "", typ, source, service, detail)
}

// StartRuleEvent is StartEvent for an event of a rule that another
// component judges (outbound_queue: the queue monitor), named in the
// event's rule field; the event lists that rule's actions (alert), which
// the component leaves to OnChange's listener.
func (e *Engine) StartRuleEvent(ctx context.Context, rule, typ, source, service string, detail map[string]any) (int64, error) {
	if err := errOwnType(typ); err != nil {
		return 0, err
	}
	rec := events.Event{
		Type: typ, Rule: rule, Mode: events.ModeEnforce, Status: events.StatusActive, StartedAt: e.clock.Now(),
		Source: source, Service: service, Actions: e.externalActions(rule), Node: e.node, Detail: maps.Clone(detail),
	}
	if rec.Detail == nil {
		rec.Detail = map[string]any{}
	}
	if e.store != nil {
		if err := e.store.Insert(ctx, &rec); err != nil {
			return 0, fmt.Errorf("detect: store %s event of %s: %w", typ, source, err)
		}
	} else {
		rec.ID = e.nextID.Add(1)
	}
	e.ext.add(rec)
	if e.metrics != nil {
		e.metrics.Events.WithLabelValues(typ).Inc()
		e.metrics.EventsActive.WithLabelValues(typ).Inc()
	}
	e.log.Warn("detect: event started", "id", rec.ID, "type", typ, "source", source, "service", service)
	e.emit(Change{Type: ChangeEventStarted, Event: copyEvent(rec)})
	return rec.ID, nil
}

// externalActions are the actions an event of another component lists:
// those of its rule, or the system actions when no rule raised it.
func (e *Engine) externalActions(rule string) []string {
	s := e.setup.Load()
	as := s.system
	if rule != "" {
		as = nil
		if i := slices.IndexFunc(s.rules, func(r config.Rule) bool { return r.Name == rule }); i >= 0 {
			as = s.rules[i].Actions
		}
	}
	return append([]string{}, as...)
}

// EndEvent ends an event StartEvent (or ActiveEvent) returned. It returns
// an error wrapping events.ErrNotFound for an ID that is not such an active
// event; on a store error the event stays active and the call may be
// retried.
func (e *Engine) EndEvent(ctx context.Context, id int64) error {
	rec, ok := e.ext.get(id)
	if !ok {
		return fmt.Errorf("detect: end event %d: %w", id, events.ErrNotFound)
	}
	now := e.clock.Now()
	rec.Status, rec.EndedAt = events.StatusEnded, &now
	if e.store != nil {
		if err := e.store.Update(ctx, rec); err != nil {
			return fmt.Errorf("detect: end %s event %d of %s: %w", rec.Type, id, rec.Source, err)
		}
	}
	if !e.ext.remove(id) {
		return nil // a concurrent EndEvent reported it
	}
	if e.metrics != nil {
		e.metrics.EventsActive.WithLabelValues(rec.Type).Dec()
	}
	e.log.Info("detect: event ended", "id", id, "type", rec.Type, "source", rec.Source)
	e.emit(Change{Type: ChangeEventEnded, Event: copyEvent(rec)})
	return nil
}

// ActiveEvent returns the ID of the active event of typ and source, 0 if
// there is none. The engine leaves events of types it does not count alone
// at start (New), so after a restart this is how their component takes
// them over: the event found can be ended with EndEvent.
func (e *Engine) ActiveEvent(ctx context.Context, typ, source string) (int64, error) {
	if err := errOwnType(typ); err != nil {
		return 0, err
	}
	if id := e.ext.find(typ, source); id != 0 || e.store == nil {
		return id, nil
	}
	res, err := e.store.Query(ctx, events.Query{
		Type: typ, Source: source, Status: events.StatusActive, Sort: "started_at", Order: "desc", Limit: 1,
	})
	if err != nil {
		return 0, fmt.Errorf("detect: look up active %s event of %s: %w", typ, source, err)
	}
	if len(res.Events) == 0 {
		return 0, nil
	}
	rec := res.Events[0]
	if e.ext.add(rec) && e.metrics != nil {
		// Active again in this process's gauge; its start was counted by
		// the run that started it.
		e.metrics.EventsActive.WithLabelValues(rec.Type).Inc()
	}
	return rec.ID, nil
}

// copyEvent is the copy an OnChange receiver may keep.
func copyEvent(rec events.Event) *events.Event {
	rec.Actions = slices.Clone(rec.Actions)
	rec.Detail = maps.Clone(rec.Detail)
	return &rec
}
