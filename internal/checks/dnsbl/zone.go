package dnsbl

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Entry is one dnsbl.zones item in Postfix postscreen's syntax
// (postconf(5), postscreen_dnsbl_sites): "zone", "zone*weight",
// "zone=filter*weight". The same zone may appear several times with
// different filters and weights; it is queried once.
type Entry struct {
	Zone   string  // DNS domain of the list, lowercased
	Filter *Filter // nil: any listing answer (127.0.0.0/8)
	Weight int     // default 1; negative: an allowlist
	Spec   string  // as configured
}

// ParseEntry reads one dnsbl.zones item; its errors do not repeat the
// item (config names it by its line).
func ParseEntry(s string) (Entry, error) {
	e := Entry{Spec: s, Weight: 1}
	rest := strings.TrimSpace(s)
	if i := strings.LastIndexByte(rest, '*'); i >= 0 {
		w, err := strconv.Atoi(rest[i+1:])
		if err != nil || w == 0 || w < -1000 || w > 1000 {
			return Entry{}, fmt.Errorf("weight %q is not a whole number between -1000 and 1000, not 0", rest[i+1:])
		}
		e.Weight, rest = w, rest[:i]
	}
	if i := strings.IndexByte(rest, '='); i >= 0 {
		f, err := ParseFilter(rest[i+1:])
		if err != nil {
			return Entry{}, err
		}
		e.Filter, rest = f, rest[:i]
	}
	zone := strings.ToLower(strings.TrimSuffix(rest, "."))
	if err := checkDomain(zone); err != nil {
		return Entry{}, err
	}
	e.Zone = zone
	return e, nil
}

// checkDomain accepts a DNS domain of at least two labels that leaves room
// for the 64 characters of an IPv6 query prefix (RFC 5782 §2.4) within
// 253.
func checkDomain(z string) error {
	if z == "" || len(z) > 253-64 {
		return fmt.Errorf("%q is not a DNS domain", z)
	}
	labels := strings.Split(z, ".")
	if len(labels) < 2 {
		return fmt.Errorf("%q is not a DNS domain (one label)", z)
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("%q is not a DNS domain", z)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q is not a DNS domain", z)
			}
		}
	}
	return nil
}

// Filter matches the answer address of a listing: four octet patterns,
// each a number or "[...]" with ';'-separated numbers and n..m ranges,
// e.g. 127.0.0.[2..11] or 127.[0..255].[0..255].[2;3] (postconf(5)).
type Filter struct {
	octets [4][]span
	text   string
}

type span struct{ lo, hi uint8 }

// ParseFilter reads a filter.
func ParseFilter(s string) (*Filter, error) {
	f := &Filter{text: s}
	rest := s
	for o := 0; o < 4; o++ {
		if o > 0 {
			if !strings.HasPrefix(rest, ".") {
				return nil, fmt.Errorf("filter %q: want four octets d.d.d.d", s)
			}
			rest = rest[1:]
		}
		var item string
		if strings.HasPrefix(rest, "[") {
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, fmt.Errorf("filter %q: unclosed [", s)
			}
			item, rest = rest[1:end], rest[end+1:]
		} else {
			end := strings.IndexByte(rest, '.')
			if end < 0 {
				end = len(rest)
			}
			item, rest = rest[:end], rest[end:]
		}
		for _, part := range strings.Split(item, ";") {
			lo, hi, isRange := strings.Cut(part, "..")
			a, err1 := octet(lo)
			b, err2 := a, error(nil)
			if isRange {
				b, err2 = octet(hi)
			}
			if err1 != nil || err2 != nil || b < a {
				return nil, fmt.Errorf("filter %q: bad octet pattern %q (want n, n..m or n;m in 0..255)", s, part)
			}
			f.octets[o] = append(f.octets[o], span{a, b})
		}
	}
	if rest != "" {
		return nil, fmt.Errorf("filter %q: want four octets d.d.d.d", s)
	}
	return f, nil
}

func octet(s string) (uint8, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 || s == "" || s[0] == '+' {
		return 0, fmt.Errorf("bad octet %q", s)
	}
	return uint8(n), nil
}

// Match reports whether an answer address matches.
func (f *Filter) Match(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	b := a.As4()
	for o, spans := range f.octets {
		ok := false
		for _, sp := range spans {
			if b[o] >= sp.lo && b[o] <= sp.hi {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (f *Filter) String() string { return f.text }

// listing reports whether an answer address means "listed" for an entry
// without a filter: an address in 127.0.0.0/8 (RFC 5782 §2.3), except
// 127.255.255.0/24, which lists use for errors such as "query refused"
// (Spamhaus's 127.255.255.252..255), and anything outside 127/8, which
// is a resolver that rewrites NXDOMAIN, not a listing.
func listing(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	b := a.As4()
	return b[0] == 127 && !(b[1] == 255 && b[2] == 255)
}

// queryName is the name to look up for addr in zone (RFC 5782 §2.1,
// §2.4): the IPv4 octets or the 32 IPv6 nibbles in reverse order.
func queryName(addr netip.Addr, zone string) string {
	addr = addr.Unmap()
	var b strings.Builder
	if addr.Is4() {
		a := addr.As4()
		fmt.Fprintf(&b, "%d.%d.%d.%d.", a[3], a[2], a[1], a[0])
	} else {
		a := addr.As16()
		const hex = "0123456789abcdef"
		for i := 15; i >= 0; i-- {
			b.WriteByte(hex[a[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[a[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(zone)
	return b.String()
}
