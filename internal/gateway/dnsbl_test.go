package gateway_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/dns"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/testutil"
)

// TestDNSBLAtConnect runs the weighted DNSBL of a real configuration
// against an in-process DNS server: a client whose weights reach the
// threshold gets the 554 5.7.1 greeting naming the zone, 503 5.5.1 to
// every command but QUIT and 221 to QUIT; one below the threshold, one
// an allowlist zone outweighs and one whose look-up fails get the
// normal greeting; a client named in the blocklist by its
// forward-confirmed reverse DNS name gets 421.
func TestDNSBLAtConnect(t *testing.T) {
	ns := testutil.StartDNS(t)
	ns.Add(t,
		"2.0.0.127.bl.test. 300 IN A 127.0.0.2", // RFC 5782 §5 test address
		"5.0.0.127.bl.test. 300 IN A 127.0.0.2",
		"5.0.0.127.bl2.test. 300 IN A 127.0.0.4",
		"6.0.0.127.bl2.test. 300 IN A 127.0.0.4",
		"7.0.0.127.bl.test. 300 IN A 127.0.0.2",
		"7.0.0.127.bl2.test. 300 IN A 127.0.0.4",
		"7.0.0.127.allow.test. 300 IN A 127.0.10.1",
		"9.0.0.127.in-addr.arpa. 300 IN PTR relay3.bad.example.",
		"relay3.bad.example. 300 IN A 127.0.0.9",
	)
	ns.Fail("8.0.0.127.bl.test", dns.RcodeServerFailure)
	ns.Add(t, "8.0.0.127.bl2.test. 300 IN A 127.0.0.4")
	e := start(t, fmt.Sprintf(`dnsbl:
  zones: [bl.test*2, "bl2.test=127.0.0.[2..5]", allow.test*-5]
  threshold: 2
  resolver: %s
blocklist: [.bad.example]
timeouts: {greeting: 2s}
`, ns.Addr))

	c := e.dial("127.0.0.5")
	if text := c.Expect(554); !strings.Contains(text, "blocked using bl.test") || !strings.HasPrefix(text, "5.7.1 ") {
		t.Errorf("greeting %q", text)
	}
	c.Cmd("EHLO client.test", 503)
	c.Cmd("MAIL FROM:<a@remote.test>", 503)
	c.Cmd("STARTTLS", 503)
	c.Cmd("QUIT", 221)
	c.ExpectClosed()

	for _, ip := range []string{"127.0.0.6", "127.0.0.7", "127.0.0.8"} {
		c := e.dial(ip)
		c.Expect(220)
		c.Cmd("EHLO client.test", 250)
		c.Cmd("QUIT", 221)
	}

	// Silent: closed at the greeting timeout; chatty: cut after ten.
	c = e.dial("127.0.0.5")
	c.Expect(554)
	c.ExpectClosed()
	c = e.dial("127.0.0.5")
	c.Expect(554)
	for range 10 {
		c.Cmd("NOOP", 503)
	}
	c.Expect(421)
	c.ExpectClosed()

	c = e.dial("127.0.0.9")
	c.Expect(421)
	c.ExpectClosed()

	m := e.gw.Metrics.Connections
	if n := promtest.ToFloat64(m.WithLabelValues("smtp", "dnsbl")); n != 3 {
		t.Errorf("connections{dnsbl} = %v, want 3", n)
	}
	if n := promtest.ToFloat64(m.WithLabelValues("smtp", "blocked")); n != 1 {
		t.Errorf("connections{blocked} = %v, want 1", n)
	}
}

// TestReloadContentAndDNSBL: a reload that adds a DNSBL zone and a
// blocked attachment type applies both to new connections.
func TestReloadContentAndDNSBL(t *testing.T) {
	ns := testutil.StartDNS(t)
	ns.Add(t, "5.0.0.127.bl.test. 300 IN A 127.0.0.2")
	e, f := startFromFile(t, "")
	pdf := attachment("report", "report.pdf", []byte("%PDF-1.4"))
	if code, text := e.sendMsg("127.0.0.5", pdf); code != 250 {
		t.Fatalf("before reload: %d %s", code, text)
	}

	f.write(f.yaml(fmt.Sprintf("dnsbl: {zones: [bl.test], resolver: %s}\ncontent: {blocked_attachments: [pdf]}\n", ns.Addr)))
	if code, body := e.api("POST", "/api/v1/reload", ""); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	e.dial("127.0.0.5").Expect(554)
	if code, text := e.sendMsg("127.0.0.6", pdf); code != 554 {
		t.Errorf("after reload: %d %s, want the pdf refused", code, text)
	}
}
