package policyd

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/checks/blocklist"
	"mxguard/internal/config"
	"mxguard/internal/detect"
	"mxguard/internal/metrics"
	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
	"mxguard/internal/testutil"
)

// TestCapturedTraffic replays every request Postfix 3.7.11 sent in the
// captured sessions byte for byte, on one connection as Postfix reuses
// it: each is answered with one action and an empty line, and a clean
// engine and directory answer DUNNO to all of them (none of the
// recipients is known to be unknown).
func TestCapturedTraffic(t *testing.T) {
	files, _ := filepath.Glob("testdata/postfix-policy-*.txt")
	if len(files) == 0 {
		t.Fatal("no captured traffic in testdata")
	}
	rec := &recorder{}
	s, err := New(Options{Engine: rec})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, serve(t, s))
	n := 0
	sessions := map[string]bool{}
	for _, f := range files {
		for _, req := range capturedRequests(t, f) {
			_, port, _ := strings.Cut(req, "\nclient_port=")
			port, _, _ = strings.Cut(port, "\n")
			sessions[port] = true
			if got := c.ask(req); got != "DUNNO" {
				t.Errorf("%s: %q for\n%s", f, got, req)
			}
			n++
		}
	}
	if n < 10 {
		t.Fatalf("only %d requests replayed", n)
	}
	// One connection per SMTP session (distinct client_port) of
	// 127.0.0.7, and the messages of the END-OF-MESSAGE requests.
	var connects, messages int
	for _, o := range rec.take() {
		switch o.Kind {
		case detect.KindConnect:
			connects++
		case detect.KindMessage:
			messages++
			if o.Size <= 0 {
				t.Errorf("message of size %d", o.Size)
			}
		}
		if o.Addr != netip.MustParseAddr("127.0.0.7") {
			t.Errorf("observation for %v, want client_address 127.0.0.7", o.Addr)
		}
	}
	if connects != len(sessions) || messages == 0 {
		t.Errorf("%d connections and %d messages counted; want %d and some", connects, messages, len(sessions))
	}
}

// capturedRequests returns the requests of a capture file: the lines
// between "=== ..." and the empty line that ends each.
func capturedRequests(t testing.TB, file string) []string {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	var cur strings.Builder
	in := false
	for line := range strings.SplitSeq(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "=== "):
			in = true
			cur.Reset()
		case in && line == "":
			cur.WriteString("\n")
			out = append(out, cur.String())
			in = false
		case in:
			cur.WriteString(line + "\n")
		}
	}
	return out
}

