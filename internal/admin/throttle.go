package admin

import (
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Failed authentication throttling. Every wrong token — at the console
// login, or as an API or pprof bearer token — counts against the client's
// address; past freeFailures within failWindow the address is locked out
// for firstLockout, and each further lockout doubles, up to maxLockout.
// While locked out every attempt is answered 429 with Retry-After without
// looking at the token (a right guess must not be told apart from a wrong
// one). A success clears the address. A 64-character token is beyond
// online guessing anyway; this keeps a weak one from being guessed at
// network speed and keeps the cost of guessing on the guesser.
const (
	freeFailures = 5
	failWindow   = time.Minute
	firstLockout = 30 * time.Second
	maxLockout   = time.Hour
	// forgetAfter drops an address quiet this long after its last
	// failure or lockout: its next lockout starts small again.
	forgetAfter = time.Hour
	// maxClients bounds the table under failures from many addresses; a
	// full table first drops forgotten addresses, then the quietest.
	maxClients = 10000
)

// strikes is what the throttle remembers of one address.
type strikes struct {
	fails    int       // failures in the window starting at window
	window   time.Time //
	lockouts int       // lockouts so far: the next lasts firstLockout << lockouts
	until    time.Time // locked out until
	last     time.Time // last failure
}

type throttle struct {
	mu sync.Mutex
	m  map[netip.Prefix]*strikes
}

func newThrottle() *throttle {
	return &throttle{m: map[netip.Prefix]*strikes{}}
}

// clientKey is the address a request is throttled under: the peer's IPv4
// address, or its IPv6 /64 (one site's allocation, which a guesser could
// otherwise walk through). The admin listener is not behind a trusted
// proxy, so forwarded-for headers are not believed.
func clientKey(r *http.Request) netip.Prefix {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Prefix{} // one shared key for unparsable peers
	}
	a := ap.Addr().Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p
}

// wait returns how long key is still locked out; 0 when it may try.
func (t *throttle) wait(key netip.Prefix, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := t.m[key]; s != nil && now.Before(s.until) {
		return s.until.Sub(now)
	}
	return 0
}

// fail records a failed attempt of key and returns the lockout it started,
// if it started one.
func (t *throttle) fail(key netip.Prefix, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.m[key]
	if s != nil && s.forgotten(now) {
		s = nil
	}
	if s == nil {
		if len(t.m) >= maxClients {
			t.prune(now)
		}
		s = &strikes{window: now}
		t.m[key] = s
	}
	if now.Sub(s.window) >= failWindow {
		s.fails, s.window = 0, now
	}
	s.fails++
	s.last = now
	if s.fails < freeFailures {
		return 0
	}
	d := min(firstLockout<<min(s.lockouts, 16), maxLockout)
	s.lockouts++
	s.until = now.Add(d)
	s.fails, s.window = 0, s.until // a fresh window once the lockout ends
	return d
}

// reset forgets key after a successful authentication.
func (t *throttle) reset(key netip.Prefix) {
	t.mu.Lock()
	delete(t.m, key)
	t.mu.Unlock()
}

// prune drops forgotten addresses and, if none was, the one whose last
// activity is oldest; t.mu is held.
func (t *throttle) prune(now time.Time) {
	var quietest netip.Prefix
	var quietestAt time.Time
	dropped := false
	for k, s := range t.m {
		if s.forgotten(now) {
			delete(t.m, k)
			dropped = true
			continue
		}
		if at := s.active(); quietestAt.IsZero() || at.Before(quietestAt) {
			quietest, quietestAt = k, at
		}
	}
	if !dropped {
		delete(t.m, quietest)
	}
}

// active is the last time s failed or was locked out.
func (s *strikes) active() time.Time {
	if s.until.After(s.last) {
		return s.until
	}
	return s.last
}

func (s *strikes) forgotten(now time.Time) bool {
	return now.Sub(s.active()) >= forgetAfter
}

func (t *throttle) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}
