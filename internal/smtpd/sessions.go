package smtpd

import (
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// State is where a session is in the SMTP dialogue (RFC 5321 §3.3), as
// GET /api/v1/sessions shows it.
type State uint32

const (
	// StateGreeting: connected, no EHLO/HELO yet (a client stuck here holds
	// a slot without ever speaking; a client refused at connect by dnsbl
	// stays here until it leaves).
	StateGreeting State = iota
	// StateHelo: EHLO/HELO answered, no transaction yet (also after
	// STARTTLS, until the next EHLO).
	StateHelo
	// StateMail: MAIL accepted, no recipient yet.
	StateMail
	// StateRcpt: at least one RCPT accepted.
	StateRcpt
	// StateData: the message is being transferred (DATA, or BDAT up to
	// LAST) or checked and relayed before its answer.
	StateData
	// StateIdle: a transaction ended (the message was answered, or RSET or
	// a new EHLO dropped it) and no new MAIL came yet.
	StateIdle
)

var stateNames = [...]string{"greeting", "helo", "mail", "rcpt", "data", "idle"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// live is what the registry shows of one open session. It is part of its
// conn (no allocation of its own); the fields a session changes while it
// runs are atomics written by the session goroutine alone, so tracking
// costs a few uncontended stores per command and a snapshot never waits
// for a session nor makes one wait.
type live struct {
	id       uint64
	listener string
	addr     netip.Addr // the client (after PROXY protocol)
	key      netip.Addr // its per-source key (IPv6 masked)
	v6bits   int
	started  time.Time

	state  atomic.Uint32
	last   atomic.Int64 // Unix nanoseconds of the last byte from the client; 0: none yet
	bytes  atomic.Int64 // bytes read from the client socket
	helo   atomic.Pointer[string]
	secure atomic.Bool // the session runs over TLS
}

// read records n bytes from the client at now.
func (l *live) read(n int, now time.Time) {
	l.bytes.Add(int64(n))
	l.last.Store(now.UnixNano())
}

func (l *live) setState(s State) { l.state.Store(uint32(s)) }

// endTransaction marks a transaction, if one was open, as over.
func (l *live) endTransaction() {
	if State(l.state.Load()) > StateHelo {
		l.setState(StateIdle)
	}
}

// maxHeloShown bounds the HELO name a session keeps for the registry: a
// domain is at most 255 octets (RFC 1035 §2.3.4), and go-smtp takes a
// name of up to a 64 KiB line, which the sessions API would list up to
// 500 times.
const maxHeloShown = 255

// setHelo keeps the client's HELO name, cut to maxHeloShown octets of
// valid UTF-8; it allocates only when the name changed (a second EHLO).
func (l *live) setHelo(h string) {
	if len(h) > maxHeloShown {
		h = strings.ToValidUTF8(h[:maxHeloShown], "")
	}
	if p := l.helo.Load(); p != nil && *p == h {
		return
	}
	l.helo.Store(&h)
}

// SessionInfo is one open session at the time of a snapshot.
type SessionInfo struct {
	ID       uint64
	Listener string // "smtp" or "submission"
	// Addr is the client address; Source its canonical source, as
	// detection counts and blocks it: an IPv4 address, or the IPv6
	// prefix of limits.ipv6_prefix ("2001:db8::/64").
	Addr      netip.Addr
	Source    string
	State     State
	StartedAt time.Time
	// IdleFor is the time since the client's last byte (since the
	// connection opened if it sent none).
	IdleFor time.Duration
	Helo    string
	TLS     bool
	// BytesIn counts every byte read from the client's socket after the
	// PROXY header: commands, message data, and after STARTTLS the TLS
	// records as they came (ciphertext, handshake included).
	BytesIn int64
}

// Sessions is the registry of the open sessions of one or more listeners
// (the gateway shares one between smtp and submission). It also numbers
// the connections, so a session's id is the "conn" of its log lines and
// unique across the listeners.
type Sessions struct {
	m      sync.Map // *live → struct{}; sync.Map: adds and removes from many goroutines never share one lock
	nextID atomic.Uint64
}

// NewSessions returns an empty registry.
func NewSessions() *Sessions { return &Sessions{} }

func (r *Sessions) add(l *live)    { r.m.Store(l, struct{}{}) }
func (r *Sessions) remove(l *live) { r.m.Delete(l) }

// Snapshot lists the open sessions at now, in no particular order.
func (r *Sessions) Snapshot(now time.Time) []SessionInfo {
	var out []SessionInfo
	r.m.Range(func(k, _ any) bool {
		out = append(out, k.(*live).info(now))
		return true
	})
	return out
}

func (l *live) info(now time.Time) SessionInfo {
	si := SessionInfo{
		ID: l.id, Listener: l.listener, Addr: l.addr, Source: canonicalSource(l.key, l.v6bits),
		State: State(l.state.Load()), StartedAt: l.started, TLS: l.secure.Load(), BytesIn: l.bytes.Load(),
	}
	since := l.started
	if t := l.last.Load(); t != 0 {
		since = time.Unix(0, t)
	}
	si.IdleFor = max(now.Sub(since), 0)
	if h := l.helo.Load(); h != nil {
		si.Helo = *h
	}
	return si
}

// canonicalSource writes a per-source key the way events and blocks name
// sources (internal/detect): IPv4 as the address, IPv6 as its prefix.
func canonicalSource(key netip.Addr, v6bits int) string {
	if key.Is4() || v6bits <= 0 || v6bits >= 128 {
		return key.String()
	}
	return netip.PrefixFrom(key, v6bits).String()
}
