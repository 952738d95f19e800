package relay

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mxguard/internal/address"
)

// fakeServer is the server end of a pipe; tests script its replies.
type fakeServer struct {
	conn net.Conn
}

func newPair(t *testing.T, greeting, ehlo string) (*fakeServer, net.Conn) {
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
	return s, a
}

func TestClientPipelinesMailAndRcpt(t *testing.T) {
	srv, conn := newPair(t, "220 sink ESMTP\r\n", "250-sink\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n")
	c, err := newClient(conn, "mx.test", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
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
	srv, conn := newPair(t, "220 sink ESMTP\r\n", "250-sink\r\n250-PIPELINING\r\n250-SMTPUTF8\r\n250 DSN\r\n")
	c, err := newClient(conn, "mx.test", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
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
	srv, conn := newPair(t, "220 old\r\n", "250 old\r\n")
	c, err := newClient(conn, "mx.test", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
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

func TestClientDataDotStuffingOneWrite(t *testing.T) {
	srv, conn := newPair(t, "220 sink\r\n", "250 sink\r\n")
	c, err := newClient(conn, "mx.test", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	go func() {
		r := bufio.NewReader(srv.conn)
		r.ReadString('\n') // DATA
		srv.conn.Write([]byte("354 go\r\n"))
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if l == ".\r\n" {
				break
			}
			body.WriteString(l)
		}
		srv.conn.Write([]byte("250 2.0.0 Ok: queued as X\r\n"))
	}()
	text, err := c.data(5*time.Second, []byte("Received: x\r\n"), []byte(".leading dot\r\nmiddle\r\n..two\r\nno final newline"))
	if err != nil || text != "2.0.0 Ok: queued as X" {
		t.Fatalf("data: %q %v", text, err)
	}
	want := "Received: x\r\n..leading dot\r\nmiddle\r\n...two\r\nno final newline\r\n"
	if body.String() != want {
		t.Errorf("stuffed body %q, want %q", body.String(), want)
	}
}

func TestClientHeloFallback(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		b.Write([]byte("220 ancient\r\n"))
		r := bufio.NewReader(b)
		r.ReadString('\n')
		b.Write([]byte("502 5.5.2 what is EHLO\r\n"))
		if l, _ := r.ReadString('\n'); strings.HasPrefix(l, "HELO ") {
			b.Write([]byte("250 ancient\r\n"))
		}
	}()
	if _, err := newClient(a, "mx.test", 5*time.Second); err != nil {
		t.Fatalf("HELO fallback: %v", err)
	}
}

// FuzzReply: downstream replies are network input; the parser must never
// panic, and a reply it accepts has a valid code.
func FuzzReply(f *testing.F) {
	f.Add("250-first\r\n250 last\r\n")
	f.Add("550 5.1.1 <a@b>: User unknown\r\n")
	f.Add("421\r\n")
	f.Add("250-a\r\n550 b\r\n")
	f.Add("2\r\n")
	f.Fuzz(func(t *testing.T, in string) {
		c := &client{r: bufio.NewReader(strings.NewReader(in))}
		code, _, err := c.reply(250)
		if err == nil && code != 250 {
			t.Fatalf("accepted code %d", code)
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) && (se.Code < 0 || se.Code > 999) {
			t.Fatalf("bad code %d", se.Code)
		}
	})
}
