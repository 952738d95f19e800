package detect

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"mxguard/internal/events"
)

// Store writes leave the goroutine that made them: fire and renew (on a
// front end's session) put the new event and its block here and return;
// the writer (Run's writer goroutine, or whoever calls Flush) takes
// everything pending at once and writes it in as few transactions as
// possible (events.Apply). While one batch is being written the next one
// collects, so a flood of events costs one commit per batch, not one per
// row, and a slow or stuck store never slows the SMTP sessions: the
// blocks are in force in memory from the start.
//
// IDs come from the store (its AUTOINCREMENT; unique across nodes once
// events go to a shared database): an event has ID 0 in memory until the
// writer stored it. OnChange and the log hear of an event and its block
// only then, so what they report carries the ID. The admin API flushes
// before it lists, so it never shows an event without its ID.
//
// Crash semantics: a block reaches the store one write after it took
// effect; a crash in between loses it (and its event), and the source is
// not blocked after the restart until it crosses the threshold again. Run
// flushes on shutdown.

// writeQueue holds what fire and renew hand to the writer.
type writeQueue struct {
	mu     sync.Mutex
	events []*activeEvent
	// blocks holds the pending write of each source: a block to put, or
	// nil to delete it. The last write wins, so a block that expired
	// before it was written costs one delete. sus does the same for
	// accounts' suspensions.
	blocks pending[block]
	sus    pending[suspension]
	wake   chan struct{} // the writer goroutine's doorbell, capacity 1
}

// pending holds the write waiting for each key: a record to put, or nil
// to delete it.
type pending[T any] map[string]*T

// take empties p and returns what it held.
func (p *pending[T]) take() pending[T] {
	old := *p
	*p = make(pending[T], len(old))
	return old
}

// putBack returns writes that failed or could not be made yet, unless a
// newer write of the same key came meanwhile.
func (p pending[T]) putBack(old pending[T]) {
	for k, v := range old {
		if _, newer := p[k]; !newer {
			p[k] = v
		}
	}
}

func newWriteQueue() writeQueue {
	return writeQueue{blocks: make(pending[block]), sus: make(pending[suspension]), wake: make(chan struct{}, 1)}
}

func (q *writeQueue) locked(f func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	f()
}

// add queues a new event and/or a block to put, and wakes the writer.
func (q *writeQueue) add(ev *activeEvent, b *block) {
	q.locked(func() {
		if ev != nil {
			q.events = append(q.events, ev)
		}
		if b != nil {
			q.blocks[b.rec.Source] = b
		}
	})
	select {
	case q.wake <- struct{}{}:
	default: // already rung: the writer takes this with the rest
	}
}

// addSuspension queues a rule's suspension (nil: nothing); the add that
// follows wakes the writer.
func (q *writeQueue) addSuspension(s *suspension) {
	if s != nil {
		q.locked(func() { q.sus[s.rec.Account] = s })
	}
}

// unblock and unsuspend queue the deletion of an expired block or
// suspension. Expiry is not urgent: the next Flush writes it, without
// waking the writer.
func (q *writeQueue) unblock(source string)    { q.locked(func() { q.blocks[source] = nil }) }
func (q *writeQueue) unsuspend(account string) { q.locked(func() { q.sus[account] = nil }) }

// drop and dropSuspension forget the pending write of a key; the caller
// writes it itself (an operator's change).
func (q *writeQueue) drop(source string)            { q.locked(func() { delete(q.blocks, source) }) }
func (q *writeQueue) dropSuspension(account string) { q.locked(func() { delete(q.sus, account) }) }

// take empties the queue of events and blocks.
func (q *writeQueue) take() (evs []*activeEvent, bs pending[block]) {
	q.locked(func() {
		evs, bs = q.events, q.blocks.take()
		q.events = nil
	})
	return evs, bs
}

// takeSuspensions empties the suspension queue.
func (q *writeQueue) takeSuspensions() (s pending[suspension]) {
	q.locked(func() { s = q.sus.take() })
	return s
}

// retry and retrySuspensions put back the writes that failed or must
// wait for their event.
func (q *writeQueue) retry(bs pending[block])                { q.locked(func() { q.blocks.putBack(bs) }) }
func (q *writeQueue) retrySuspensions(s pending[suspension]) { q.locked(func() { q.sus.putBack(s) }) }