// TestStates: what each protocol_state is answered and what it counts.
// The client 203.0.113.7 is neither blocked nor trusted; alice is
// known, nobody unknown (recipients.file).
func TestStates(t *testing.T) {
	const client = "203.0.113.7"
	for _, tc := range []struct {
		name   string
		req    pf
		action string // reply code, or DUNNO
		counts string // kinds observed after the session's connect
	}{
		{"connect", pf{state: "CONNECT"}, "DUNNO", "[]"},
		{"ehlo", pf{state: "EHLO"}, "DUNNO", "[]"},
		{"helo", pf{state: "HELO"}, "DUNNO", "[]"},
		{"mail", pf{state: "MAIL", size: 200}, "DUNNO", "[]"},
		{"rcpt known", pf{rcpt: "alice@example.test", size: 200}, "DUNNO", "[]"},
		{"rcpt known, other case", pf{rcpt: "Alice@Example.TEST"}, "DUNNO", "[]"},
		{"rcpt unknown", pf{rcpt: "nobody@example.test"}, "550", "[directory_harvest]"},
		{"rcpt other domain", pf{rcpt: "nobody@elsewhere.test"}, "DUNNO", "[]"},
		{"rcpt postmaster", pf{rcpt: "postmaster@example.test"}, "DUNNO", "[]"},
		{"rcpt unparsable", pf{rcpt: "no-at-sign"}, "DUNNO", "[]"},
		{"data", pf{state: "DATA", count: 1}, "DUNNO", "[]"},
		{"end of message", pf{state: "END-OF-MESSAGE", count: 2, size: 4096}, "DUNNO", "[mailbomb]"},
		{"end of message, authenticated", pf{state: "END-OF-MESSAGE", count: 2, size: 10, sasl: "Alice"}, "DUNNO",
			"[mailbomb internal_spammer internal_spammer]"},
		{"vrfy unknown", pf{state: "VRFY", rcpt: "nobody@example.test"}, "550", "[directory_harvest]"},
		{"vrfy known", pf{state: "VRFY", rcpt: "bob@example.test"}, "DUNNO", "[]"},
		{"etrn", pf{state: "ETRN"}, "DUNNO", "[]"},
		{"unknown state", pf{state: "BDAT"}, "DUNNO", "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			s, err := New(Options{Engine: rec, Directory: directory(t)})
			if err != nil {
				t.Fatal(err)
			}
			c := dial(t, serve(t, s))
			tc.req.client = client
			got := c.ask(tc.req.text())
			if code(got) != tc.action {
				t.Errorf("answer %q, want %s", got, tc.action)
			}
			obs := rec.take()
			if len(obs) == 0 || obs[0].Kind != detect.KindConnect {
				t.Fatalf("observations %s: the session's first request must count its connection", kinds(obs))
			}
			if k := kinds(obs[1:]); k != tc.counts {
				t.Errorf("counted %s, want %s", k, tc.counts)
			}
			for _, o := range obs {
				if o.Addr.String() != client || o.Service != "smtp" {
					t.Errorf("observation %+v: want source %s, service smtp", o, client)
				}
				if o.Kind == detect.KindUnknownRecipient && !o.Refused {
					t.Error("an unknown recipient is refused: Refused must be set")
				}
				if o.Kind == detect.KindAccountMessage && o.Account != "alice" {
					t.Errorf("account %q, want alice (lowercased)", o.Account)
				}
				if o.Kind == detect.KindMessage && o.Size != int64(tc.req.size) {
					t.Errorf("size %d, want %d", o.Size, tc.req.size)
				}
			}
		})
	}
}

// TestHarvestThroughPolicy: with the real engine, a harvest from one
// client_address gets 550 5.1.1 per unknown recipient until the
// threshold, then 421 4.7.0 (the block, counted as impact), while another
// client on the same connection, and a trusted one that harvests too,
// keep getting DUNNO. The policy peer (127.0.0.1) is never what is judged.
func TestHarvestThroughPolicy(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	eng := newEngine(t, detect.Options{Rules: []config.Rule{rule("harvest", "directory_harvest", 5)}, Trusted: trusted})
	rec := &recorder{real: eng}
	s, _ := New(Options{Engine: rec, Directory: directory(t)})
	c := dial(t, serve(t, s))
	const attacker, other, inside = "198.51.100.9", "198.51.100.10", "192.0.2.5"
	for i := range 5 {
		got := c.ask(pf{client: attacker, rcpt: "guess" + string(rune('a'+i)) + "@example.test"}.text())
		if !strings.HasPrefix(got, "550 5.1.1 ") {
			t.Fatalf("guess %d: %q, want 550 5.1.1", i, got)
		}
	}
	if !eng.Blocked(netip.MustParseAddr(attacker)) {
		t.Fatal("five unknown recipients did not block the harvester")
	}
	// Each guess is evidence the event can show: the recipient and answer.
	var guesses int
	for _, o := range rec.take() {
		if o.Kind == detect.KindUnknownRecipient {
			guesses++
			if want := "<guess" + string(rune('a'+guesses-1)) + "@example.test>: 550 5.1.1"; !strings.Contains(o.Text, want) {
				t.Errorf("evidence text %q, want it to name %q", o.Text, want)
			}
		}
	}
	if guesses != 5 {
		t.Errorf("%d unknown recipients observed, want 5", guesses)
	}
	if got := c.ask(pf{client: attacker, rcpt: "alice@example.test"}.text()); !strings.HasPrefix(got, "421 4.7.0 ") {
		t.Errorf("blocked harvester: %q, want 421 4.7.0", got)
	}
	// A new SMTP session of the blocked client: refused at its first
	// request, and its connection is impact, not a new dos count.
	before := len(rec.take())
	if got := c.ask(pf{client: attacker, port: "40002", state: "RCPT", rcpt: "alice@example.test"}.text()); code(got) != "421" {
		t.Errorf("new session of the blocked client: %q", got)
	}
	if obs := rec.take(); len(obs) != 0 {
		t.Errorf("a blocked client's session counted %s (after %d)", kinds(obs), before)
	}
	if rec.refusals() != 2 {
		t.Errorf("%d refusals counted as impact, want 2", rec.refusals())
	}
	if got := c.ask(pf{client: other, rcpt: "alice@example.test"}.text()); got != "DUNNO" {
		t.Errorf("another client: %q, want DUNNO", got)
	}
	for i := range 8 {
		if got := c.ask(pf{client: inside, rcpt: "typo" + string(rune('a'+i)) + "@example.test"}.text()); code(got) != "550" {
			t.Fatalf("trusted client's unknown recipient %d: %q, want 550", i, got)
		}
	}
	if got := c.ask(pf{client: inside, rcpt: "alice@example.test"}.text()); got != "DUNNO" {
		t.Errorf("trusted client after 8 unknown recipients: %q, want DUNNO (never blocked)", got)
	}
	if eng.Blocked(netip.MustParseAddr("127.0.0.1")) {
		t.Error("the policy peer was blocked")
	}
}

