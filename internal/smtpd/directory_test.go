package smtpd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"mxguard/internal/address"
	"mxguard/internal/detect"
	"mxguard/internal/mailsink"
	"mxguard/internal/recipients"
	"mxguard/internal/reply"
	"mxguard/internal/spool"
	"mxguard/internal/testutil"
)

// fakeSpooler answers Decide with a settable decision and Put with a
// settable error, and keeps what was put.
type fakeSpooler struct {
	mu     sync.Mutex
	d      spool.Decision
	putErr error
	puts   [][]string // recipients of each message put
}

var _ Spooler = (*fakeSpooler)(nil)

func (f *fakeSpooler) set(d spool.Decision, putErr error) {
	f.mu.Lock()
	f.d, f.putErr = d, putErr
	f.mu.Unlock()
}

func (f *fakeSpooler) Decide() spool.Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.d
}

func (f *fakeSpooler) Put(_ context.Context, env spool.Envelope, _ int64, _ io.Reader) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.putErr != nil {
		return "", f.putErr
	}
	f.puts = append(f.puts, env.Recipients)
	return "0123456789abcdef01234567", nil
}

// closeCounter is a slog handler that counts the "disconnect" line each
// connection logs after its last observation: a test waits for it instead
// of sleeping.
type closeCounter struct{ ch chan struct{} }

func newCloseCounter() *closeCounter { return &closeCounter{ch: make(chan struct{}, 1000)} }

func (c *closeCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *closeCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "disconnect" {
		c.ch <- struct{}{}
	}
	return nil
}
func (c *closeCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *closeCounter) WithGroup(string) slog.Handler      { return c }

// wait blocks until n more connections were closed.
func (c *closeCounter) wait(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for range n {
		select {
		case <-c.ch:
		case <-timeout:
			t.Fatalf("connections did not close")
		}
	}
}

type dirRig struct {
	addr  string
	sp    *fakeSpooler
	det   *fakeDetector
	dir   *recipients.Directory
	close *closeCounter
}

