package gateway_test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"mxguard/internal/address"
	"mxguard/internal/config"
	"mxguard/internal/recipients"
	"mxguard/internal/testutil"
)

// apply switches the running gateway to the test configuration with extra
// in front of downstream (a reload, as SIGHUP does).
func (e *env) apply(downstream, extra string) {
	e.t.Helper()
	yaml := testConfig(downstream, extra, e.dir)
	cfg, err := config.Parse(filepath.Join(e.dir, "test.yaml"), []byte(yaml))
	if err != nil {
		e.t.Fatalf("config: %v\n%s", err, yaml)
	}
	if err := e.gw.Apply(cfg); err != nil {
		e.t.Fatalf("apply: %v", err)
	}
}

// metrics returns the /metrics exposition.
func (e *env) metrics() string {
	e.t.Helper()
	resp, err := http.Get("http://" + e.gw.AdminAddr() + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// rcpt sends RCPT TO:<to> and checks the reply code and enhanced code.
func rcpt(t *testing.T, c *testutil.SMTPClient, to string, code int, enh string) {
	t.Helper()
	if text := c.Cmd("RCPT TO:<"+to+">", code); enh != "" && !strings.HasPrefix(text, enh+" ") {
		t.Errorf("RCPT %s: got %d %s, want %d %s", to, code, text, code, enh)
	}
}

// harvestBlocked plays a harvester at ip: each of addrs is refused as
// unknown (550 5.1.1), the last one fires directory_harvest (threshold
// len(addrs)), and the source is blocked at once: 421 4.7.0 at the next
// command, then at connect, with one event naming it.
func (e *env) harvestBlocked(ip string, addrs ...string) {
	e.t.Helper()
	c := e.session(ip)
	for _, a := range addrs {
		rcpt(e.t, c, a, 550, "5.1.1")
	}
	rcpt(e.t, c, "alice@example.test", 421, "4.7.0")
	c.ExpectClosed()
	e.dial(ip).Expect(421)
	if l := e.events("type=directory_harvest&source=" + ip); l.Total != 1 {
		e.t.Errorf("harvest by %s: events %+v", ip, l)
	}
}

const outageRules = `rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 3, actions: [block], block_for: 1h}
`

func outageExtra(spoolDelay, mode string) string {
	return `delivery:
  servers: [{address: {SINK}}]
  check_interval: 100ms
  down_after: 1
spool: {delay: ` + spoolDelay + `}
recipients: {during_outage: ` + mode + `}
` + outageRules
}

// TestRecipientsDuringOutage: what the downstream said before the outage
// answers during it, in the delay and while spooling, and after a restart;
// a harvest during the outage is refused and blocked; known_only defers
// unseen recipients; at unspool the directory learns, and the bounce the
// downstream refuses to relay is held, not lost.
func TestRecipientsDuringOutage(t *testing.T) {
	e := start(t, outageExtra("1h", "accept"))
	down := e.sink.Addr()

	// Before: alice exists, nobody does.
	c := e.session("127.0.0.80")
	rcpt(t, c, "alice@example.test", 250, "")
	rcpt(t, c, "nobody@example.test", 550, "5.1.1")
	c.Cmd("QUIT", 221)

	e.sink.SetDown(true)
	e.waitSpool("delay", func(s spoolStatus) bool { return s.State == "delay" })
	c = e.session("127.0.0.81")
	rcpt(t, c, "nobody@example.test", 550, "5.1.1") // not 451: known not to exist
	rcpt(t, c, "alice@example.test", 451, "4.4.1")
	c.Cmd("QUIT", 221)

	e.apply(down, outageExtra("0s", "accept"))
	e.waitSpool("spooling", func(s spoolStatus) bool { return s.State == "spooling" })
	c = e.session("127.0.0.81")
	rcpt(t, c, "alice@example.test", 250, "")
	rcpt(t, c, "nobody@example.test", 550, "5.1.1")
	rcpt(t, c, "carol@example.test", 250, "") // unseen, accept: spooled
	c.Data("Subject: during the outage\r\n\r\nhi\r\n", 250)
	c.Cmd("QUIT", 221)

	// A harvest during the outage: each known unknown counts; the third
	// blocks the source at once.
	e.harvestBlocked("127.0.0.82", "nobody@example.test", "nobody@example.test", "nobody@example.test")

	e.apply(down, outageExtra("0s", "known_only"))
	c = e.session("127.0.0.83")
	rcpt(t, c, "dave@example.test", 451, "4.4.1") // never seen valid
	rcpt(t, c, "alice@example.test", 250, "")
	c.Data("Subject: known only\r\n\r\nhi\r\n", 250)
	c.Cmd("QUIT", 221)

	// A restart in the middle of the outage still knows them.
	e.gw.Close()
	e = startWith(t, outageExtra("0s", "known_only"), e.sink, e.dir)
	e.waitSpool("spooling after restart", func(s spoolStatus) bool { return s.State == "spooling" })
	c = e.session("127.0.0.84")
	rcpt(t, c, "nobody@example.test", 550, "5.1.1")
	rcpt(t, c, "dave@example.test", 451, "4.4.1")
	rcpt(t, c, "alice@example.test", 250, "")
	c.Data("Subject: after the restart\r\n\r\nhi\r\n", 250)
	c.Cmd("QUIT", 221)
	if s := e.spool(); s.Messages != 3 {
		t.Fatalf("spool holds %d messages, want 3", s.Messages)
	}

	// Recovery: alice gets all three; carol is refused, so sender@remote.test
	// is sent a bounce, which the sink (no relay) refuses: it is held.
	e.sink.SetDown(false)
	e.waitSpool("drained", func(s spoolStatus) bool { return s.Messages == 0 })
	if n := e.sink.Count(); n != 3 {
		t.Errorf("downstream got %d messages, want 3", n)
	}
	if a := e.gw.Recipients.Lookup(address.MustParse("carol@example.test")); a != (recipients.Answer{Verdict: recipients.Unknown, Source: recipients.SourceCache}) {
		t.Errorf("carol after unspool: %+v, want unknown (learned at unspool)", a)
	}
	// Counted just after the move that emptied the spool.
	waitFor(t, func() bool {
		m := e.metrics()
		return strings.Contains(m, "mxguard_spool_bounces_held_total 1\n") && strings.Contains(m, "mxguard_spool_held_bounces 1\n")
	})
	held, _ := filepath.Glob(filepath.Join(e.dir, "spool", "bounces", "*.reason"))
	if len(held) != 1 {
		t.Fatalf("held bounces on disk: %v", held)
	}
	if b, _ := os.ReadFile(held[0]); !strings.Contains(string(b), "<sender@remote.test>: 5.7.1") {
		t.Errorf("held reason %q", b)
	}
}

// TestRecipientsFile: with recipients.file, unlisted recipients are
// refused at RCPT without asking the downstream (relay_recipient_maps),
// during an outage too, where a harvest of guesses is blocked; a reload
// re-reads the file, and a broken file is refused with the old list kept.
func TestRecipientsFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "valid.txt")
	os.WriteFile(file, []byte("alice@example.test\n"), 0o600)
	extra := `delivery:
  servers: [{address: {SINK}}]
  check_interval: 100ms
  down_after: 1
spool: {delay: 0s}
recipients: {file: ` + file + `}
` + outageRules
	e := start(t, extra)
	c := e.session("127.0.0.90")
	rcpt(t, c, "bob@example.test", 550, "5.1.1") // the sink has bob; the file does not
	rcpt(t, c, "alice@example.test", 250, "")
	c.Cmd("QUIT", 221)
	if m := e.metrics(); !strings.Contains(m, `mxguard_recipients_lookups_total{result="unknown"} 1`) {
		t.Errorf("lookups metric:\n%s", grepLines(m, "mxguard_recipients"))
	}

	os.WriteFile(file, []byte("alice@example.test\nbob@example.test\n"), 0o600)
	e.apply(e.sink.Addr(), extra)
	c = e.session("127.0.0.90")
	rcpt(t, c, "bob@example.test", 250, "")
	c.Cmd("QUIT", 221)

	cfg := e.gw.Config()
	os.WriteFile(file, []byte("bob\n"), 0o600)
	if err := e.gw.Apply(cfg); err == nil || !strings.Contains(err.Error(), "valid.txt:1") {
		t.Errorf("reload with a broken file: %v, want an error naming valid.txt:1", err)
	}
	c = e.session("127.0.0.90")
	rcpt(t, c, "bob@example.test", 250, "") // the old list stays
	c.Cmd("QUIT", 221)

	e.sink.SetDown(true)
	e.waitSpool("spooling", func(s spoolStatus) bool { return s.State == "spooling" })
	c = e.session("127.0.0.91")
	rcpt(t, c, "alice@example.test", 250, "")
	c.Cmd("QUIT", 221)
	e.harvestBlocked("127.0.0.92", "guess1@example.test", "guess2@example.test", "guess3@example.test")
}

