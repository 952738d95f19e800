package detect

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mxguard/internal/events"
)

// block is one block in force.
type block struct {
	prefix  netip.Prefix
	rec     events.Block // EventID is read from ev, which may get its ID later
	expires int64        // unix ns
	ev      *activeEvent // the event that caused it; nil for manual blocks
}

func (b *block) record() events.Block {
	r := b.rec
	if b.ev != nil {
		b.ev.mu.Lock()
		r.EventID = b.ev.id
		b.ev.mu.Unlock()
	}
	return r
}

// blockTable finds the block covering an address with at most two map
// lookups (IPv4: the address; IPv6: the source prefix, then the address
// for manual /128 blocks) and a scan of the other manual CIDR blocks,
// which are few.
type blockTable struct {
	mu     sync.RWMutex
	v6bits int
	exact  map[blockKey]*block
	cidrs  []*block
	// n counts blocks so Blocked skips the lock and clock entirely when
	// nothing is blocked, the normal state.
	n atomic.Int64
}

// blockKey is a pointer-free map key (netip.Prefix holds a zone handle),
// so lookups hash 24 plain bytes.
type blockKey struct {
	k    key
	bits uint8
}

func prefixKey(p netip.Prefix) blockKey {
	return blockKey{addrKey(p.Addr(), 128), uint8(p.Bits())}
}

func (t *blockTable) init(v6bits int) {
	t.v6bits = v6bits
	t.exact = make(map[blockKey]*block)
}

func (t *blockTable) isExact(p netip.Prefix) bool {
	return p.Bits() == p.Addr().BitLen() || (p.Addr().Is6() && p.Bits() == t.v6bits)
}

// find returns the unexpired block covering a. Caller holds mu (read).
func (t *blockTable) find(a netip.Addr, now int64) *block {
	a = a.Unmap().WithZone("")
	live := func(b *block) bool { return b != nil && now < b.expires }
	if a.Is4() {
		if b := t.exact[blockKey{addrKey(a, 128), 32}]; live(b) {
			return b
		}
	} else if a.Is6() {
		if b := t.exact[blockKey{addrKey(a, t.v6bits), uint8(t.v6bits)}]; live(b) {
			return b
		}
		if b := t.exact[blockKey{addrKey(a, 128), 128}]; live(b) {
			return b
		}
	}
	for _, b := range t.cidrs {
		if now < b.expires && b.prefix.Contains(a) {
			return b
		}
	}
	return nil
}

// get returns the block of exactly p, expired or not. Caller holds mu.
func (t *blockTable) get(p netip.Prefix) *block {
	if t.isExact(p) {
		return t.exact[prefixKey(p)]
	}
	for _, b := range t.cidrs {
		if b.prefix == p {
			return b
		}
	}
	return nil
}

// covering returns an unexpired block of p or of a prefix containing p.
// Caller holds mu.
func (t *blockTable) covering(p netip.Prefix, now int64) *block {
	if b := t.get(p); b != nil && now < b.expires {
		return b
	}
	if b := t.find(p.Addr(), now); b != nil && b.prefix.Bits() <= p.Bits() {
		return b
	}
	return nil
}

// put adds or replaces the block of b.prefix. Caller holds mu.
func (t *blockTable) put(b *block) {
	if old := t.remove(b.prefix); old != nil {
		t.n.Add(-1)
	}
	if t.isExact(b.prefix) {
		t.exact[prefixKey(b.prefix)] = b
	} else {
		t.cidrs = append(t.cidrs, b)
	}
	t.n.Add(1)
}

// remove deletes the block of exactly p. Caller holds mu.
func (t *blockTable) remove(p netip.Prefix) *block {
	if t.isExact(p) {
		b := t.exact[prefixKey(p)]
		if b != nil {
			delete(t.exact, prefixKey(p))
		}
		return b
	}
	for i, b := range t.cidrs {
		if b.prefix == p {
			t.cidrs = slices.Delete(t.cidrs, i, i+1)
			return b
		}
	}
	return nil
}

func (t *blockTable) all() []*block {
	bs := slices.Clone(t.cidrs)
	for _, b := range t.exact {
		bs = append(bs, b)
	}
	return bs
}

// reclassify re-sorts blocks into exact and CIDR after ipv6_prefix
// changed: the old source prefixes are now ordinary CIDRs.
func (t *blockTable) reclassify(v6bits int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if v6bits == t.v6bits {
		return
	}
	bs := t.all()
	t.v6bits = v6bits
	t.exact = make(map[blockKey]*block, len(bs))
	t.cidrs = nil
	t.n.Store(0)
	for _, b := range bs {
		t.put(b)
	}
}

// Blocked reports whether addr is refused: its IPv4 address, IPv6 source
// prefix or IPv6 address is blocked, or a manual CIDR block covers it.
// Expired blocks do not count even before Tick removed them.
func (e *Engine) Blocked(addr netip.Addr) bool {
	if e.blocks.n.Load() == 0 {
		return false
	}
	now := e.nowNano()
	e.blocks.mu.RLock()
	b := e.blocks.find(addr, now)
	e.blocks.mu.RUnlock()
	return b != nil
}

