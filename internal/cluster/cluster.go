// Package cluster shares detection state between mxguard nodes through
// Redis (cluster.redis; DESIGN.md "Cluster"): rule counters, so a source
// spread over the nodes reaches its threshold as one; blocks and
// suspensions, fanned out with pub/sub so every node enforces them at
// once; and which node records an attack, so it is one event. The engine
// (internal/detect) stays the authority of its node: it never waits on
// Redis, and with Redis unreachable it goes on protecting with what it
// counts and blocks itself. See README.md.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"mxguard/internal/detect"
	"mxguard/internal/duration"
	"mxguard/internal/events"
	"mxguard/internal/metrics"
)

// Engine is what the cluster needs of the detection engine
// (detect.Engine implements it).
type Engine interface {
	CountKey(c detect.Count) string
	ReachedElsewhere(c detect.Count)
	ApplyRemote(c detect.Change)
	AddImpact(rule, source string, n int64)
	Blocks() []events.Block
	Suspensions() []events.Suspension
}

var (
	_ Engine        = (*detect.Engine)(nil)
	_ detect.Shared = (*Cluster)(nil)
)

// Options configure a Cluster.
type Options struct {
	URL     string           // cluster.redis: redis://[user:password@]host:port/db or rediss://
	Node    string           // cluster.node
	Logger  *slog.Logger     // nil: discard
	Metrics *metrics.Metrics // nil: no mxguard_cluster_redis_up
	// FlushEvery is how often counted observations go to Redis in one
	// pipeline (default 5ms); Heartbeat how often the node announces
	// itself and checks Redis (default 1s). Tests shorten them.
	FlushEvery, Heartbeat time.Duration
	// Timeout bounds one Redis call (default 250ms): Redis on another host
	// that stops answering must not hold the writer's claims for long.
	Timeout time.Duration
}

// Redis states of GET /api/v1/cluster.
const (
	StateOff  = "off"
	StateUp   = "up"
	StateDown = "down"
)

// Status is what GET /api/v1/cluster shows.
type Status struct {
	Node  string     `json:"node"`
	Redis string     `json:"redis"`
	Nodes []NodeSeen `json:"nodes"`
}

// NodeSeen is a node that announced itself recently.
type NodeSeen struct {
	Node     string    `json:"node"`
	LastSeen time.Time `json:"last_seen"`
}

// Key layout. {rule} and {key} are the engine's rule name and CountKey;
// every key but the node announcements carries a TTL.
const (
	prefix      = "mxg:"
	counterKey  = prefix + "c:" // + rule + ":" + key: hash slot -> count
	blockKey    = prefix + "b:" // + source: JSON block, PX until it expires
	suspendKey  = prefix + "s:" // + account: JSON suspension
	claimKey    = prefix + "e:" // + rule + ":" + source|service: the node recording the attack
	impactKey   = prefix + "i:" // + rule + ":" + source: refusals on other nodes, for the recording node
	nodeKey     = prefix + "n:" // + node: last seen (unix ms), PX 3 heartbeats
	changesChan = prefix + "changes"
)

const (
	countQueue   = 1 << 14 // counted observations waiting for a flush
	publishQueue = 1 << 12 // changes waiting to be published
	maxPending   = 1 << 16 // changes kept while Redis is down
	slots        = 16      // as detect's windows: window/16 per slot

	reloadEvery = 15 * time.Second
)

// Cluster is one node's link to the shared state.
type Cluster struct {
	o    Options
	log  *slog.Logger
	rdb  *redis.Client
	id   string       // this process: messages it sent come back and are ignored
	up   atomic.Bool  // the last call to Redis succeeded
	seen atomic.Int32 // 0 before the first call, then seenUp or seenDown (logs once per change)
	gaug interface{ Set(float64) }

	counts  chan detect.Count
	changes chan detect.Change
	resync  chan struct{} // Redis came (back) up: reload and republish

	mu      sync.Mutex
	pending map[string]detect.Change // changes not published yet, by key (the last wins)
	claims  map[string]claim         // claim keys this node holds
	impact  map[impactOf]int64       // refusals for events other nodes record, not flushed yet
	nodes   []NodeSeen
	dropped uint64 // counts or changes dropped on a full queue since the last log
}

const (
	seenUp int32 = iota + 1
	seenDown
)

