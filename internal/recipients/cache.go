package recipients

import (
	"hash/maphash"
	"strings"
	"sync"
)

// table is one bounded set of addresses with an expiry each (Unix
// nanoseconds): the addresses the downstream said exist, or those it said
// do not. It is split in shards by a seeded hash of the key (a client
// cannot aim a flood of chosen addresses at one shard), each with its own
// mutex and at most perShard entries.
//
// When a shard is full, inserting evicts the entry that expires first
// among up to evictSample entries, which is the one recorded longest ago
// (every entry lives exactly cache_ttl from its last verdict): an
// approximation of LRU in the manner of Redis' sampled eviction, with no
// list to maintain and 8 bytes of value per entry. Expired entries found
// on the way are removed first.
type table struct {
	seed     maphash.Seed
	perShard int
	shards   [nShards]shard
}

type shard struct {
	mu sync.Mutex
	m  map[string]int64
	_  [40]byte // keep neighbouring shards' mutexes off one cache line
}

const (
	nShards     = 16
	evictSample = 8
)

func newTable(limit int) *table {
	t := &table{seed: maphash.MakeSeed(), perShard: max(1, limit/nShards)}
	for i := range t.shards {
		t.shards[i].m = make(map[string]int64)
	}
	return t
}

func (t *table) shard(key string) *shard {
	return &t.shards[maphash.String(t.seed, key)&(nShards-1)]
}

// get reports whether key is present and not expired at now.
func (t *table) get(key string, now int64) bool {
	s := t.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.m[key]
	if ok && exp <= now {
		delete(s.m, key)
		return false
	}
	return ok
}

// put records key until exp.
func (t *table) put(key string, exp, now int64) {
	s := t.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; ok {
		s.m[key] = exp
		return
	}
	if len(s.m) >= t.perShard {
		s.evict(now)
	}
	// The key may be a slice of a larger string (a command line): keep
	// only its own bytes.
	s.m[strings.Clone(key)] = exp
}

// remove forgets key.
func (t *table) remove(key string) {
	s := t.shard(key)
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
}

// evict makes room for one entry; s.mu is held. Go's map iteration starts
// at a random place, so the first entries it yields are a random sample.
func (s *shard) evict(now int64) {
	victim, oldest, n := "", int64(0), 0
	for k, exp := range s.m {
		if exp <= now {
			delete(s.m, k)
			return
		}
		if n == 0 || exp < oldest {
			victim, oldest = k, exp
		}
		if n++; n == evictSample {
			break
		}
	}
	delete(s.m, victim)
}

// sweep removes expired entries, looking at most at budget entries per
// shard, and returns how many it removed. Lookups ignore expired entries
// anyway; this only gives their memory back.
func (t *table) sweep(now int64, budget int) int {
	removed := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n := 0
		for k, exp := range s.m {
			if exp <= now {
				delete(s.m, k)
				removed++
			}
			if n++; n == budget {
				break
			}
		}
		s.mu.Unlock()
	}
	return removed
}

// len returns the number of entries, expired ones not yet swept included.
func (t *table) len() int {
	n := 0
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// each calls f for every entry not expired at now, shard by shard under
// the shard's lock (f must not call back into the table).
func (t *table) each(now int64, f func(key string, exp int64)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for k, exp := range s.m {
			if exp > now {
				f(k, exp)
			}
		}
		s.mu.Unlock()
	}
}
