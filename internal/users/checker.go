package users

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// ErrBusy means the bcrypt work in flight is at its bound and the queue is
// full, or a check waited too long for its turn: a temporary failure (RFC
// 4954 §6: 454 4.7.0), never a wrong password.
var ErrBusy = errors.New("users: too many logins being checked; try again later")

// Clock gives the checker its notion of now; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Verifier checks a login elsewhere: by relaying it to the delivery
// servers (auth.downstream, relay.Relay.Authenticate).
type Verifier func(ctx context.Context, name, password string) (bool, error)

// CheckerOptions configure a Checker: Path (auth.users_file) or Verify
// (auth.downstream), exactly one.
type CheckerOptions struct {
	Path   string   // auth.users_file
	Verify Verifier // auth.downstream
	// Concurrency is how many bcrypt comparisons may run at once; default
	// half the CPUs (at least 1), so logins can never take every core
	// from mail.
	Concurrency int
	// MaxWaiting is how many checks may wait for a slot; past it a check
	// fails at once with ErrBusy. Default 32 per slot.
	MaxWaiting int
	// MaxWait bounds the wait for a slot; default 10 s (a client's AUTH
	// should not hang for a minute behind a flood).
	MaxWait time.Duration
	// CacheTTL is how long a successful check is remembered (default
	// 5 min; negative: no cache). A client that logs in for every message
	// then costs one bcrypt per TTL, not one per message.
	CacheTTL time.Duration
	Logger   *slog.Logger
	Clock    Clock
	// compare replaces bcrypt in tests.
	compare func(hash, password []byte) error
}

// Checker verifies logins against the users file, or with a Verifier,
// bounding the work in flight and caching successes. It re-reads the file
// when it changes (checked at most once a second, at a login), so
// `mxguard users add` takes effect without a reload; a file that no longer
// parses is reported and the last good one stays in force.
type Checker struct {
	path     string
	verify   Verifier
	log      *slog.Logger
	clock    Clock
	compare  func(hash, password []byte) error
	slots    chan struct{}
	waiting  atomic.Int64
	maxWait  time.Duration
	maxQueue int64
	cacheTTL time.Duration

	cur      atomic.Pointer[state]
	statMu   sync.Mutex
	lastStat time.Time
	version  fileVersion

	key     [32]byte // keys the success cache; drawn at start, never stored
	cacheMu sync.Mutex
	cache   map[[32]byte]cacheEntry
}

// state is the file in force.
type state struct {
	db *DB
	// dummy is a hash of the file's cost, compared for names that do not
	// exist, so refusing one takes as long as a wrong password (no user
	// enumeration by timing).
	dummy []byte
}

type cacheEntry struct {
	st      *state // the file it was checked against: a change drops it
	expires int64
}

const (
	maxCache     = 4096
	statInterval = time.Second
)

// fileVersion identifies a version of the file.
type fileVersion struct {
	ino, size int64
	mtime     int64
}

// NewChecker loads the users file; an unreadable or invalid file is an
// error (config validation reports it at FILE:LINE).
func NewChecker(o CheckerOptions) (*Checker, error) {
	if (o.Path == "") == (o.Verify == nil) {
		return nil, errors.New("users: a checker needs a users file or a verifier, one of them")
	}
	c := &Checker{path: o.Path, verify: o.Verify, log: o.Logger, clock: o.Clock, compare: o.compare,
		maxWait: o.MaxWait, cacheTTL: o.CacheTTL, cache: make(map[[32]byte]cacheEntry)}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.clock == nil {
		c.clock = systemClock{}
	}
	if c.compare == nil {
		c.compare = bcrypt.CompareHashAndPassword
	}
	n := o.Concurrency
	if n <= 0 {
		n = max(1, runtime.GOMAXPROCS(0)/2)
	}
	c.slots = make(chan struct{}, n)
	c.maxQueue = int64(o.MaxWaiting)
	if c.maxQueue <= 0 {
		c.maxQueue = int64(32 * n)
	}
	if c.maxWait <= 0 {
		c.maxWait = 10 * time.Second
	}
	if c.cacheTTL == 0 {
		c.cacheTTL = 5 * time.Minute
	}
	if _, err := rand.Read(c.key[:]); err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	if c.verify != nil {
		c.cur.Store(&state{}) // one state for ever: the cache lives by TTL only
		return c, nil
	}
	v, err := stat(c.path)
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	db, err := Load(c.path)
	if err != nil {
		return nil, err
	}
	c.install(db, v)
	c.lastStat = c.clock.Now()
	return c, nil
}

func stat(path string) (fileVersion, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileVersion{}, err
	}
	v := fileVersion{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		v.ino = int64(st.Ino)
	}
	return v, nil
}

// install puts db in force; called by NewChecker and under statMu.
func (c *Checker) install(db *DB, v fileVersion) {
	cost := bcrypt.DefaultCost
	for _, h := range db.hashes {
		cost, _ = bcrypt.Cost(h)
		break
	}
	st := &state{db: db}
	if old := c.cur.Load(); old != nil && bcryptCost(old.dummy) == cost {
		st.dummy = old.dummy
	} else {
		var pw [16]byte
		_, _ = rand.Read(pw[:])
		st.dummy, _ = bcrypt.GenerateFromPassword(pw[:], cost)
	}
	c.version = v
	c.cur.Store(st)
}

