package detect

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mxguard/internal/duration"
	"mxguard/internal/events"
	"mxguard/internal/ruletype"
)

// activeEvent is the in-memory side of an event from the moment its rule
// fires until it is ended and written to the store. Impact and activity
// live here and reach the store in batches (Flush), not per refusal.
type activeEvent struct {
	key key
	// owner is the rule state whose shard maps key to this event; nil
	// after Reconfigure dropped the rule. Guarded by Engine.houseMu once
	// the event is tracked.
	owner *ruleState

	// Set by observe/fire before the event is tracked, then read-only.
	seq                        uint64 // order of firing (0: restored at start)
	typ, rule, source, service string
	mode, node                 string // events.ModeEnforce or ModeShadow; the node that fired it
	started                    time.Time
	detail                     map[string]any
	// Set by observe, read and cleared by fire: the count in the window
	// when the rule fired, and the observations that made it fire.
	count uint32
	clues []clue

	mu      sync.Mutex
	id      int64 // 0 until the writer stored the event (IDs come from the store)
	window  int64 // quiet time that ends the event, ns
	last    int64 // last counted observation or refusal, unix ns
	impact  int64
	actions []string
	endedAt time.Time // zero while active
	live    bool      // fire finished: actions taken, queued for the writer, tracked
	stored  bool      // the store has a row for the event
	// lifted: an operator lifted the suspension this event made; renew
	// does not put it back while the event lasts.
	lifted bool
	dirty  bool // changed since the last store write
	// claimed: Shared.Claim was asked; joined: it said another node
	// records this attack, so this event is never stored (shared.go).
	claimed, joined bool
	// wouldBlock: a shadow event whose rule would have blocked or
	// suspended: each later observation of its key is what it would have
	// refused (impact, and shadowCount when there are metrics).
	wouldBlock  bool
	shadowCount prometheus.Counter

	// What OnChange has been told; only the writer (under flushMu) reads
	// and sets these.
	toldStart, toldEnd bool
}

// touch records activity: a counted observation, or a refusal when refused.
func (ev *activeEvent) touch(now int64, refused bool) {
	ev.mu.Lock()
	if ev.endedAt.IsZero() {
		ev.last = max(ev.last, now)
		if refused || ev.wouldBlock {
			ev.impact++
			ev.dirty = true
			if ev.shadowCount != nil {
				ev.shadowCount.Inc()
			}
		}
	}
	ev.mu.Unlock()
}

// refuse counts a refusal of the event's block, and reports whether the
// event is a joined one (recorded by another node).
func (ev *activeEvent) refuse(now int64) (joined bool) {
	ev.touch(now, true)
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.joined
}

func (ev *activeEvent) addAction(a string) {
	ev.mu.Lock()
	if !slices.Contains(ev.actions, a) {
		ev.actions = append(ev.actions, a)
		slices.Sort(ev.actions)
		ev.dirty = true
	}
	ev.mu.Unlock()
}

func (ev *activeEvent) recordLocked() events.Event {
	r := events.Event{
		ID: ev.id, Type: ev.typ, Rule: ev.rule, Mode: ev.mode, Status: events.StatusActive,
		StartedAt: ev.started, Source: ev.source, Service: ev.service,
		Impact: ev.impact, Actions: slices.Clone(ev.actions), Node: ev.node, Detail: maps.Clone(ev.detail),
	}
	if r.Actions == nil {
		r.Actions = []string{}
	}
	if !ev.endedAt.IsZero() {
		t := ev.endedAt
		r.Status, r.EndedAt = events.StatusEnded, &t
	}
	return r
}

