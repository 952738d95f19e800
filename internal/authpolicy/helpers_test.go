package authpolicy

import (
	"bufio"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"mxguard/internal/detect"
	"mxguard/internal/testutil"
)

// fakeEngine records what the server asked and told.
type fakeEngine struct {
	mu      sync.Mutex
	blocked map[netip.Addr]bool
	refused []netip.Addr
	obs     []detect.Observation
}

var _ Engine = (*fakeEngine)(nil)

func newFakeEngine(blocked ...string) *fakeEngine {
	e := &fakeEngine{blocked: make(map[netip.Addr]bool)}
	for _, b := range blocked {
		e.blocked[netip.MustParseAddr(b)] = true
	}
	return e
}

func (e *fakeEngine) Blocked(a netip.Addr) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.blocked[a]
}

func (e *fakeEngine) Refused(a netip.Addr) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.refused = append(e.refused, a)
}

func (e *fakeEngine) Observe(o detect.Observation) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.obs = append(e.obs, o)
	return e.blocked[o.Addr]
}

// DovecotPasswordKey is a stand-in fingerprint: the test sees which
// pwhash an observation carried.
func (e *fakeEngine) DovecotPasswordKey(login, pwhash string) uint64 {
	return uint64(len(login))<<32 | uint64(crc32.ChecksumIEEE([]byte(pwhash)))
}

func (e *fakeEngine) observations() []detect.Observation {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]detect.Observation(nil), e.obs...)
}

func (e *fakeEngine) refusals() []netip.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]netip.Addr(nil), e.refused...)
}

// serve starts s on a loopback port and returns its address; it stops
// with the test.
func serve(t testing.TB, s *Server) string { return testutil.Serve(t, s.Serve) }

// rawClient speaks HTTP/1.1 on one keep-alive connection, as Dovecot's
// auth process does, with requests written byte for byte like Dovecot's.
type rawClient struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawClient {
	t.Helper()
	c := testutil.DialTCP(t, addr, 0)
	return &rawClient{conn: c, r: bufio.NewReader(c)}
}

// dovecotRequest is a request as Dovecot 2.3 writes it (header order and
// spelling from ../shared/samples/dovecot-authpolicy-*.txt).
func dovecotRequest(command, apiKey, body string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST /?command=%s HTTP/1.1\r\nHost: 127.0.0.1:18080\r\nDate: Wed, 25 Nov 2026 11:48:13 GMT\r\n", command)
	fmt.Fprintf(&b, "User-Agent: dovecot/auth-policy-client\r\nContent-Length: %d\r\nConnection: Keep-Alive\r\nContent-Type: application/json\r\n", len(body))
	if apiKey != "" {
		fmt.Fprintf(&b, "X-API-Key: %s\r\n", apiKey)
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return b.String()
}

// do sends raw (one or more whole requests) and reads one response.
func (c *rawClient) do(t testing.TB, raw string) (int, string) {
	t.Helper()
	if raw != "" {
		if _, err := io.WriteString(c.conn, raw); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp.StatusCode, string(b)
}
