package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// LibraryLog sends go-redis' own messages (a failed dial, a dropped
// pub/sub connection) to l at Warn, at most one every interval, with the
// number of those left out: while Redis is down go-redis reports every
// attempt, and the cluster already said once that Redis is unreachable.
// go-redis has one logger per process, so the process's wiring (mxguard
// serve) calls this once.
func LibraryLog(l *slog.Logger, interval time.Duration) {
	redis.SetLogger(&libraryLog{log: l, every: interval})
}

type libraryLog struct {
	log   *slog.Logger
	every time.Duration

	mu       sync.Mutex
	last     time.Time
	withheld int
}

func (g *libraryLog) Printf(ctx context.Context, format string, v ...any) {
	g.mu.Lock()
	now := time.Now()
	if now.Sub(g.last) < g.every {
		g.withheld++
		g.mu.Unlock()
		return
	}
	n := g.withheld
	g.last, g.withheld = now, 0
	g.mu.Unlock()
	g.log.WarnContext(ctx, "cluster: redis client: "+fmt.Sprintf(format, v...), "withheld", n)
}
