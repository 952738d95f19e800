package detect

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"mxguard/internal/events"
)

// Suspensions: a "suspend" action (internal_spammer, bounce_spammer,
// account_brute_force) or an operator holds an account's mail on the
// submission listener: its next message gets 550 5.7.1 (INTERFACE.md §4)
// until the suspension expires or is lifted (API, CLI). They are kept
// like blocks: in memory first, so the very next MAIL is refused, then
// written by the writer (a rule's) or before they take effect (an
// operator's), and reloaded at start when the store keeps them
// (events.SuspensionStore).

// suspension is one suspension in force.
type suspension struct {
	rec   events.Suspension // EventID is read from ev, which may get its ID later
	until int64             // unix ns
	ev    *activeEvent      // the event that caused it; nil for manual ones
}

func (s *suspension) record() events.Suspension {
	r := s.rec
	if s.ev != nil {
		r.EventID = s.ev.storedID()
	}
	return r
}

// suspensionTable holds the suspensions by account.
type suspensionTable struct {
	mu sync.RWMutex
	m  map[string]*suspension
}

// Suspended reports whether account (a login name, in any case) is
// suspended now.
func (e *Engine) Suspended(account string) bool {
	account = AccountName(account)
	e.sus.mu.RLock()
	s := e.sus.m[account]
	e.sus.mu.RUnlock()
	return s != nil && e.nowNano() < s.until
}

// suspend puts a rule's suspension on account for r.BlockFor, unless one
// lasting at least as long is in force (a manual one is never shortened
// by a rule's). It returns the suspension to write, or nil.
func (e *Engine) suspend(account string, r *boundRule, ev *activeEvent, now time.Time) *suspension {
	s := &suspension{
		rec: events.Suspension{
			Account: account, Reason: r.reason, Rule: r.cfg.Name,
			CreatedAt: now, ExpiresAt: now.Add(r.cfg.BlockFor),
		},
		until: now.Add(r.cfg.BlockFor).UnixNano(),
		ev:    ev,
	}
	e.sus.mu.Lock()
	defer e.sus.mu.Unlock()
	if old := e.sus.m[account]; old != nil && old.until >= s.until {
		return nil
	}
	e.sus.m[account] = s
	return s
}

// expireSuspensions removes the suspensions expired at now and returns
// them.
func (e *Engine) expireSuspensions(now int64) []events.Suspension {
	var gone []events.Suspension
	e.sus.mu.Lock()
	for a, s := range e.sus.m {
		if s.until <= now {
			delete(e.sus.m, a)
			gone = append(gone, s.record())
		}
	}
	e.sus.mu.Unlock()
	return gone
}

// ErrNoAccount is returned by AddSuspension for an empty account.
var ErrNoAccount = errors.New("no account")

// AddSuspension suspends account for d (a manual suspension): it is
// written to the store before it takes effect, so an error means it is
// not in force. A suspension of the same account is replaced.
func (e *Engine) AddSuspension(ctx context.Context, account string, d time.Duration, reason string) (events.Suspension, error) {
	account = AccountName(strings.TrimSpace(account))
	if account == "" {
		return events.Suspension{}, fmt.Errorf("detect: suspend: %w", ErrNoAccount)
	}
	if d <= 0 {
		return events.Suspension{}, fmt.Errorf("detect: suspension duration %s must be positive", d)
	}
	now := e.clock.Now()
	s := &suspension{
		rec:   events.Suspension{Account: account, Reason: reason, CreatedAt: now, ExpiresAt: now.Add(d), Manual: true},
		until: now.Add(d).UnixNano(),
	}
	err := e.manualSuspensionWrite(account, func(st events.SuspensionStore) error {
		if st != nil {
			if err := st.PutSuspension(ctx, s.rec); err != nil {
				return fmt.Errorf("detect: store suspension %s: %w", account, err)
			}
		}
		e.sus.mu.Lock()
		e.sus.m[account] = s
		e.sus.mu.Unlock()
		return nil
	})
	if err != nil {
		return events.Suspension{}, err
	}
	e.log.Info("detect: account suspended by the operator", "account", account, "until", s.rec.ExpiresAt, "reason", reason)
	e.publish(Change{Type: ChangeSuspensionAdded, Suspension: new(s.rec)})
	e.emit(Change{Type: ChangeSuspensionAdded, Suspension: &s.rec})
	return s.rec, nil
}

