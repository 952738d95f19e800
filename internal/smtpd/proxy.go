package smtpd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2). A load
// balancer in front of mxguard prepends one header naming the real client;
// only peers listed in `proxy_protocol` may send it, and they must.
//
// The header is read without read-ahead (exact lengths, or byte by byte for
// the v1 line) so not one byte of the SMTP stream after it is consumed.

var proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// maxV1Line is the longest v1 header including CRLF (proxy-protocol.txt §2.1).
const maxV1Line = 107

// ErrProxyHeader means the peer did not send a valid PROXY header.
var ErrProxyHeader = errors.New("invalid PROXY protocol header")

// readProxyHeader returns the source address announced by the header. ok is
// false for a header that carries no address (v1 UNKNOWN, v2 LOCAL or an
// unsupported family): the connection's own address then stands.
func readProxyHeader(r io.Reader) (src netip.AddrPort, ok bool, err error) {
	var first [12]byte
	if _, err := io.ReadFull(r, first[:5]); err != nil {
		return src, false, fmt.Errorf("%w: %v", ErrProxyHeader, err)
	}
	if string(first[:5]) == "PROXY" {
		line := make([]byte, 5, maxV1Line)
		copy(line, first[:5])
		var b [1]byte
		for len(line) < maxV1Line {
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return src, false, fmt.Errorf("%w: %v", ErrProxyHeader, err)
			}
			line = append(line, b[0])
			if b[0] == '\n' {
				return parseProxyV1(line)
			}
		}
		return src, false, fmt.Errorf("%w: v1 line too long", ErrProxyHeader)
	}
	// Anything else must be the v2 signature; fail at once on a client
	// that speaks SMTP instead of waiting for bytes that never come.
	if !bytes.Equal(first[:5], proxyV2Sig[:5]) {
		return src, false, fmt.Errorf("%w: no PROXY header", ErrProxyHeader)
	}
	if _, err := io.ReadFull(r, first[5:]); err != nil {
		return src, false, fmt.Errorf("%w: %v", ErrProxyHeader, err)
	}
	if !bytes.Equal(first[:], proxyV2Sig) {
		return src, false, fmt.Errorf("%w: no signature", ErrProxyHeader)
	}
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return src, false, fmt.Errorf("%w: %v", ErrProxyHeader, err)
	}
	body := make([]byte, binary.BigEndian.Uint16(hdr[2:4]))
	if _, err := io.ReadFull(r, body); err != nil {
		return src, false, fmt.Errorf("%w: %v", ErrProxyHeader, err)
	}
	return parseProxyV2(hdr[0], hdr[1], body)
}

// parseProxyV1 parses "PROXY TCP4 src dst sport dport\r\n".
func parseProxyV1(line []byte) (netip.AddrPort, bool, error) {
	var zero netip.AddrPort
	s, found := strings.CutSuffix(string(line), "\r\n")
	if !found {
		return zero, false, fmt.Errorf("%w: v1 line not CRLF terminated", ErrProxyHeader)
	}
	f := strings.Split(s, " ")
	if len(f) >= 2 && f[0] == "PROXY" && f[1] == "UNKNOWN" {
		return zero, false, nil
	}
	if len(f) != 6 || f[0] != "PROXY" || (f[1] != "TCP4" && f[1] != "TCP6") {
		return zero, false, fmt.Errorf("%w: malformed v1 line", ErrProxyHeader)
	}
	src, err1 := netip.ParseAddr(f[2])
	_, err2 := netip.ParseAddr(f[3])
	sport, err3 := strconv.ParseUint(f[4], 10, 16)
	_, err4 := strconv.ParseUint(f[5], 10, 16)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return zero, false, fmt.Errorf("%w: %v", ErrProxyHeader, err)
	}
	if (f[1] == "TCP4") != src.Is4() {
		return zero, false, fmt.Errorf("%w: address family mismatch", ErrProxyHeader)
	}
	return netip.AddrPortFrom(src, uint16(sport)), true, nil
}

// parseProxyV2 parses the binary header after its signature.
func parseProxyV2(verCmd, fam byte, body []byte) (netip.AddrPort, bool, error) {
	var zero netip.AddrPort
	if verCmd>>4 != 2 {
		return zero, false, fmt.Errorf("%w: v2 version %d", ErrProxyHeader, verCmd>>4)
	}
	switch verCmd & 0x0f {
	case 0: // LOCAL: health check from the proxy itself
		return zero, false, nil
	case 1: // PROXY
	default:
		return zero, false, fmt.Errorf("%w: v2 command %d", ErrProxyHeader, verCmd&0x0f)
	}
	switch fam >> 4 {
	case 1: // AF_INET
		if len(body) < 12 {
			return zero, false, fmt.Errorf("%w: short v2 IPv4 block", ErrProxyHeader)
		}
		a := netip.AddrFrom4([4]byte(body[0:4]))
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(body[8:10])), true, nil
	case 2: // AF_INET6
		if len(body) < 36 {
			return zero, false, fmt.Errorf("%w: short v2 IPv6 block", ErrProxyHeader)
		}
		a := netip.AddrFrom16([16]byte(body[0:16])).Unmap()
		return netip.AddrPortFrom(a, binary.BigEndian.Uint16(body[32:34])), true, nil
	default: // AF_UNSPEC or AF_UNIX: no usable address
		return zero, false, nil
	}
}