// New checks the URL and builds the client; it does not connect (Run does,
// and reconnects for as long as it runs).
func New(o Options) (*Cluster, error) {
	ro, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("cluster: redis URL: %w", err)
	}
	if o.FlushEvery <= 0 {
		o.FlushEvery = 5 * time.Millisecond
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 250 * time.Millisecond
	}
	// Fail fast: a call that cannot be made in Timeout is retried by the
	// next flush or heartbeat, never by go-redis in a loop.
	ro.DialTimeout, ro.ReadTimeout, ro.WriteTimeout = o.Timeout, o.Timeout, o.Timeout
	ro.PoolTimeout = o.Timeout
	ro.MaxRetries, ro.DialerRetries = -1, 1
	ro.ContextTimeoutEnabled = true
	c := &Cluster{
		o:       o,
		log:     o.Logger,
		rdb:     redis.NewClient(ro),
		id:      randomID(),
		counts:  make(chan detect.Count, countQueue),
		changes: make(chan detect.Change, publishQueue),
		resync:  make(chan struct{}, 1),
		pending: make(map[string]detect.Change),
		claims:  make(map[string]claim),
		impact:  make(map[impactOf]int64),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("redis", ro.Addr)
	if o.Metrics != nil {
		c.gaug = o.Metrics.EnableCluster()
	}
	return c, nil
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// Count queues a counted observation for the next flush; on a full queue
// (Redis slow or down) it is dropped: the node still counts it locally.
func (c *Cluster) Count(dc detect.Count) {
	select {
	case c.counts <- dc:
	default:
		c.noteDrop()
	}
}

// Publish queues a change of this node for the other nodes.
func (c *Cluster) Publish(ch detect.Change) {
	select {
	case c.changes <- ch:
	default:
		c.noteDrop()
	}
}

// Refused counts a refusal toward the event another node records for
// rule and source; the next flush adds it there.
func (c *Cluster) Refused(rule, source string) {
	c.mu.Lock()
	k := impactOf{rule, source}
	if _, ok := c.impact[k]; ok || len(c.impact) < maxPending {
		c.impact[k]++
	} else {
		c.dropped++
	}
	c.mu.Unlock()
}

// impactOf names the event refusals count toward.
type impactOf struct{ rule, source string }

func (k impactOf) key() string { return impactKey + k.rule + ":" + k.source }

// claim is an attack this node records.
type claim struct {
	ttl    time.Duration
	impact impactOf
}

func (c *Cluster) noteDrop() {
	c.mu.Lock()
	c.dropped++
	c.mu.Unlock()
}

// Status reports this node, the state of Redis and the nodes seen at the
// last heartbeat (none while Redis is down).
func (c *Cluster) Status() Status {
	s := Status{Node: c.o.Node, Redis: StateDown, Nodes: []NodeSeen{}}
	if c.up.Load() {
		s.Redis = StateUp
		c.mu.Lock()
		s.Nodes = append(s.Nodes, c.nodes...)
		c.mu.Unlock()
	}
	return s
}

// Run keeps the node in the cluster until ctx is done: it flushes counts,
// publishes changes, applies the other nodes' changes, announces the node
// and resynchronises after Redis was unreachable. It closes the client
// when it returns; nothing it starts outlives it.
func (c *Cluster) Run(ctx context.Context, eng Engine) {
	var wg sync.WaitGroup
	wg.Go(func() { c.runCounts(ctx, eng) })
	wg.Go(func() { c.runPublish(ctx, eng) })
	wg.Go(func() { c.runSubscribe(ctx, eng) })
	c.runHeartbeat(ctx, eng)
	wg.Wait()
	// What comes after (the engine's last flush) does not wait on a
	// closed client: claims are won locally.
	c.up.Store(false)
	if err := c.rdb.Close(); err != nil {
		c.log.Debug("cluster: close redis client", "err", err)
	}
}

// call runs f with the per-call timeout and notes Redis' state from its
// outcome.
func (c *Cluster) call(ctx context.Context, f func(ctx context.Context) error) error {
	return c.callWithin(ctx, c.o.Timeout, f)
}

// callWithin is call with a budget of d, for the bulk work of a
// resynchronisation (every block in force, in one pipeline).
func (c *Cluster) callWithin(ctx context.Context, d time.Duration, f func(ctx context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := f(cctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		if ctx.Err() == nil {
			c.markDown(err)
		}
		return err
	}
	c.markUp()
	return nil
}

// markDown and markUp log only changes of state: a Redis that stays down
// is reported once, not at every flush.
func (c *Cluster) markDown(err error) {
	c.up.Store(false)
	if c.seen.Swap(seenDown) != seenDown {
		c.mu.Lock()
		c.nodes = nil
		c.mu.Unlock()
		c.log.Warn("cluster: redis unreachable; this node protects with its own state until it is back", "err", err)
	}
	if c.gaug != nil {
		c.gaug.Set(0)
	}
}

func (c *Cluster) markUp() {
	c.up.Store(true)
	if c.seen.Swap(seenUp) != seenUp {
		c.log.Info("cluster: redis up; resynchronising")
		c.wantResync()
	}
	if c.gaug != nil {
		c.gaug.Set(1)
	}
}

func (c *Cluster) wantResync() {
	select {
	case c.resync <- struct{}{}:
	default: // one is due already
	}
}

// runHeartbeat announces the node, lists the others, keeps this node's
// claims alive and notices Redis coming back.
func (c *Cluster) runHeartbeat(ctx context.Context, eng Engine) {
	t := time.NewTicker(c.o.Heartbeat)
	defer t.Stop()
	// Every reloadEvery the node resynchronises even though Redis stayed
	// up: a message published while this node's subscription was being
	// re-established (go-redis does that by itself, after a blip too
	// short for any call here to fail) is not lost for good.
	reload := max(1, int(reloadEvery/c.o.Heartbeat))
	for beat := 1; ; beat++ {
		c.heartbeat(ctx, eng)
		c.logDrops()
		if beat%reload == 0 && c.up.Load() {
			c.wantResync()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Cluster) heartbeat(ctx context.Context, eng Engine) {
	now := time.Now()
	c.mu.Lock()
	claims := make(map[string]claim, len(c.claims))
	for k, cl := range c.claims {
		claims[k] = cl
	}
	c.mu.Unlock()
	var nodes []NodeSeen
	impact := make(map[impactOf]*redis.StringCmd, len(claims))
	err := c.call(ctx, func(ctx context.Context) error {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, nodeKey+c.o.Node, now.UnixMilli(), 3*c.o.Heartbeat)
			for k, cl := range claims {
				p.PExpire(ctx, k, cl.ttl)
				impact[cl.impact] = p.GetDel(ctx, cl.impact.key())
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		nodes, err = c.scanNodes(ctx)
		return err
	})
	if err != nil {
		return
	}
	c.mu.Lock()
	c.nodes = nodes
	c.mu.Unlock()
	for k, cmd := range impact {
		if n, err := cmd.Int64(); err == nil {
			eng.AddImpact(k.rule, k.source, n)
		}
	}
}

// scanNodes lists the announced nodes, by name.
func (c *Cluster) scanNodes(ctx context.Context) ([]NodeSeen, error) {
	keys, err := c.scan(ctx, nodeKey+"*")
	if err != nil || len(keys) == 0 {
		return []NodeSeen{}, err
	}
	vals, err := c.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]NodeSeen, 0, len(keys))
	for i, k := range keys {
		s, _ := vals[i].(string)
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			continue // expired between SCAN and MGET, or not ours
		}
		out = append(out, NodeSeen{Node: strings.TrimPrefix(k, nodeKey), LastSeen: time.UnixMilli(ms).UTC()})
	}
	slices.SortFunc(out, func(a, b NodeSeen) int { return strings.Compare(a.Node, b.Node) })
	return out, nil
}

// scan returns the keys matching pattern, at most maxPending of them.
func (c *Cluster) scan(ctx context.Context, pattern string) ([]string, error) {
	var keys []string
	it := c.rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for it.Next(ctx) && len(keys) < maxPending {
		keys = append(keys, it.Val())
	}
	return keys, it.Err()
}

func (c *Cluster) logDrops() {
	c.mu.Lock()
	n := c.dropped
	c.dropped = 0
	c.mu.Unlock()
	if n > 0 {
		c.log.Warn("cluster: queue full, observations or changes not shared (each node still counts and blocks for itself)", "dropped", n)
	}
}

// --- counters ---

// countScript adds ARGV[2] to slot ARGV[1] of the counter hash KEYS[1],
// drops the slots older than the window, renews its TTL (ARGV[3] ms) and
// returns the sum of the window: what every node counted for the key.
var countScript = redis.NewScript(`
local slot = tonumber(ARGV[1])
redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local sum = 0
for i = 1, #all, 2 do
  local s = tonumber(all[i])
  if s and s > slot - ` + strconv.Itoa(slots) + ` then
    sum = sum + tonumber(all[i + 1])
  else
    redis.call('HDEL', KEYS[1], all[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return sum
`)

// aggKey groups the counts of one flush: one script call per rule, key and
// slot.
type aggKey struct {
	rule             string
	kind             detect.Kind
	addr             netip.Addr
	account, service string
	slot             int64
}

type agg struct {
	n      int64
	sample detect.Count
}

func (c *Cluster) runCounts(ctx context.Context, eng Engine) {
	t := time.NewTicker(c.o.FlushEvery)
	defer t.Stop()
	batch := make(map[aggKey]*agg)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if !c.up.Load() {
			continue // counts wait in the queue (and drop once it is full)
		}
	drain:
		for range countQueue {
			select {
			case dc := <-c.counts:
				width := max(int64(1), int64(dc.Window)/slots)
				k := aggKey{dc.Rule, dc.Kind, dc.Addr, dc.Account, dc.Service, dc.At / width}
				if a := batch[k]; a != nil {
					a.n++
					a.sample = dc
				} else {
					batch[k] = &agg{n: 1, sample: dc}
				}
			default:
				break drain
			}
		}
		if len(batch) > 0 {
			c.flushCounts(ctx, eng, batch)
			clear(batch)
		}
		c.flushImpact(ctx)
	}
}