// BlockGeneration changes whenever a block is added, removed or expires;
// a session may cache Blocked's answer until it changes.
func (e *Engine) BlockGeneration() uint64 { return e.gen.Load() }

// Refused reports a connection or command refused because addr is
// blocked: it adds 1 to the impact of the event that caused the block, if
// still active, and keeps that event from ending.
func (e *Engine) Refused(addr netip.Addr) {
	if e.blocks.n.Load() == 0 {
		return
	}
	now := e.nowNano()
	e.blocks.mu.RLock()
	b := e.blocks.find(addr, now)
	e.blocks.mu.RUnlock()
	if b == nil {
		return
	}
	if b.ev != nil && !b.ev.refuse(now) {
		return
	}
	// Another node records the attack (the block came from it, or our
	// event joined its): the refusal counts toward its event there.
	if e.shared != nil && b.rec.Rule != "" {
		e.shared.Refused(b.rec.Rule, b.rec.Source)
	}
}

// autoBlock puts a rule's block on p unless a block in force already
// covers p (a manual block is never shortened or shadowed by a rule's).
func (e *Engine) autoBlock(p netip.Prefix, r *boundRule, ev *activeEvent, now time.Time) *block {
	b := &block{
		prefix: p,
		rec: events.Block{
			Source: canonical(p), Reason: r.reason, Rule: r.cfg.Name,
			CreatedAt: now, ExpiresAt: now.Add(r.cfg.BlockFor),
		},
		expires: now.Add(r.cfg.BlockFor).UnixNano(),
		ev:      ev,
	}
	e.blocks.mu.Lock()
	if e.blocks.covering(p, now.UnixNano()) != nil {
		e.blocks.mu.Unlock()
		return nil
	}
	e.blocks.put(b)
	e.gen.Add(1)
	e.blocks.mu.Unlock()
	return b
}

func (e *Engine) setBlocksGauge() {
	if e.metrics != nil {
		e.metrics.BlocksActive.Set(float64(e.blocks.n.Load()))
	}
}

// expireBlocks removes blocks expired at now and returns them.
func (e *Engine) expireBlocks(now int64) []events.Block {
	if e.blocks.n.Load() == 0 {
		return nil
	}
	var gone []events.Block
	e.blocks.mu.Lock()
	for _, b := range e.blocks.all() {
		if now >= b.expires {
			e.blocks.remove(b.prefix)
			e.blocks.n.Add(-1)
			e.gen.Add(1)
			gone = append(gone, b.record())
		}
	}
	e.blocks.mu.Unlock()
	if len(gone) > 0 {
		e.setBlocksGauge()
	}
	return gone
}

func (e *Engine) deleteStoredBlock(ctx context.Context, source string) {
	if e.store == nil {
		return
	}
	if err := e.store.DeleteBlock(ctx, source); err != nil && !errors.Is(err, events.ErrNotFound) {
		e.log.Error("detect: delete stored block", "source", source, "err", err)
	}
}

// AddBlock blocks an IP address or CIDR for d (a manual block). An IPv6
// address blocks exactly that address (/128), not its source prefix. A
// source overlapping trusted_networks or the allowlist is refused with
// ErrProtected. A block of the same source is replaced.
func (e *Engine) AddBlock(ctx context.Context, source string, d time.Duration, reason string) (events.Block, error) {
	p, err := parseSource(source)
	if err != nil {
		return events.Block{}, err
	}
	if d <= 0 {
		return events.Block{}, fmt.Errorf("detect: block duration %s must be positive", d)
	}
	s := e.setup.Load()
	for _, q := range slices.Concat(s.trusted, s.allow) {
		if p.Overlaps(q) {
			return events.Block{}, fmt.Errorf("detect: block %s: %w (%s)", canonical(p), ErrProtected, q)
		}
	}
	now := e.clock.Now()
	b := &block{
		prefix: p,
		rec: events.Block{
			Source: canonical(p), Reason: reason,
			CreatedAt: now, ExpiresAt: now.Add(d), Manual: true,
		},
		expires: now.Add(d).UnixNano(),
	}
	// Unlike a rule's block, a manual one is written first: the operator
	// must not be told it failed while it is in force.
	err = e.manualWrite(b.rec.Source, func() error {
		if e.store != nil {
			if err := e.store.PutBlock(ctx, b.rec); err != nil {
				return fmt.Errorf("detect: store block %s: %w", b.rec.Source, err)
			}
		}
		e.blocks.mu.Lock()
		e.blocks.put(b)
		e.gen.Add(1)
		e.blocks.mu.Unlock()
		return nil
	})
	if err != nil {
		return events.Block{}, err
	}
	e.setBlocksGauge()
	e.log.Info("detect: manual block", "source", b.rec.Source, "until", b.rec.ExpiresAt, "reason", reason)
	e.publish(Change{Type: ChangeBlockAdded, Block: new(b.rec)})
	e.emit(Change{Type: ChangeBlockAdded, Block: &b.rec})
	return b.rec, nil
}