// TestDuplicateRequests: one RCPT asked twice in a row (check_policy_service
// in two restriction lists) counts once; an END-OF-MESSAGE asked twice for
// one instance counts one message.
func TestDuplicateRequests(t *testing.T) {
	rec := &recorder{}
	s, _ := New(Options{Engine: rec, Directory: directory(t)})
	c := dial(t, serve(t, s))
	r := pf{client: "203.0.113.8", rcpt: "nobody@example.test"}.text()
	for range 2 {
		if got := c.ask(r); code(got) != "550" {
			t.Fatalf("%q", got)
		}
	}
	eom := pf{client: "203.0.113.8", state: "END-OF-MESSAGE", count: 1, size: 300, instance: "a.b.c.1"}
	c.ask(eom.text())
	c.ask(eom.text())
	// The same instance again after another request: still one message.
	c.ask(pf{client: "203.0.113.8", state: "DATA", instance: "a.b.c.1"}.text())
	c.ask(eom.text())
	if k := kinds(rec.take()); k != "[dos directory_harvest mailbomb]" {
		t.Errorf("counted %s, want one connection, one unknown recipient, one message", k)
	}
	// The next transaction (another instance) is a new message.
	eom.instance = "a.b.c.2"
	c.ask(eom.text())
	if k := kinds(rec.take()); k != "[mailbomb]" {
		t.Errorf("next transaction counted %s", k)
	}
}

// TestBadSessions: a session counts toward bad_sessions when its next
// session shows it ended after recipients that were all unknown and no
// message; one with a recipient mxguard let through, or with a message,
// does not (Postfix does not tell what happened to it after mxguard's
// DUNNO). The session of a closed connection is taken over by a new
// connection about it (Postfix's max_ttl reconnect), or judged once it
// was parked for parkTTL.
func TestBadSessions(t *testing.T) {
	rec := &recorder{}
	clk := testutil.NewFakeClock()
	s, _ := New(Options{Engine: rec, Directory: directory(t), Clock: clk})
	addr := serve(t, s)
	c := dial(t, addr)
	const client = "203.0.113.9"
	count := func(obs []detect.Observation, k detect.Kind) (n int) {
		for _, o := range obs {
			if o.Kind == k {
				n++
			}
		}
		return n
	}
	// Session 1: two unknown recipients only.
	c.ask(pf{client: client, port: "1", rcpt: "x@example.test"}.text())
	c.ask(pf{client: client, port: "1", rcpt: "y@example.test"}.text())
	// Session 2 begins: session 1 was bad.
	c.ask(pf{client: client, port: "2", rcpt: "x@example.test"}.text())
	c.ask(pf{client: client, port: "2", rcpt: "alice@example.test"}.text())
	if n := count(rec.take(), detect.KindBadSession); n != 1 {
		t.Errorf("%d bad sessions after session 1, want 1", n)
	}
	// Session 3: an unknown recipient and a message; session 2 had a
	// recipient let through: neither is bad.
	c.ask(pf{client: client, port: "3", rcpt: "z@example.test"}.text())
	c.ask(pf{client: client, port: "3", state: "END-OF-MESSAGE", count: 1, size: 10}.text())
	c.ask(pf{client: client, port: "4", rcpt: "w@example.test"}.text())
	if n := count(rec.take(), detect.KindBadSession); n != 0 {
		t.Errorf("%d bad sessions for sessions 2 and 3, want 0", n)
	}
	// Session 4 (one unknown recipient so far) goes on over a new
	// connection: not a new connection for dos, not ended.
	c.c.Close()
	waitParked(t, s, 1)
	c = dial(t, addr)
	c.ask(pf{client: client, port: "4", rcpt: "v@example.test"}.text())
	if obs := rec.take(); count(obs, detect.KindConnect) != 0 || count(obs, detect.KindBadSession) != 0 {
		t.Errorf("session 4 taken over by a new connection counted %s", kinds(obs))
	}
	c.c.Close()
	waitParked(t, s, 1)
	clk.Advance(parkTTL - time.Second)
	s.sweep()
	if obs := rec.take(); len(obs) != 0 {
		t.Errorf("parked under parkTTL, counted %s", kinds(obs))
	}
	clk.Advance(time.Second)
	s.sweep()
	if obs := rec.take(); count(obs, detect.KindBadSession) != 1 {
		t.Errorf("session 4 parked for parkTTL counted %s, want one bad session", kinds(obs))
	}
	waitParked(t, s, 0)
}

