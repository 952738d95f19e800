package metrics

import (
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/testutil"
)

// TestRecentMinutes counts into minutes of a fake clock: each count lands
// in its own minute, a minute an hour old is forgotten (its bucket reused),
// and the Prometheus counters count the same.
func TestRecentMinutes(t *testing.T) {
	clock := testutil.NewFakeClock() // 10:00:00
	m := New()
	m.Recent = NewRecent(clock)

	m.Message("inbound", "relayed")
	m.Message("outbound", "spooled")
	m.Message("inbound", "rejected")
	m.Connection("smtp", "accepted") // not refused: not in the ring
	m.Connection("smtp", "blocked")
	clock.Advance(90 * time.Second) // 10:01:30
	m.Message("inbound", "deferred")
	m.Connection("smtp", "limit")
	m.Connection("smtp", "blocked")

	h := m.Recent.LastHour()
	if len(h) != RecentMinutes {
		t.Fatalf("LastHour has %d minutes, want %d", len(h), RecentMinutes)
	}
	last, prev := h[len(h)-1], h[len(h)-2]
	want := time.Date(2026, 11, 25, 10, 1, 0, 0, time.UTC)
	if !last.Start.Equal(want) || !prev.Start.Equal(want.Add(-time.Minute)) || !h[0].Start.Equal(want.Add(-59*time.Minute)) {
		t.Errorf("minutes %v … %v, %v; want ending at %v", h[0].Start, prev.Start, last.Start, want)
	}
	if (prev != Minute{Start: prev.Start, Passed: 2, Refused: 1, ConnRefused: 1}) {
		t.Errorf("10:00 = %+v, want 2 passed, 1 refused, 1 connection refused", prev)
	}
	if (last != Minute{Start: last.Start, Refused: 1, ConnRefused: 2}) {
		t.Errorf("10:01 = %+v, want 1 refused, 2 connections refused", last)
	}
	if n := promtest.ToFloat64(m.Connections.WithLabelValues("smtp", "blocked")); n != 2 {
		t.Errorf("mxguard_connections_total{blocked} = %v, want 2", n)
	}
	if n := promtest.ToFloat64(m.Messages.WithLabelValues("inbound", "relayed")); n != 1 {
		t.Errorf("mxguard_messages_total{inbound,relayed} = %v, want 1", n)
	}

	// An hour later 10:00 is out of the window; a count in 11:00 reuses
	// its bucket without its old counts.
	clock.Advance(59 * time.Minute) // 11:00:30
	m.Message("inbound", "relayed")
	h = m.Recent.LastHour()
	if h[0].Start.Equal(prev.Start) || h[0].Start != want {
		t.Errorf("oldest minute %v, want %v", h[0].Start, want)
	}
	if last := h[len(h)-1]; last.Passed != 1 || last.Refused != 0 || last.ConnRefused != 0 {
		t.Errorf("11:00 = %+v, want only 1 passed (10:00's bucket emptied)", last)
	}
	var total int64
	for _, mi := range h {
		total += mi.Passed + mi.Refused + mi.ConnRefused
	}
	if total != 4 { // 10:01's 3 and 11:00's 1
		t.Errorf("last hour holds %d counts, want 4", total)
	}
}

// BenchmarkMessage is the cost a message pays for the chart and the
// counter together.
func BenchmarkMessage(b *testing.B) {
	m := New()
	for b.Loop() {
		m.Message("inbound", "relayed")
	}
}
