package smtpd

import (
	"context"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"mxguard/internal/address"
	"mxguard/internal/spool"
	"mxguard/internal/testutil"
)

// goSMTPRecorder is a bare go-smtp backend that records the address
// strings its parser hands to Session.Mail and Session.Rcpt.
type goSMTPRecorder struct {
	mu  sync.Mutex
	got []string
}

func (r *goSMTPRecorder) NewSession(*smtp.Conn) (smtp.Session, error) { return r, nil }
func (r *goSMTPRecorder) Mail(from string, _ *smtp.MailOptions) error {
	r.add("MAIL " + from)
	return nil
}
func (r *goSMTPRecorder) Rcpt(to string, _ *smtp.RcptOptions) error {
	r.add("RCPT " + to)
	return nil
}
func (r *goSMTPRecorder) Data(io.Reader) error { return nil }
func (r *goSMTPRecorder) Reset()               {}
func (r *goSMTPRecorder) Logout() error        { return nil }

func (r *goSMTPRecorder) add(s string) {
	r.mu.Lock()
	r.got = append(r.got, s)
	r.mu.Unlock()
}

func (r *goSMTPRecorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) == 0 {
		return ""
	}
	return r.got[len(r.got)-1]
}

// TestGoSMTPAddressForms pins what go-smtp v0.25.1 hands to the session
// for the forms that matter to relay safety (raw TCP in, Session.Rcpt
// argument out): quotes and escapes removed, source routes dropped, a
// quoted "@" and an unquoted second "@" indistinguishable, the bare
// postmaster refused. session.parseAddr and address.ParseUnquoted are
// built on exactly this; an upgrade that changes it fails here.
func TestGoSMTPAddressForms(t *testing.T) {
	rec := &goSMTPRecorder{}
	c := testutil.Dial(t, startGoSMTP(t, rec), testutil.DialOptions{})
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	c.Cmd(`MAIL FROM:<"a b"@remote.test>`, 250)
	if got := rec.last(); got != "MAIL a b@remote.test" {
		t.Errorf("MAIL: session got %q", got)
	}
	tests := []struct {
		arg  string
		want string // what Session.Rcpt gets; "" when go-smtp answers 501 itself
	}{
		{"<alice@EXAMPLE.TEST.>", "alice@EXAMPLE.TEST."},
		{"alice@example.test", "alice@example.test"},
		{`<"victim@quoted.test"@example.test>`, "victim@quoted.test@example.test"},
		{"<victim@at.test@example.test>", "victim@at.test@example.test"},
		{`<"victim@evil.test> NOTIFY=NEVER ORCPT=rfc822;x"@example.test>`, "victim@evil.test> NOTIFY=NEVER ORCPT=rfc822;x@example.test"},
		{`<"a\"b\\c d"@example.test>`, `a"b\c d@example.test`},
		{"<a..b.@example.test>", "a..b.@example.test"},
		{"<@evil.test:victim@example.test>", "victim@example.test"},
		{"<@a.test,@b.test:victim@example.test>", "victim@example.test"},
		{"<victim%pct.test@example.test>", "victim%pct.test@example.test"},
		{"<alice@exa\"mple,@x:y>", `alice@exa"mple,@x:y`},
		{"<postmaster>", ""},
		{`<""@example.test>`, ""},
	}
	for _, tt := range tests {
		before := rec.last()
		code := 250
		if tt.want == "" {
			code = 501
		}
		c.Cmd("RCPT TO:"+tt.arg, code)
		if got := rec.last(); tt.want != "" && got != "RCPT "+tt.want {
			t.Errorf("RCPT TO:%s: session got %q, want %q", tt.arg, got, "RCPT "+tt.want)
		} else if tt.want == "" && got != before {
			t.Errorf("RCPT TO:%s: refused, yet the session got %q", tt.arg, got)
		}
	}
}

