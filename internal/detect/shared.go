package detect

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"mxguard/internal/events"
)

// Shared state of a cluster (internal/cluster): several nodes behind one
// MX record count a source together and enforce each other's blocks and
// suspensions. The engine stays the authority of its node: it counts and
// blocks locally first, tells Shared what it counted and decided (queued,
// never a network round trip on an observing goroutine), and takes what
// the other nodes decided through the Remote methods below, which never
// hand it back to Shared (no echo between nodes).

// Shared is what an engine shares with the other nodes.
type Shared interface {
	// Count is told of every counted observation. It must only queue.
	Count(c Count)
	// Publish is told of a block or suspension that took effect here
	// (ChangeBlockAdded, ChangeSuspensionAdded) or was lifted by the
	// operator (ChangeBlockRemoved, ChangeSuspensionRemoved), and of the
	// start and end of the rule events this node records
	// (ChangeEventStarted, ChangeEventEnded: the claim of an attack lasts
	// as long as its event). Expiry is not published: every node expires
	// a block by itself. It must only queue.
	Publish(c Change)
	// Claim asks, from the writer goroutine, whether this node records ev
	// (a rule's new event) or another node already records the same
	// attack; false makes the event a joined one, never stored here. It may
	// wait on the network within ctx; unreachable shared state means
	// true (each node protects alone).
	Claim(ctx context.Context, ev events.Event) bool
	// Refused is told of a refusal of a block whose event another node
	// records, for its impact there (AddImpact). It must only queue.
	Refused(rule, source string)
}

// Count is one counted observation of a rule, as Shared needs it to add it
// to the cluster's count of the same key: the fields are copied from the
// rule and the observation, nothing is allocated.
type Count struct {
	Rule      string
	Kind      Kind
	Threshold uint32
	Window    time.Duration
	At        int64      // unix ns
	Addr      netip.Addr // the observation's source
	Account   string     // per-account kinds
	Service   string     // brute_force counts per source and service
}

// CountKey is the key a count is shared under: the canonical source (and
// service, for brute_force), or the account. Every node spells it alike.
func (e *Engine) CountKey(c Count) string {
	switch {
	case c.Kind < kindEnd && kinds[c.Kind].perAccount:
		return c.Account
	case c.Kind == KindAuthFailure:
		return e.SourceKey(c.Addr) + "|" + c.Service
	}
	return e.SourceKey(c.Addr)
}

// share tells Shared of a counted observation.
func (e *Engine) share(r *boundRule, kind Kind, o *Observation, now int64) {
	e.shared.Count(Count{Rule: r.cfg.Name, Kind: kind, Threshold: r.threshold, Window: r.cfg.Window,
		At: now, Addr: o.Addr, Account: o.Account, Service: o.Service})
}

// publish tells Shared of a change made on this node.
func (e *Engine) publish(c Change) {
	if e.shared != nil {
		e.shared.Publish(c)
	}
}

// publishEvents tells Shared of the rule events the writer stored as
// started or ended (events of other components are not claimed).
func (e *Engine) publishEvents(notes []Change) {
	if e.shared == nil {
		return
	}
	for _, n := range notes {
		if (n.Type == ChangeEventStarted || n.Type == ChangeEventEnded) && n.Event != nil && n.Event.Rule != "" {
			e.shared.Publish(n)
		}
	}
}

// othersEvent reports whether rec is an event another node of the
// cluster records (a shared store holds every node's events): that node
// ends it, not this one.
func (e *Engine) othersEvent(rec events.Event) bool {
	return e.shared != nil && rec.Node != "" && rec.Node != e.node
}

// ReachedElsewhere is called by Shared when the cluster's count of c's
// rule and key reached the threshold although this node's own count did
// not: the rule fires here as if the observation had been local (its
// block in force at once; Claim then decides which node records the
// event). Nothing happens if the rule is gone or the key has an active
// event.
func (e *Engine) ReachedElsewhere(c Count) {
	if c.Kind == 0 || c.Kind >= kindEnd {
		return
	}
	s := e.setup.Load()
	var r *boundRule
	for _, br := range s.byKind[c.Kind] {
		if br.cfg.Name == c.Rule {
			r = br
		}
	}
	if r == nil {
		return
	}
	k, ok := e.keyOf(c.Kind, c.Addr, c.Account, c.Service, s.v6bits)
	if !ok {
		return
	}
	o := Observation{Kind: c.Kind, Addr: c.Addr, Account: c.Account, Service: c.Service}
	if ev := r.st.reach(k, e.hash.sum(k), e.nowNano(), r.threshold); ev != nil {
		e.fire(s, r, ev, o)
	}
}

