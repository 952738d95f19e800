package metrics

import (
	"sync"
	"time"
)

// RecentMinutes is how far back Recent remembers: the console's "last
// hour" chart.
const RecentMinutes = 60

// Minute is what passed through the gateway in one minute of the clock.
type Minute struct {
	Start time.Time
	// Passed counts messages relayed or spooled; Refused those rejected,
	// deferred or failed (mxguard_messages_total by result).
	Passed, Refused int64
	// ConnRefused counts connections not accepted: blocked, over a limit,
	// listed, busy (mxguard_connections_total, result other than
	// accepted).
	ConnRefused int64
}

// Recent keeps per-minute counts of the last hour in a fixed ring, fed by
// Message and Connection together with the Prometheus counters, so the
// console can draw the last hour without a Prometheus server. Its memory
// is RecentMinutes buckets whatever the traffic.
type Recent struct {
	clock interface{ Now() time.Time }
	mu    sync.Mutex
	ring  [RecentMinutes]Minute // ring[i] holds the minute whose index mod RecentMinutes is i
}

// NewRecent starts an empty ring on clock.
func NewRecent(clock interface{ Now() time.Time }) *Recent {
	return &Recent{clock: clock}
}

// bucket returns the bucket of the minute now falls in, emptied if it last
// held an older minute. The caller holds mu.
func (r *Recent) bucket(now time.Time) *Minute {
	start := now.UTC().Truncate(time.Minute)
	b := &r.ring[(start.Unix()/60)%RecentMinutes]
	if !b.Start.Equal(start) {
		*b = Minute{Start: start}
	}
	return b
}

func (r *Recent) add(f func(*Minute)) {
	now := r.clock.Now()
	r.mu.Lock()
	f(r.bucket(now))
	r.mu.Unlock()
}

// LastHour returns the RecentMinutes minutes up to and including the
// current one, oldest first; minutes without traffic are zero.
func (r *Recent) LastHour() []Minute {
	now := r.clock.Now().UTC().Truncate(time.Minute)
	out := make([]Minute, RecentMinutes)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range out {
		start := now.Add(time.Duration(i-RecentMinutes+1) * time.Minute)
		out[i] = Minute{Start: start}
		if b := r.ring[(start.Unix()/60)%RecentMinutes]; b.Start.Equal(start) {
			out[i] = b
		}
	}
	return out
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Message counts one message in mxguard_messages_total{direction,result}
// and in the recent minutes.
func (m *Metrics) Message(direction, result string) {
	m.Messages.WithLabelValues(direction, result).Inc()
	m.Recent.add(func(b *Minute) {
		if result == "relayed" || result == "spooled" {
			b.Passed++
		} else {
			b.Refused++
		}
	})
}

// Connection counts one connection in
// mxguard_connections_total{listener,result} and, when it was not
// accepted, in the recent minutes.
func (m *Metrics) Connection(listener, result string) {
	m.Connections.WithLabelValues(listener, result).Inc()
	if result != "accepted" {
		m.Recent.add(func(b *Minute) { b.ConnRefused++ })
	}
}