// fire completes an event that observe just created: it takes the rule's
// actions and hands the event (and its block) to the writer. It runs on
// the goroutine of the observation, a front end's session: it never waits
// on the store. The block is in force in memory at once, so the next
// Blocked call refuses; the writer stores the event, which gives it its
// ID, then the block, and only then reports both to OnChange and the log.
func (e *Engine) fire(s *setup, r *boundRule, ev *activeEvent, o Observation) {
	now := e.clock.Now()
	ev.seq = e.fired.Add(1)
	ev.typ, ev.rule, ev.service, ev.started = r.cfg.Type, r.cfg.Name, o.Service, now
	ev.mode, ev.node = events.ModeEnforce, e.node
	var src netip.Addr // an IPv4 source as an address: its lines need not repeat it
	if kinds[r.kind].perAccount {
		ev.source = o.Account
	} else {
		p := sourcePrefix(o.Addr, s.v6bits)
		ev.source = canonical(p)
		if p.IsSingleIP() {
			src = p.Addr()
		}
	}
	ev.detail = map[string]any{"threshold": r.cfg.Threshold, "window": duration.Format(r.cfg.Window), "count": int(ev.count),
		"evidence": evidence(r.kind, ev.clues, now.UnixNano(), r.st.window, src)}
	ev.clues = nil
	var b *block
	var su *suspension
	if r.shadow {
		e.shadow(s, r, ev, o)
	} else {
		b, su = e.enforce(s, r, ev, o, now)
	}
	ev.mu.Lock()
	ev.live = true
	if e.store == nil {
		// Nothing to store: the ID is ours to give.
		ev.id, ev.stored = e.nextID.Add(1), true
	}
	ev.mu.Unlock()
	e.track(ev)
	if e.metrics != nil {
		e.metrics.Events.WithLabelValues(ev.typ).Inc()
		e.metrics.EventsActive.WithLabelValues(ev.typ).Inc()
	}
	if b != nil {
		e.setBlocksGauge()
	}
	e.writes.addSuspension(su)
	e.writes.add(ev, b)
}

// enforce takes the actions of an enforcing rule that fired: the block
// and the suspension, in force in memory at once; they go to the writer
// with the event.
func (e *Engine) enforce(s *setup, r *boundRule, ev *activeEvent, o Observation, now time.Time) (b *block, su *suspension) {
	b = e.blockSource(s, r, ev, o, now)
	if r.alert {
		ev.addAction(ruletype.ActionAlert) // trusted sources too: their rules may still alert
	}
	return b, e.suspendAccount(r, ev, o, now)
}

// blocks: the rule blocks the source of o (never a trusted or allowlisted
// one, INTERFACE.md §3).
func (r *boundRule) blocks(s *setup, o Observation) bool {
	return r.block && o.Addr.IsValid() && !s.protected(o.Addr)
}

// suspends: the rule suspends the account it counts.
func (r *boundRule) suspends() bool { return r.suspend && kinds[r.kind].perAccount }

// blockSource takes the block action of ev's rule, if it has one, for the
// observation's source unless it is trusted or allowlisted, and lists it
// in ev. An existing block (manual, or of another event) is left alone;
// then this event took no block action of its own: nil.
func (e *Engine) blockSource(s *setup, r *boundRule, ev *activeEvent, o Observation, now time.Time) *block {
	if !r.blocks(s, o) {
		return nil
	}
	b := e.autoBlock(sourcePrefix(o.Addr, s.v6bits), r, ev, now)
	if b != nil {
		ev.addAction(ruletype.ActionBlock)
		e.publish(Change{Type: ChangeBlockAdded, Block: new(b.rec)})
	}
	return b
}

// suspendAccount takes the suspend action of ev's rule, if it has one and
// counts accounts, and lists it in ev. A suspension already in force for
// longer (manual, or of another event) is left alone, like a block: nil.
func (e *Engine) suspendAccount(r *boundRule, ev *activeEvent, o Observation, now time.Time) *suspension {
	if !r.suspends() {
		return nil
	}
	su := e.suspend(o.Account, r, ev, now)
	if su != nil {
		ev.addAction(ruletype.ActionSuspend)
		e.publish(Change{Type: ChangeSuspensionAdded, Suspension: new(su.rec)})
	}
	return su
}

