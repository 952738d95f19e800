package detect

import "net/netip"

// ParseSource reads a source as blocks name it, an IP address or CIDR, as
// a masked prefix (IPv4-mapped IPv6 becomes IPv4); the admin API filters
// open sessions with it.
func ParseSource(s string) (netip.Prefix, error) { return parseSource(s) }
