package detect

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync"
)

// A sliding window is nSlots sub-buckets of window/nSlots each. The count of
// a key is the sum of the newest slot and the nSlots-1 before it, so an
// observation is counted for at least window*(nSlots-1)/nSlots and never
// longer than window: a burst is counted exactly, old observations always
// expire within one window.
const (
	nSlots   = 16
	slotMask = nSlots - 1
	// Slots are uint16 to keep a counter at 64 bytes. A slot saturates at
	// 65535 observations per window/16; every threshold up to 65535 is
	// still reached exactly.
	slotMax = math.MaxUint16

	// evictSample is how many random counters are compared to pick the
	// least recently seen one when a shard is full (sampled LRU, as in
	// Redis' allkeys-lru): O(1) and close enough to true LRU.
	evictSample = 5

	// Counters live in fixed-size chunks so that growth never copies a
	// large array under the shard lock and at most one chunk per shard is
	// unused.
	chunkBits = 7
	chunkSize = 1 << chunkBits

	// Shards per rule: enough to make lock contention between cores
	// negligible.
	maxShards = 64
	// minPerShard keeps small MaxKeys values from degenerating into
	// shards of one key.
	minPerShard = 16

	flagEvent = 1 // an event is active for this key (see shard.events)
)

// key identifies what a rule counts per: a source (the 16-byte form of the
// IPv4 address or of the masked IPv6 prefix) or an account (a keyed 128-bit
// hash of its name). Keys are fixed size so the Observe path never builds a
// string and counters hold no pointers for the GC to scan.
type key [2]uint64

// hasher is a seeded 64-bit hash of keys. The seed is random per engine so a
// flood of chosen source addresses cannot aim at one probe chain.
type hasher struct {
	s0, s1, s2 uint64
	str        [2]maphash.Seed // account names → key
}

func newHasher() hasher {
	return hasher{
		s0: rand.Uint64() | 1, s1: rand.Uint64() | 1, s2: rand.Uint64(),
		str: [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()},
	}
}

// sum mixes both halves with 128-bit multiplies (the wyhash "mum" step): a
// couple of nanoseconds, against ~13 for maphash.Comparable.
func (h *hasher) sum(k key) uint64 {
	hi, lo := bits.Mul64(k[0]^h.s0, k[1]^h.s1)
	hi, lo = bits.Mul64(hi^lo^h.s2, 0x9e3779b97f4a7c15)
	return hi ^ lo
}

// service mixes a service name into a source key: brute_force counts per
// source and service.
func (h *hasher) service(k key, svc string) key {
	k[0] ^= maphash.String(h.str[0], svc)
	k[1] ^= maphash.String(h.str[1], svc)
	return k
}

// bytes is the key as samepass wants it.
func (k key) bytes() (b [16]byte) {
	binary.BigEndian.PutUint64(b[:8], k[0])
	binary.BigEndian.PutUint64(b[8:], k[1])
	return b
}

func (h *hasher) account(name string) key {
	return key{maphash.String(h.str[0], name), maphash.String(h.str[1], name)}
}