func bcryptCost(h []byte) int {
	k, _ := bcrypt.Cost(h)
	return k
}

// Users returns how many users the file in force has (0 with a
// Verifier).
func (c *Checker) Users() int {
	if db := c.cur.Load().db; db != nil {
		return db.Len()
	}
	return 0
}

// Reload re-reads the file now (SIGHUP, POST /api/v1/reload).
func (c *Checker) Reload() error {
	if c.verify != nil {
		return nil
	}
	c.statMu.Lock()
	defer c.statMu.Unlock()
	return c.reloadLocked()
}

func (c *Checker) reloadLocked() error {
	v, err := stat(c.path)
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	db, err := Load(c.path)
	if err != nil {
		return err
	}
	c.install(db, v)
	return nil
}

// maybeReload re-reads the file if it changed, at most once a second.
func (c *Checker) maybeReload() {
	if c.verify != nil {
		return
	}
	now := c.clock.Now()
	c.statMu.Lock()
	defer c.statMu.Unlock()
	if now.Sub(c.lastStat) < statInterval && !now.Before(c.lastStat) {
		return
	}
	c.lastStat = now
	v, err := stat(c.path)
	if err != nil {
		c.log.Error("users: stat users file; the last good one stays in force", "file", c.path, "err", err)
		return
	}
	if v == c.version {
		return
	}
	if err := c.reloadLocked(); err != nil {
		c.version = v // report a broken version once, not at every login
		c.log.Error("users: users file changed but is invalid; the last good one stays in force", "file", c.path, "err", err)
		return
	}
	c.log.Info("users: users file reloaded", "file", c.path, "users", c.Users())
}

// Check reports whether password is name's. An error is temporary
// (ErrBusy, or ctx ended): the client should retry, and it is not a
// failed login.
func (c *Checker) Check(ctx context.Context, name, password string) (bool, error) {
	c.maybeReload()
	st := c.cur.Load()
	if len(password) > MaxPassword || len(name) > MaxName {
		// bcrypt would refuse or truncate; no stored password is this long.
		return false, nil
	}
	// The file's names are accounts (lowercased); a downstream may tell
	// "Alice" from "alice", so it gets the name as the client gave it.
	key := name
	if c.verify == nil {
		key = Normalize(name)
	}
	ck := c.cacheKey(key, password)
	if c.cached(ck, st) {
		return true, nil
	}
	if err := c.acquire(ctx); err != nil {
		return false, err
	}
	ok, err := c.check(ctx, st, key, password)
	<-c.slots
	if err != nil || !ok {
		return false, err
	}
	c.remember(ck, st)
	return true, nil
}

// check runs one verification in a slot.
func (c *Checker) check(ctx context.Context, st *state, name, password string) (bool, error) {
	if c.verify != nil {
		return c.verify(ctx, name, password)
	}
	hash, known := st.db.hash(name)
	if !known {
		hash = st.dummy
	}
	return c.compare(hash, []byte(password)) == nil && known, nil
}

// cached reports whether ck succeeded against st less than CacheTTL ago.
func (c *Checker) cached(ck [32]byte, st *state) bool {
	if c.cacheTTL < 0 {
		return false
	}
	now := c.clock.Now().UnixNano()
	c.cacheMu.Lock()
	defer c.cacheMu.Unlock()
	e, ok := c.cache[ck]
	if ok && (e.st != st || now >= e.expires) {
		delete(c.cache, ck)
		return false
	}
	return ok
}

// remember caches a success; when the cache is full, expired entries and
// those of an older file go first, and if none did, nothing is cached.
func (c *Checker) remember(ck [32]byte, st *state) {
	if c.cacheTTL < 0 {
		return
	}
	now := c.clock.Now().UnixNano()
	c.cacheMu.Lock()
	defer c.cacheMu.Unlock()
	if len(c.cache) >= maxCache {
		for k, e := range c.cache {
			if e.st != st || now >= e.expires {
				delete(c.cache, k)
			}
		}
		if len(c.cache) >= maxCache {
			return
		}
	}
	c.cache[ck] = cacheEntry{st: st, expires: now + int64(c.cacheTTL)}
}

// acquire waits for a bcrypt slot, bounded in queue length and time.
func (c *Checker) acquire(ctx context.Context) error {
	select {
	case c.slots <- struct{}{}:
		return nil
	default:
	}
	if c.waiting.Add(1) > c.maxQueue {
		c.waiting.Add(-1)
		return ErrBusy
	}
	defer c.waiting.Add(-1)
	t := time.NewTimer(c.maxWait)
	defer t.Stop()
	select {
	case c.slots <- struct{}{}:
		return nil
	case <-t.C:
		return ErrBusy
	case <-ctx.Done():
		return ctx.Err()
	}
}

// cacheKey is a keyed hash of name and password: the cache holds no
// password, and nothing usable without the key.
func (c *Checker) cacheKey(name, password string) [32]byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write([]byte(name))
	m.Write([]byte{0})
	m.Write([]byte(password))
	var k [32]byte
	m.Sum(k[:0])
	return k
}
