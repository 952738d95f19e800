// Package resolver is the DNS client every look-up of mxguard uses (DNSBL
// zones, reverse DNS of clients): miekg/dns against dnsbl.resolver or the
// system's name servers, answers cached for their TTL within bounds,
// concurrent look-ups of one name merged into one query. See README.md.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Options configures New.
type Options struct {
	// Server is "host:port" of the resolver; "" reads the name servers
	// of ResolvConf.
	Server string
	// ResolvConf is the system's resolver configuration; default
	// /etc/resolv.conf.
	ResolvConf string
	// Timeout bounds one query to one server; default 2s.
	Timeout time.Duration
	// MinTTL and MaxTTL bound how long an answer is cached, whatever its
	// TTL says: a TTL of 0 must not turn a connection flood into a query
	// flood, and a TTL of a week must not keep a delisted address
	// refused. Defaults 60s and 1h.
	MinTTL, MaxTTL time.Duration
	// MaxEntries bounds the cache; default 100,000.
	MaxEntries int
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Defaults of Options.
const (
	DefaultTimeout    = 2 * time.Second
	DefaultMinTTL     = 60 * time.Second
	DefaultMaxTTL     = time.Hour
	DefaultMaxEntries = 100_000
)

// ErrNoServers means no name server is configured or reachable.
var ErrNoServers = errors.New("resolver: no name server")

// Resolver answers A, AAAA and PTR queries. It is safe for concurrent use.
type Resolver struct {
	o       Options
	servers []string
	client  *dns.Client

	mu       sync.Mutex
	cache    map[key]entry
	inflight map[key]*call
}

type key struct {
	name  string // lowercased, fully qualified
	qtype uint16
}

// entry is a cached answer: addresses or names, empty for NXDOMAIN or
// no data.
type entry struct {
	addrs   []netip.Addr
	names   []string
	expires time.Time
}

type call struct {
	done chan struct{}
	e    entry
	err  error
}

// New returns a Resolver. Without Server, a missing or empty resolv.conf
// is not an error: every look-up then fails, which never blocks mail.
func New(o Options) *Resolver {
	if o.ResolvConf == "" {
		o.ResolvConf = "/etc/resolv.conf"
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MinTTL <= 0 {
		o.MinTTL = DefaultMinTTL
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = DefaultMaxTTL
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	r := &Resolver{o: o, client: &dns.Client{Timeout: o.Timeout}, cache: map[key]entry{}, inflight: map[key]*call{}}
	if o.Server != "" {
		r.servers = []string{o.Server}
	} else if cc, err := dns.ClientConfigFromFile(o.ResolvConf); err == nil {
		for _, s := range cc.Servers {
			r.servers = append(r.servers, net.JoinHostPort(s, cc.Port))
		}
	}
	return r
}

// A returns the IPv4 addresses of name; none (and no error) when the name
// does not exist or has none.
func (r *Resolver) A(ctx context.Context, name string) ([]netip.Addr, error) {
	e, err := r.lookup(ctx, name, dns.TypeA)
	return e.addrs, err
}

// AAAA returns the IPv6 addresses of name.
func (r *Resolver) AAAA(ctx context.Context, name string) ([]netip.Addr, error) {
	e, err := r.lookup(ctx, name, dns.TypeAAAA)
	return e.addrs, err
}

// PTR returns the names of addr's reverse DNS entry (RFC 1035 §3.5,
// RFC 3596 §2.5), without the final dot.
func (r *Resolver) PTR(ctx context.Context, addr netip.Addr) ([]string, error) {
	arpa, err := dns.ReverseAddr(addr.Unmap().String())
	if err != nil {
		return nil, fmt.Errorf("resolver: %w", err)
	}
	e, err := r.lookup(ctx, arpa, dns.TypePTR)
	return e.names, err
}

func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) (entry, error) {
	k := key{dns.Fqdn(strings.ToLower(name)), qtype}
	now := r.o.Now()
	r.mu.Lock()
	if e, ok := r.cache[k]; ok && now.Before(e.expires) {
		r.mu.Unlock()
		return e, nil
	}
	if c, ok := r.inflight[k]; ok {
		r.mu.Unlock()
		select {
		case <-c.done:
			return c.e, c.err
		case <-ctx.Done():
			return entry{}, fmt.Errorf("resolver: %s: %w", name, ctx.Err())
		}
	}
	c := &call{done: make(chan struct{})}
	r.inflight[k] = c
	r.mu.Unlock()

	// The query runs to its own timeout even if this caller gives up:
	// others may be waiting for it, and its answer is cached.
	qctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.o.Timeout*time.Duration(max(1, len(r.servers))))
	c.e, c.err = r.query(qctx, k)
	cancel()

	r.mu.Lock()
	delete(r.inflight, k)
	if c.err == nil {
		r.store(k, c.e, now)
	}
	r.mu.Unlock()
	close(c.done)
	return c.e, c.err
}

// store caches e; the cache never grows past MaxEntries: expired entries
// go first, then arbitrary ones (map order), down to 90%.
func (r *Resolver) store(k key, e entry, now time.Time) {
	if len(r.cache) >= r.o.MaxEntries {
		for ck, ce := range r.cache {
			if !now.Before(ce.expires) {
				delete(r.cache, ck)
			}
		}
		for ck := range r.cache {
			if len(r.cache) < r.o.MaxEntries*9/10 {
				break
			}
			delete(r.cache, ck)
		}
	}
	r.cache[k] = e
}

// query asks each server in turn until one answers (NOERROR or
// NXDOMAIN); SERVFAIL, REFUSED, timeouts and network errors move on to the
// next and, at the last, are the error.
func (r *Resolver) query(ctx context.Context, k key) (entry, error) {
	if len(r.servers) == 0 {
		return entry{}, ErrNoServers
	}
	m := new(dns.Msg)
	m.SetQuestion(k.name, k.qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false) // RFC 9715 / DNS flag day 2020: no fragmentation
	var last error
	for _, srv := range r.servers {
		resp, err := r.exchange(ctx, m, srv)
		if err != nil {
			last = err
			continue
		}
		switch resp.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
			return r.entry(resp, k), nil
		}
		last = fmt.Errorf("resolver: %s %s: %s from %s", k.name, dns.TypeToString[k.qtype], dns.RcodeToString[resp.Rcode], srv)
	}
	return entry{}, last
}

