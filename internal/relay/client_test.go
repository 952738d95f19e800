package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/emersion/go-smtp"

	"mxguard/internal/address"
)

// fakeServer is the server end of a pipe; tests script its replies.
type fakeServer struct {
	conn net.Conn
}

// newPair connects a client to a fakeServer that sends greeting and
// answers EHLO with ehlo.
func newPair(t *testing.T, greeting, ehlo string) (*fakeServer, *client) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	s := &fakeServer{conn: b}
	go func() {
		b.Write([]byte(greeting))
		r := bufio.NewReader(b)
		r.ReadString('\n') // EHLO
		b.Write([]byte(ehlo))
	}()
	c, err := newClient(context.Background(), a, clientConfig{hostname: "mx.test", cmdTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func TestClientPipelinesMailAndRcpt(t *testing.T) {
	srv, c := newPair(t, "220 sink ESMTP\r\n", "250-sink\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n")
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 4096)
		n, _ := srv.conn.Read(buf) // one read: both commands in one write
		got <- string(buf[:n])
		srv.conn.Write([]byte("250 2.1.0 ok\r\n550 5.1.1 <x@example.test>: User unknown\r\n"))
	}()
	mailErr, rcptErr := c.mailRcpt(address.MustParse("a@remote.test"), MailOptions{Size: 42, EightBit: true}, address.MustParse("x@example.test"))
	if w := <-got; w != "MAIL FROM:<a@remote.test> BODY=8BITMIME SIZE=42\r\nRCPT TO:<x@example.test>\r\n" {
		t.Errorf("one write should carry MAIL and RCPT, got %q", w)
	}
	if mailErr != nil {
		t.Fatalf("MAIL: %v", mailErr)
	}
	var se *smtp.SMTPError
	if !errors.As(rcptErr, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) || se.Message != "<x@example.test>: User unknown" {
		t.Errorf("RCPT: %#v", rcptErr)
	}
}

// TestClientWritesParsedAddresses: what goes downstream is the re-quoted
// parsed address and only the parameters mxguard understands; a quoted
// local part that holds "> NOTIFY=..." stays one quoted local part.
func TestClientWritesParsedAddresses(t *testing.T) {
	srv, c := newPair(t, "220 sink ESMTP\r\n", "250-sink\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n250 DSN\r\n")
	p, _, err := address.ParsePath(`<"victim@evil.test> NOTIFY=NEVER ORCPT=rfc822;x"@Example.TEST.>`, address.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		r := bufio.NewReader(srv.conn)
		var lines []string
		for i := range 3 {
			l, _ := r.ReadString('\n')
			lines = append(lines, l)
			switch i { // MAIL and RCPT come pipelined, the second RCPT alone
			case 1:
				srv.conn.Write([]byte("250 ok\r\n250 ok\r\n"))
			case 2:
				srv.conn.Write([]byte("250 ok\r\n"))
			}
		}
		got <- strings.Join(lines, "")
	}()
	if mailErr, rcptErr := c.mailRcpt(address.Mailbox{}, MailOptions{Size: 42, UTF8: true}, p.Mailbox); mailErr != nil || rcptErr != nil {
		t.Fatalf("mailRcpt: %v / %v", mailErr, rcptErr)
	}
	if err := c.rcpt(address.MustParse("Bob@example.test")); err != nil {
		t.Fatal(err)
	}
	want := "MAIL FROM:<> SMTPUTF8\r\n" +
		`RCPT TO:<"victim@evil.test> NOTIFY=NEVER ORCPT=rfc822;x"@example.test>` + "\r\n" +
		"RCPT TO:<Bob@example.test>\r\n"
	if w := <-got; w != want {
		t.Errorf("downstream got\n%q\nwant\n%q", w, want)
	}
}

func TestClientWithoutPipelining(t *testing.T) {
	srv, c := newPair(t, "220 old\r\n", "250 old\r\n")
	go func() {
		r := bufio.NewReader(srv.conn)
		r.ReadString('\n')
		srv.conn.Write([]byte("553 sender rejected\r\n"))
	}()
	mailErr, rcptErr := c.mailRcpt(address.MustParse("bad@remote.test"), MailOptions{Size: 42}, address.MustParse("x@example.test"))
	var se *smtp.SMTPError
	if !errors.As(mailErr, &se) || se.Code != 553 || se.EnhancedCode != smtp.NoEnhancedCode || rcptErr != nil {
		t.Errorf("MAIL refusal: %v / %v", mailErr, rcptErr)
	}
}

