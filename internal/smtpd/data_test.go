package smtpd

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"mxguard/internal/mailsink"
	"mxguard/internal/msgbuf"
	"mxguard/internal/testutil"
)

// spillServer is a Server whose message buffers keep only 16 KiB in
// memory, in front of an in-process sink.
type spillServer struct {
	addr  string
	sink  *mailsink.Server
	store *msgbuf.Store
	dir   string
}

func startSpill(t *testing.T, dir string) *spillServer {
	t.Helper()
	sink, err := mailsink.Start(context.Background(), mailsink.Options{Mailboxes: []string{"alice@example.test"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	store, err := msgbuf.New(msgbuf.Options{Dir: dir, MemPerMessage: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := startServerTo(t, sink.Addr(), nil, func(o *Options, _ *Settings) { o.Buffers = store })
	return &spillServer{addr: addr, sink: sink, store: store, dir: dir}
}

func (s *spillServer) session(t *testing.T, ip string) *testutil.SMTPClient {
	c := testutil.Dial(t, s.addr, testutil.DialOptions{LocalIP: ip})
	c.Expect(220)
	c.Cmd("EHLO big.test", 250)
	return c
}

// released fails the test unless every buffer gave back its memory and
// its file: nothing of a finished message stays behind.
func (s *spillServer) released(t *testing.T) {
	t.Helper()
	if n := s.store.InMemory(); n != 0 {
		t.Errorf("%d bytes of message data still in memory", n)
	}
	if n := testutil.OpenFilesUnder(t, s.dir); n != 0 {
		t.Errorf("%d spill files still open", n)
	}
	if ents, _ := os.ReadDir(s.dir); len(ents) != 0 {
		t.Errorf("%d files left in the spill directory", len(ents))
	}
}

// delivered returns the message with this subject as the sink got it,
// without the Received line we prepend.
func (s *spillServer) delivered(t *testing.T, subject string) string {
	t.Helper()
	trace, msg, ok := s.sink.Relayed(subject)
	if !ok {
		t.Fatalf("message %q never reached the sink", subject)
	}
	if !strings.HasPrefix(trace, "Received: from ") {
		t.Errorf("message does not start with our Received line: %.80q", trace)
	}
	return msg
}

// transaction starts a transaction from a@remote.test to alice.
func transaction(c *testutil.SMTPClient) {
	c.Cmd("MAIL FROM:<a@remote.test>", 250)
	c.Cmd("RCPT TO:<alice@example.test>", 250)
}

// TestSpilledMessageRelayedIntact: a message much larger than the
// in-memory part, lines starting with dots included, reaches the
// downstream byte for byte; its file is gone once the client has its 250.
func TestSpilledMessageRelayedIntact(t *testing.T) {
	s := startSpill(t, t.TempDir())
	c := s.session(t, "127.0.0.20")
	msg := testutil.LargeMessageString("spilled", 600<<10)
	transaction(c)
	c.Data(msg, 250)
	if got := s.delivered(t, "spilled"); got != msg {
		t.Errorf("relayed message differs: %d bytes, want %d", len(got), len(msg))
	}
	s.released(t)
}

// TestSpilledTooBig: past max_message_size the client gets 552 5.3.4 and
// the session goes on; nothing stays in memory or on disk.
func TestSpilledTooBig(t *testing.T) {
	s := startSpill(t, t.TempDir())
	s.refused(t, s.session(t, "127.0.0.21"), testutil.LargeMessageString("huge", 3<<19), 552, "5.3.4")
}

// refused sends msg in a new transaction on c and expects code with the
// enhanced code enh; nothing may stay behind, and the session then takes
// a small message.
func (s *spillServer) refused(t *testing.T, c *testutil.SMTPClient, msg string, code int, enh string) {
	t.Helper()
	transaction(c)
	if text := c.Data(msg, code); !strings.HasPrefix(text, enh+" ") {
		t.Errorf("%d bytes: %d %s, want %s", len(msg), code, text, enh)
	}
	s.released(t)
	transaction(c)
	c.Data("Subject: small\r\n\r\nfine\r\n", 250)
}

// TestSpillDiskErrors: a spill file that cannot be created (a plain file
// where data_dir/tmp should be) or a disk that fills up mid-message
// (a 256 KiB tmpfs) answers 451 4.3.0, never 250 and never a 5xx; the
// session goes on and a small message, which needs no file, passes.
func TestSpillDiskErrors(t *testing.T) {
	t.Run("cannot create", func(t *testing.T) {
		dir := t.TempDir() + "/tmp"
		s := startSpill(t, dir)
		os.Remove(dir)
		if err := os.WriteFile(dir, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		s.refused(t, s.session(t, "127.0.0.22"), testutil.LargeMessageString("doomed", 100<<10), 451, "4.3.0")
	})
	t.Run("disk full", func(t *testing.T) {
		s := startSpill(t, testutil.SmallTmpfs(t, "256k"))
		c := s.session(t, "127.0.0.23")
		s.refused(t, c, testutil.LargeMessageString("too big for the disk", 800<<10), 451, "4.3.0")
		if _, _, ok := s.sink.Relayed("too big for the disk"); ok {
			t.Error("the sink got the message that did not fit")
		}
		transaction(c)
		msg := testutil.LargeMessageString("fits", 100<<10)
		c.Data(msg, 250)
		if got := s.delivered(t, "fits"); got != msg {
			t.Error("message after the full disk was freed differs")
		}
	})
}

// TestSpilledBDAT: CHUNKING (RFC 3030) fills the same buffer; a message in
// chunks is relayed intact, and one ended by RSET between chunks frees its
// buffer.
func TestSpilledBDAT(t *testing.T) {
	s := startSpill(t, t.TempDir())
	c := s.session(t, "127.0.0.24")
	msg := testutil.LargeMessageString("chunked", 120<<10)
	transaction(c)
	for rest, i := msg, 0; rest != ""; i++ {
		n := min(len(rest), 40<<10)
		last := ""
		if n == len(rest) {
			last = " LAST"
		}
		c.Send(fmt.Sprintf("BDAT %d%s\r\n%s", n, last, rest[:n]))
		c.Expect(250)
		rest = rest[n:]
	}
	// BDAT carries the message as is: no dot-stuffing on the way in,
	// and the relay stuffs it on the way out.
	if got := s.delivered(t, "chunked"); got != msg {
		t.Errorf("chunked message differs: %d bytes, want %d", len(got), len(msg))
	}
	transaction(c)
	part := testutil.LargeMessageString("abandoned", 60<<10)
	c.Send(fmt.Sprintf("BDAT %d\r\n%s", len(part), part))
	c.Expect(250)
	c.Cmd("RSET", 250)
	s.released(t)
}

// TestClientLostMidMessage: a client that disconnects in the middle of a
// large message leaves nothing behind.
func TestClientLostMidMessage(t *testing.T) {
	s := startSpill(t, t.TempDir())
	c := s.session(t, "127.0.0.25")
	transaction(c)
	c.Cmd("DATA", 354)
	c.Send(testutil.LargeMessageString("cut", 200<<10))
	c.Close()
	testutil.WaitUntil(t, "the cut message's buffer released", func() bool {
		return s.store.InMemory() == 0 && testutil.OpenFilesUnder(t, s.dir) == 0
	})
	s.released(t)
}
