package testutil

import (
	"testing"
	"time"
)

// WaitUntil polls cond until it holds, for work the code under test does
// on goroutines of its own. The deadline is a guard against a hang on a
// loaded machine (CI runs -race on two cores), not a measurement.
func WaitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 30s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
