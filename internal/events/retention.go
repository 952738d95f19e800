package events

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Pruner is a Store that can delete old ended events (storage.retention).
type Pruner interface {
	// DeleteEnded deletes at most limit events that ended before cutoff,
	// oldest first, and returns how many it deleted. Active events are
	// never deleted.
	DeleteEnded(ctx context.Context, cutoff time.Time, limit int) (int, error)
}

// Retention defaults: a batch small enough that one DELETE holds SQLite's
// write lock for a few milliseconds (BenchmarkDeleteEnded), a pause that
// lets the detection engine's writer in between batches, a first run soon
// after start (a node that restarts often still prunes) and then hourly.
const (
	DefaultRetentionBatch    = 1000
	DefaultRetentionPause    = 50 * time.Millisecond
	DefaultRetentionInterval = time.Hour
	DefaultRetentionFirstRun = time.Minute
)

// RetentionOptions configure Prune and RunRetention.
type RetentionOptions struct {
	// Retention is how long ended events are kept, counted from ended_at;
	// zero keeps them forever.
	Retention time.Duration
	Now       func() time.Time // default time.Now
	Batch     int              // rows per statement; default DefaultRetentionBatch
	Pause     time.Duration    // between statements, at least as long as the last took; default DefaultRetentionPause, negative: none
	Interval  time.Duration    // between runs; default DefaultRetentionInterval
	FirstRun  time.Duration    // after start; default DefaultRetentionFirstRun, negative: at once
	Logger    *slog.Logger
	// Deleted, if set, is told the rows each statement deleted (the
	// mxguard_events_deleted_total counter).
	Deleted func(n int)
}

func (o RetentionOptions) withDefaults() RetentionOptions {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Batch <= 0 {
		o.Batch = DefaultRetentionBatch
	}
	if o.Pause == 0 {
		o.Pause = DefaultRetentionPause
	}
	if o.Interval <= 0 {
		o.Interval = DefaultRetentionInterval
	}
	if o.FirstRun == 0 {
		o.FirstRun = DefaultRetentionFirstRun
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Prune deletes every event that ended more than o.Retention ago, one
// batch per statement with a pause between, and returns how many it
// deleted. The cutoff is fixed when it starts, so events ending meanwhile
// wait for the next run. It stops at the first error or when ctx ends,
// returning what it deleted so far.
func Prune(ctx context.Context, p Pruner, o RetentionOptions) (int, error) {
	o = o.withDefaults()
	if o.Retention <= 0 {
		return 0, nil
	}
	cutoff := o.Now().Add(-o.Retention)
	total := 0
	for {
		start := time.Now()
		n, err := p.DeleteEnded(ctx, cutoff, o.Batch)
		took := time.Since(start)
		total += n
		if n > 0 && o.Deleted != nil {
			o.Deleted(n)
		}
		if err != nil {
			return total, fmt.Errorf("retention: %w", err)
		}
		if n < o.Batch {
			return total, nil
		}
		// At least as long as the statement took: retention keeps the
		// database (SQLite's one writer) busy half of the time at most,
		// however slow a batch turns out.
		if o.Pause > 0 {
			t := time.NewTimer(max(o.Pause, took))
			select {
			case <-ctx.Done():
				t.Stop()
				return total, fmt.Errorf("retention: %w", ctx.Err())
			case <-t.C:
			}
		}
	}
}

// RunRetention prunes o.FirstRun after it starts and every o.Interval
// after that, until ctx ends. A failed run (the database is down) is
// logged and retried at the next interval; mail never waits for it.
func RunRetention(ctx context.Context, p Pruner, o RetentionOptions) {
	o = o.withDefaults()
	if o.Retention <= 0 {
		return
	}
	wait := max(o.FirstRun, 0)
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = o.Interval
		n, err := Prune(ctx, p, o)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			o.Logger.Error("events: retention run failed (retried at the next run)", "deleted", n, "err", err, "next", o.Interval)
		case n > 0:
			o.Logger.Info("events: retention deleted ended events", "deleted", n, "retention", o.Retention)
		}
	}
}
