// Package testutil holds what integration tests share: the policy for
// tests that need a system component (RequireComponent), a private Postfix
// instance (StartPostfix), an SMTP transcript client (Dial), free loopback
// ports, and PROXY protocol headers.
package testutil

import (
	"net"
	"os"
	"strconv"
	"testing"
	"time"
)

// RequireAllEnv names the environment variable CI sets so that a missing
// component fails the test instead of skipping it: a skipped integration
// test in CI would hide exactly the breakage it exists to catch.
const RequireAllEnv = "MXGUARD_REQUIRE_ALL"

// RequireComponent stops the test when a component it needs is not
// available (ok is false): it fails under MXGUARD_REQUIRE_ALL=1 and skips
// with a visible hint otherwise, so a developer without root can still run
// the unit tests.
func RequireComponent(t testing.TB, name string, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv(RequireAllEnv) == "1" {
		t.Fatalf("component %s required: %s", name, why)
	}
	t.Skipf("SKIP: needs %s (%s); run ./scripts/test as root to install it", name, why)
}

// FreeAddr returns "127.0.0.1:PORT" for a port that was free a moment ago.
// Prefer listening on 127.0.0.1:0 directly; this is for servers that must be
// told their port in advance (external daemons, restart on the same port).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t)))
}

// FreePort is the port number of FreeAddr.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// DialTCP connects to addr for a test that speaks the protocol byte by
// byte; the connection closes with the test. A timeout > 0 is its
// deadline, so a server that never answers fails the test instead of
// hanging it.
func DialTCP(t testing.TB, addr string, timeout time.Duration) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if timeout > 0 {
		_ = c.SetDeadline(time.Now().Add(timeout))
	}
	return c
}

// ServeTCP listens on 127.0.0.1:0 and runs handle for each connection (in
// its own goroutine, closing the connection after it): a stand-in for a
// broken, slow or hostile server. It stops in t.Cleanup.
func ServeTCP(t testing.TB, handle func(c net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l.Addr().String()
}
