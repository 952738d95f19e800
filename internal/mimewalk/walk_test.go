package mimewalk

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// recorder is an inspector that keeps every part and its decoded body.
type recorder struct {
	parts  []*Part
	bodies []*bytes.Buffer
}

type bufBody struct{ b *bytes.Buffer }

func (b bufBody) Write(p []byte) error { b.b.Write(p); return nil }
func (b bufBody) Close() error         { return nil }

func (r *recorder) Part(p *Part) (Body, error) {
	r.parts = append(r.parts, p)
	b := &bytes.Buffer{}
	r.bodies = append(r.bodies, b)
	return bufBody{b}, nil
}

func walk(t *testing.T, msg string, l Limits) (*recorder, Stats, error) {
	t.Helper()
	rec := &recorder{}
	// One byte at a time: every piece boundary the splitter and the
	// decoders must get right.
	st, err := Walk(context.Background(), iotest.OneByteReader(strings.NewReader(msg)), l, rec)
	rec2 := &recorder{}
	st2, err2 := Walk(context.Background(), strings.NewReader(msg), l, rec2)
	if st != st2 || (err == nil) != (err2 == nil) || len(rec.parts) != len(rec2.parts) {
		t.Fatalf("one-byte reads differ: %+v %v / %+v %v", st, err, st2, err2)
	}
	for i := range rec.bodies {
		if !bytes.Equal(rec.bodies[i].Bytes(), rec2.bodies[i].Bytes()) {
			t.Fatalf("part %d: body %q with one-byte reads, %q without", i+1, rec.bodies[i], rec2.bodies[i])
		}
	}
	return rec, st, err
}

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

type wantPart struct {
	typ   string
	names []string
	body  string
	depth int
}