// shadow completes the event of a shadow rule (rules[].mode: shadow): it
// lists the actions the rule would have taken and takes none, so nothing
// is blocked, suspended or alerted (alerts skip shadow events). A block
// would not have been taken for a trusted or allowlisted source, so none
// is listed then. Had it blocked or suspended, the observation that fired
// it and every later one of its key while the event lasts would have been
// refused: that is its impact, and mxguard_shadow_would_block_total.
func (e *Engine) shadow(s *setup, r *boundRule, ev *activeEvent, o Observation) {
	ev.mode = events.ModeShadow
	// The same conditions as enforce, so a shadow event lists exactly the
	// actions the rule would take enforcing (notify as alert, too).
	would := false
	if r.blocks(s, o) {
		ev.addAction(ruletype.ActionBlock)
		would = true
	}
	if r.alert {
		ev.addAction(ruletype.ActionAlert)
	}
	if r.suspends() {
		ev.addAction(ruletype.ActionSuspend)
		would = true
	}
	if !would {
		return
	}
	ev.mu.Lock()
	ev.wouldBlock, ev.shadowCount = true, r.wouldBlock
	if ev.impact == 0 {
		ev.impact = 1
	}
	ev.mu.Unlock()
	if r.wouldBlock != nil {
		r.wouldBlock.Inc()
	}
}

// renew re-applies block and suspend while an event lasts: a source that
// keeps attacking after its block expired (its refusals kept the event
// active) is blocked again instead of going on unhindered.
func (e *Engine) renew(s *setup, r *boundRule, ev *activeEvent, o Observation) {
	ev.mu.Lock()
	live := ev.live && ev.endedAt.IsZero()
	ev.mu.Unlock()
	if !live || ev.mode == events.ModeShadow {
		// fire is still taking the actions; or the event is a shadow
		// one whose rule enforces since a reload: it blocks nothing
		// (Reconfigure ended it; this observation started before).
		return
	}
	if r.block && o.Addr.IsValid() && !e.Blocked(o.Addr) {
		if b := e.blockSource(s, r, ev, o, e.clock.Now()); b != nil {
			e.setBlocksGauge()
			e.writes.add(nil, b)
		}
	}
	ev.mu.Lock()
	lifted := ev.lifted
	ev.mu.Unlock()
	if r.suspends() && !lifted && !e.Suspended(o.Account) {
		if su := e.suspendAccount(r, ev, o, e.clock.Now()); su != nil {
			e.writes.addSuspension(su)
			e.writes.add(nil, nil) // wake the writer
		}
	}
}

func (e *Engine) track(ev *activeEvent) {
	e.evMu.Lock()
	e.tracked[ev] = struct{}{}
	e.evMu.Unlock()
}

func (e *Engine) trackedEvents() []*activeEvent {
	e.evMu.Lock()
	defer e.evMu.Unlock()
	evs := make([]*activeEvent, 0, len(e.tracked))
	for ev := range e.tracked {
		evs = append(evs, ev)
	}
	return evs
}

// endQuiet ends every event quiet for one full window; Flush stores and
// reports the ends. Caller holds houseMu.
func (e *Engine) endQuiet(now time.Time) {
	ns := now.UnixNano()
	for _, ev := range e.trackedEvents() {
		if ev.quiet(ns) {
			e.endEvent(ev, func() bool { return ev.end(ns, now) })
		}
	}
}

// endShadow ends the active shadow events of st now: its rule enforces
// since a reload (Reconfigure). Caller holds houseMu.
func (e *Engine) endShadow(st *ruleState, now time.Time) {
	for _, ev := range e.trackedEvents() {
		if ev.owner == st {
			e.endEvent(ev, func() bool { return ev.endShadow(now) })
		}
	}
}