// flushCounts adds a batch to the shared counters in one pipeline and
// tells the engine of every key whose cluster count reached its rule's
// threshold.
func (c *Cluster) flushCounts(ctx context.Context, eng Engine, batch map[aggKey]*agg) {
	type call struct {
		a   *agg
		cmd *redis.Cmd
	}
	calls := make([]call, 0, len(batch))
	err := c.call(ctx, func(ctx context.Context) error {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for k, a := range batch {
				ttl := a.sample.Window + a.sample.Window/slots
				cmd := countScript.Eval(ctx, p, []string{counterKey + k.rule + ":" + eng.CountKey(a.sample)},
					k.slot, a.n, ttl.Milliseconds())
				calls = append(calls, call{a, cmd})
			}
			return nil
		})
		return err
	})
	if err != nil {
		return // lost for the cluster; each node counted them itself
	}
	for _, cl := range calls {
		if sum, err := cl.cmd.Int64(); err == nil && sum >= int64(cl.a.sample.Threshold) {
			eng.ReachedElsewhere(cl.a.sample)
		}
	}
}

// flushImpact adds the refusals counted for other nodes' events where
// they collect them. They are kept for an hour: the recording node reads
// them every heartbeat while its event lasts.
func (c *Cluster) flushImpact(ctx context.Context) {
	c.mu.Lock()
	if len(c.impact) == 0 {
		c.mu.Unlock()
		return
	}
	batch := c.impact
	c.impact = make(map[impactOf]int64)
	c.mu.Unlock()
	_ = c.call(ctx, func(ctx context.Context) error {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for k, n := range batch {
				p.IncrBy(ctx, k.key(), n)
				p.Expire(ctx, k.key(), time.Hour)
			}
			return nil
		})
		return err // lost on failure: impact is a count, not protection
	})
}