// startGoSMTP runs a bare go-smtp server with backend b and returns its
// address.
func startGoSMTP(t *testing.T, b smtp.Backend) string {
	srv := smtp.NewServer(b)
	srv.Domain = "gosmtp.test"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// downstreamRecorder is a scripted downstream that keeps every command
// line it receives; alice, bob and postmaster@example.test exist, other recipients get 550 5.1.1.
type downstreamRecorder struct {
	mu    sync.Mutex
	lines []string
}

func newDownstreamRecorder(t *testing.T) (*downstreamRecorder, string) {
	d := &downstreamRecorder{}
	addr := testutil.FakeSMTP(t, "220 recorder ESMTP", func() func(string) (string, bool) {
		inData := false
		return func(line string) (string, bool) {
			if inData {
				if line == "." {
					inData = false
					return "250 2.0.0 Ok: queued", false
				}
				return "", false
			}
			d.mu.Lock()
			d.lines = append(d.lines, line)
			d.mu.Unlock()
			u := strings.ToUpper(line)
			switch {
			case strings.HasPrefix(u, "EHLO"):
				return "250-recorder\n250-PIPELINING\n250-DSN\n250 8BITMIME", false
			case strings.HasPrefix(u, "RCPT TO:<ALICE@EXAMPLE.TEST>"), strings.HasPrefix(u, "RCPT TO:<BOB@EXAMPLE.TEST>"),
				strings.HasPrefix(u, "RCPT TO:<POSTMASTER@EXAMPLE.TEST>"):
				return "250 2.1.5 Ok", false
			case strings.HasPrefix(u, "RCPT"):
				return "550 5.1.1 " + line[8:] + ": Recipient address rejected: User unknown", false
			case u == "DATA":
				inData = true
				return "354 go ahead", false
			case u == "QUIT":
				return "221 bye", true
			}
			return "250 2.0.0 Ok", false
		}
	})
	return d, addr
}

// envelope is what the downstream got as MAIL FROM and RCPT TO.
func (d *downstreamRecorder) envelope() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var env []string
	for _, l := range d.lines {
		if u := strings.ToUpper(l); strings.HasPrefix(u, "MAIL ") || strings.HasPrefix(u, "RCPT ") {
			env = append(env, l)
		}
	}
	return env
}

// wantRcpts checks the RCPT lines the downstream got, in order.
func (d *downstreamRecorder) wantRcpts(t *testing.T, want ...string) {
	t.Helper()
	var rcpts []string
	for _, l := range d.envelope() {
		if strings.HasPrefix(l, "RCPT") {
			rcpts = append(rcpts, l)
		}
	}
	if strings.Join(rcpts, "\n") != strings.Join(want, "\n") {
		t.Errorf("downstream got %q, want %q", rcpts, want)
	}
}

type addrCase struct {
	from, rcpt string // raw command arguments
	code       int
	enhanced   string // prefix of the reply text
	down       []string
}

// runCases sends each case as its own transaction and checks the reply
// and what reached the downstream (exactly the lines in down, nothing of
// the refused ones).
func runCases(t *testing.T, addr, ip string, d *downstreamRecorder, cases []addrCase) {
	t.Helper()
	for _, tc := range cases {
		// One session per case: a session ends after 20 refusals
		// (limits.go, Postfix's smtpd_hard_error_limit).
		c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: ip})
		c.Expect(220)
		c.Cmd("EHLO client.test", 250)
		before := len(d.envelope())
		c.Cmd("RSET", 250)
		from := tc.from
		if from == "" {
			from = "<sender@remote.test>"
		}
		var text string
		if tc.rcpt == "" {
			text = c.Cmd("MAIL FROM:"+from, tc.code)
		} else {
			c.Cmd("MAIL FROM:"+from, 250)
			text = c.Cmd("RCPT TO:"+tc.rcpt, tc.code)
		}
		if !strings.HasPrefix(text, tc.enhanced) {
			t.Errorf("%s %s: reply %d %s, want %d %s...", tc.from, tc.rcpt, tc.code, text, tc.code, tc.enhanced)
		}
		c.Cmd("RSET", 250)
		got := d.envelope()[before:]
		if strings.Join(got, "\n") != strings.Join(tc.down, "\n") {
			t.Errorf("%s %s: downstream got %q, want %q", tc.from, tc.rcpt, got, tc.down)
		}
		c.Cmd("QUIT", 221)
	}
}