// endEvent ends ev if end says so, and takes it off its key. Caller holds
// houseMu.
func (e *Engine) endEvent(ev *activeEvent, end func() bool) {
	if st := ev.owner; st != nil {
		// Under the shard lock no observation can touch the event
		// between the check and the removal from the shard.
		h := st.h.sum(ev.key)
		sh := st.shard(h)
		sh.mu.Lock()
		if !end() {
			sh.mu.Unlock()
			return
		}
		if sh.events[ev.key] == ev {
			delete(sh.events, ev.key)
		}
		if c := sh.t.lookup(ev.key, h); c != nil {
			c.flags &^= flagEvent
		}
		sh.mu.Unlock()
	} else if !end() {
		return
	}
	if e.metrics != nil && !ev.joinedEvent() { // a joined event left the gauge when it joined
		e.metrics.EventsActive.WithLabelValues(ev.typ).Dec()
	}
}

func (ev *activeEvent) quiet(now int64) bool {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.live && ev.endedAt.IsZero() && now-ev.last >= ev.window
}

// endShadow marks a live shadow event ended.
func (ev *activeEvent) endShadow(now time.Time) bool {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if !ev.live || !ev.endedAt.IsZero() || ev.mode != events.ModeShadow {
		return false
	}
	ev.endedAt = now
	ev.dirty = true
	return true
}

// end marks the event ended if it is still quiet.
func (ev *activeEvent) end(ns int64, now time.Time) bool {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	if !ev.live || !ev.endedAt.IsZero() || ns-ev.last < ev.window {
		return false
	}
	ev.endedAt = now
	ev.dirty = true
	return true
}

// restoreEvents takes over the events a previous run left active: they go
// on collecting impact and end after a quiet window. An event whose rule
// is gone is ended now. Events of types this engine does not count are
// left alone. It returns the restored events by ID.
func (e *Engine) restoreEvents(ctx context.Context, s *setup) (map[int64]*activeEvent, error) {
	const page = 500
	var all []events.Event
	for off := 0; ; off += page {
		res, err := e.store.Query(ctx, events.Query{Status: events.StatusActive, Sort: "started_at", Order: "asc", Limit: page, Offset: off})
		if err != nil {
			return nil, fmt.Errorf("detect: load active events: %w", err)
		}
		all = append(all, res.Events...)
		if len(res.Events) < page {
			break
		}
	}
	now := e.clock.Now()
	byID := make(map[int64]*activeEvent)
	for _, rec := range all {
		k, ok := kindOf(rec.Type)
		if !ok || e.othersEvent(rec) {
			continue
		}
		r := s.rule(rec.Rule, rec.Type)
		var evKey key
		if r != nil {
			evKey, ok = e.sourceKey(k, rec.Source, rec.Service, s.v6bits)
		}
		if r == nil || !ok {
			rec.Status, rec.EndedAt = events.StatusEnded, &now
			if err := e.store.Update(ctx, rec); err != nil {
				return nil, fmt.Errorf("detect: end orphaned event %d: %w", rec.ID, err)
			}
			continue
		}
		ev := &activeEvent{
			key: evKey, typ: rec.Type, rule: rec.Rule, source: rec.Source, service: rec.Service,
			mode: rec.Mode, node: rec.Node, started: rec.StartedAt, detail: rec.Detail,
			id: rec.ID, window: r.st.window, last: now.UnixNano(), impact: rec.Impact,
			actions: rec.Actions, live: true, stored: true, toldStart: true,
		}
		r.st.adopt(ev)
		e.track(ev)
		byID[ev.id] = ev
		if e.metrics != nil {
			e.metrics.EventsActive.WithLabelValues(ev.typ).Inc()
		}
	}
	return byID, nil
}

// sourceKey parses an event's canonical source back into its counting key.
func (e *Engine) sourceKey(k Kind, source, service string, v6bits int) (key, bool) {
	var a netip.Addr // an account's source is its name
	if !kinds[k].perAccount {
		p, err := parseSource(source)
		if err != nil {
			return key{}, false
		}
		a = p.Addr()
	}
	return e.keyOf(k, a, source, service, v6bits)
}

// sourcePrefix is the prefix a source address is counted and blocked as.
func sourcePrefix(a netip.Addr, v6bits int) netip.Prefix {
	a = a.Unmap().WithZone("")
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(v6bits) // cannot fail: v6bits is validated, a is IPv6
	return p
}