// startDirRig runs a Server with a directory for example.test in front of
// a sink where alice exists.
func startDirRig(t *testing.T, set recipients.Settings) *dirRig {
	t.Helper()
	sink, err := mailsink.Start(t.Context(), mailsink.Options{Mailboxes: []string{"alice@example.test"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	set.Domains = []string{"example.test"}
	if set.TTL == 0 {
		set.TTL = time.Hour
	}
	r := &dirRig{sp: &fakeSpooler{}, det: newFakeDetector(), dir: recipients.New(recipients.Options{Settings: set}), close: newCloseCounter()}
	r.addr, _ = startServerTo(t, sink.Addr(), nil, func(o *Options, _ *Settings) {
		o.Spooler, o.Detector, o.Directory, o.Logger = r.sp, r.det, r.dir, slog.New(r.close)
	})
	return r
}

func (r *dirRig) session(t *testing.T, ip string) *testutil.SMTPClient {
	t.Helper()
	c := testutil.Dial(t, r.addr, testutil.DialOptions{LocalIP: ip})
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	return c
}

func wantEnhanced(t *testing.T, text, enh string) {
	t.Helper()
	if !strings.HasPrefix(text, enh+" ") {
		t.Errorf("reply %q, want enhanced code %s", text, enh)
	}
}

var (
	delay     = spool.Decision{Mode: spool.ModeRefuse, Reply: &reply.ServersDown}
	spoolFull = spool.Decision{Mode: spool.ModeRefuse, Reply: &reply.SpoolFull}
	spooling  = spool.Decision{Mode: spool.ModeSpool}
)

// TestDirectoryLearnsInSession: while the downstream is up its verdicts
// pass through and the directory remembers them.
func TestDirectoryLearnsInSession(t *testing.T) {
	r := startDirRig(t, recipients.Settings{})
	c := r.session(t, "127.0.0.20")
	c.Cmd("RCPT TO:<Alice@example.test>", 250)
	wantEnhanced(t, c.Cmd("RCPT TO:<nobody@example.test>", 550), "5.1.1")
	c.Data("Subject: hi\r\n\r\nhi\r\n", 250)
	c.Cmd("QUIT", 221)
	if a := r.dir.Lookup(address.MustParse("alice@example.test")); a != (recipients.Answer{Verdict: recipients.Known, Source: recipients.SourceCache}) {
		t.Errorf("alice: %+v", a)
	}
	if a := r.dir.Lookup(address.MustParse("nobody@example.test")); a != (recipients.Answer{Verdict: recipients.Unknown, Source: recipients.SourceCache}) {
		t.Errorf("nobody: %+v", a)
	}
	// Up, a cached unknown is asked again: the downstream's answer wins.
	c = r.session(t, "127.0.0.20")
	wantEnhanced(t, c.Cmd("RCPT TO:<nobody@example.test>", 550), "5.1.1")
	c.Cmd("QUIT", 221)
	r.close.wait(t, 2)
	if n := r.det.count(detect.KindUnknownRecipient, "127.0.0.20"); n != 2 {
		t.Errorf("directory_harvest observations = %d, want 2", n)
	}
}

// TestDirectoryDuringOutage: every server down; the directory answers
// in each outage state.
func TestDirectoryDuringOutage(t *testing.T) {
	r := startDirRig(t, recipients.Settings{})
	r.dir.Record(address.MustParse("alice@example.test"), recipients.Known)
	r.dir.Record(address.MustParse("nobody@example.test"), recipients.Unknown)

	// The spool delay (and a suspended spool): 451 4.4.1, except for a
	// recipient known not to exist.
	r.sp.set(delay, nil)
	c := r.session(t, "127.0.0.21")
	wantEnhanced(t, c.Cmd("RCPT TO:<nobody@example.test>", 550), "5.1.1")
	wantEnhanced(t, c.Cmd("RCPT TO:<alice@example.test>", 451), "4.4.1")
	c.Cmd("QUIT", 221)

	// Spool full: 452 4.3.1, the unknown one still 550.
	r.sp.set(spoolFull, nil)
	c = r.session(t, "127.0.0.21")
	wantEnhanced(t, c.Cmd("RCPT TO:<nobody@example.test>", 550), "5.1.1")
	wantEnhanced(t, c.Cmd("RCPT TO:<alice@example.test>", 452), "4.3.1")
	c.Cmd("QUIT", 221)

	// Spooling, during_outage: accept.
	r.sp.set(spooling, nil)
	c = r.session(t, "127.0.0.21")
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	wantEnhanced(t, c.Cmd("RCPT TO:<nobody@example.test>", 550), "5.1.1")
	c.Cmd("RCPT TO:<new@example.test>", 250)
	c.Data("Subject: spooled\r\n\r\nhi\r\n", 250)

	// known_only: the unseen one is deferred, the known one spooled.
	r.dir.Configure(recipients.Settings{Domains: []string{"example.test"}, TTL: time.Hour, DuringOutage: recipients.KnownOnly})
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	wantEnhanced(t, c.Cmd("RCPT TO:<other@example.test>", 451), "4.4.1")
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Data("Subject: spooled\r\n\r\nhi\r\n", 250)
	c.Cmd("QUIT", 221)

	if want := [][]string{{"alice@example.test", "new@example.test"}, {"alice@example.test"}}; !slices.EqualFunc(r.sp.puts, want, slices.Equal) {
		t.Errorf("spooled recipients = %v, want %v", r.sp.puts, want)
	}
	r.close.wait(t, 3)
	if n := r.det.count(detect.KindUnknownRecipient, "127.0.0.21"); n != 3 {
		t.Errorf("directory_harvest observations = %d, want 3 (one per 550)", n)
	}
}

// TestOwnFailureCountsForNoSenderRule: sessions that met our own
// temporary failure never count toward bad_sessions, and messages that
// did toward mailbomb; everything else still counts.
func TestOwnFailureCountsForNoSenderRule(t *testing.T) {
	r := startDirRig(t, recipients.Settings{DuringOutage: recipients.KnownOnly})
	// A legitimate sender retrying through an outage: the delay, a
	// known_only deferral, a full spool.
	for i, d := range []spool.Decision{delay, spooling, spoolFull, delay, delay} {
		r.sp.set(d, nil)
		c := r.session(t, "127.0.0.30")
		c.Send("RCPT TO:<alice@example.test>\r\n")
		if code, _, _ := c.ReadReply(); code/100 != 4 {
			t.Fatalf("retry %d: RCPT got %d, want our 4xx", i, code)
		}
		c.Cmd("QUIT", 221)
	}
	// Its message reaching DATA while the spool is full or failing (the
	// recorder counts every message; the engine's mailbomb would count
	// only large ones).
	msg := "Subject: m\r\n\r\n" + strings.Repeat(strings.Repeat("x", 70)+"\r\n", 100)
	r.dir.Record(address.MustParse("alice@example.test"), recipients.Known)
	for _, tc := range []struct {
		putErr error
		code   int
		enh    string
	}{{spool.ErrFull, 452, "4.3.1"}, {errors.New("disk on fire"), 451, "4.3.0"}} {
		r.sp.set(spooling, tc.putErr)
		c := r.session(t, "127.0.0.30")
		c.Cmd("RCPT TO:<alice@example.test>", 250)
		wantEnhanced(t, c.Data(msg, tc.code), tc.enh)
		c.Cmd("QUIT", 221)
	}
	// Controls: a session without mail from another source counts, a
	// spooled large message counts, and so does a client that drops its
	// connection mid-message (its failure, not ours).
	c := testutil.Dial(t, r.addr, testutil.DialOptions{LocalIP: "127.0.0.31"})
	c.Expect(220)
	c.Cmd("EHLO probe.test", 250)
	c.Cmd("QUIT", 221)
	r.sp.set(spooling, nil)
	c = r.session(t, "127.0.0.32")
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Data(msg, 250)
	c.Cmd("QUIT", 221)
	c = r.session(t, "127.0.0.33")
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Cmd("DATA", 354)
	c.Send("Subject: cut\r\n\r\nhalf a mess")
	c.Close()
	r.close.wait(t, 10)

	for _, tc := range []struct {
		kind detect.Kind
		ip   string
		want int
	}{
		{detect.KindBadSession, "127.0.0.30", 0},
		{detect.KindMessage, "127.0.0.30", 0},
		{detect.KindBadSession, "127.0.0.31", 1},
		{detect.KindMessage, "127.0.0.32", 1},
		{detect.KindBadSession, "127.0.0.32", 0},
		{detect.KindBadSession, "127.0.0.33", 1},
	} {
		if n := r.det.count(tc.kind, tc.ip); n != tc.want {
			t.Errorf("%v observations for %s = %d, want %d", tc.kind, tc.ip, n, tc.want)
		}
	}
}