func waitParked(t *testing.T, s *Server, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.parked.mu.Lock()
		got := len(s.parked.m)
		s.parked.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions parked, want %d", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBlocks: a manually blocked client gets 421 4.7.0 at once; the static
// blocklist (through the connect checks, as the SMTP listener runs them)
// too, without counting its connection; an allowlisted client is never
// blocked even when a rule fires for it.
func TestBlocks(t *testing.T) {
	allow := []netip.Prefix{netip.MustParsePrefix("198.51.100.77/32")}
	eng := newEngine(t, detect.Options{Rules: []config.Rule{rule("flood", "dos", 2)}, Allowlist: allow})
	if _, err := eng.AddBlock(context.Background(), "203.0.113.0/24", time.Hour, "test"); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{real: eng}
	chain := &pipeline.Chain{Connect: []pipeline.ConnectCheck{&blocklist.Check{
		Static: []netip.Prefix{netip.MustParsePrefix("192.0.2.66/32")}, Blocker: eng}}}
	s, _ := New(Options{Engine: rec, Settings: Settings{Connect: chain}})
	c := dial(t, serve(t, s))
	if got := c.ask(pf{client: "203.0.113.50", state: "CONNECT"}.text()); !strings.HasPrefix(got, "421 4.7.0 ") {
		t.Errorf("manually blocked client: %q", got)
	}
	if got := c.ask(pf{client: "192.0.2.66", state: "CONNECT"}.text()); !strings.HasPrefix(got, "421 4.7.0 ") {
		t.Errorf("blocklisted client: %q", got)
	}
	if obs := rec.take(); len(obs) != 0 {
		t.Errorf("refused clients counted %s", kinds(obs))
	}
	for i := range 4 {
		if got := c.ask(pf{client: "198.51.100.77", port: string(rune('1' + i)), state: "CONNECT"}.text()); got != "DUNNO" {
			t.Fatalf("allowlisted client, session %d: %q", i, got)
		}
	}
	// dos fires on the second session of an ordinary client: that very
	// session is refused.
	c.ask(pf{client: "198.51.100.8", port: "1", state: "CONNECT"}.text())
	if got := c.ask(pf{client: "198.51.100.8", port: "2", state: "CONNECT"}.text()); code(got) != "421" {
		t.Errorf("client whose connection fired dos: %q, want 421", got)
	}
	// IPv4-mapped IPv6 is the IPv4 client.
	if got := c.ask(pf{client: "::ffff:203.0.113.51", state: "CONNECT"}.text()); code(got) != "421" {
		t.Errorf("mapped address of a blocked client: %q", got)
	}
}

// TestListedSession: a connect check's refusal that does not end the
// session (a DNSBL listing, 554) answers every request of the session and
// counts its connection; the next session is judged afresh (a reload
// replaced the checks).
func TestListedSession(t *testing.T) {
	listed := connectFunc(func(s *pipeline.Session) *reply.Reply {
		if s.Addr == netip.MustParseAddr("198.51.100.20") {
			return reply.Listed.By("dnsbl")
		}
		return nil
	})
	rec := &recorder{}
	s, _ := New(Options{Engine: rec, Settings: Settings{Connect: listed}})
	c := dial(t, serve(t, s))
	for _, st := range []string{"RCPT", "DATA"} {
		if got := c.ask(pf{client: "198.51.100.20", state: st, rcpt: "alice@example.test"}.text()); !strings.HasPrefix(got, "554 5.7.1 ") {
			t.Errorf("%s of a listed client: %q", st, got)
		}
	}
	if k := kinds(rec.take()); k != "[dos]" {
		t.Errorf("listed session counted %s, want its connection", k)
	}
	s.Reconfigure(Settings{})
	if got := c.ask(pf{client: "198.51.100.20", port: "2", rcpt: "alice@example.test"}.text()); got != "DUNNO" {
		t.Errorf("after the reload: %q", got)
	}
}

type connectFunc func(*pipeline.Session) *reply.Reply

func (f connectFunc) RunConnect(_ context.Context, s *pipeline.Session) *reply.Reply { return f(s) }

// TestSuspendedAccount: a suspended sasl_username gets 550 5.7.1 at MAIL,
// RCPT and END-OF-MESSAGE, and its message counts once as refused; the
// internal_spammer rule suspends an account that sent too much.
func TestSuspendedAccount(t *testing.T) {
	r := rule("spammer", "internal_spammer", 3)
	r.Actions = []string{"suspend"}
	eng := newEngine(t, detect.Options{Rules: []config.Rule{r}})
	rec := &recorder{real: eng}
	s, _ := New(Options{Engine: rec})
	c := dial(t, serve(t, s))
	const client = "203.0.113.30"
	if got := c.ask(pf{client: client, state: "END-OF-MESSAGE", count: 3, size: 10, sasl: "Carol"}.text()); got != "DUNNO" {
		t.Fatalf("message of carol: %q", got)
	}
	if !eng.Suspended("carol") {
		t.Fatal("three messages did not suspend carol")
	}
	rec.take()
	for _, st := range []string{"MAIL", "RCPT", "END-OF-MESSAGE"} {
		got := c.ask(pf{client: client, state: st, sasl: "carol", rcpt: "x@remote.test", instance: "i.2"}.text())
		if !strings.HasPrefix(got, "550 5.7.1 ") {
			t.Errorf("%s of the suspended account: %q", st, got)
		}
	}
	obs := rec.take()
	if len(obs) != 1 || obs[0].Kind != detect.KindAccountMessage || !obs[0].Refused || obs[0].Account != "carol" {
		t.Errorf("suspended account's transaction counted %+v, want one refused message", obs)
	}
	if got := c.ask(pf{client: client, state: "RCPT", sasl: "dave", rcpt: "x@remote.test", instance: "i.3"}.text()); got != "DUNNO" {
		t.Errorf("another account: %q", got)
	}
}

// TestBadInput: input no Postfix sends closes that connection and only
// that one; a complete request without what mxguard judges by gets DUNNO
// and counts for nothing.
func TestBadInput(t *testing.T) {
	m := metrics.New()
	rec := &recorder{}
	s, _ := New(Options{Engine: rec, Metrics: m})
	addr := serve(t, s)
	good := dial(t, addr)
	if got := good.ask(pf{client: "203.0.113.1", state: "CONNECT"}.text()); got != "DUNNO" {
		t.Fatal(got)
	}
	for _, tc := range []struct{ name, raw string }{
		{"line over the limit", "request=smtpd_access_policy\nsender=" + strings.Repeat("a", MaxLine) + "\n\n"},
		{"endless line", strings.Repeat("x", 3*MaxLine)},
		{"binary", "request=smtpd_access_policy\nclient_address=1.2.3.4\x00\x01\xff\n\n"},
		{"no equals sign", "request=smtpd_access_policy\nGET / HTTP/1.1\n\n"},
		{"empty name", "=value\n\n"},
		{"bad name", "Client Address=1.2.3.4\n\n"},
		{"empty request", "\n"},
		{"too many attributes", strings.Repeat("x=1\n", MaxAttributes+1) + "\n"},
		{"request too large", strings.Repeat("ccert_subject="+strings.Repeat("s", 1000)+"\n", 40) + "\n"},
		{"escape in a value", "request=smtpd_access_policy\nsender=a\x1b[31m@b\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !dial(t, addr).closed(tc.raw) {
				t.Error("connection not closed")
			}
		})
	}
	for _, tc := range []struct{ name, raw string }{
		{"no client_address", "request=smtpd_access_policy\nprotocol_state=RCPT\nrecipient=x@example.test\n\n"},
		{"client_address not an address", pf{client: "unknown"}.text()},
		{"client_address with a zone", pf{client: "fe80::1%eth0"}.text()},
		{"another request type", "request=junk\nclient_address=203.0.113.1\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := dial(t, addr).ask(tc.raw); got != "DUNNO" {
				t.Errorf("%q, want DUNNO", got)
			}
		})
	}
	// CRLF lines (a request typed by hand) are read like LF ones.
	crlf := strings.ReplaceAll(pf{client: "203.0.113.2", state: "CONNECT"}.text(), "\n", "\r\n")
	if got := dial(t, addr).ask(crlf); got != "DUNNO" {
		t.Errorf("CRLF request: %q", got)
	}
	if got := good.ask(pf{client: "203.0.113.1", state: "RCPT", rcpt: "a@example.test"}.text()); got != "DUNNO" {
		t.Errorf("the first connection after the others' garbage: %q", got)
	}
	if n := promtest.ToFloat64(m.PolicyRequests.WithLabelValues("postfix", "bad_request")); n != 14 {
		t.Errorf("bad_request counted %v, want 14 (10 closed connections, 4 requests)", n)
	}
	if n := promtest.ToFloat64(m.PolicyRequests.WithLabelValues("postfix", "dunno")); n != 3 {
		t.Errorf("dunno counted %v, want 3", n)
	}
	for _, o := range rec.take() {
		if a := o.Addr.String(); a != "203.0.113.1" && a != "203.0.113.2" {
			t.Errorf("bad input counted %+v", o)
		}
	}
}