func (r *Resolver) exchange(ctx context.Context, m *dns.Msg, srv string) (*dns.Msg, error) {
	resp, _, err := r.client.ExchangeContext(ctx, m, srv)
	if err == nil && resp.Truncated {
		// RFC 7766 §5: a truncated UDP answer is retried over TCP.
		tcp := &dns.Client{Net: "tcp", Timeout: r.o.Timeout}
		resp, _, err = tcp.ExchangeContext(ctx, m, srv)
	}
	if err != nil {
		return nil, fmt.Errorf("resolver: %s: %w", srv, err)
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) || resp.Question[0].Qtype != m.Question[0].Qtype {
		return nil, fmt.Errorf("resolver: %s: answer for another question", srv)
	}
	return resp, nil
}

// entry reads the answer; its lifetime is the smallest TTL of the records
// used, or for no data the negative TTL of the SOA (RFC 2308 §5), within
// MinTTL..MaxTTL.
func (r *Resolver) entry(resp *dns.Msg, k key) entry {
	var e entry
	ttl := uint32(0)
	first := true
	use := func(t uint32) {
		if first || t < ttl {
			ttl, first = t, false
		}
	}
	for _, rr := range resp.Answer {
		switch v := rr.(type) {
		case *dns.A:
			if k.qtype == dns.TypeA {
				if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
					e.addrs = append(e.addrs, a)
					use(v.Hdr.Ttl)
				}
			}
		case *dns.AAAA:
			if k.qtype == dns.TypeAAAA {
				if a, ok := netip.AddrFromSlice(v.AAAA.To16()); ok {
					e.addrs = append(e.addrs, a)
					use(v.Hdr.Ttl)
				}
			}
		case *dns.PTR:
			if k.qtype == dns.TypePTR {
				e.names = append(e.names, strings.TrimSuffix(strings.ToLower(v.Ptr), "."))
				use(v.Hdr.Ttl)
			}
		}
	}
	if first {
		for _, rr := range resp.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				use(min(soa.Hdr.Ttl, soa.Minttl))
			}
		}
	}
	d := time.Duration(ttl) * time.Second
	d = min(max(d, r.o.MinTTL), r.o.MaxTTL)
	e.expires = r.o.Now().Add(d)
	return e
}

// Len is the number of cached answers (tests, metrics).
func (r *Resolver) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cache)
}

// maxPTR bounds the reverse names checked: an address with dozens of PTR
// records is not asking to be believed, and each costs a query.
const maxPTR = 5

// Confirmed returns addr's forward-confirmed reverse DNS names (FCrDNS):
// the names of its PTR records whose A (or AAAA) records lead back to
// addr. Only such a name says who the client is; a PTR alone is whatever
// the owner of the address range wrote.
func (r *Resolver) Confirmed(ctx context.Context, addr netip.Addr) ([]string, error) {
	addr = addr.Unmap()
	names, err := r.PTR(ctx, addr)
	if err != nil {
		return nil, err
	}
	var out []string
	var last error
	for i, n := range names {
		if i == maxPTR {
			break
		}
		var addrs []netip.Addr
		if addr.Is4() {
			addrs, err = r.A(ctx, n)
		} else {
			addrs, err = r.AAAA(ctx, n)
		}
		if err != nil {
			last = err
			continue
		}
		if slices.Contains(addrs, addr) {
			out = append(out, n)
		}
	}
	if len(out) == 0 && last != nil {
		return nil, last
	}
	return out, nil
}