// TestAddressTricksUntrusted: from a client that may not relay, every
// routing trick of issue 7 is refused before anything reaches the
// downstream; what is accepted goes downstream re-quoted from the parsed
// form, never as the client wrote it.
func TestAddressTricksUntrusted(t *testing.T) {
	d, down := newDownstreamRecorder(t)
	addr, _ := startServerTo(t, down, nil)
	const mail = "MAIL FROM:<sender@remote.test>"
	long := strings.Repeat("a", 65)
	runCases(t, addr, "127.0.0.20", d, []addrCase{
		{rcpt: "<alice@example.test>", code: 250, down: []string{mail, "RCPT TO:<alice@example.test>"}},
		{rcpt: "<alice@EXAMPLE.TEST.>", code: 250, down: []string{mail, "RCPT TO:<alice@example.test>"}},
		{rcpt: "<victim%pct.test@example.test>", code: 554, enhanced: "5.7.1 "},
		{rcpt: "<VICTIM%PCT.TEST@EXAMPLE.TEST.>", code: 554, enhanced: "5.7.1 "},
		{rcpt: `<"victim%pct.test"@example.test>`, code: 554, enhanced: "5.7.1 "},
		{rcpt: `<"victim@quoted.test"@example.test>`, code: 554, enhanced: "5.7.1 "},
		{rcpt: "<victim@at.test@example.test>", code: 554, enhanced: "5.7.1 "},
		{rcpt: "<bang.test!victim@example.test>", code: 554, enhanced: "5.7.1 "},
		{rcpt: `<"victim@evil.test> NOTIFY=NEVER ORCPT=rfc822;x"@example.test>`, code: 554, enhanced: "5.7.1 "},
		{rcpt: "<victim%pct.test@[127.0.0.1]>", code: 554, enhanced: "5.7.1 "},
		{rcpt: "<alice@[127.0.0.1]>", code: 554, enhanced: "5.7.1 "},
		{rcpt: "<victim@pct.test>", code: 554, enhanced: "5.7.1 "},
		{rcpt: "<@example.test:victim@evil.test>", code: 554, enhanced: "5.7.1 "},
		// A source route is refused (INTERFACE.md §4), though go-smtp
		// drops it before the session sees the address (routes.go).
		{rcpt: "<@evil.test:alice@example.test>", code: 554, enhanced: "5.7.1 "},
		{rcpt: "<@a.test,@b.test:alice@example.test>", code: 554, enhanced: "5.7.1 "},
		{rcpt: " <@evil.test:alice@EXAMPLE.test>", code: 554, enhanced: "5.7.1 "},
		// Padded past any short bound of the watch: still a command line.
		{rcpt: "<@evil.test:alice@example.test>" + strings.Repeat(" ", 5000), code: 554, enhanced: "5.7.1 "},
		// Quoting is kept: the downstream's own verdict comes back.
		{rcpt: `<"alice> NOTIFY=NEVER"@example.test>`, code: 550, enhanced: "5.1.1 ", down: []string{mail, `RCPT TO:<"alice> NOTIFY=NEVER"@example.test>`}},
		{rcpt: `<"john smith"@Example.Test>`, code: 550, enhanced: "5.1.1 ", down: []string{mail, `RCPT TO:<"john smith"@example.test>`}},
		{rcpt: `<"alice"@example.test>`, code: 250, down: []string{mail, "RCPT TO:<alice@example.test>"}},
		// Syntax, limits, 8-bit without SMTPUTF8.
		{rcpt: "<" + long + "@example.test>", code: 501, enhanced: "5.1.3 "},
		{rcpt: "<alice@" + strings.Repeat("x", 64) + ".example.test>", code: 501, enhanced: "5.1.3 "},
		{rcpt: "<alice@exa_mple.test>", code: 501, enhanced: "5.1.3 "},
		{rcpt: "<alice@example.test,@evil.test:x>", code: 501, enhanced: "5.1.3 "},
		{rcpt: "<\"al\x01ice\"@example.test>", code: 501, enhanced: "5.1.3 "},
		{rcpt: "<vïctim@example.test>", code: 553, enhanced: "5.6.7 "},
		{rcpt: "<alice@bücher.test>", code: 553, enhanced: "5.6.7 "},
		// DSN parameters are refused by go-smtp (DSN is not offered).
		{rcpt: "<alice@example.test> NOTIFY=NEVER", code: 504},
		{rcpt: "<alice@example.test> ORCPT=rfc822;victim@evil.test", code: 504},
		// The sender: parsed, re-quoted, routing refused.
		{from: `<"a b"@Remote.Test>`, rcpt: "<alice@example.test>", code: 250, down: []string{`MAIL FROM:<"a b"@remote.test>`, "RCPT TO:<alice@example.test>"}},
		{from: "<>", rcpt: "<alice@example.test>", code: 250, down: []string{"MAIL FROM:<>", "RCPT TO:<alice@example.test>"}},
		{from: "<victim%pct.test@example.test>", code: 554, enhanced: "5.7.1 "},
		{from: `<"victim@evil.test"@remote.test>`, code: 554, enhanced: "5.7.1 "},
		{from: "<sender@-remote.test>", code: 501, enhanced: "5.1.7 "},
		{from: "<sënder@remote.test>", code: 553, enhanced: "5.6.7 "},
		{from: "<sender@remote.test> RET=HDRS", code: 504},
	})
	for _, l := range d.envelope() {
		for _, bad := range []string{"pct.test", "quoted.test", "at.test", "bang.test", "evil.test", "NEVER\"@", "127.0.0.1"} {
			if strings.Contains(l, bad) && !strings.Contains(l, `"alice> NOTIFY=NEVER"@`) {
				t.Errorf("downstream got %q", l)
			}
		}
	}
}

