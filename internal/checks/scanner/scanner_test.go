package scanner

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// TestSaturated: with max_concurrency 1 and a scan holding the slot, the
// next scan waits at most the timeout and then fails as "busy": 451 4.3.0
// with on_failure tempfail, a pass marked X-Mxguard-Scan: failed with
// accept. Never an unbounded queue, never silent acceptance.
func TestSaturated(t *testing.T) {
	for _, mode := range []OnFailure{Tempfail, Accept} {
		t.Run(string(mode), func(t *testing.T) {
			scans := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scans"}, []string{"scanner", "result"})
			g := New("clamd", Options{Timeout: 100 * time.Millisecond, MaxConcurrency: 1, OnFailure: mode, Scans: scans})
			holding, release := make(chan struct{}), make(chan struct{})
			first := make(chan pipeline.Verdict)
			go func() {
				first <- g.Run(context.Background(), func(context.Context) (pipeline.Verdict, string, error) {
					close(holding)
					<-release // ignores its deadline: the worst scanner client
					return pipeline.Verdict{}, ResultClean, nil
				})
			}()
			<-holding
			called := false
			v := g.Run(context.Background(), func(context.Context) (pipeline.Verdict, string, error) {
				called = true
				return pipeline.Verdict{}, ResultClean, nil
			})
			close(release)
			<-first
			if called {
				t.Error("the second scan ran although the only slot was taken")
			}
			checkFailed(t, mode, v)
			if got := promtest.ToFloat64(scans.WithLabelValues("clamd", ResultBusy)); got != 1 {
				t.Errorf("busy = %v, want 1", got)
			}
		})
	}
}

func checkFailed(t *testing.T, mode OnFailure, v pipeline.Verdict) {
	t.Helper()
	switch mode {
	case Tempfail:
		if v.Reply == nil || v.Reply.Code != 451 || v.Reply.Enhanced != [3]int{4, 3, 0} || v.Reply.Check != "clamd" || len(v.Headers) != 0 {
			t.Errorf("verdict = %+v, want 451 4.3.0 by clamd", v)
		}
	case Accept:
		if v.Reply != nil || len(v.Headers) != 1 || v.Headers[0] != FailedHeader {
			t.Errorf("verdict = %+v, want a pass with %v", v, FailedHeader)
		}
	}
}

// TestFailures: an error or a timeout of the scan is the configured
// failure, counted by result; a verdict passes through with the gate's
// name on its reply.
func TestFailures(t *testing.T) {
	scans := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "scans"}, []string{"scanner", "result"})
	for _, mode := range []OnFailure{Tempfail, Accept} {
		g := New("clamd", Options{Timeout: 50 * time.Millisecond, OnFailure: mode, Scans: scans})
		checkFailed(t, mode, g.Run(context.Background(), func(context.Context) (pipeline.Verdict, string, error) {
			return pipeline.Verdict{}, "", errors.New("garbage answer")
		}))
		checkFailed(t, mode, g.Run(context.Background(), func(ctx context.Context) (pipeline.Verdict, string, error) {
			<-ctx.Done()
			return pipeline.Verdict{}, "", ctx.Err()
		}))
	}
	g := New("clamd", Options{Scans: scans})
	v := g.Run(context.Background(), func(context.Context) (pipeline.Verdict, string, error) {
		return pipeline.Verdict{Reply: reply.Content.With(nil), Class: pipeline.ClassVirus}, ResultVirus, nil
	})
	if v.Reply == nil || v.Reply.Check != "clamd" || v.Class != pipeline.ClassVirus {
		t.Errorf("verdict = %+v", v)
	}
	for result, want := range map[string]float64{ResultError: 2, ResultTimeout: 2, ResultVirus: 1, ResultClean: 0} {
		if got := promtest.ToFloat64(scans.WithLabelValues("clamd", result)); got != want {
			t.Errorf("scans{%s} = %v, want %v", result, got, want)
		}
	}
}

func TestSpamStatus(t *testing.T) {
	if s := SpamStatus(false, -0.1, 5, []string{"A", "B"}); s != "No, score=-0.1 required=5.0 tests=A,B" {
		t.Errorf("SpamStatus = %q", s)
	}
	if s := SpamStatus(true, 7.25, 15, nil); s != "Yes, score=7.2 required=15.0 tests=none" {
		t.Errorf("SpamStatus = %q", s)
	}
}
