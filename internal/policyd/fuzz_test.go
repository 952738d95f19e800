package policyd

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"mxguard/internal/metrics"
)

// seeds are the captured requests of Postfix 3.7.11, one session's worth
// per seed, plus hostile variants.
func seeds(f *testing.F) []string {
	files, _ := filepath.Glob("testdata/postfix-policy-*.txt")
	var out []string
	for _, file := range files {
		var all strings.Builder
		for _, r := range capturedRequests(f, file) {
			out = append(out, r)
			all.WriteString(r)
		}
		out = append(out, all.String())
	}
	if len(out) == 0 {
		f.Fatal("no captured requests in testdata")
	}
	return append(out,
		pf{client: "203.0.113.7", rcpt: "nobody@example.test"}.text()+pf{client: "203.0.113.7", state: "END-OF-MESSAGE", size: 1 << 40, count: 1 << 40, sasl: "X"}.text(),
		pf{client: "2001:db8::1", state: "VRFY", rcpt: "\"a b\"@example.test"}.text(),
		"request=smtpd_access_policy\nclient_address=::ffff:1.2.3.4\nrecipient=@@@\nsize=-1\nrecipient_count=99999999999999999999\n\n",
		"request=smtpd_access_policy\r\nclient_address=1.2.3.4\r\n\r\n",
		"request=smtpd_access_policy\nclient_address=1.2.3.4\nrecipient=a@b\x00c\n\n",
		"request=smtpd_access_policy\nsender="+strings.Repeat("s", MaxLine+10)+"\n\n",
		strings.Repeat("a=b\n", MaxAttributes+2)+"\n",
		"\n\n\n", "=\n\n", "request\n\n", "\xff\xfe\n\n",
	)
}

// FuzzReadRequest: the parser never panics, and what it accepts keeps its
// limits: bounded attributes, values without control characters.
func FuzzReadRequest(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := NewReader(bytes.NewReader(in))
		var r Request
		for range 1000 {
			err := ReadRequest(br, &r)
			if err != nil {
				return
			}
			if r.Attributes == 0 || r.Attributes > MaxAttributes {
				t.Fatalf("%d attributes accepted", r.Attributes)
			}
			for _, v := range [][]byte{r.Kind, r.StateName, r.ClientAddress, r.ClientPort, r.ServerAddress, r.ServerPort,
				r.Sender, r.Recipient, r.Instance, r.SASLUsername} {
				if len(v) > MaxLine {
					t.Fatalf("value of %d bytes", len(v))
				}
				for _, c := range v {
					if c < 0x20 && c != '\t' || c == 0x7f {
						t.Fatalf("control character in %q", v)
					}
				}
			}
			if r.Size < -1 || r.RecipientCount < -1 {
				t.Fatalf("size %d, recipient_count %d", r.Size, r.RecipientCount)
			}
		}
	})
}

// FuzzServe feeds whole connections to the server: it never panics, it
// answers only "action=...\n\n" with actions it knows, and it observes
// only valid client addresses.
func FuzzServe(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add([]byte(s))
	}
	dir := directory(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		rec := &recorder{}
		s, err := New(Options{Engine: rec, Directory: dir, Metrics: metrics.New(), RequestTimeout: time.Second, IdleTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		conn := &bufConn{in: bytes.NewReader(in)}
		s.conns.Add(1)
		s.serveConn(context.Background(), conn)
		answers := conn.out.Bytes()
		br := bufio.NewReader(bytes.NewReader(answers))
		for {
			line, err := br.ReadString('\n')
			if err == io.EOF && line == "" {
				break
			}
			empty, _ := br.ReadString('\n')
			action, ok := strings.CutPrefix(line, "action=")
			if !ok || empty != "\n" {
				t.Fatalf("answer %q %q", line, empty)
			}
			switch c := code(strings.TrimSuffix(action, "\n")); c {
			case "DUNNO", "550", "421", "451", "554":
			default:
				t.Fatalf("action %q", action)
			}
		}
		for _, o := range rec.take() {
			if !o.Addr.IsValid() || o.Addr.Zone() != "" || o.Addr.Is4In6() {
				t.Fatalf("observed %+v", o)
			}
		}
	})
}

// bufConn is a connection reading in and writing to out.
type bufConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func (c *bufConn) Read(b []byte) (int, error)       { return c.in.Read(b) }
func (c *bufConn) Write(b []byte) (int, error)      { return c.out.Write(b) }
func (c *bufConn) Close() error                     { return nil }
func (c *bufConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 10040} }
func (c *bufConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000} }
func (c *bufConn) SetDeadline(time.Time) error      { return nil }
func (c *bufConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bufConn) SetWriteDeadline(time.Time) error { return nil }