// TestTimeouts: a connection idle past IdleTimeout, or stalled within a
// request past RequestTimeout, is closed.
func TestTimeouts(t *testing.T) {
	s, _ := New(Options{Engine: &recorder{}, IdleTimeout: 200 * time.Millisecond, RequestTimeout: 100 * time.Millisecond})
	addr := serve(t, s)
	start := time.Now()
	if !dial(t, addr).closed("") {
		t.Error("idle connection not closed")
	}
	if !dial(t, addr).closed("request=smtpd_access_policy\nclient_add") {
		t.Error("stalled request not closed")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("closing took %v", d)
	}
}

// TestPeerAllowed: only loopback peers and trusted_networks may ask. A
// test cannot connect from a non-loopback address on this machine, so
// the check itself is tested here, and the listener's use of it in
// TestPeerRefused.
func TestPeerAllowed(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}
	for _, tc := range []struct {
		addr net.Addr
		ok   bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 1}, true},
		{&net.TCPAddr{IP: net.ParseIP("127.8.9.10"), Port: 1}, true},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 1}, true},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:127.0.0.1"), Port: 1}, true},
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.200"), Port: 1}, true},
		{&net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.9"), Port: 1}, true},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::25"), Port: 1}, true},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 1, Zone: "eth0"}, false},
		{&net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 1}, false},
		{&net.TCPAddr{IP: net.ParseIP("10.0.0.1"), Port: 1}, false},
		{&net.UnixAddr{Name: "/run/x", Net: "unix"}, false},
	} {
		if got := PeerAllowed(tc.addr, trusted); got != tc.ok {
			t.Errorf("PeerAllowed(%v) = %v, want %v", tc.addr, got, tc.ok)
		}
	}
}