// runWriter writes what fire queues as soon as it is queued, until ctx is
// done. Run starts it; without Run (tests) Flush and Tick write.
func (e *Engine) runWriter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-e.writes.wake:
			wctx, cancel := context.WithTimeout(ctx, storeTimeout)
			if err := e.flush(wctx, false); err != nil {
				e.log.Error("detect: store write (retried at the next tick)", "err", err)
			}
			cancel()
		}
	}
}

// Flush writes everything pending: new events and blocks, impact and
// actions that changed, ended events. Impact is kept in memory between
// flushes so a flood of refusals costs no writes. A failed write is
// retried by the next Flush (Tick flushes every second).
func (e *Engine) Flush(ctx context.Context) error { return e.flush(ctx, true) }

// flush writes the queued events and blocks and, when all is set, every
// tracked event that changed; then it tells OnChange what was stored.
func (e *Engine) flush(ctx context.Context, all bool) error {
	e.flushMu.Lock()
	notes, err := e.flushLocked(ctx, all)
	e.publishEvents(notes)
	if e.onChange != nil {
		e.notes.add(notes) // before the next flush can add its own
	}
	e.flushMu.Unlock()
	e.tell()
	return err
}

func (e *Engine) flushLocked(ctx context.Context, all bool) ([]Change, error) {
	fresh, blocks := e.writes.take()
	evs := fresh
	if all {
		evs = e.trackedEvents() // fire tracks an event before it queues it
		// In the order they fired: IDs and OnChange follow it.
		slices.SortFunc(evs, func(a, b *activeEvent) int { return cmp.Compare(a.seq, b.seq) })
	}

	// 1. New events, so that their blocks can name them; in a cluster,
	// only those no other node records already.
	e.claim(ctx, evs)
	var ins events.Batch
	var insEvs []*activeEvent
	for _, ev := range evs {
		ev.mu.Lock()
		if ev.live && !ev.stored {
			rec := ev.recordLocked()
			ev.dirty = false
			ins.Insert = append(ins.Insert, &rec)
			insEvs = append(insEvs, ev)
		}
		ev.mu.Unlock()
	}
	errs := []error{e.apply(ctx, &ins)}
	for i, ev := range insEvs {
		ev.mu.Lock()
		if err := failed(ins.InsertErr, i); err != nil {
			ev.dirty = true
		} else {
			ev.id, ev.stored = ins.Insert[i].ID, true
		}
		ev.mu.Unlock()
	}

	// 2. Blocks and changed events, in one more batch.
	var upd events.Batch
	var updEvs []*activeEvent
	var putBlocks []*block
	later := pending[block]{}
	for _, src := range slices.Sorted(maps.Keys(blocks)) { // a stable order for OnChange
		b := blocks[src]
		switch {
		case b == nil:
			upd.Delete = append(upd.Delete, src)
		case b.ev != nil && b.ev.joinedEvent():
			// The recording node stores the attack's block (in a shared
			// store, the same row); this copy holds in memory.
		case b.ev != nil && b.ev.storedID() == 0:
			later[src] = b // its event is not stored yet; the block holds in memory
		default:
			upd.Put = append(upd.Put, b.record())
			putBlocks = append(putBlocks, b)
		}
	}
	if all {
		for _, ev := range evs {
			ev.mu.Lock()
			if ev.stored && ev.dirty && !ev.joined && e.store != nil {
				upd.Update = append(upd.Update, ev.recordLocked())
				ev.dirty = false
				updEvs = append(updEvs, ev)
			}
			ev.mu.Unlock()
		}
	}
	errs = append(errs, e.apply(ctx, &upd))
	for i, ev := range updEvs {
		if failed(upd.UpdateErr, i) != nil {
			ev.mu.Lock()
			ev.dirty = true
			ev.mu.Unlock()
		}
	}
	for i, src := range upd.Delete {
		if failed(upd.DeleteErr, i) != nil {
			later[src] = nil
		}
	}
	var notes []Change
	for _, ev := range evs {
		if n, ok := e.noteStart(ev); ok {
			notes = append(notes, n)
		}
	}
	for i, b := range putBlocks {
		if failed(upd.PutErr, i) != nil {
			later[b.rec.Source] = b
			continue
		}
		rec := upd.Put[i]
		e.log.Info("detect: source blocked", "source", rec.Source, "rule", rec.Rule, "event", rec.EventID, "until", rec.ExpiresAt, "reason", rec.Reason)
		notes = append(notes, Change{Type: ChangeBlockAdded, Block: &rec})
	}
	e.writes.retry(later)
	// 3. Suspensions, rare (a compromised account): one by one.
	susNotes, susLater, err := e.writeSuspensions(ctx, e.writes.takeSuspensions())
	notes = append(notes, susNotes...)
	errs = append(errs, err)
	e.writes.retrySuspensions(susLater)
	for _, ev := range evs {
		if n, ok := e.noteEnd(ev); ok {
			notes = append(notes, n)
		}
	}
	return notes, errors.Join(errs...)
}

