// Package dnsbl scores a connecting client against DNS block and allow
// lists, weighted as Postfix postscreen does, and refuses it at connect
// when the score reaches dnsbl.threshold. See README.md.
package dnsbl

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// Name is the check's label in metrics and replies.
const Name = "dnsbl"

// Resolver is what the check needs of internal/resolver.
type Resolver interface {
	A(ctx context.Context, name string) ([]netip.Addr, error)
}

// Options configures New.
type Options struct {
	Zones     []string // dnsbl.zones
	Threshold int      // dnsbl.threshold; default 1
	Resolver  Resolver
	// Wait bounds the look-ups of one connection, all zones in parallel;
	// a zone that has not answered by then adds nothing. Default 3s.
	Wait time.Duration
	// HealthEvery is how often Run re-checks the zones; default 30m.
	HealthEvery time.Duration
	Log         *slog.Logger // nil: slog.Default
}

// DefaultWait bounds the greeting's delay by DNS: postscreen waits up to
// its 6 s greet wait; 3 s is enough for a resolver that answers at all.
const DefaultWait = 3 * time.Second

// Check is the connect check. Build it with New.
type Check struct {
	o       Options
	entries []Entry
	zones   []*zone // distinct zones, in configuration order
}

type zone struct {
	name     string
	entries  []Entry
	disabled atomic.Bool
}

var _ pipeline.ConnectCheck = (*Check)(nil)