func TestWalk(t *testing.T) {
	for _, tc := range []struct {
		name  string
		msg   string
		parts []wantPart
	}{
		{"plain text", crlf("Subject: hi\n\nhello\nworld\n"),
			[]wantPart{{"text/plain", nil, "hello\r\nworld\r\n", 0}}},
		{"no header at all", "\r\nbody only",
			[]wantPart{{"text/plain", nil, "body only", 0}}},
		{"mixed with base64 attachment", crlf(`Content-Type: multipart/mixed; boundary="XX"

preamble
--XX
Content-Type: text/plain

hi
--XX
Content-Type: application/octet-stream; name="a.bin"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="report.pdf"

` + b64("the attachment") + `
--XX--
epilogue
`), []wantPart{{"text/plain", nil, "hi", 1}, {"application/octet-stream", []string{"report.pdf", "a.bin"}, "the attachment", 1}}},
		{"nested alternative and an attached message", crlf(`Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain

plain
--inner
Content-Type: text/html

<p>html</p>
--inner--
--outer
Content-Type: message/rfc822

Subject: forwarded
Content-Type: multipart/mixed; boundary=fwd

--fwd
Content-Disposition: attachment; filename=inside.exe

MZ
--fwd--
--outer--
`), []wantPart{{"text/plain", nil, "plain", 2}, {"text/html", nil, "<p>html</p>", 2}, {"text/plain", []string{"inside.exe"}, "MZ", 3}}},
		{"RFC 2231 extended and continued names", crlf(`Content-Type: multipart/mixed; boundary=b

--b
Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%20rates.exe

x
--b
Content-Type: application/octet-stream; name*0*=iso-8859-1'en'caf%E9; name*1=".sc"; name*2=r

y
--b--
`), []wantPart{{"text/plain", []string{"€ rates.exe"}, "x", 1}, {"application/octet-stream", []string{"caf\uFFFD.scr"}, "y", 1}}},
		{"RFC 2047 encoded names, UTF-16 too", crlf(`Content-Type: multipart/mixed; boundary=b

--b
Content-Type: application/x-msdownload; name="=?UTF-8?B?` + b64("setup.exe") + `?="

x
--b
Content-Disposition: attachment; filename="=?utf-16le?B?` + base64.StdEncoding.EncodeToString([]byte("r\x00u\x00n\x00.\x00j\x00s\x00")) + `?="
Content-Disposition: inline; filename="=?x-unknown?Q?doc.vbs?="

y
--b--
`), []wantPart{{"application/x-msdownload", []string{"setup.exe"}, "x", 1}, {"text/plain", []string{"run.js", "doc.vbs"}, "y", 1}}},
		// mime.ParseMediaType refuses these values entirely, and with
		// them the name a mail client still shows.
		{"duplicate and malformed parameters", crlf(`Content-Type: multipart/mixed; boundary=b; boundary=b

--b
Content-Disposition: attachment; filename="a.txt"; filename="b.exe"; junk; =x; size=3
Content-Type: text/plain; name="c.txt;d.bat"; name=unquoted.cmd

x
--b--
`), []wantPart{{"text/plain", []string{"a.txt", "b.exe", "c.txt;d.bat", "unquoted.cmd"}, "x", 1}}},
		{"malformed header line before the disposition", crlf(`Content-Type: multipart/mixed; boundary=b

--b
Content-Type: application/octet-stream
this line has no colon
Content-Disposition: attachment; filename=hidden.exe

x
--b--
`), []wantPart{{"application/octet-stream", []string{"hidden.exe"}, "x", 1}}},
		{"long preamble line, LF only, no close delimiter",
			"Content-Type: multipart/mixed; boundary=b\n\n" + strings.Repeat("p", 40000) + "\n--b\nContent-Disposition: attachment; filename=x.exe\n\nline1\nline2\n--b\n\nlast\n",
			[]wantPart{{"text/plain", []string{"x.exe"}, "line1\nline2", 1}, {"text/plain", nil, "last\n", 1}}},
		{"boundary-like lines are data", crlf(`Content-Type: multipart/mixed; boundary=b

--b

--bb
--b x
 --b
--b--
`), []wantPart{{"text/plain", nil, "--bb\r\n--b x\r\n --b", 1}}},
		{"transport padding after the delimiter", crlf("Content-Type: multipart/mixed; boundary=b\n\n--b  \t\n\nx\n--b-- \n"),
			[]wantPart{{"text/plain", nil, "x", 1}}},
		{"quoted-printable, soft breaks and junk", crlf("Content-Transfer-Encoding: quoted-printable\n\na=3Db =\nc= \n=ZZ=4\n"),
			[]wantPart{{"text/plain", nil, "a=b c=ZZ=4\r\n", 0}}},
		{"base64 with junk and padding in the middle", "Content-Transfer-Encoding: base64\r\n\r\n" +
			"aGVs!bG8=\r\n*IHdv\tcmxk\r\n",
			[]wantPart{{"text/plain", nil, "hello world", 0}}},
		{"multipart without boundary is a leaf", crlf("Content-Type: multipart/mixed\n\n--x\nbody\n"),
			[]wantPart{{"multipart/mixed", nil, "--x\r\nbody\r\n", 0}}},
		{"base64 encoded attached message", crlf("Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n" +
			b64("Content-Disposition: attachment; filename=evil.js\r\n\r\nalert(1)\r\n") + "\n"),
			[]wantPart{{"text/plain", []string{"evil.js"}, "alert(1)\r\n", 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec, st, err := walk(t, tc.msg, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if len(rec.parts) != len(tc.parts) || st.Leaves != len(tc.parts) {
				for _, p := range rec.parts {
					t.Logf("got %+v", p)
				}
				t.Fatalf("%d parts, want %d", len(rec.parts), len(tc.parts))
			}
			for i, want := range tc.parts {
				p := rec.parts[i]
				if p.Type != want.typ || !slices.Equal(p.Names, want.names) || p.Depth != want.depth || p.Index != i+1 {
					t.Errorf("part %d = type %q names %q depth %d, want %q %q %d", i+1, p.Type, p.Names, p.Depth, want.typ, want.names, want.depth)
				}
				if got := rec.bodies[i].String(); got != want.body {
					t.Errorf("part %d body %q, want %q", i+1, got, want.body)
				}
			}
		})
	}
}

// nest builds a message nesting n multiparts.
func nest(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString("Content-Type: multipart/mixed; boundary=b" + strings.Repeat("x", i) + "\r\n\r\n--b" + strings.Repeat("x", i) + "\r\n")
	}
	b.WriteString("\r\nleaf\r\n")
	return b.String()
}

func TestLimits(t *testing.T) {
	if _, _, err := walk(t, nest(20), Limits{}); err != nil {
		t.Errorf("20 levels: %v", err)
	}
	var le *LimitError
	if _, _, err := walk(t, nest(21), Limits{}); !errors.As(err, &le) || le.What != "depth" {
		t.Errorf("21 levels: %v, want a depth LimitError", err)
	}
	many := "Content-Type: multipart/mixed; boundary=b\r\n\r\n" + strings.Repeat("--b\r\n\r\nx\r\n", 20) + "--b--\r\n"
	if _, st, err := walk(t, many, Limits{MaxParts: 21}); err != nil || st.Parts != 21 {
		t.Errorf("21 entities within 21: %+v %v", st, err)
	}
	if _, _, err := walk(t, many, Limits{MaxParts: 20}); !errors.As(err, &le) || le.What != "parts" {
		t.Errorf("21 entities past 20: %v", err)
	}
	huge := "Subject: " + strings.Repeat("a", 100000) + "\r\n\r\nbody"
	if _, _, err := walk(t, huge, Limits{MaxHeader: 64 << 10}); !errors.As(err, &le) || le.What != "header" {
		t.Errorf("100 KB header past 64 KiB: %v", err)
	}
	// Past MaxDecoded the walk goes on for the names, without bodies.
	two := "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n" + strings.Repeat("a", 1000) +
		"\r\n--b\r\nContent-Disposition: attachment; filename=late.exe\r\n\r\nzzz\r\n--b--\r\n"
	rec, st, err := walk(t, two, Limits{MaxDecoded: 600})
	if err != nil || !st.Capped || st.Decoded != 600 || len(rec.parts) != 2 || rec.parts[1].Names[0] != "late.exe" || rec.bodies[1].Len() != 0 {
		t.Errorf("capped walk: %+v %v", st, err)
	}
}

// stopper finds "STOP" in bodies and ends the walk; it also says
// ErrEnough after the first piece of a part named "skip".
type stopper struct{ f *Finder }

var errStop = errors.New("stop found")

func (s *stopper) Part(p *Part) (Body, error) {
	if slices.Contains(p.Names, "forbidden.exe") {
		return nil, errStop
	}
	s.f.Reset()
	return s, nil
}
func (s *stopper) Write(b []byte) error {
	if s.f.Write(b) {
		return errStop
	}
	return nil
}
func (s *stopper) Close() error { return nil }

func TestFindings(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want error
	}{
		{"\r\nxxSTOPxx", errStop},
		{"\r\nxxSTxx", nil},
		{crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Disposition: attachment; filename=forbidden.exe\n\nx\n--b--\n"), errStop},
		{"Content-Transfer-Encoding: base64\r\n\r\n" + b64("..STOP.."), errStop},
	} {
		st, err := Walk(context.Background(), iotest.OneByteReader(strings.NewReader(tc.msg)), Limits{}, &stopper{NewFinder("STOP")})
		if !errors.Is(err, tc.want) {
			t.Errorf("%q: %v (%+v), want %v", tc.msg, err, st, tc.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Walk(ctx, strings.NewReader("\r\nx"), Limits{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if _, err := Walk(context.Background(), iotest.ErrReader(io.ErrClosedPipe), Limits{}); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("read error: %v", err)
	}
}

// TestFinder: the pattern is found across every split of the input, and
// not found when absent.
func TestFinder(t *testing.T) {
	const pat = "NEEDLE"
	in := "hayhayNEEDLEhay"
	for i := 0; i <= len(in); i++ {
		for j := i; j <= len(in); j++ {
			f := NewFinder(pat)
			f.Write([]byte(in[:i]))
			f.Write([]byte(in[i:j]))
			if !f.Write([]byte(in[j:])) {
				t.Errorf("split %d/%d: not found", i, j)
			}
		}
	}
	f := NewFinder(pat)
	for _, c := range "NEEDLNEEDL" {
		if f.Write([]byte(string(c))) {
			t.Error("found in NEEDLNEEDL")
		}
	}
}

// FuzzWalk: on any input the walk ends without a panic, within its
// limits, and never shows inspectors more bytes than it read (every
// decoding shrinks, every part is a distinct region of the input).
func FuzzWalk(f *testing.F) {
	f.Add(crlf("Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Disposition: attachment; filename*0*=utf-8''a%2E; filename*1=exe\nContent-Transfer-Encoding: base64\n\nTVo=\n--b\nContent-Type: message/rfc822\n\nContent-Type: multipart/alternative; boundary=c\n\n--c\nContent-Transfer-Encoding: quoted-printable\n\na=3Db=\n--c--\n--b--\n"))
	f.Add(nest(22))
	f.Add("Content-Type: text/plain; name=\"=?utf-16?B?//5hAA==?=\"\r\n\r\n")
	f.Fuzz(func(t *testing.T, msg string) {
		l := Limits{MaxDepth: 8, MaxParts: 50, MaxHeader: 4096, MaxDecoded: 1 << 20}
		st, err := Walk(context.Background(), strings.NewReader(msg), l, &recorder{})
		var le *LimitError
		if err != nil && !errors.As(err, &le) {
			t.Fatalf("error %v on in-memory input", err)
		}
		if st.Parts > l.MaxParts+1 || st.Depth > l.MaxDepth || st.Decoded > l.MaxDecoded || st.Decoded > int64(len(msg)) {
			t.Fatalf("stats %+v past the limits for %d bytes", st, len(msg))
		}
	})
}