// ApplyRemote applies a change another node made (see Shared.Publish)
// without publishing it again: a block or suspension is put in force
// unless one lasting at least as long already is; a removal lifts it here
// and deletes this node's stored copy, if any. Remote blocks and
// suspensions are kept in memory only: the node that made them stores
// them, and the shared state gives them back after a restart.
func (e *Engine) ApplyRemote(c Change) {
	switch {
	case c.Type == ChangeBlockAdded && c.Block != nil:
		e.applyRemoteBlock(*c.Block)
	case c.Type == ChangeBlockRemoved && c.Block != nil:
		p, err := parseSource(c.Block.Source)
		if err != nil {
			return
		}
		e.blocks.mu.Lock()
		b := e.blocks.remove(p)
		if b != nil {
			e.blocks.n.Add(-1)
			e.gen.Add(1)
		}
		e.blocks.mu.Unlock()
		if b != nil {
			e.setBlocksGauge()
			e.deleteStoredBlock(context.Background(), canonical(p))
			e.log.Info("detect: block removed on another node", "source", canonical(p))
		}
	case c.Type == ChangeSuspensionAdded && c.Suspension != nil:
		rec := *c.Suspension
		rec.Account = AccountName(rec.Account)
		until := rec.ExpiresAt.UnixNano()
		if rec.Account == "" || until <= e.clock.Now().UnixNano() {
			return
		}
		e.sus.mu.Lock()
		old := e.sus.m[rec.Account]
		if old == nil || old.until < until {
			e.sus.m[rec.Account] = &suspension{rec: rec, until: until}
		}
		e.sus.mu.Unlock()
	case c.Type == ChangeSuspensionRemoved && c.Suspension != nil:
		account := AccountName(c.Suspension.Account)
		e.sus.mu.Lock()
		s := e.sus.m[account]
		delete(e.sus.m, account)
		e.sus.mu.Unlock()
		if s != nil {
			if st := e.suspensionStore(); st != nil {
				_ = st.DeleteSuspension(context.Background(), account) // ErrNotFound: it was not stored here
			}
			e.log.Info("detect: suspension lifted on another node", "account", account)
		}
	}
}

func (e *Engine) applyRemoteBlock(rec events.Block) {
	p, err := parseSource(rec.Source)
	if err != nil {
		return
	}
	rec.Source = canonical(p)
	s := e.setup.Load()
	for _, q := range slices.Concat(s.trusted, s.allow) {
		if p.Overlaps(q) {
			// Never blocked, whoever asks (INTERFACE.md §3): a node with
			// other lists, or a forged message in Redis.
			e.log.Warn("detect: block from another node refused: it overlaps trusted_networks or allowlist", "source", rec.Source, "protected", q)
			return
		}
	}
	now := e.clock.Now().UnixNano()
	expires := rec.ExpiresAt.UnixNano()
	if expires <= now {
		return
	}
	nb := &block{prefix: p, rec: rec, expires: expires}
	e.blocks.mu.Lock()
	if old := e.blocks.get(p); old != nil && now < old.expires {
		if old.expires >= expires {
			e.blocks.mu.Unlock()
			return // ours (a rule's, with its event) or an earlier copy
		}
		// The other node's lasts longer. Blocks are never changed in
		// place (Blocks reads them unlocked): a copy replaces ours, still
		// tied to our event.
		c := *old
		c.expires, c.rec.ExpiresAt = expires, rec.ExpiresAt
		nb = &c
	}
	e.blocks.put(nb)
	e.gen.Add(1)
	e.blocks.mu.Unlock()
	e.setBlocksGauge()
	e.log.Info("detect: block from another node", "source", rec.Source, "rule", rec.Rule, "until", rec.ExpiresAt)
}

// AddImpact adds n refusals made on other nodes to the impact of the
// active event of rule and source this node records, and keeps it from
// ending (INTERFACE.md §3: impact is what was blocked while it lasted).
func (e *Engine) AddImpact(rule, source string, n int64) {
	if n <= 0 {
		return
	}
	now := e.nowNano()
	for _, ev := range e.trackedEvents() {
		if ev.rule != rule || ev.source != source {
			continue
		}
		ev.mu.Lock()
		ok := ev.live && !ev.joined && ev.endedAt.IsZero()
		if ok {
			ev.impact += n
			ev.last = max(ev.last, now)
			ev.dirty = true
		}
		ev.mu.Unlock()
		if ok {
			return
		}
	}
}

// joinedEvent reports whether the event a rule fired here was left to
// another node's record of the same attack (Shared.Claim said no).
func (ev *activeEvent) joinedEvent() bool {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.joined
}

// claim asks Shared, for each new event, whether this node records it;
// the events another node records become joined: never stored, never
// reported, still holding their key (no second fire here) and their
// block in memory. Caller holds flushMu.
func (e *Engine) claim(ctx context.Context, evs []*activeEvent) {
	if e.shared == nil {
		return
	}
	for _, ev := range evs {
		ev.mu.Lock()
		ask := ev.live && !ev.stored && !ev.joined && !ev.claimed
		rec := ev.recordLocked()
		ev.mu.Unlock()
		if !ask {
			continue
		}
		ok := e.shared.Claim(ctx, rec)
		ev.mu.Lock()
		ev.claimed = true
		if !ok {
			ev.joined, ev.stored, ev.toldStart = true, true, true
		}
		ev.mu.Unlock()
		if !ok {
			// mxguard_events_active counts the events this node records;
			// mxguard_events_total (a counter) still counts the firing.
			if e.metrics != nil {
				e.metrics.EventsActive.WithLabelValues(rec.Type).Dec()
			}
			e.log.Info("detect: attack already recorded by another node", "type", rec.Type, "rule", rec.Rule, "source", rec.Source)
		}
	}
}