// TestPeerRefused: the listener closes a connection whose peer the check
// refuses before reading a byte, and counts it. The peer is made
// untrusted by wrapping the listener so it reports a public address:
// the loopback has no other.
func TestPeerRefused(t *testing.T) {
	m := metrics.New()
	s, _ := New(Options{Engine: &recorder{}, Metrics: m})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, publicPeers{ln}) }()
	t.Cleanup(func() { cancel(); <-done })
	if !dial(t, ln.Addr().String()).closed(pf{client: "203.0.113.1"}.text()) {
		t.Error("a peer outside loopback and trusted_networks was answered")
	}
	if n := promtest.ToFloat64(m.PolicyRequests.WithLabelValues("postfix", "peer_refused")); n != 1 {
		t.Errorf("peer_refused = %v, want 1", n)
	}
}

type publicPeers struct{ net.Listener }

func (l publicPeers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return publicConn{c}, nil
}

type publicConn struct{ net.Conn }

func (publicConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.ParseIP("198.51.100.1"), Port: 40000}
}

// TestMaxConns: a connection past MaxConns is closed at once; the others
// are served.
func TestMaxConns(t *testing.T) {
	m := metrics.New()
	s, _ := New(Options{Engine: &recorder{}, Metrics: m, MaxConns: 2})
	addr := serve(t, s)
	a, b := dial(t, addr), dial(t, addr)
	a.ask(pf{client: "203.0.113.1"}.text())
	b.ask(pf{client: "203.0.113.1"}.text())
	if !dial(t, addr).closed(pf{client: "203.0.113.1"}.text()) {
		t.Error("third connection served")
	}
	if got := a.ask(pf{client: "203.0.113.1", rcpt: "x@y.test"}.text()); got != "DUNNO" {
		t.Error(got)
	}
	if n := promtest.ToFloat64(m.PolicyRequests.WithLabelValues("postfix", "busy")); n != 1 {
		t.Errorf("busy = %v", n)
	}
}