// apply writes b to the store. Without a store there is nothing to
// write and every write succeeds: the Err slices stay empty (see failed).
func (e *Engine) apply(ctx context.Context, b *events.Batch) error {
	if e.store == nil {
		return nil
	}
	if err := events.Apply(ctx, e.store, b); err != nil {
		return fmt.Errorf("detect: store %d writes: %w", b.Len(), err)
	}
	return nil
}

// failed is the outcome of item i of a Batch's Err slice.
func failed(errs []error, i int) error {
	if i < len(errs) {
		return errs[i]
	}
	return nil
}

// noteStart reports an event once it is stored, with its ID.
func (e *Engine) noteStart(ev *activeEvent) (Change, bool) {
	ev.mu.Lock()
	if !ev.stored || ev.toldStart {
		ev.mu.Unlock()
		return Change{}, false
	}
	ev.toldStart = true
	rec := ev.recordLocked()
	ev.mu.Unlock()
	e.log.Warn("detect: attack detected", "id", rec.ID, "type", rec.Type, "rule", rec.Rule, "mode", rec.Mode,
		"source", rec.Source, "service", rec.Service, "actions", rec.Actions, "count", rec.Detail["count"])
	return Change{Type: ChangeEventStarted, Event: &rec}, true
}

// noteEnd reports an event once its end is stored, and stops tracking it.
func (e *Engine) noteEnd(ev *activeEvent) (Change, bool) {
	ev.mu.Lock()
	if ev.joined && !ev.endedAt.IsZero() {
		// Another node records this attack; nothing to report here.
		ev.mu.Unlock()
		e.evMu.Lock()
		delete(e.tracked, ev)
		e.evMu.Unlock()
		return Change{}, false
	}
	if ev.endedAt.IsZero() || !ev.stored || ev.dirty || !ev.toldStart || ev.toldEnd {
		ev.mu.Unlock()
		return Change{}, false
	}
	ev.toldEnd = true
	rec := ev.recordLocked()
	ev.mu.Unlock()
	e.evMu.Lock()
	delete(e.tracked, ev)
	e.evMu.Unlock()
	e.log.Info("detect: event ended", "id", rec.ID, "type", rec.Type, "rule", rec.Rule, "source", rec.Source, "impact", rec.Impact)
	return Change{Type: ChangeEventEnded, Event: &rec}, true
}

// storedID is the event's ID, 0 while the writer has not stored it.
func (ev *activeEvent) storedID() int64 {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	return ev.id
}

// emit reports changes to OnChange (see tell).
func (e *Engine) emit(cs ...Change) {
	if e.onChange != nil {
		e.notes.add(cs)
		e.tell()
	}
}

// tell reports the queued changes to OnChange in the order they were
// queued, never while an engine lock is held: a receiver may call back
// into the engine, even Flush. Whoever holds the right to tell drains the
// queue for every caller; a caller that finds another telling leaves its
// changes to it (the teller looks again after letting go, so none are
// left behind), and a receiver calling back into the engine does not wait
// for itself.
func (e *Engine) tell() {
	for e.notes.telling.TryLock() {
		for q := e.notes.take(); len(q) > 0; q = e.notes.take() {
			for _, c := range q {
				e.onChange(c)
			}
		}
		e.notes.telling.Unlock()
		if e.notes.empty() {
			return
		}
	}
}

// changeQueue orders the changes on their way to OnChange.
type changeQueue struct {
	mu      sync.Mutex
	q       []Change
	telling sync.Mutex // held by the caller running OnChange
}

func (n *changeQueue) add(cs []Change) {
	if len(cs) == 0 {
		return
	}
	n.mu.Lock()
	n.q = append(n.q, cs...)
	n.mu.Unlock()
}

func (n *changeQueue) take() []Change {
	n.mu.Lock()
	defer n.mu.Unlock()
	q := n.q
	n.q = nil
	return q
}

func (n *changeQueue) empty() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.q) == 0
}
