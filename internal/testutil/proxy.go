package testutil

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// PROXY protocol headers as a load balancer (HAProxy, a cloud LB) puts them
// in front of the SMTP stream, after haproxy's proxy-protocol.txt. Built
// here independently of the parser in internal/smtpd so a test checks the
// parser against the spec, not against itself.

// proxyFamily returns both addresses in one family: the spec carries a
// single family per header, so a mixed pair is sent as IPv6 with the IPv4
// address mapped (::ffff:a.b.c.d).
func proxyFamily(src, dst netip.AddrPort) (s, d netip.Addr, v6 bool) {
	s, d = src.Addr().Unmap(), dst.Addr().Unmap()
	if s.Is4() && d.Is4() {
		return s, d, false
	}
	return netip.AddrFrom16(s.As16()), netip.AddrFrom16(d.As16()), true
}

// ProxyV1 is the human-readable header (spec §2.1):
// "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" (TCP6 for IPv6).
func ProxyV1(src, dst netip.AddrPort) []byte {
	s, d, v6 := proxyFamily(src, dst)
	proto := "TCP4"
	if v6 {
		proto = "TCP6"
	}
	return fmt.Appendf(nil, "PROXY %s %s %s %d %d\r\n", proto, s, d, src.Port(), dst.Port())
}

// proxyV2Sig is the fixed 12-byte v2 signature (spec §2.2); it cannot occur
// at the start of a v1 header or of an SMTP command.
var proxyV2Sig = [12]byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}

// ProxyV2 is the binary header (spec §2.2) with command PROXY over TCP:
// signature, version/command 0x21, family/transport 0x11 (TCP over IPv4)
// or 0x21 (TCP over IPv6), the address block length (big endian), then
// source address, destination address, source port, destination port.
func ProxyV2(src, dst netip.AddrPort) []byte {
	s, d, v6 := proxyFamily(src, dst)
	fam, alen := byte(0x11), uint16(12)
	if v6 {
		fam, alen = 0x21, 36
	}
	b := append([]byte(nil), proxyV2Sig[:]...)
	b = append(b, 0x21, fam)
	b = binary.BigEndian.AppendUint16(b, alen)
	b = append(b, s.AsSlice()...)
	b = append(b, d.AsSlice()...)
	b = binary.BigEndian.AppendUint16(b, src.Port())
	b = binary.BigEndian.AppendUint16(b, dst.Port())
	return b
}
