// Package duration reads the durations of mxguard's configuration, API
// and command line (INTERFACE.md §2): Go syntax ("30s", "10m", "1h30m")
// plus "d" for days ("90d", "1d12h"), as operators write retention and
// block times.
package duration

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Day is 24 hours; calendar days (DST) do not matter for windows, blocks
// and retention.
const Day = 24 * time.Hour

// Parse reads s. A leading whole number of days may be followed by a Go
// duration: "2d", "1d12h", "-1d" (negative values are the caller's to
// refuse).
func Parse(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	days, rest, ok := strings.Cut(s, "d")
	if !ok {
		return time.ParseDuration(s)
	}
	neg := strings.HasPrefix(days, "-")
	n, err := strconv.ParseUint(strings.TrimPrefix(days, "-"), 10, 32)
	if err != nil || strings.HasPrefix(rest, "-") || strings.HasPrefix(rest, "+") {
		return 0, fmt.Errorf("time: invalid duration %q", s)
	}
	if n > uint64(1<<63-1)/uint64(Day) {
		return 0, fmt.Errorf("time: invalid duration %q", s)
	}
	d := time.Duration(n) * Day
	if rest != "" {
		r, err := time.ParseDuration(rest)
		if err != nil {
			return 0, fmt.Errorf("time: invalid duration %q", s)
		}
		if d > 1<<63-1-r {
			return 0, fmt.Errorf("time: invalid duration %q", s)
		}
		d += r
	}
	if neg {
		d = -d
	}
	return d, nil
}

// Format writes d as an operator would configure it: "10m" rather than
// Go's "10m0s", "1h30m", and whole numbers of days from two days up as
// "90d" ("24h" and "36h" stay hours). Parse reads every result back.
func Format(d time.Duration) string {
	if d >= 2*Day && d%Day == 0 {
		return strconv.FormatInt(int64(d/Day), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
