package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"sync"
	"time"
)

// Console sessions. A login with the admin token gives the browser an
// opaque session id — 32 bytes from crypto/rand, never the token nor
// anything derived from it — so a cookie that leaks (a proxy log, a shared
// browser profile) is worth one session that expires, and cannot be turned
// into the token that also opens the API.
const (
	// sessionIdle ends a session nobody used for this long: a console
	// left open overnight asks for the token again in the morning.
	sessionIdle = 12 * time.Hour
	// sessionMax ends every session this long after its login, used or
	// not; the cookie's Max-Age is the same.
	sessionMax = 24 * time.Hour
	// maxSessions bounds the table. Only a holder of the token can add to
	// it, so the bound is against scripts that log in in a loop, not an
	// attacker; past it the least recently used session goes.
	maxSessions = 1000
)

// session is one login. It is keyed by the SHA-256 of its id, so the table
// holds nothing a browser could present, and a map lookup leaks no timing
// about ids it does not know.
type session struct {
	csrf    string // per-session token every console form posts back
	created time.Time
	seen    time.Time
}

// sessionInfo is what a request learns of its session.
type sessionInfo struct {
	id   string
	csrf string
}

type sessions struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*session
}

func newSessions() *sessions {
	return &sessions{m: map[[sha256.Size]byte]*session{}}
}

// randomHex returns n random bytes in hex. crypto/rand.Read never fails
// (it panics rather than return weak bytes).
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// create starts a session and returns its id and CSRF token.
func (t *sessions) create(now time.Time) sessionInfo {
	si := sessionInfo{id: randomHex(32), csrf: randomHex(32)}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= maxSessions {
		t.evict(now)
	}
	t.m[sha256.Sum256([]byte(si.id))] = &session{csrf: si.csrf, created: now, seen: now}
	return si
}

// evict drops expired sessions and, if the table is still full, the least
// recently used one; t.mu is held.
func (t *sessions) evict(now time.Time) {
	var oldest [sha256.Size]byte
	var oldestSeen time.Time
	for k, s := range t.m {
		if s.expired(now) {
			delete(t.m, k)
			continue
		}
		if oldestSeen.IsZero() || s.seen.Before(oldestSeen) {
			oldest, oldestSeen = k, s.seen
		}
	}
	if len(t.m) >= maxSessions {
		delete(t.m, oldest)
	}
}

func (s *session) expired(now time.Time) bool {
	return now.Sub(s.seen) >= sessionIdle || now.Sub(s.created) >= sessionMax
}

// lookup returns the live session of id and marks it used.
func (t *sessions) lookup(id string, now time.Time) (sessionInfo, bool) {
	if len(id) != 64 {
		return sessionInfo{}, false
	}
	k := sha256.Sum256([]byte(id))
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.m[k]
	if s == nil {
		return sessionInfo{}, false
	}
	if s.expired(now) {
		delete(t.m, k)
		return sessionInfo{}, false
	}
	s.seen = now
	return sessionInfo{id: id, csrf: s.csrf}, true
}

// remove ends the session of id (logout).
func (t *sessions) remove(id string) {
	k := sha256.Sum256([]byte(id))
	t.mu.Lock()
	delete(t.m, k)
	t.mu.Unlock()
}

// clear ends every session (the token changed).
func (t *sessions) clear() {
	t.mu.Lock()
	clear(t.m)
	t.mu.Unlock()
}

func (t *sessions) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// csrfOK compares a posted CSRF token with the session's in constant time.
func csrfOK(given, want string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(given), []byte(want)) == 1
}