// addrKey is the key of a source address: IPv4 as is, IPv6 masked to bits.
func addrKey(a netip.Addr, v6bits int) key {
	a = a.Unmap()
	b := a.As16()
	k := key{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
	if a.Is6() {
		switch {
		case v6bits <= 64:
			k[0] &= ^uint64(0) << (64 - v6bits)
			k[1] = 0
		case v6bits < 128:
			k[1] &= ^uint64(0) << (128 - v6bits)
		}
	}
	return k
}

// counter is one key's sliding window: exactly 64 bytes.
type counter struct {
	k     key
	head  int64 // slot number (time/slot width) of the newest slot; also the LRU age
	slots [nSlots]uint16
	flags uint32
}

// add counts one observation at slot number slot and returns the count in
// the window.
func (c *counter) add(slot int64) uint32 {
	switch d := slot - c.head; {
	case d >= nSlots:
		c.slots = [nSlots]uint16{}
		c.head = slot
	case d > 0:
		for s := c.head + 1; s <= slot; s++ {
			c.slots[s&slotMask] = 0
		}
		c.head = slot
	}
	// d < 0 means the clock stepped back: count in the newest slot rather
	// than resurrect an expired one.
	if i := c.head & slotMask; c.slots[i] < slotMax {
		c.slots[i]++
	}
	var n uint32
	for _, v := range c.slots {
		n += uint32(v)
	}
	return n
}

// stale reports whether every slot of c is older than the window at slot.
func (c *counter) stale(slot int64) bool { return slot-c.head >= nSlots }

// live returns the count of c still inside the window at slot.
func (c *counter) live(slot int64) uint32 {
	var n uint32
	for s := max(c.head-slotMask, slot-slotMask); s <= c.head; s++ {
		n += uint32(c.slots[s&slotMask])
	}
	return n
}

// table is an open-addressing hash table (linear probing) of counters with
// a hard capacity. An index slot is 8 bytes: the low 32 bits of the key's
// hash (its tag) and the counter's index + 1 (0 is empty). The tag spares a
// counter fetch, a cache miss, for every non-matching slot of a probe run
// (a lookup of a new key touches no counter at all), and gives the home
// slot without rehashing. A tracked key costs its 64-byte counter plus
// 11–21 bytes of index.
type table struct {
	h      *hasher
	max    int
	idx    []uint64
	chunks []*[chunkSize]counter
	n      int
	rng    uint64
	// rings are the evidence of the keys near their threshold (flagRing,
	// evidence.go); at most ringsPerShard.
	rings map[key]*ring
}

func (t *table) at(i int) *counter { return &t.chunks[i>>chunkBits][i&(chunkSize-1)] }

// lookup returns the counter of k, or nil.
func (t *table) lookup(k key, h uint64) *counter {
	if t.n == 0 {
		return nil
	}
	m := uint64(len(t.idx) - 1)
	for p := h & m; t.idx[p] != 0; p = (p + 1) & m {
		if v := t.idx[p]; uint32(v>>32) == uint32(h) {
			if c := t.at(int(uint32(v)) - 1); c.k == k {
				return c
			}
		}
	}
	return nil
}

func slotOf(h uint64, i int) uint64 { return uint64(uint32(h))<<32 | uint64(i+1) }

// get returns the counter of k, creating it when missing. A full table
// first evicts a key (see victim); slot is the current slot number.
func (t *table) get(k key, h uint64, slot int64) (c *counter, created bool) {
	if c := t.lookup(k, h); c != nil {
		return c, false
	}
	var i int
	if t.n >= t.max {
		i = t.victim(slot)
		t.drop(t.at(i))
		t.unlink(t.posOf(i))
	} else {
		if (t.n+1)*4 > len(t.idx)*3 {
			t.grow()
		}
		i = t.n
		t.n++
		if i>>chunkBits == len(t.chunks) {
			t.chunks = append(t.chunks, new([chunkSize]counter))
		}
	}
	m := uint64(len(t.idx) - 1)
	p := h & m
	for t.idx[p] != 0 {
		p = (p + 1) & m
	}
	t.idx[p] = slotOf(h, i)
	c = t.at(i)
	*c = counter{k: k}
	return c, true
}

func (t *table) grow() {
	size := max(16, 2*len(t.idx))
	idx := make([]uint64, size)
	m := uint64(size - 1)
	for _, v := range t.idx {
		if v == 0 {
			continue
		}
		p := v >> 32 & m
		for idx[p] != 0 {
			p = (p + 1) & m
		}
		idx[p] = v
	}
	t.idx = idx
}

// victim samples a few counters and returns the index of the least
// valuable: an active event's key last, then the lowest count still inside
// the window, then the one seen longest ago. Counting first means a flood
// of sources seen once cannot push out a source that is working its way up
// to a threshold; among equal counts it is least-recently-seen.
func (t *table) victim(slot int64) int {
	best, bestLive := -1, uint32(0)
	for range evictSample {
		// xorshift64: cheap, and the sample needs no quality beyond
		// spreading over the table.
		t.rng ^= t.rng << 13
		t.rng ^= t.rng >> 7
		t.rng ^= t.rng << 17
		i := int(t.rng % uint64(t.n))
		c := t.at(i)
		live := c.live(slot)
		if best < 0 || evictBefore(c, live, t.at(best), bestLive) {
			best, bestLive = i, live
		}
	}
	return best
}

func evictBefore(a *counter, aLive uint32, b *counter, bLive uint32) bool {
	if ae, be := a.flags&flagEvent != 0, b.flags&flagEvent != 0; ae != be {
		return !ae
	}
	if aLive != bLive {
		return aLive < bLive
	}
	return a.head < b.head
}

// posOf returns the index position that refers to counter i.
func (t *table) posOf(i int) uint64 {
	m := uint64(len(t.idx) - 1)
	p := t.h.sum(t.at(i).k) & m
	for uint32(t.idx[p]) != uint32(i+1) {
		p = (p + 1) & m
	}
	return p
}

// unlink empties index position p and shifts later entries of the probe
// run back (Knuth's algorithm R), so linear probing needs no tombstones.
func (t *table) unlink(p uint64) {
	m := uint64(len(t.idx) - 1)
	for q := (p + 1) & m; t.idx[q] != 0; q = (q + 1) & m {
		home := t.idx[q] >> 32 & m
		// The entry at q may fill the hole only if the hole lies on its
		// probe path, i.e. between its home position and q.
		if (p-home)&m < (q-home)&m {
			t.idx[p] = t.idx[q]
			p = q
		}
	}
	t.idx[p] = 0
}

// remove deletes counter i, moving the last counter into its place so the
// storage stays dense (which keeps eviction sampling uniform).
func (t *table) remove(i int) {
	t.drop(t.at(i))
	t.unlink(t.posOf(i))
	last := t.n - 1
	if i != last {
		pl := t.posOf(last)
		t.idx[pl] = t.idx[pl]&^0xffffffff | uint64(i+1)
		*t.at(i) = *t.at(last)
	}
	t.n--
	switch {
	case t.n == 0:
		t.idx, t.chunks = nil, nil
	case t.n&(chunkSize-1) == 0:
		t.chunks[len(t.chunks)-1] = nil
		t.chunks = t.chunks[:len(t.chunks)-1]
	}
}

// sweep drops stale counters without an event, visiting at most budget
// counters from counter from. It returns where to continue, -1 when the
// table is done, and how many counters it visited.
func (t *table) sweep(from, budget int, slot int64) (next, spent int) {
	i := from
	for ; i < t.n && spent < budget; spent++ {
		if c := t.at(i); c.flags&flagEvent == 0 && c.stale(slot) {
			t.remove(i)
			continue
		}
		i++
	}
	if i >= t.n {
		return -1, spent
	}
	return i, spent
}

// shard is one lock's worth of a rule's keys.
type shard struct {
	mu      sync.Mutex
	retired bool // the rule was replaced by Reconfigure: ignore observations
	t       table
	// events holds the active event of each key that has one; counters
	// carry flagEvent so the common path needs no map lookup.
	events map[key]*activeEvent
	_      [64]byte // keep neighbouring locks on separate cache lines
}

// ruleState is the counting state of one rule: it survives Reconfigure
// when the rule's name, type and window are unchanged.
type ruleState struct {
	window  int64 // ns
	width   int64 // slot width, ns
	maxKeys int
	shift   uint // shard = hash >> shift
	h       *hasher
	shards  []shard

	// sweep cursor, guarded by Engine.houseMu
	sweepShard, sweepPos int
}

func newRuleState(window int64, maxKeys int, h *hasher) *ruleState {
	n := maxShards
	for n > 1 && maxKeys/n < minPerShard {
		n /= 2
	}
	st := &ruleState{
		window:  window,
		width:   max(1, window/nSlots),
		maxKeys: maxKeys,
		shift:   uint(64 - bits.TrailingZeros(uint(n))),
		h:       h,
		shards:  make([]shard, n),
	}
	for i := range st.shards {
		st.shards[i].t = table{h: h, max: maxKeys / n, rng: uint64(i)*0x9e3779b97f4a7c15 | 1}
	}
	return st
}

func (st *ruleState) shard(h uint64) *shard {
	// A shift of 64 (one shard) yields 0 for unsigned values in Go.
	return &st.shards[h>>st.shift]
}

// observe counts one observation o of k at now (ns) for rule r. It
// returns the active event of k (new or existing), whether this
// observation created it (fired), and whether the count has reached the
// threshold. A new event carries its evidence (clues) and count; a key
// near its threshold keeps the observation in its ring.
func (st *ruleState) observe(k key, h uint64, now int64, r *boundRule, o *Observation) (ev *activeEvent, fired, reached bool) {
	sh := st.shard(h)
	sh.mu.Lock()
	if sh.retired {
		sh.mu.Unlock()
		return nil, false, false
	}
	slot := now / st.width
	c, created := sh.t.get(k, h, slot)
	if created && sh.events[k] != nil {
		c.flags |= flagEvent
	}
	n := c.add(slot)
	reached = n >= r.threshold
	if c.flags&flagEvent != 0 {
		if ev = sh.events[k]; ev != nil {
			ev.touch(now, o.Refused)
			sh.mu.Unlock()
			return ev, false, reached
		}
		c.flags &^= flagEvent
	}
	switch {
	case reached:
		ev = &activeEvent{key: k, owner: st, window: st.window, last: now, count: n}
		if rg := sh.t.take(c); rg != nil {
			ev.clues = rg.clues(clueOf(o, now))
		} else {
			ev.clues = []clue{clueOf(o, now)}
		}
		if o.Refused {
			ev.impact = 1
		}
		if sh.events == nil {
			sh.events = make(map[key]*activeEvent)
		}
		sh.events[k] = ev
		c.flags |= flagEvent
		fired = true
	case n >= r.near:
		sh.t.keep(c, clueOf(o, now))
	}
	sh.mu.Unlock()
	return ev, fired, reached
}

// reach makes a new active event for k, whose count reached the
// threshold across the cluster (Engine.ReachedElsewhere), unless k has one.
// Its evidence is what this node kept of k (its ring), its count the
// threshold the cluster's count reached.
func (st *ruleState) reach(k key, h uint64, now int64, threshold uint32) *activeEvent {
	sh := st.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.retired || sh.events[k] != nil {
		return nil
	}
	ev := &activeEvent{key: k, owner: st, window: st.window, last: now, count: threshold}
	if sh.events == nil {
		sh.events = make(map[key]*activeEvent)
	}
	sh.events[k] = ev
	if c := sh.t.lookup(k, h); c != nil {
		c.flags |= flagEvent
		if rg := sh.t.take(c); rg != nil {
			ev.clues = rg.clues()
		}
	}
	return ev
}

// rings returns the number of evidence rings st holds (for tests).
func (st *ruleState) rings() int {
	n := 0
	for i := range st.shards {
		sh := &st.shards[i]
		sh.mu.Lock()
		n += len(sh.t.rings)
		sh.mu.Unlock()
	}
	return n
}

// keys returns the number of tracked keys.
func (st *ruleState) keys() int {
	n := 0
	for i := range st.shards {
		sh := &st.shards[i]
		sh.mu.Lock()
		n += sh.t.n
		sh.mu.Unlock()
	}
	return n
}

// sweep drops stale counters, visiting at most about budget counters per
// call and resuming where the last call stopped, so Tick's work is bounded.
func (st *ruleState) sweep(now int64, budget int) {
	slot := now / st.width
	for range st.shards {
		if budget <= 0 {
			return
		}
		sh := &st.shards[st.sweepShard]
		sh.mu.Lock()
		next, spent := sh.t.sweep(st.sweepPos, budget, slot)
		sh.mu.Unlock()
		budget -= spent + 1 // an empty shard still costs a lock
		if next >= 0 {
			st.sweepPos = next
			return
		}
		st.sweepShard = (st.sweepShard + 1) % len(st.shards)
		st.sweepPos = 0
	}
}

// retire stops counting in st and hands back its active events.
func (st *ruleState) retire() []*activeEvent {
	var evs []*activeEvent
	for i := range st.shards {
		sh := &st.shards[i]
		sh.mu.Lock()
		sh.retired = true
		for _, ev := range sh.events {
			evs = append(evs, ev)
		}
		sh.events = nil
		sh.t = table{}
		sh.mu.Unlock()
	}
	return evs
}

// adopt makes ev the active event of its key in st.
func (st *ruleState) adopt(ev *activeEvent) {
	h := st.h.sum(ev.key)
	sh := st.shard(h)
	sh.mu.Lock()
	if sh.events == nil {
		sh.events = make(map[key]*activeEvent)
	}
	sh.events[ev.key] = ev
	if c := sh.t.lookup(ev.key, h); c != nil {
		c.flags |= flagEvent
	}
	sh.mu.Unlock()
	ev.owner = st
}