// TestAddressTricksTrusted: a trusted client may relay anywhere, routing
// included, but its addresses are parsed and re-quoted all the same.
func TestAddressTricksTrusted(t *testing.T) {
	d, down := newDownstreamRecorder(t)
	addr, _ := startServerTo(t, down, nil, func(_ *Options, s *Settings) {
		s.Trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.21/32")}
	})
	const mail = "MAIL FROM:<sender@remote.test>"
	runCases(t, addr, "127.0.0.21", d, []addrCase{
		{rcpt: "<victim%pct.test@example.test>", code: 550, enhanced: "5.1.1 ", down: []string{mail, "RCPT TO:<victim%pct.test@example.test>"}},
		{rcpt: `<"victim@quoted.test"@example.test>`, code: 550, enhanced: "5.1.1 ", down: []string{mail, `RCPT TO:<"victim@quoted.test"@example.test>`}},
		{rcpt: "<victim@at.test@EXAMPLE.test>", code: 550, enhanced: "5.1.1 ", down: []string{mail, `RCPT TO:<"victim@at.test"@example.test>`}},
		{rcpt: `<"victim@evil.test> NOTIFY=NEVER ORCPT=rfc822;x"@example.test>`, code: 550, enhanced: "5.1.1 ",
			down: []string{mail, `RCPT TO:<"victim@evil.test> NOTIFY=NEVER ORCPT=rfc822;x"@example.test>`}},
		// A trusted client's route is dropped, the mailbox passed on.
		{rcpt: "<@relay.test:alice@example.test>", code: 250, down: []string{mail, "RCPT TO:<alice@example.test>"}},
		{rcpt: "<someone@Elsewhere.TEST.>", code: 550, enhanced: "5.1.1 ", down: []string{mail, "RCPT TO:<someone@elsewhere.test>"}},
		{rcpt: "<vïctim@example.test>", code: 553, enhanced: "5.6.7 "},
		{rcpt: "<alice@exa_mple.test>", code: 501, enhanced: "5.1.3 "},
		{from: "<victim%pct.test@example.test>", rcpt: "<alice@example.test>", code: 250, down: []string{"MAIL FROM:<victim%pct.test@example.test>", "RCPT TO:<alice@example.test>"}},
	})
}

// spoolRecorder is a Spooler that always spools and keeps the envelopes.
type spoolRecorder struct {
	mu   sync.Mutex
	envs []spool.Envelope
}

func (s *spoolRecorder) Decide() spool.Decision { return spool.Decision{Mode: spool.ModeSpool} }
func (s *spoolRecorder) Put(_ context.Context, env spool.Envelope, _ int64, _ io.Reader) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.envs = append(s.envs, env)
	return "SPOOLED1", nil
}

// TestSpooledAddressesCanonical: during an outage the envelope that goes
// into the spool holds the parsed, re-quoted addresses, which read back
// strictly (the spool's deliverer parses them again).
func TestSpooledAddressesCanonical(t *testing.T) {
	sp := &spoolRecorder{}
	addr, _ := startServer(t, nil, func(o *Options, _ *Settings) { o.Spooler = sp })
	c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.0.22"})
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	c.Cmd(`MAIL FROM:<"a\"b c"@Remote.TEST.>`, 250)
	c.Cmd("RCPT TO:<alice@EXAMPLE.test.>", 250)
	c.Cmd(`RCPT TO:<"john smith"@example.test>`, 250)
	c.Cmd(`RCPT TO:<"victim@evil.test"@example.test>`, 554)
	c.Data("Subject: spooled\r\n\r\nx\r\n", 250)
	c.Cmd("QUIT", 221)

	sp.mu.Lock()
	defer sp.mu.Unlock()
	if len(sp.envs) != 1 {
		t.Fatalf("spooled %d envelopes", len(sp.envs))
	}
	env := sp.envs[0]
	if want := `"a\"b c"@remote.test`; env.From != want {
		t.Errorf("spooled sender %q, want %q", env.From, want)
	}
	if want := []string{"alice@example.test", `"john smith"@example.test`}; !slices.Equal(env.Recipients, want) {
		t.Errorf("spooled recipients %q, want %q", env.Recipients, want)
	}
	for _, a := range append([]string{env.From}, env.Recipients...) {
		if mb, err := address.Parse(a, address.Options{Null: true}); err != nil || mb.String() != a {
			t.Errorf("spooled %q does not read back: %v %v", a, mb, err)
		}
	}
}