// countingConn counts the writes made on a connection and their largest.
type countingConn struct {
	net.Conn
	mu       sync.Mutex
	writes   int
	maxWrite int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes++
	c.maxWrite = max(c.maxWrite, len(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// countWrites makes c count its writes.
func countWrites(c *client) *countingConn {
	cc := &countingConn{Conn: c.conn}
	c.conn = cc
	c.w.Reset(cc)
	return cc
}

func (c *countingConn) counts() (int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes, c.maxWrite
}

// dataServer answers DATA with 354, collects the message up to the final
// dot (still dot-stuffed, as on the wire) and answers 250; got receives it,
// or what came before the connection closed.
func dataServer(srv *fakeServer) <-chan string {
	got := make(chan string, 1)
	go func() {
		var body bytes.Buffer
		defer func() { got <- body.String() }()
		r := bufio.NewReader(srv.conn)
		r.ReadString('\n') // DATA
		srv.conn.Write([]byte("354 go\r\n"))
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				body.WriteString(l)
				return
			}
			if l == ".\r\n" {
				break
			}
			body.WriteString(l)
		}
		srv.conn.Write([]byte("250 2.0.0 Ok: queued as X\r\n"))
	}()
	return got
}

// TestClientDataDotStuffingOneWrite: lines starting with a dot get one
// more (RFC 5321 §4.5.2), a missing final line end is added, and a small
// message goes out with its final dot in a single write.
func TestClientDataDotStuffingOneWrite(t *testing.T) {
	srv, c := newPair(t, "220 sink\r\n", "250 sink\r\n")
	cc := countWrites(c)
	got := dataServer(srv)
	before, _ := cc.counts()
	text, err := c.data(context.Background(), 5*time.Second, []byte("Received: x\r\n"), iotest.OneByteReader(strings.NewReader(".leading dot\r\nmiddle\r\n..two\r\nno final newline")))
	if err != nil || text != "2.0.0 Ok: queued as X" {
		t.Fatalf("data: %q %v", text, err)
	}
	want := "Received: x\r\n..leading dot\r\nmiddle\r\n...two\r\nno final newline\r\n"
	if body := <-got; body != want {
		t.Errorf("stuffed body %q, want %q", body, want)
	}
	if after, _ := cc.counts(); after-before != 2 {
		t.Errorf("DATA and the message took %d writes, want 2 (the command, then message and dot together)", after-before)
	}
}

// TestClientDataStreams: a message far larger than the write buffer goes
// out in buffer-sized writes, intact.
func TestClientDataStreams(t *testing.T) {
	srv, c := newPair(t, "220 sink\r\n", "250 sink\r\n")
	cc := countWrites(c)
	var msg bytes.Buffer
	for i := 0; msg.Len() < 2<<20; i++ {
		fmt.Fprintf(&msg, "line %d of a large message, with some text to make it longer\r\n", i)
		if i%50 == 0 {
			msg.WriteString(".dotted\r\n")
		}
	}
	got := dataServer(srv)
	if _, err := c.data(context.Background(), 5*time.Second, nil, bytes.NewReader(msg.Bytes())); err != nil {
		t.Fatal(err)
	}
	want := strings.ReplaceAll(msg.String(), "\n.", "\n..")
	if body := <-got; body != want {
		t.Errorf("large message altered: %d bytes, want %d", len(body), len(want))
	}
	if writes, biggest := cc.counts(); writes < 50 || biggest > 64<<10 {
		t.Errorf("2 MiB in %d writes of at most %d bytes: not streamed through the buffer", writes, biggest)
	}
}

// TestClientDataBodyError: when the message cannot be read the final dot
// is never sent, so the server drops the partial message.
func TestClientDataBodyError(t *testing.T) {
	srv, c := newPair(t, "220 sink\r\n", "250 sink\r\n")
	got := dataServer(srv)
	damaged := errors.New("checksum mismatch")
	body := io.MultiReader(strings.NewReader(strings.Repeat("x\r\n", 20000)), iotest.ErrReader(damaged))
	if _, err := c.data(context.Background(), 5*time.Second, nil, body); !errors.Is(err, ErrBody) || !errors.Is(err, damaged) {
		t.Fatalf("data: %v, want ErrBody wrapping the read error", err)
	}
	if b := <-got; strings.Contains(b, "\r\n.\r\n") || strings.HasPrefix(b, ".\r\n") {
		t.Error("the final dot was sent after a read error")
	}
}

// FuzzDotStuffing: whatever the message and however the reader cuts it,
// the server gets it back exactly by removing one leading dot per line
// (RFC 5321 §4.5.2), with a line end added if it had none; and no MTA
// finds an end of data in it, whichever line ends it reads: CRLF only
// (go-smtp), LF too (Postfix), or a bare CR too (SMTP smuggling, CVE-2023-
// 51764 and its kin: a downstream that trusts us would take what follows
// for commands of ours).
func FuzzDotStuffing(f *testing.F) {
	f.Add([]byte(".a\r\n..b\r\nc"), uint8(1))
	f.Add([]byte("\n.\n.\r\n"), uint8(2))
	f.Add([]byte("x\r.\rMAIL FROM:<a@b>\r.\r\n"), uint8(1))
	f.Add([]byte("x\n"), uint8(0))
	f.Fuzz(func(t *testing.T, msg []byte, cut uint8) {
		var out bytes.Buffer
		w := bufio.NewWriterSize(&out, 16)
		dw := newDotWriter(w)
		r := io.Reader(bytes.NewReader(msg))
		if cut%2 == 1 {
			r = iotest.OneByteReader(r)
		}
		if _, err := io.Copy(dw, r); err != nil {
			t.Fatal(err)
		}
		dw.end()
		w.Flush()
		wire := out.Bytes()
		if !bytes.HasSuffix(wire, []byte("\r\n.\r\n")) && !bytes.Equal(wire, []byte(".\r\n")) {
			t.Fatalf("wire %q does not end with CRLF . CRLF", wire)
		}
		body := wire[:len(wire)-3]
		// A dot after a bare CR is stuffed too: a reader of LF lines
		// gets it back with that one extra dot.
		want := bytes.ReplaceAll(msg, []byte("\r."), []byte("\r.."))
		if len(want) > 0 && !bytes.HasSuffix(want, []byte("\r\n")) {
			want = append(want, "\r\n"...)
		}
		var back []byte
		for _, l := range bytes.SplitAfter(body, []byte("\n")) {
			if len(l) > 0 && l[0] == '.' {
				l = l[1:]
			}
			back = append(back, l...)
		}
		if !bytes.Equal(back, want) {
			t.Errorf("unstuffed %q, want %q", back, want)
		}
		for i, c := range body {
			if c == '.' && (i == 0 || body[i-1] == '\n' || body[i-1] == '\r') && (i+1 >= len(body) || body[i+1] != '.') {
				t.Fatalf("a line starts with a single dot at %d on the wire: %q", i, body)
			}
		}
	})
}
