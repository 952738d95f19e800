package smtpd

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"mxguard/internal/testutil"
)

func TestReadProxyHeader(t *testing.T) {
	v4 := netip.MustParseAddrPort("203.0.113.7:4242")
	v6 := netip.MustParseAddrPort("[2001:db8::7]:4243")
	dst4 := netip.MustParseAddrPort("192.0.2.1:25")
	dst6 := netip.MustParseAddrPort("[2001:db8::1]:25")
	tests := []struct {
		name   string
		in     []byte
		want   netip.AddrPort
		ok     bool
		errStr bool
	}{
		{"v1 tcp4", testutil.ProxyV1(v4, dst4), v4, true, false},
		{"v1 tcp6", testutil.ProxyV1(v6, dst6), v6, true, false},
		{"v2 tcp4", testutil.ProxyV2(v4, dst4), v4, true, false},
		{"v2 tcp6", testutil.ProxyV2(v6, dst6), v6, true, false},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), netip.AddrPort{}, false, false},
		{"v2 local", append(append([]byte{}, proxyV2Sig...), 0x20, 0x00, 0, 0), netip.AddrPort{}, false, false},
		{"smtp instead", []byte("EHLO client.test\r\n"), netip.AddrPort{}, false, true},
		{"v1 no crlf", []byte("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), netip.AddrPort{}, false, true},
		{"v1 bad ip", []byte("PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n"), netip.AddrPort{}, false, true},
		{"v1 family mismatch", []byte("PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n"), netip.AddrPort{}, false, true},
		{"v1 too long", append([]byte("PROXY "), bytes.Repeat([]byte("x"), 200)...), netip.AddrPort{}, false, true},
		{"v2 short block", append(append([]byte{}, proxyV2Sig...), 0x21, 0x11, 0, 4, 1, 2, 3, 4), netip.AddrPort{}, false, true},
		{"v2 bad version", append(append([]byte{}, proxyV2Sig...), 0x31, 0x11, 0, 0), netip.AddrPort{}, false, true},
		{"truncated", []byte("PRO"), netip.AddrPort{}, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Trailing SMTP bytes must not be consumed.
			r := bytes.NewReader(append(tt.in, "EHLO x\r\n"...))
			got, ok, err := readProxyHeader(r)
			if tt.errStr {
				if !errors.Is(err, ErrProxyHeader) {
					t.Fatalf("want ErrProxyHeader, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if ok != tt.ok || got != tt.want {
				t.Errorf("got %v %v, want %v %v", got, ok, tt.want, tt.ok)
			}
			if r.Len() != len("EHLO x\r\n") {
				t.Errorf("header reader consumed %d bytes of the SMTP stream", len("EHLO x\r\n")-r.Len())
			}
		})
	}
}

// FuzzProxyHeader: the PROXY parser must never panic nor read past the
// header, whatever a peer sends.
func FuzzProxyHeader(f *testing.F) {
	f.Add(testutil.ProxyV1(netip.MustParseAddrPort("203.0.113.7:1"), netip.MustParseAddrPort("192.0.2.1:25")))
	f.Add(testutil.ProxyV2(netip.MustParseAddrPort("[2001:db8::7]:1"), netip.MustParseAddrPort("[2001:db8::1]:25")))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("EHLO x\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		src, ok, err := readProxyHeader(r)
		if err == nil && ok && !src.Addr().IsValid() {
			t.Fatalf("ok with invalid address %v", src)
		}
	})
}
