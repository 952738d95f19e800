package testutil

import (
	"sync"
	"time"
)

// FakeClock is a settable clock: tests move it instead of sleeping
// (STYLE.md rule 3). It satisfies every package's one-method Clock.
type FakeClock struct {
	mu sync.Mutex
	t  time.Time
}

// NewFakeClock starts at 2026-11-25 10:00:00 UTC.
func NewFakeClock() *FakeClock {
	return &FakeClock{t: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *FakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