// TestParkingBounded: past maxParked sessions of closed connections the
// oldest is judged at once, so a flood of reconnecting clients cannot
// grow the table.
func TestParkingBounded(t *testing.T) {
	rec := &recorder{}
	clk := testutil.NewFakeClock()
	s, _ := New(Options{Engine: rec, Clock: clk})
	for i := range maxParked + 1 {
		clk.Advance(time.Millisecond)
		s.park(session{active: true, id: []byte(fmt.Sprint(i)), addr: netip.MustParseAddr("203.0.113.1"), unknown: 1})
	}
	waitParked(t, s, maxParked)
	if obs := rec.take(); len(obs) != 1 || obs[0].Kind != detect.KindBadSession {
		t.Errorf("past the bound: %s, want the oldest session judged", kinds(obs))
	}
	if _, ok := s.adopt([]byte("0")); ok {
		t.Error("the oldest session is still parked")
	}
	if _, ok := s.adopt([]byte("1")); !ok {
		t.Error("the second oldest was dropped")
	}
}

// TestIPv6Clients: an IPv6 client_address counts for its /64
// (ipv6_prefix), so a harvest spread over the addresses of one /64 is one
// source, blocked as a whole; another /64 is not.
func TestIPv6Clients(t *testing.T) {
	eng := newEngine(t, detect.Options{Rules: []config.Rule{rule("harvest", "directory_harvest", 4)}})
	s, _ := New(Options{Engine: eng, Directory: directory(t)})
	c := dial(t, serve(t, s))
	for i := range 4 {
		client := fmt.Sprintf("2001:db8:1:2::%x", i+1)
		if got := c.ask(pf{client: client, rcpt: fmt.Sprintf("guess%d@example.test", i)}.text()); code(got) != "550" {
			t.Fatalf("guess %d from %s: %q", i, client, got)
		}
	}
	if got := c.ask(pf{client: "2001:db8:1:2:ffff::9", rcpt: "alice@example.test"}.text()); code(got) != "421" {
		t.Errorf("another address of the harvesting /64: %q, want 421", got)
	}
	if got := c.ask(pf{client: "2001:db8:1:3::1", rcpt: "alice@example.test"}.text()); got != "DUNNO" {
		t.Errorf("the next /64: %q, want DUNNO", got)
	}
}
