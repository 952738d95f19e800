package testutil

import (
	"bytes"
	"net/netip"
	"testing"
)

func TestProxyHeaders(t *testing.T) {
	v4src := netip.MustParseAddrPort("203.0.113.7:40000")
	v4dst := netip.MustParseAddrPort("192.0.2.1:25")
	v6src := netip.MustParseAddrPort("[2001:db8::7]:40000")

	if got, want := string(ProxyV1(v4src, v4dst)), "PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n"; got != want {
		t.Errorf("v1 IPv4: %q, want %q", got, want)
	}
	if got, want := string(ProxyV1(v6src, v4dst)), "PROXY TCP6 2001:db8::7 ::ffff:192.0.2.1 40000 25\r\n"; got != want {
		t.Errorf("v1 mixed: %q, want %q", got, want)
	}

	sig := []byte("\r\n\r\n\x00\r\nQUIT\n")
	want4 := append(append([]byte{}, sig...),
		0x21, 0x11, 0x00, 0x0c, // v2 PROXY, TCP over IPv4, 12 address bytes
		203, 0, 113, 7, 192, 0, 2, 1,
		0x9c, 0x40, 0x00, 0x19) // ports 40000, 25
	if got := ProxyV2(v4src, v4dst); !bytes.Equal(got, want4) {
		t.Errorf("v2 IPv4:\n got % x\nwant % x", got, want4)
	}
	got6 := ProxyV2(v6src, v4dst)
	if len(got6) != 16+36 || got6[13] != 0x21 || got6[15] != 36 {
		t.Errorf("v2 IPv6 header: % x", got6)
	}
	if src := netip.AddrFrom16([16]byte(got6[16:32])); src != v6src.Addr() {
		t.Errorf("v2 IPv6 source %v, want %v", src, v6src.Addr())
	}
	if dst := netip.AddrFrom16([16]byte(got6[32:48])).Unmap(); dst != v4dst.Addr() {
		t.Errorf("v2 IPv6 destination %v, want %v", dst, v4dst.Addr())
	}
}