// New parses the zones (errors name the bad item; config validation calls
// ParseEntry for each first, at its line).
func New(o Options) (*Check, error) {
	if o.Threshold == 0 {
		o.Threshold = 1
	}
	if o.Wait <= 0 {
		o.Wait = DefaultWait
	}
	if o.HealthEvery <= 0 {
		o.HealthEvery = 30 * time.Minute
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	c := &Check{o: o}
	byName := map[string]*zone{}
	for _, s := range o.Zones {
		e, err := ParseEntry(s)
		if err != nil {
			return nil, fmt.Errorf("dnsbl zone %q: %w", s, err)
		}
		c.entries = append(c.entries, e)
		z := byName[e.Zone]
		if z == nil {
			z = &zone{name: e.Zone}
			byName[e.Zone] = z
			c.zones = append(c.zones, z)
		}
		z.entries = append(z.entries, e)
	}
	return c, nil
}

// Name is the metric label.
func (*Check) Name() string { return Name }

// Result is a client's score.
type Result struct {
	Score int
	// Listed are the entries that matched, highest weight first.
	Listed []Entry
	// Failed are the zones whose look-up failed or did not answer in
	// time; they added nothing.
	Failed []string
}

// Score looks addr up in every enabled zone in parallel and sums the
// weights of the matching entries (each entry counts once, postscreen's
// rule).
func (c *Check) Score(ctx context.Context, addr netip.Addr) Result {
	ctx, cancel := context.WithTimeout(ctx, c.o.Wait)
	defer cancel()
	type answer struct {
		z     *zone
		addrs []netip.Addr
		err   error
	}
	answers := make(chan answer, len(c.zones))
	n := 0
	for _, z := range c.zones {
		if z.disabled.Load() {
			continue
		}
		n++
		go func() {
			a, err := c.o.Resolver.A(ctx, queryName(addr, z.name))
			answers <- answer{z, a, err}
		}()
	}
	var res Result
	for range n {
		a := <-answers
		if a.err != nil {
			res.Failed = append(res.Failed, a.z.name)
			continue
		}
		for _, e := range a.z.entries {
			if matches(e, a.addrs) {
				res.Score += e.Weight
				res.Listed = append(res.Listed, e)
			}
		}
	}
	sort.SliceStable(res.Listed, func(i, j int) bool { return res.Listed[i].Weight > res.Listed[j].Weight })
	sort.Strings(res.Failed)
	return res
}

func matches(e Entry, addrs []netip.Addr) bool {
	for _, a := range addrs {
		if e.Filter != nil && e.Filter.Match(a) || e.Filter == nil && listing(a) {
			return true
		}
	}
	return false
}

// CheckConnect refuses a client whose score reaches the threshold with
// "554 5.7.1 Service unavailable; client [ADDR] blocked using ZONE" (the
// listing zone of highest weight, as postscreen names it); the front end
// then answers 503 5.5.1 to everything but QUIT (RFC 5321 §3.1).
// Trusted and allowlisted clients are never looked up, nor clients of the
// submission listener: DNSBLs list the dial-up and mobile ranges roaming
// users send from (Spamhaus PBL), and those authenticate instead (Postfix
// runs postscreen on port 25 only). A failed look-up adds nothing: DNS
// trouble never refuses mail.
func (c *Check) CheckConnect(ctx context.Context, s *pipeline.Session) *reply.Reply {
	if s.Trusted || s.Allowlisted || s.Listener == "submission" || len(c.zones) == 0 || !s.Addr.IsValid() {
		return nil
	}
	res := c.Score(ctx, s.Addr)
	if res.Score < c.o.Threshold || len(res.Listed) == 0 {
		return nil
	}
	by := res.Listed[0].Zone
	return reply.Listed.WithText(fmt.Sprintf("Service unavailable; client [%s] blocked using %s", s.Addr.Unmap(), by)).
		With(fmt.Errorf("dnsbl: score %d >= %d: %v", res.Score, c.o.Threshold, specs(res.Listed))).By(Name)
}

func specs(es []Entry) []string {
	var s []string
	for _, e := range es {
		s = append(s, e.Spec)
	}
	return s
}

// Run checks the zones' health now and every HealthEvery until ctx ends.
func (c *Check) Run(ctx context.Context) {
	if len(c.zones) == 0 {
		return
	}
	t := time.NewTicker(c.o.HealthEvery)
	defer t.Stop()
	for {
		c.CheckHealth(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// CheckHealth tests every zone with the addresses RFC 5782 §5 fixes: a
// list MUST NOT list 127.0.0.1 and MUST list 127.0.0.2. A zone that lists
// 127.0.0.1 answers for everything — misconfigured, or a retired list
// that now lists the world to make its users stop — and would refuse all
// mail: it is disabled with a warning until a later check passes (as
// Haraka's dns-list does). A zone that does not list 127.0.0.2 gets a
// warning only. A failed look-up changes nothing.
func (c *Check) CheckHealth(ctx context.Context) {
	var wg sync.WaitGroup
	for _, z := range c.zones {
		wg.Go(func() { c.checkZone(ctx, z) })
	}
	wg.Wait()
}

func (c *Check) checkZone(ctx context.Context, z *zone) {
	ctx, cancel := context.WithTimeout(ctx, c.o.Wait)
	defer cancel()
	one, err := c.o.Resolver.A(ctx, queryName(netip.AddrFrom4([4]byte{127, 0, 0, 1}), z.name))
	if err != nil {
		c.o.Log.WarnContext(ctx, "dnsbl zone health check failed", "zone", z.name, "err", err)
		return
	}
	if len(one) > 0 {
		if !z.disabled.Swap(true) {
			c.o.Log.WarnContext(ctx, "dnsbl zone lists 127.0.0.1, so it answers for every address: disabled", "zone", z.name, "answer", one)
		}
		return
	}
	if z.disabled.Swap(false) {
		c.o.Log.InfoContext(ctx, "dnsbl zone no longer lists 127.0.0.1: enabled again", "zone", z.name)
	}
	two, err := c.o.Resolver.A(ctx, queryName(netip.AddrFrom4([4]byte{127, 0, 0, 2}), z.name))
	if err == nil && len(two) == 0 {
		c.o.Log.WarnContext(ctx, "dnsbl zone does not list the test address 127.0.0.2 (RFC 5782 §5): is it a working list?", "zone", z.name)
	}
}

// Disabled lists the zones disabled by the health check.
func (c *Check) Disabled() []string {
	var d []string
	for _, z := range c.zones {
		if z.disabled.Load() {
			d = append(d, z.name)
		}
	}
	return d
}