// RemoveSuspension lifts account's suspension; events.ErrNotFound when
// there is none.
func (e *Engine) RemoveSuspension(ctx context.Context, account string) error {
	account = AccountName(strings.TrimSpace(account))
	var s *suspension
	err := e.manualSuspensionWrite(account, func(st events.SuspensionStore) error {
		e.sus.mu.Lock()
		s = e.sus.m[account]
		delete(e.sus.m, account)
		e.sus.mu.Unlock()
		stored := events.ErrNotFound // no store: memory only
		if st != nil {
			stored = st.DeleteSuspension(ctx, account)
		}
		return removed("suspension", account, s != nil, stored)
	})
	if err != nil {
		return err
	}
	rec := events.Suspension{Account: account, Manual: true}
	if s != nil {
		rec = s.record()
		if s.ev != nil {
			// The operator decided: the event that made the suspension
			// goes on counting but does not suspend the account again.
			s.ev.mu.Lock()
			s.ev.lifted = true
			s.ev.mu.Unlock()
		}
	}
	e.log.Info("detect: suspension lifted", "account", account)
	e.publish(Change{Type: ChangeSuspensionRemoved, Suspension: new(rec)})
	e.emit(Change{Type: ChangeSuspensionRemoved, Suspension: &rec})
	return nil
}

// manualSuspensionWrite runs an operator's change apart from the writer
// (see manualWrite): a rule's suspension of the same account still
// waiting for the writer must not overwrite it in the store afterwards.
func (e *Engine) manualSuspensionWrite(account string, write func(events.SuspensionStore) error) error {
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	e.writes.dropSuspension(account)
	return write(e.suspensionStore())
}

// suspensionStore is the store's SuspensionStore, or nil.
func (e *Engine) suspensionStore() events.SuspensionStore {
	st, _ := e.store.(events.SuspensionStore)
	return st
}

// Suspensions returns the suspensions in force, oldest first.
func (e *Engine) Suspensions() []events.Suspension {
	now := e.clock.Now().UnixNano()
	e.sus.mu.RLock()
	out := make([]events.Suspension, 0, len(e.sus.m))
	for _, s := range e.sus.m {
		if now < s.until {
			out = append(out, s.record())
		}
	}
	e.sus.mu.RUnlock()
	slices.SortFunc(out, func(a, b events.Suspension) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.Account, b.Account))
	})
	return out
}

// loadSuspensions puts the stored unexpired suspensions back in force and
// deletes the expired ones; a rule's is tied again to its restored event.
func (e *Engine) loadSuspensions(ctx context.Context, evs map[int64]*activeEvent) error {
	st := e.suspensionStore()
	if st == nil {
		return nil
	}
	stored, err := st.Suspensions(ctx)
	if err != nil {
		return fmt.Errorf("detect: load suspensions: %w", err)
	}
	now := e.clock.Now()
	var expired []string
	e.sus.mu.Lock()
	for _, rec := range stored {
		if !now.Before(rec.ExpiresAt) {
			expired = append(expired, rec.Account)
			continue
		}
		e.sus.m[rec.Account] = &suspension{rec: rec, until: rec.ExpiresAt.UnixNano(), ev: evs[rec.EventID]}
	}
	e.sus.mu.Unlock()
	for _, a := range expired {
		if err := st.DeleteSuspension(ctx, a); err != nil && !errors.Is(err, events.ErrNotFound) {
			e.log.Error("detect: delete expired suspension", "account", a, "err", err)
		}
	}
	return nil
}

// writeSuspensions stores the rule suspensions queued for the writer (nil:
// delete) whose event is stored, and returns the changes to report and
// those to retry later. Caller holds flushMu.
func (e *Engine) writeSuspensions(ctx context.Context, queued pending[suspension]) ([]Change, pending[suspension], error) {
	st := e.suspensionStore()
	later := pending[suspension]{}
	var notes []Change
	var errs []error
	for _, account := range slices.Sorted(maps.Keys(queued)) {
		s := queued[account]
		switch {
		case s == nil:
			if st != nil {
				if err := st.DeleteSuspension(ctx, account); err != nil && !errors.Is(err, events.ErrNotFound) {
					errs = append(errs, err)
					later[account] = nil
				}
			}
		case s.ev != nil && s.ev.joinedEvent():
			// The recording node stores it; this copy holds in memory.
		case s.ev != nil && s.ev.storedID() == 0:
			later[account] = s // its event is not stored yet; it holds in memory
		default:
			rec := s.record()
			if st != nil {
				if err := st.PutSuspension(ctx, rec); err != nil {
					errs = append(errs, err)
					later[account] = s
					continue
				}
			}
			e.log.Info("detect: account suspended", "account", rec.Account, "rule", rec.Rule, "event", rec.EventID, "until", rec.ExpiresAt, "reason", rec.Reason)
			notes = append(notes, Change{Type: ChangeSuspensionAdded, Suspension: &rec})
		}
	}
	return notes, later, errors.Join(errs...)
}
