package gateway_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mxguard/internal/admin"
	"mxguard/internal/config"
	"mxguard/internal/gateway"
	"mxguard/internal/mailsink"
	"mxguard/internal/testutil"
)

const token = "gateway-test-3b8e1f0c2d"

// env is a gateway in front of an in-process downstream.
type env struct {
	t    *testing.T
	gw   *gateway.Gateway
	sink *mailsink.Server
	dir  string
}

// start runs a gateway whose configuration is the base below plus extra
// (YAML lines appended at top level). Clients bound to 127.0.0.x (x > 1) are
// untrusted remote hosts.
func start(t *testing.T, extra string) *env {
	t.Helper()
	return startWith(t, extra, newSink(t, "alice@example.test", "bob@example.test"), t.TempDir())
}

// newSink is an in-process downstream with these mailboxes.
func newSink(t *testing.T, mailboxes ...string) *mailsink.Server {
	t.Helper()
	sink, err := mailsink.Start(t.Context(), mailsink.Options{Mailboxes: mailboxes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	return sink
}

func startWith(t *testing.T, extra string, sink *mailsink.Server, dir string) *env {
	t.Helper()
	e := startAt(t, sink.Addr(), extra, dir)
	e.sink = sink
	return e
}

// testConfig is the YAML of a test gateway in front of downstream, plus
// extra top-level lines. extra may bring its own listen, domains,
// trusted_networks and delivery sections; {SINK} in it stands for
// downstream.
func testConfig(downstream, extra, dir string) string {
	if !strings.Contains(extra, "domains:") {
		extra = "domains: [example.test]\n" + extra
	}
	if !strings.Contains(extra, "trusted_networks:") {
		extra = "trusted_networks: [127.0.0.1/32]\n" + extra
	}
	if !strings.Contains(extra, "delivery:") {
		extra = "delivery:\n  servers: [{address: {SINK}, role: primary}]\n" + extra
	}
	if !strings.Contains(extra, "listen:") {
		extra = "listen: {smtp: 127.0.0.1:0, admin: 127.0.0.1:0}\n" + extra
	}
	extra = strings.ReplaceAll(extra, "{SINK}", downstream)
	return fmt.Sprintf(`hostname: mx.example.test
admin: {token: %s}
data_dir: %s
%s`, token, dir, extra)
}

// startAt runs a gateway in front of downstream (any SMTP server).
func startAt(t *testing.T, downstream, extra, dir string) *env {
	t.Helper()
	yaml := testConfig(downstream, extra, dir)
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return run(t, cfg, dir)
}

func run(t *testing.T, cfg *config.Config, dir string) *env {
	t.Helper()
	gw, err := gateway.Start(t.Context(), cfg, gateway.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	return &env{t: t, gw: gw, dir: dir}
}

// configFile is a gateway's configuration file, for reload tests: the
// base of testConfig plus extra lines, as in start.
type configFile struct {
	t         *testing.T
	path, dir string
	sink      *mailsink.Server
}

// yaml is the file's content with extra.
func (f *configFile) yaml(extra string) string { return testConfig(f.sink.Addr(), extra, f.dir) }

// write replaces the file with yaml (see configFile.yaml).
func (f *configFile) write(yaml string) {
	if err := os.WriteFile(f.path, []byte(yaml), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

// startFromFile runs a gateway loaded from a configuration file with
// extra lines, in front of an in-process sink.
func startFromFile(t *testing.T, extra string) (*env, *configFile) {
	t.Helper()
	sink := newSink(t, "alice@example.test")
	dir := t.TempDir()
	f := &configFile{t: t, path: dir + "/mxguard.yaml", dir: dir, sink: sink}
	f.write(f.yaml(extra))
	cfg, err := config.Load(f.path)
	if err != nil {
		t.Fatal(err)
	}
	e := run(t, cfg, dir)
	e.sink = sink
	return e, f
}

func (e *env) dial(ip string) *testutil.SMTPClient {
	return testutil.Dial(e.t, e.gw.SMTPAddr(), testutil.DialOptions{LocalIP: ip})
}

// session opens a connection from ip and gets to the point of RCPT.
func (e *env) session(ip string) *testutil.SMTPClient {
	c := e.dial(ip)
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	return c
}

func (e *env) api(method, path string, body string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest(method, "http://"+e.gw.AdminAddr()+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type eventList struct {
	Total  int `json:"total"`
	Events []struct {
		ID      int64    `json:"id"`
		Type    string   `json:"type"`
		Status  string   `json:"status"`
		Source  string   `json:"source"`
		Service string   `json:"service"`
		Impact  int64    `json:"impact"`
		Actions []string `json:"actions"`
		Node    string   `json:"node"`
	} `json:"events"`
}

// getJSON reads an API answer into v, failing the test unless it is a
// 200 with JSON that fits v.
func (e *env) getJSON(path string, v any) {
	e.t.Helper()
	code, body := e.api("GET", path, "")
	if code != 200 {
		e.t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		e.t.Fatalf("GET %s: %v in %s", path, err, body)
	}
}

func (e *env) events(query string) eventList {
	e.t.Helper()
	var l eventList
	e.getJSON("/api/v1/events?"+query, &l)
	return l
}

func TestRelayPassThrough(t *testing.T) {
	e := start(t, "")
	c := e.session("127.0.0.20")
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Cmd("RCPT TO:<bob@example.test>", 250)
	reply := c.Data("Subject: hello\r\nMessage-ID: <m1@remote.test>\r\n\r\nHi.\r\n", 250)
	if !strings.HasPrefix(reply, "2.0.0") {
		t.Errorf("250 reply without enhanced code: %q", reply)
	}
	c.Cmd("QUIT", 221)
	msgs := e.sink.Messages()
	if len(msgs) != 1 {
		t.Fatalf("downstream got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "sender@remote.test" || strings.Join(m.To, ",") != "alice@example.test,bob@example.test" {
		t.Errorf("envelope = %q -> %v", m.From, m.To)
	}
	data := string(m.Data)
	if !strings.HasPrefix(data, "Received: from client.test ([127.0.0.20])\r\n\tby mx.example.test (mxguard) with ESMTP id ") {
		t.Errorf("no Received header first (RFC 5321 §4.4):\n%s", data)
	}
	if !strings.Contains(data, "Message-ID: <m1@remote.test>\r\n\r\nHi.\r\n") {
		t.Errorf("message altered:\n%s", data)
	}
}

func TestUnknownRecipientFromDownstream(t *testing.T) {
	e := start(t, "")
	c := e.session("127.0.0.21")
	text := c.Cmd("RCPT TO:<nobody@example.test>", 550)
	if !strings.HasPrefix(text, "5.1.1 ") {
		t.Errorf("want 550 5.1.1, got 550 %s", text)
	}
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Data("Subject: x\r\n\r\nbody\r\n", 250)
	if n := e.sink.Count(); n != 1 {
		t.Errorf("downstream got %d messages, want 1", n)
	}
}

func TestRelayDenied(t *testing.T) {
	// A downstream that takes every domain: refusals come from mxguard.
	sink, err := mailsink.Start(t.Context(), mailsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	e := startWith(t, "", sink, t.TempDir())
	c := e.session("127.0.0.22")
	text := c.Cmd("RCPT TO:<victim@elsewhere.test>", 554)
	if !strings.HasPrefix(text, "5.7.1 ") {
		t.Errorf("want 554 5.7.1, got 554 %s", text)
	}
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	// A trusted client may relay to any domain.
	tc := e.session("127.0.0.1")
	tc.Cmd("RCPT TO:<victim@elsewhere.test>", 250)
	tc.Data("Subject: outbound\r\n\r\nfrom a trusted host\r\n", 250)
	if n := sink.Count(); n != 1 {
		t.Errorf("downstream got %d messages, want 1", n)
	}
}

func TestLimits(t *testing.T) {
	e := start(t, "limits: {max_message_size: 10KB, max_recipients: 2, max_connections_per_source: 2}\n")
	t.Run("size", func(t *testing.T) {
		c := e.session("127.0.0.23")
		c.Cmd("RCPT TO:<alice@example.test>", 250)
		text := c.Data("Subject: big\r\n\r\n"+strings.Repeat("0123456789\r\n", 2000), 552)
		if !strings.HasPrefix(text, "5.3.4 ") {
			t.Errorf("want 552 5.3.4, got %s", text)
		}
		c.Cmd("QUIT", 221)
		c2 := e.dial("127.0.0.23")
		c2.Expect(220)
		c2.Cmd("EHLO client.test", 250)
		c2.Cmd("MAIL FROM:<sender@remote.test> SIZE=50000", 552)
	})
	t.Run("recipients", func(t *testing.T) {
		c := e.session("127.0.0.24")
		c.Cmd("RCPT TO:<alice@example.test>", 250)
		c.Cmd("RCPT TO:<bob@example.test>", 250)
		if text := c.Cmd("RCPT TO:<alice@example.test>", 452); !strings.HasPrefix(text, "4.5.3 ") {
			t.Errorf("want 452 4.5.3, got %s", text)
		}
	})
	t.Run("connections per source", func(t *testing.T) {
		a := e.dial("127.0.0.25")
		a.Expect(220)
		b := e.dial("127.0.0.25")
		b.Expect(220)
		c := e.dial("127.0.0.25")
		if text := c.Expect(421); !strings.HasPrefix(text, "4.7.0 ") {
			t.Errorf("want 421 4.7.0, got %s", text)
		}
		c.ExpectClosed()
		// Another source is not affected.
		e.dial("127.0.0.26").Expect(220)
		// A trusted source is limited too: a limit is not a block.
		t1 := e.dial("127.0.0.1")
		t1.Expect(220)
		t2 := e.dial("127.0.0.1")
		t2.Expect(220)
		e.dial("127.0.0.1").Expect(421)
		t1.Close()
		t2.Close()
		a.Cmd("QUIT", 221)
		waitFor(t, func() bool {
			d := e.dial("127.0.0.25")
			code, _, _ := d.ReadReply()
			d.Close()
			return code == 220
		})
	})
}

func TestStaticBlocklistAndAllowlist(t *testing.T) {
	e := start(t, "blocklist: [127.0.0.30/31]\nallowlist: [127.0.0.31]\n")
	c := e.dial("127.0.0.30")
	if text := c.Expect(421); !strings.HasPrefix(text, "4.7.0 ") {
		t.Errorf("want 421 4.7.0, got %s", text)
	}
	c.ExpectClosed()
	// The allowlist wins over the blocklist: never blocked.
	e.dial("127.0.0.31").Expect(220)
}

// TestDirectoryHarvestBlocks is the core scenario: unknown recipients reach
// the threshold, the rule fires, the open session gets 421 at its next
// command, the next connection is refused at connect, and the event is
// listed with its impact.
func TestDirectoryHarvestBlocks(t *testing.T) {
	e := start(t, `rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 5, actions: [block], block_for: 1h}
`)
	c := e.session("127.0.0.40")
	guess(c, 5)
	if text := c.Cmd("RCPT TO:<alice@example.test>", 421); !strings.HasPrefix(text, "4.7.0 ") {
		t.Errorf("want 421 4.7.0 at the next command, got %s", text)
	}
	c.ExpectClosed()
	c2 := e.dial("127.0.0.40")
	c2.Expect(421)
	c2.ExpectClosed()
	// Another source still gets through.
	e.session("127.0.0.41").Cmd("RCPT TO:<alice@example.test>", 250)

	l := e.events("type=directory_harvest")
	if l.Total != 1 || len(l.Events) != 1 {
		t.Fatalf("events: %+v", l)
	}
	ev := l.Events[0]
	if ev.Source != "127.0.0.40" || ev.Status != "active" || strings.Join(ev.Actions, ",") != "block" {
		t.Errorf("event = %+v", ev)
	}
	// Impact: the 5th unknown recipient, the 421 mid-session and the
	// refused connection.
	if ev.Impact < 3 {
		t.Errorf("impact = %d, want >= 3", ev.Impact)
	}
	code, body := e.api("GET", "/api/v1/blocks", "")
	if code != 200 || !strings.Contains(body, `"source":"127.0.0.40"`) || !strings.Contains(body, `"rule":"harvest"`) {
		t.Errorf("blocks: %d %s", code, body)
	}
}

func TestBlockedSourceSurvivesRestart(t *testing.T) {
	sink, err := mailsink.Start(t.Context(), mailsink.Options{Mailboxes: []string{"alice@example.test"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	dir := t.TempDir()
	e := startWith(t, "", sink, dir)
	if code, body := e.api("POST", "/api/v1/blocks", `{"source":"127.0.0.42","for":"1h","reason":"manual test"}`); code != 201 {
		t.Fatalf("add block: %d %s", code, body)
	}
	e.dial("127.0.0.42").Expect(421)
	e.gw.Close()

	e2 := startWith(t, "", sink, dir)
	c := e2.dial("127.0.0.42")
	c.Expect(421)
	c.ExpectClosed()
	if code, _ := e2.api("DELETE", "/api/v1/blocks/127.0.0.42", ""); code != 204 {
		t.Fatalf("remove block: %d", code)
	}
	e2.dial("127.0.0.42").Expect(220)
}

func TestConnectionFloodBlocks(t *testing.T) {
	e := start(t, `rules:
  - {name: flood, type: dos, window: 1m, threshold: 10, actions: [block], block_for: 10m}
`)
	for i := 1; i < 10; i++ {
		c := e.dial("127.0.0.43")
		c.Expect(220)
		c.Cmd("QUIT", 221)
	}
	// The 10th connection fires the rule: it was greeted, and its first
	// command gets 421 4.7.0 (the block takes effect at once).
	c := e.dial("127.0.0.43")
	c.Expect(220)
	if text := c.Cmd("EHLO flood.test", 421); !strings.HasPrefix(text, "4.7.0 ") {
		t.Errorf("triggering connection: want 421 4.7.0, got %s", text)
	}
	c = e.dial("127.0.0.43")
	c.Expect(421)
	// Evidence: the connections from the near mark (the 2nd) to the 10th.
	whats, texts := e.evidence("type=dos&source=127.0.0.43")
	if len(texts) != 9 || !everyOne(whats, func(w string) bool { return w == "connect" }) ||
		!everyOne(texts, func(s string) bool { return s == "connection opened" }) {
		t.Errorf("dos evidence: %q %q", whats, texts)
	}
}

func TestBadSessionsBlock(t *testing.T) {
	e := start(t, `rules:
  - {name: probes, type: bad_sessions, window: 1m, threshold: 3, actions: [block], block_for: 10m}
`)
	for i := 0; i < 3; i++ {
		c := e.dial("127.0.0.44")
		c.Expect(220)
		c.Cmd("EHLO probe.test", 250)
		c.Cmd("QUIT", 221)
		c.ExpectClosed()
	}
	waitFor(t, func() bool {
		c := e.dial("127.0.0.44")
		defer c.Close()
		code, _, _ := c.ReadReply()
		return code == 421
	})
	whats, texts := e.evidence("type=bad_sessions&source=127.0.0.44")
	if len(texts) != 3 || !everyOne(whats, func(w string) bool { return w == "bad_session" }) ||
		!everyOne(texts, func(s string) bool { return strings.HasPrefix(s, "session ended without a message after ") }) {
		t.Errorf("bad_sessions evidence: %q %q", whats, texts)
	}
	// A source that sends mail is not a bad session.
	for i := 0; i < 4; i++ {
		c := e.session("127.0.0.45")
		c.Cmd("RCPT TO:<alice@example.test>", 250)
		c.Data("Subject: ok\r\n\r\nok\r\n", 250)
		c.Cmd("QUIT", 221)
	}
	e.dial("127.0.0.45").Expect(220)
}

func TestMailbombBlocks(t *testing.T) {
	e := start(t, `rules:
  - {name: bomb, type: mailbomb, window: 10m, threshold: 2, min_size: 20KB, actions: [block], block_for: 1h}
`)
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 70)+"\r\n", 400)
	// Small messages don't count.
	for i := 0; i < 3; i++ {
		c := e.session("127.0.0.46")
		c.Cmd("RCPT TO:<alice@example.test>", 250)
		c.Data("Subject: small\r\n\r\nsmall\r\n", 250)
		c.Cmd("QUIT", 221)
	}
	c := e.session("127.0.0.46")
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Data(big, 250)
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Data(big, 250) // the second large message fires the rule
	c.Cmd("MAIL FROM:<sender@remote.test>", 421)
	e.dial("127.0.0.46").Expect(421)
	whats, texts := e.evidence("type=mailbomb")
	if len(texts) != 2 || !everyOne(whats, func(w string) bool { return w == "large_message" }) ||
		!everyOne(texts, func(s string) bool {
			return strings.HasPrefix(s, "message of ") && strings.HasSuffix(s, " bytes: MAIL FROM:<sender@remote.test> (1 recipient): relayed")
		}) {
		t.Errorf("mailbomb evidence: %q %q", whats, texts)
	}
}

func TestDownstreamUnavailable(t *testing.T) {
	e := start(t, "")
	e.sink.SetDown(true)
	c := e.session("127.0.0.47")
	if text := c.Cmd("RCPT TO:<alice@example.test>", 451); !strings.HasPrefix(text, "4.4.1 ") {
		t.Errorf("want 451 4.4.1, got %s", text)
	}
}

func TestTrustedNeverBlocked(t *testing.T) {
	e := start(t, `trusted_networks: [127.0.0.48/32]
rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 2, actions: [block], block_for: 1h}
`)
	c := e.session("127.0.0.48")
	for i := 0; i < 4; i++ {
		c.Cmd(fmt.Sprintf("RCPT TO:<x%d@example.test>", i), 550)
	}
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	e.dial("127.0.0.48").Expect(220)
	l := e.events("type=directory_harvest")
	// The event is recorded and says what was done: nothing.
	if l.Total != 1 || len(l.Events[0].Actions) != 0 || l.Events[0].Actions == nil {
		t.Errorf("trusted source: want one event with no action, got %+v", l)
	}
}

func TestProxyProtocolIPv6Aggregation(t *testing.T) {
	e := start(t, `proxy_protocol: [127.0.0.50/32]
rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 2, actions: [block], block_for: 1h}
`)
	dst := netip.MustParseAddrPort("192.0.2.1:25")
	proxied := func(src string, v2 bool) *testutil.SMTPClient {
		c := e.dial("127.0.0.50")
		ap := netip.MustParseAddrPort(src)
		if v2 {
			c.Send(string(testutil.ProxyV2(ap, dst)))
		} else {
			c.Send(string(testutil.ProxyV1(ap, dst)))
		}
		return c
	}
	c := proxied("[2001:db8:1:2::7]:4000", false)
	c.Expect(220)
	c.Cmd("EHLO v6.test", 250)
	c.Cmd("MAIL FROM:<a@remote.test>", 250)
	c.Cmd("RCPT TO:<n1@example.test>", 550)
	c.Close()
	// Another address of the same /64, via PROXY v2: counts together.
	c = proxied("[2001:db8:1:2::99]:4001", true)
	c.Expect(220)
	c.Cmd("EHLO v6.test", 250)
	c.Cmd("MAIL FROM:<a@remote.test>", 250)
	c.Cmd("RCPT TO:<n2@example.test>", 550)
	c.Close()
	proxied("[2001:db8:1:2::1234]:4002", true).Expect(421)
	// A different /64 is not blocked; neither is the proxy itself.
	proxied("[2001:db8:1:3::1]:4003", false).Expect(220)
	l := e.events("type=directory_harvest")
	if l.Total != 1 || l.Events[0].Source != "2001:db8:1:2::/64" {
		t.Errorf("events: %+v", l)
	}
	// A proxy peer that sends no header is refused.
	bad := e.dial("127.0.0.50")
	bad.Send("EHLO x\r\n")
	bad.ExpectClosed()
}

func TestTimeouts(t *testing.T) {
	e := start(t, "timeouts: {greeting: 1s, command: 1s, data: 2s}\n")
	t.Run("silent client", func(t *testing.T) {
		c := e.dial("127.0.0.51")
		c.Expect(220)
		start := time.Now()
		c.Expect(421)
		c.ExpectClosed()
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("closed after %s", d)
		}
	})
	t.Run("stalled DATA", func(t *testing.T) {
		c := e.session("127.0.0.53")
		c.Cmd("RCPT TO:<alice@example.test>", 250)
		c.Cmd("DATA", 354)
		c.Send("Subject: never finished\r\n\r\nfirst line\r\n")
		start := time.Now()
		if text := c.Expect(421); !strings.HasPrefix(text, "4.4.2 ") {
			t.Errorf("stalled DATA: want 421 4.4.2, got %s", text)
		}
		c.ExpectClosed()
		if d := time.Since(start); d < 1500*time.Millisecond || d > 6*time.Second {
			t.Errorf("DATA timeout of 2s fired after %s", d)
		}
		if e.sink.Count() != 0 {
			t.Error("a half-received message was relayed")
		}
	})
	t.Run("one byte per second", func(t *testing.T) {
		conn := rawDial(t, e.gw.SMTPAddr(), "127.0.0.52")
		readLine(t, conn) // greeting
		start := time.Now()
		for _, b := range "EHLO slow.example.test\r\n" {
			if _, err := conn.Write([]byte(string(b))); err != nil {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		// The command timeout (1s) bounds the whole line, not each byte.
		if line := readLine(t, conn); !strings.HasPrefix(line, "421 ") {
			t.Errorf("slow client: want 421, got %q", line)
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("slow client held the session for %s", d)
		}
	})
}

func TestBadInput(t *testing.T) {
	e := start(t, "")
	// A healthy session runs alongside the abusive ones.
	good := e.session("127.0.0.60")
	var wg sync.WaitGroup
	abuse := []struct {
		name, data string
	}{
		{"1MB line", strings.Repeat("A", 1<<20) + "\r\n"},
		{"NUL bytes", "EHLO \x00\x00\x00\r\nMAIL FROM:<\x00@x>\r\n"},
		{"unterminated", "EHLO unterminated"},
		{"pipelined garbage", strings.Repeat("\xff\xfe GARBAGE\r\nRCPT TO:<>\r\nDATA\r\n", 200)},
	}
	for i, a := range abuse {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.DialTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(61+i))}, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(e.gw.SMTPAddr())))
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(10 * time.Second))
			conn.Write([]byte(a.data))
			conn.CloseWrite()
			out, _ := io.ReadAll(conn)
			if !strings.HasPrefix(string(out), "220 ") {
				t.Errorf("%s: no greeting: %q", a.name, out)
			}
			t.Logf("%s: server answered %d bytes, last line %q", a.name, len(out), lastLine(string(out)))
		}()
	}
	wg.Wait()
	good.Cmd("RCPT TO:<alice@example.test>", 250)
	good.Data("Subject: still fine\r\n\r\nok\r\n", 250)
}

func TestPipelining(t *testing.T) {
	e := start(t, "")
	c := e.dial("127.0.0.70")
	c.Expect(220)
	c.Cmd("EHLO pipe.test", 250)
	c.Send("MAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nDATA\r\n")
	c.Expect(250)
	c.Expect(250)
	c.Expect(550)
	c.Expect(354)
	c.Send("Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n")
	c.Expect(250)
	c.Expect(221)
}

func TestSTARTTLS(t *testing.T) {
	e := start(t, "")
	conn := rawDial(t, e.gw.SMTPAddr(), "127.0.0.71")
	// Opportunistic TLS with the generated self-signed certificate.
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail("a@remote.test", []string{"alice@example.test"}, strings.NewReader("Subject: tls\r\n\r\nsecret\r\n")); err != nil {
		t.Fatal(err)
	}
	// The 221 must arrive over TLS before the close.
	if err := c.Quit(); err != nil {
		t.Errorf("QUIT over TLS: %v", err)
	}
	if m := e.sink.Messages(); len(m) != 1 || !strings.Contains(string(m[0].Data), "with ESMTPS id") {
		t.Errorf("Received header should say ESMTPS (RFC 3848): %v", m)
	}
}

func TestReloadKeepsOldConfigWhenInvalid(t *testing.T) {
	e := start(t, "")
	if code, body := e.api("POST", "/api/v1/reload", ""); code != 400 || !strings.Contains(body, "error") {
		// Parse-only configs have no file; the API must say so, not crash.
		t.Logf("reload without file: %d %s", code, body)
	}
	cfg := e.gw.Config()
	bad := *cfg
	if err := e.gw.ReloadFile(context.Background()); err == nil {
		t.Error("reload of a config without file should fail")
	}
	if e.gw.Config() != cfg || bad.Hostname != cfg.Hostname {
		t.Error("configuration changed after a failed reload")
	}
}

func rawDial(t *testing.T, addr, ip string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readLine reads one reply line byte by byte (no read-ahead).
func readLine(t *testing.T, conn net.Conn) string {
	t.Helper()
	var b []byte
	one := make([]byte, 1)
	for {
		if _, err := conn.Read(one); err != nil {
			return string(b) + "<" + err.Error() + ">"
		}
		if one[0] == '\n' {
			return strings.TrimRight(string(b), "\r")
		}
		b = append(b, one[0])
	}
}

// testLogger sends the gateway's logs to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	testutil.WaitUntil(t, "condition", cond)
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\r\n")
	if i := strings.LastIndex(s, "\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}

func TestMaxConnections(t *testing.T) {
	e := start(t, "limits: {max_connections: 2}\n")
	a := e.dial("127.0.0.72")
	a.Expect(220)
	b := e.dial("127.0.0.73")
	b.Expect(220)
	c := e.dial("127.0.0.74")
	if text := c.Expect(421); !strings.HasPrefix(text, "4.3.2 ") {
		t.Errorf("over max_connections: want 421 4.3.2, got %s", text)
	}
	c.ExpectClosed()
	a.Cmd("QUIT", 221)
	waitFor(t, func() bool {
		d := e.dial("127.0.0.75")
		defer d.Close()
		code, _, _ := d.ReadReply()
		return code == 220
	})
}

// TestReloadAPI: POST /api/v1/reload applies a valid new file and refuses an
// invalid one with every error, keeping the rules in force.
func TestReloadAPI(t *testing.T) {
	e, f := startFromFile(t, "rules:\n  - {name: first, type: dos, window: 1m, threshold: 50}\n")

	f.write(f.yaml("rules:\n  - {name: second, type: directory_harvest, window: 1m, threshold: 1, actions: [block]}\n"))
	if code, body := e.api("POST", "/api/v1/reload", ""); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	if _, body := e.api("GET", "/api/v1/rules", ""); !strings.Contains(body, `"second"`) || strings.Contains(body, `"first"`) {
		t.Errorf("rules after reload: %s", body)
	}
	// The new rule is live: one unknown recipient blocks.
	c := e.session("127.0.0.76")
	c.Cmd("RCPT TO:<nobody@example.test>", 550)
	c.Cmd("RCPT TO:<alice@example.test>", 421)

	f.write(f.yaml("rules:\n  - {name: third, type: no_such_type, window: 1m, threshold: 1}\nbogus: 1\n"))
	code, body := e.api("POST", "/api/v1/reload", "")
	if code != 400 || !strings.Contains(body, "mxguard.yaml:10") || !strings.Contains(body, "mxguard.yaml:11") {
		t.Errorf("invalid reload: want 400 listing lines 10 and 11, got %d %s", code, body)
	}
	if _, body := e.api("GET", "/api/v1/rules", ""); !strings.Contains(body, `"second"`) {
		t.Errorf("rules changed by a refused reload: %s", body)
	}

	// A reload rotates the admin token and resizes the spool.
	f.write(strings.Replace(f.yaml("spool: {max_size: 1MiB}\n"), "token: "+token, "token: rotated-token-5e2a9c71d4", 1))
	if code, body := e.api("POST", "/api/v1/reload", ""); code != 200 {
		t.Fatalf("reload with a new token: %d %s", code, body)
	}
	if code, _ := e.api("GET", "/api/v1/spool", ""); code != 401 {
		t.Errorf("old token after rotation: %d, want 401", code)
	}
	req, _ := http.NewRequest("GET", "http://"+e.gw.AdminAddr()+"/api/v1/spool", nil)
	req.Header.Set("Authorization", "Bearer rotated-token-5e2a9c71d4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"max_bytes":1048576`) {
		t.Errorf("new token and spool size after reload: %d %s", resp.StatusCode, b)
	}
}

// TestMetricsFromTheFirstScrape: every metric of INTERFACE.md §6 is there on
// a fresh instance, before any traffic.
func TestMetricsFromTheFirstScrape(t *testing.T) {
	e := start(t, "")
	resp, err := http.Get("http://" + e.gw.AdminAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body := string(b)
	for _, want := range []string{
		`mxguard_connections_total{listener="smtp",result="accepted"} 0`,
		`mxguard_messages_total{direction="inbound",result="relayed"} 0`,
		`mxguard_events_total{type="directory_harvest"} 0`,
		`mxguard_events_active{type="org_down"} 0`,
		`mxguard_blocks_active 0`,
		`mxguard_spool_messages 0`,
		`mxguard_spool_bytes 0`,
		`mxguard_spool_quarantined_total 0`,
		`mxguard_spool_unreadable_files 0`,
		`mxguard_server_up{address="` + e.sink.Addr() + `"} 1`,
		`mxguard_check_duration_seconds_count{check="blocklist"} 0`,
		`mxguard_recipients_lookups_total{result="unknown"} 0`,
		`mxguard_recipients_cache_entries{verdict="known"} 0`,
		`mxguard_spool_bounces_held_total 0`,
		`mxguard_spool_bounces_dropped_total{reason="null_sender"} 0`,
		`mxguard_spool_held_bounces 0`,
		`mxguard_alerts_total{channel="webhook",result="sent"} 0`,
		`mxguard_alerts_total{channel="email",result="dropped"} 0`,
		`mxguard_events_deleted_total 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestSwaks drives the gateway with swaks, a real SMTP client users test
// mail servers with: STARTTLS then a message, and a refused recipient.
func TestSwaks(t *testing.T) {
	path, err := exec.LookPath("swaks")
	testutil.RequireComponent(t, "swaks", err == nil, "apt-get install swaks")
	e := start(t, "")
	host, port, _ := net.SplitHostPort(e.gw.SMTPAddr())
	swaks := func(args ...string) (string, int) {
		cmd := exec.Command(path, append([]string{"--server", host, "--port", port, "--local-interface", "127.0.0.110",
			"--ehlo", "swaks.test", "--from", "sender@remote.test"}, args...)...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return string(out), code
	}
	out, code := swaks("--to", "alice@example.test", "--tls", "--header", "Subject: via swaks", "--body", "hello from swaks")
	if code != 0 || !strings.Contains(out, "<~  250 2.0.0 Ok: queued as") {
		t.Fatalf("swaks with STARTTLS: exit %d\n%s", code, out)
	}
	if msgs := e.sink.Messages(); len(msgs) != 1 || !strings.Contains(string(msgs[0].Data), "hello from swaks") {
		t.Errorf("downstream did not get the swaks message: %v", msgs)
	}
	// swaks exits 24 when a RCPT is refused.
	if out, code := swaks("--to", "nobody@example.test"); code != 24 || !strings.Contains(out, "550 5.1.1") {
		t.Errorf("unknown recipient: exit %d, want 24 with 550 5.1.1\n%s", code, out)
	}
}

// TestStartFailureReleasesEverything: a port in use is an error, not a
// panic, and what was opened before it (the SMTP port, the store) is
// released, so a second try in the same process works.
func TestStartFailureReleasesEverything(t *testing.T) {
	sink, err := mailsink.Start(t.Context(), mailsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	smtpAddr := testutil.FreeAddr(t)
	dir := t.TempDir()
	yaml := strings.Replace(testConfig(sink.Addr(), "", dir), "listen: {smtp: 127.0.0.1:0, admin: 127.0.0.1:0}",
		"listen: {smtp: "+smtpAddr+", admin: "+busy.Addr().String()+"}", 1)
	cfg, err := config.Parse("busy.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	if gw, err := gateway.Start(t.Context(), cfg, gateway.Options{Logger: testLogger(t)}); err == nil {
		gw.Close()
		t.Fatal("Start succeeded with the admin port in use")
	}
	busy.Close()
	gw, err := gateway.Start(t.Context(), cfg, gateway.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("second Start after the port was freed: %v", err)
	}
	gw.Close()
}

// TestAdminListenerLimits: the admin listener of a real gateway cuts off a
// slowloris client at its header timeout, and a configuration built in
// code without a token does not start (config.Load refuses it too).
func TestAdminListenerLimits(t *testing.T) {
	sink, err := mailsink.Start(t.Context(), mailsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	dir := t.TempDir()
	cfg, err := config.Parse("limits.yaml", []byte(testConfig(sink.Addr(), "", dir)))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.Start(t.Context(), cfg, gateway.Options{Logger: testLogger(t),
		AdminHTTP: admin.HTTPLimits{ReadHeaderTimeout: 300 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	d := testutil.Slowloris(t, gw.AdminAddr(), 20*time.Millisecond, 10*time.Second)
	t.Logf("slowloris client cut off after %v", d)
	gw.Close()

	cfg.Admin.Token = ""
	if gw, err := gateway.Start(t.Context(), cfg, gateway.Options{Logger: testLogger(t)}); err == nil {
		gw.Close()
		t.Fatal("a gateway started with an admin listener and no token")
	} else if !strings.Contains(err.Error(), "admin.token") {
		t.Errorf("error %q does not name admin.token", err)
	}
}