// --- claims: one event per attack ---

// Claim decides which node records an attack: the first to set the claim
// key of the rule and source. The claim lasts two windows and the holder
// renews it every heartbeat until its event ends. With Redis unreachable
// every node records its own.
func (c *Cluster) Claim(ctx context.Context, ev events.Event) bool {
	if !c.up.Load() {
		return true
	}
	k := claimOf(ev)
	ttl := 2 * eventWindow(ev)
	var won bool
	err := c.call(ctx, func(ctx context.Context) error {
		var err error
		won, err = c.rdb.SetNX(ctx, k, c.o.Node+" "+c.id, ttl).Result()
		return err
	})
	if err != nil {
		return true
	}
	if won {
		c.mu.Lock()
		c.claims[k] = claim{ttl: ttl, impact: impactOf{ev.Rule, ev.Source}}
		c.mu.Unlock()
	}
	return won
}

func claimOf(ev events.Event) string {
	return claimKey + ev.Rule + ":" + ev.Source + "|" + ev.Service
}

// eventWindow is the window of an event's rule (detail.window), 10m when
// it is missing.
func eventWindow(ev events.Event) time.Duration {
	if s, ok := ev.Detail["window"].(string); ok {
		if d, err := duration.Parse(s); err == nil && d > 0 {
			return d
		}
	}
	return 10 * time.Minute
}

// releaseScript deletes a claim only if this process holds it.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)
