package policyd

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"mxguard/internal/config"
	"mxguard/internal/detect"
	"mxguard/internal/recipients"
	"mxguard/internal/testutil"
)

// pf is one policy request as Postfix 3.7 writes it: the 29 attributes of
// the captured traffic (testdata/postfix-policy-*.txt), in that order.
type pf struct {
	state, client, port, sender, rcpt, instance, sasl string
	size, count                                       int
}

func (p pf) text() string {
	if p.state == "" {
		p.state = "RCPT"
	}
	if p.port == "" {
		p.port = "40001"
	}
	if p.instance == "" {
		p.instance = "7bf8.6b06cbd0.375cc.0"
	}
	if p.sender == "" {
		p.sender = "sender@remote.test"
	}
	return "request=smtpd_access_policy\nprotocol_state=" + p.state + "\nprotocol_name=ESMTP\n" +
		"client_address=" + p.client + "\nclient_name=unknown\nclient_port=" + p.port + "\nreverse_client_name=unknown\n" +
		"server_address=127.0.0.1\nserver_port=25\nhelo_name=client.remote.test\nsender=" + p.sender + "\n" +
		"recipient=" + p.rcpt + "\nrecipient_count=" + fmt.Sprint(p.count) + "\nqueue_id=\ninstance=" + p.instance + "\n" +
		"size=" + fmt.Sprint(p.size) + "\netrn_domain=\nstress=\nsasl_method=\nsasl_username=" + p.sasl + "\nsasl_sender=\n" +
		"ccert_subject=\nccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\n" +
		"encryption_protocol=\nencryption_cipher=\nencryption_keysize=0\npolicy_context=\n\n"
}

// recorder is an Engine that records what the server told it, over a
// real engine (or none: nothing blocked, nothing suspended).
type recorder struct {
	mu      sync.Mutex
	real    *detect.Engine
	obs     []detect.Observation
	refused []netip.Addr
}

var _ Engine = (*recorder)(nil)

func (r *recorder) Observe(o detect.Observation) bool {
	r.mu.Lock()
	r.obs = append(r.obs, o)
	r.mu.Unlock()
	if r.real == nil {
		return false
	}
	return r.real.Observe(o)
}

func (r *recorder) Blocked(a netip.Addr) bool { return r.real != nil && r.real.Blocked(a) }

func (r *recorder) Refused(a netip.Addr) {
	r.mu.Lock()
	r.refused = append(r.refused, a)
	r.mu.Unlock()
	if r.real != nil {
		r.real.Refused(a)
	}
}

func (r *recorder) Protected(a netip.Addr) bool { return r.real != nil && r.real.Protected(a) }

func (r *recorder) Suspended(acct string) bool { return r.real != nil && r.real.Suspended(acct) }

// take returns and forgets the observations so far.
func (r *recorder) take() []detect.Observation {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.obs
	r.obs = nil
	return o
}

func (r *recorder) refusals() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.refused)
}

// kinds lists the kinds of obs, for readable failures.
func kinds(obs []detect.Observation) string {
	var s []string
	for _, o := range obs {
		s = append(s, o.Kind.String())
	}
	return "[" + strings.Join(s, " ") + "]"
}

// newEngine is a real engine on a fake clock, with opts' trusted
// networks, allowlist and rules.
func newEngine(t testing.TB, o detect.Options) *detect.Engine {
	t.Helper()
	if o.Clock == nil {
		o.Clock = testutil.NewFakeClock()
	}
	e, err := detect.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func rule(name, typ string, threshold int) config.Rule {
	return config.Rule{Name: name, Type: typ, Window: 10 * time.Minute, Threshold: threshold,
		Actions: []string{"block"}, BlockFor: time.Hour}
}

// directory knows alice and bob of example.test (a recipients.file):
// every other address of example.test is unknown.
func directory(t testing.TB) *recipients.Directory {
	t.Helper()
	l, err := recipients.Parse("recipients.txt", strings.NewReader("alice@example.test\nbob@example.test\n"))
	if err != nil {
		t.Fatal(err)
	}
	return recipients.New(recipients.Options{Settings: recipients.Settings{Domains: []string{"example.test"}, List: l}})
}

// serve starts s on a loopback port; it stops with the test.
func serve(t testing.TB, s *Server) string { return testutil.Serve(t, s.Serve) }

// client is a policy client on one connection, as Postfix's smtpd.
type client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c := testutil.DialTCP(t, addr, 30*time.Second)
	return &client{t: t, c: c, br: bufio.NewReader(c)}
}

// ask sends a raw request and returns the action ("DUNNO", "550 5.1.1
// ..."), failing unless the answer is exactly "action=...\n\n".
func (c *client) ask(raw string) string {
	c.t.Helper()
	if _, err := io.WriteString(c.c, raw); err != nil {
		c.t.Fatalf("write: %v", err)
	}
	line, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read answer: %v", err)
	}
	empty, err := c.br.ReadString('\n')
	if err != nil || empty != "\n" {
		c.t.Fatalf("answer %q not ended by an empty line: %q %v", line, empty, err)
	}
	action, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "action=")
	if !ok {
		c.t.Fatalf("answer %q is no action", line)
	}
	return action
}

// closed reports whether the server closed the connection (after
// sending raw): the read ends with EOF or a reset, not with an answer.
func (c *client) closed(raw string) bool {
	c.t.Helper()
	io.WriteString(c.c, raw)
	b, err := c.br.ReadByte()
	if err == nil {
		c.t.Logf("got an answer starting %q", b)
		return false
	}
	return true
}

// code is the reply code an action starts with ("DUNNO" for DUNNO).
func code(action string) string {
	c, _, _ := strings.Cut(action, " ")
	return c
}