// RemoveBlock lifts the block of source, spelled canonically or not
// ("203.0.113.7/32" = "203.0.113.7"). It returns events.ErrNotFound when
// there is none.
func (e *Engine) RemoveBlock(ctx context.Context, source string) error {
	p, err := parseSource(source)
	if err != nil {
		return err
	}
	src := canonical(p)
	var b *block
	err = e.manualWrite(src, func() error {
		e.blocks.mu.Lock()
		b = e.blocks.remove(p)
		if b != nil {
			e.blocks.n.Add(-1)
			e.gen.Add(1)
		}
		e.blocks.mu.Unlock()
		stored := events.ErrNotFound // no store: memory only
		if e.store != nil {
			stored = e.store.DeleteBlock(ctx, src)
		}
		return removed("block", src, b != nil, stored)
	})
	if err != nil {
		return err
	}
	e.setBlocksGauge()
	rec := events.Block{Source: src, Manual: true}
	if b != nil {
		rec = b.record()
	}
	e.log.Info("detect: block removed", "source", src)
	e.publish(Change{Type: ChangeBlockRemoved, Block: new(rec)})
	e.emit(Change{Type: ChangeBlockRemoved, Block: &rec})
	return nil
}

// removed is the result of an operator's removal of the kind ("block",
// "suspension") of key: inMemory says whether one was in force, stored is
// the store's deletion error (events.ErrNotFound without a store). Only
// one in neither place is not found.
func removed(kind, key string, inMemory bool, stored error) error {
	switch {
	case errors.Is(stored, events.ErrNotFound):
		if !inMemory {
			return fmt.Errorf("detect: %s %s: %w", kind, key, events.ErrNotFound)
		}
		return nil
	case stored != nil:
		return fmt.Errorf("detect: delete %s %s: %w", kind, key, stored)
	}
	return nil
}

// manualWrite runs an operator's block change, which writes the store
// itself, apart from the writer: a rule's block of the same source still
// waiting for the writer must not overwrite it in the store afterwards.
func (e *Engine) manualWrite(source string, write func() error) error {
	e.flushMu.Lock()
	defer e.flushMu.Unlock()
	e.writes.drop(source)
	return write()
}

// Blocks returns the blocks in force, oldest first.
func (e *Engine) Blocks() []events.Block {
	now := e.clock.Now().UnixNano()
	e.blocks.mu.RLock()
	bs := e.blocks.all()
	e.blocks.mu.RUnlock()
	out := make([]events.Block, 0, len(bs))
	for _, b := range bs {
		if now < b.expires {
			out = append(out, b.record())
		}
	}
	slices.SortFunc(out, func(a, b events.Block) int {
		return cmp.Or(a.CreatedAt.Compare(b.CreatedAt), strings.Compare(a.Source, b.Source))
	})
	return out
}

// loadBlocks puts the stored unexpired blocks back in force and deletes
// the expired ones. Rule blocks are tied again to their restored event.
func (e *Engine) loadBlocks(ctx context.Context, evs map[int64]*activeEvent) error {
	stored, err := e.store.Blocks(ctx)
	if err != nil {
		return fmt.Errorf("detect: load blocks: %w", err)
	}
	now := e.clock.Now()
	e.blocks.mu.Lock()
	var expired []string
	for _, rec := range stored {
		p, err := parseSource(rec.Source)
		if err != nil {
			e.log.Error("detect: stored block ignored", "source", rec.Source, "err", err)
			continue
		}
		if !now.Before(rec.ExpiresAt) {
			expired = append(expired, rec.Source)
			continue
		}
		rec.Source = canonical(p)
		e.blocks.put(&block{prefix: p, rec: rec, expires: rec.ExpiresAt.UnixNano(), ev: evs[rec.EventID]})
		e.gen.Add(1)
	}
	e.blocks.mu.Unlock()
	for _, src := range expired {
		e.deleteStoredBlock(ctx, src)
	}
	e.setBlocksGauge()
	return nil
}

// parseSource reads an IP address or CIDR as a masked prefix; IPv4-mapped
// IPv6 forms become IPv4.
func parseSource(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Errorf("detect: bad source %q: %w", s, err)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("detect: bad source %q: %w", s, err)
		}
		a = a.WithZone("")
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("detect: bad source %q: IPv4-mapped prefix shorter than /96", s)
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// canonical spells a prefix as INTERFACE.md §3 wants sources: a single
// address without /32 or /128, anything else as a masked CIDR.
func canonical(p netip.Prefix) string {
	if p.Bits() == p.Addr().BitLen() {
		return p.Addr().String()
	}
	return p.String()
}