// TestOutageRetryingSenderStaysUnblocked: a legitimate sender retrying
// again and again through an outage (451 4.4.1 during the spool delay) is
// never counted as a bad session: it stays unblocked, no event names it,
// and its mail is spooled and delivered after recovery. Another source's
// sessions without mail are counted meanwhile, so the rule is live.
func TestOutageRetryingSenderStaysUnblocked(t *testing.T) {
	extra := func(delay string) string {
		return "delivery:\n  servers: [{address: {SINK}}]\n  check_interval: 100ms\n  down_after: 1\nspool: {delay: " + delay + `}
rules:
  - {name: probes, type: bad_sessions, window: 10m, threshold: 3, actions: [block], block_for: 1h}
`
	}
	e := start(t, extra("1h"))
	e.sink.SetDown(true)
	e.waitSpool("delay", func(s spoolStatus) bool { return s.State == "delay" })

	for range 10 { // 10 retries against a threshold of 3
		c := e.session("127.0.0.60")
		rcpt(t, c, "alice@example.test", 451, "4.4.1")
		c.Cmd("QUIT", 221)
		c.ExpectClosed()
	}
	for range 3 {
		c := e.dial("127.0.0.61")
		c.Expect(220)
		c.Cmd("EHLO probe.test", 250)
		c.Cmd("QUIT", 221)
		c.ExpectClosed()
	}
	waitFor(t, func() bool { return e.events("type=bad_sessions&source=127.0.0.61").Total == 1 })
	if l := e.events("source=127.0.0.60"); l.Total != 0 {
		t.Fatalf("the retrying sender has events: %+v", l)
	}

	// The delay ends; its next retry is spooled, and delivered once the
	// downstream is back.
	e.apply(e.sink.Addr(), extra("0s"))
	e.waitSpool("spooling", func(s spoolStatus) bool { return s.State == "spooling" })
	c := e.session("127.0.0.60")
	rcpt(t, c, "alice@example.test", 250, "")
	c.Data("Subject: retried\r\nMessage-ID: <retried@remote.test>\r\n\r\nfinally\r\n", 250)
	c.Cmd("QUIT", 221)
	e.sink.SetDown(false)
	e.waitSpool("drained", func(s spoolStatus) bool { return s.Messages == 0 })
	if m := e.sink.Messages(); len(m) != 1 || !strings.Contains(string(m[0].Data), "<retried@remote.test>") {
		t.Errorf("downstream got %d messages, want the retried one", len(m))
	}
	if l := e.events("source=127.0.0.60"); l.Total != 0 {
		t.Errorf("the retrying sender has events: %+v", l)
	}
	e.dial("127.0.0.60").Expect(220)
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}
