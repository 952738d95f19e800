// Package samepass remembers which wrong passwords were already counted,
// so that the same wrong password tried again within a rule's window
// counts once (INTERFACE.md §3 brute_force): a phone polling every minute
// with an old password, or ten colleagues behind one office NAT whose mail
// client kept yesterday's password, must not look like a guesser, while a
// guesser, whose every attempt is a new password, is counted in full.
//
// Only fingerprints are kept, never a password: for SMTP AUTH a keyed
// hash (HMAC-SHA-256 under a key drawn at start and never stored) of the
// login and the password, truncated to 64 bits; for Dovecot the pwhash it
// already sends (a truncated SHA-256 under its auth_policy_hash_nonce).
// See README.md.
package samepass

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"hash/maphash"
	"sync"
	"time"
)

// Hasher makes password fingerprints under a key of its own.
type Hasher struct {
	key [32]byte
}

// NewHasher draws a fresh key. Fingerprints from different Hashers (or
// runs) never match, which only means a retry right after a restart
// counts once more.
func NewHasher() *Hasher {
	h := &Hasher{}
	if _, err := rand.Read(h.key[:]); err != nil {
		panic("samepass: no randomness: " + err.Error()) // crypto/rand does not fail on Linux
	}
	return h
}

// Password returns the fingerprint of password tried for login: the first
// 64 bits of HMAC-SHA-256(key, login || 0x00 || password). Keyed, so a
// memory dump holds nothing an offline dictionary can be run against
// without the key, and nothing that matches another run's.
func (h *Hasher) Password(login, password string) uint64 {
	m := hmac.New(sha256.New, h.key[:])
	m.Write([]byte(login))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return binary.BigEndian.Uint64(m.Sum(nil))
}

// Dovecot returns the fingerprint of Dovecot's pwhash for login. Dovecot
// truncates its hash (12 bits by default), so two different passwords of
// one login share a fingerprint with probability 1/4096: a guesser's
// count is at most a fraction of a percent low.
func (h *Hasher) Dovecot(login, pwhash string) uint64 {
	return h.Password(login, "\x00dovecot\x00"+pwhash)
}

// Key says which counter an attempt belongs to: the rule, the key the rule
// counts it under (a source and service, or an account; 16 bytes, as the
// detection engine keys its counters) and the password fingerprint.
type Key struct {
	Rule     uint32
	Counter  [16]byte
	Password uint64
}

// Options configure a Set.
type Options struct {
	// MaxEntries bounds the memory: past it an insert into a full shard
	// drops expired entries, or the oldest of a random sample (default
	// 1<<17 entries, about 12 MiB: 96 bytes each, BenchmarkFlood).
	MaxEntries int
}

const (
	shards            = 64
	defaultMaxEntries = 1 << 17
)

// Set remembers fingerprints for a window. It is safe for concurrent use.
type Set struct {
	seed     maphash.Seed
	perShard int
	shards   [shards]shard
}

type shard struct {
	mu sync.Mutex
	m  map[Key]int64 // when the attempt was counted, UnixNano
}

// New returns an empty Set.
func New(o Options) *Set {
	if o.MaxEntries <= 0 {
		o.MaxEntries = defaultMaxEntries
	}
	s := &Set{seed: maphash.MakeSeed(), perShard: max(1, o.MaxEntries/shards)}
	for i := range s.shards {
		s.shards[i].m = make(map[Key]int64)
	}
	return s
}

// Repeat reports whether k was counted less than window before now; if
// not, it records k as counted now. A repeat does not extend the entry, so
// a password retried for hours counts once per window, which keeps it far
// below any threshold above 1.
func (s *Set) Repeat(k Key, now time.Time, window time.Duration) bool {
	sh := &s.shards[s.shardOf(k)]
	t := now.UnixNano()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if at, ok := sh.m[k]; ok && t-at < int64(window) && t >= at {
		return true
	}
	if _, ok := sh.m[k]; !ok && len(sh.m) >= s.perShard {
		sh.evict(t, int64(window))
	}
	sh.m[k] = t
	return false
}

// sampleSize is how many entries an eviction looks at (Go's map iteration
// starts at a random place, so the sample is random).
const sampleSize = 8

// evict makes room for one entry: it drops every expired entry among a
// sample, or else the oldest of the sample.
func (sh *shard) evict(now, window int64) {
	var oldest Key
	oldestAt, n, dropped := int64(0), 0, false
	for k, at := range sh.m {
		if now-at >= window {
			delete(sh.m, k)
			dropped = true
		} else if n == 0 || at < oldestAt {
			oldest, oldestAt = k, at
		}
		if n++; n >= sampleSize {
			break
		}
	}
	if !dropped {
		delete(sh.m, oldest)
	}
}

// Len returns how many fingerprints are held.
func (s *Set) Len() int {
	n := 0
	for i := range s.shards {
		s.shards[i].mu.Lock()
		n += len(s.shards[i].m)
		s.shards[i].mu.Unlock()
	}
	return n
}

// Sweep drops entries older than maxWindow (the longest window of the
// rules that use the set), looking at no more than budget entries a shard.
func (s *Set) Sweep(now time.Time, maxWindow time.Duration, budget int) {
	t := now.UnixNano()
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		n := 0
		for k, at := range sh.m {
			if t-at >= int64(maxWindow) {
				delete(sh.m, k)
			}
			if n++; n >= budget {
				break
			}
		}
		sh.mu.Unlock()
	}
}

func (s *Set) shardOf(k Key) uint64 {
	var b [28]byte
	binary.LittleEndian.PutUint32(b[:4], k.Rule)
	copy(b[4:20], k.Counter[:])
	binary.LittleEndian.PutUint64(b[20:], k.Password)
	return maphash.Bytes(s.seed, b[:]) % shards
}
