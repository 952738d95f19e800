package pipeline

import (
	"bytes"
	"io"
	"testing"
)

// TestMessageHeader: the header section ends at the first empty line
// (RFC 5322 §2.1), CRLF or bare LF; a header longer than max comes back
// cut at a line end and marked incomplete.
func TestMessageHeader(t *testing.T) {
	for _, tc := range []struct {
		name, msg string
		max       int
		hdr       string
		complete  bool
	}{
		{"crlf", "Subject: a\r\nFrom: b\r\n\r\nbody\r\n", 100, "Subject: a\r\nFrom: b\r\n", true},
		{"lf", "Subject: a\nFrom: b\n\nbody\n", 100, "Subject: a\nFrom: b\n", true},
		{"empty header", "\r\nbody\r\n", 100, "", true},
		{"no body", "Subject: a\r\nFrom: b\r\n", 100, "Subject: a\r\nFrom: b\r\n", true},
		{"empty line just inside max", "Subject: a\r\n\r\nbody", 14, "Subject: a\r\n", true},
		{"cut in a field", "Subject: a\r\nFrom: bbbbbbbb\r\n\r\nbody", 20, "Subject: a\r\n", false},
		{"cut between CR and LF of the empty line", "Subject: a\r\n\r\nbody", 13, "Subject: a\r\n", false},
		{"empty message", "", 100, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := &Message{Content: bytes.NewReader([]byte(tc.msg))}
			hdr, complete, err := m.Header(tc.max)
			if err != nil || string(hdr) != tc.hdr || complete != tc.complete {
				t.Errorf("Header(%d) = %q, %v, %v; want %q, %v", tc.max, hdr, complete, err, tc.hdr, tc.complete)
			}
		})
	}
}

// TestMessageReader: every Reader starts at the first byte.
func TestMessageReader(t *testing.T) {
	const msg = "Subject: x\r\n\r\nbody\r\n"
	m := &Message{Content: bytes.NewReader([]byte(msg))}
	for i := 0; i < 2; i++ {
		b, err := io.ReadAll(m.Reader())
		if err != nil || string(b) != msg {
			t.Errorf("read %d: %q, %v", i, b, err)
		}
	}
	if m.Size() != int64(len(msg)) {
		t.Errorf("Size = %d", m.Size())
	}
}

// FuzzMessageHeader: the header section of any message is a prefix of it,
// at most max bytes, without an empty line of its own; complete means an
// empty line follows it, or it is the whole message.
func FuzzMessageHeader(f *testing.F) {
	f.Add([]byte("Subject: a\r\n\r\nbody"), 100)
	f.Add([]byte("a\nb\r\n\nc"), 3)
	f.Add([]byte("\r\r\n\r\n"), 4)
	f.Fuzz(func(t *testing.T, msg []byte, max int) {
		if max < 0 || max > 1<<20 {
			return
		}
		hdr, complete, err := (&Message{Content: bytes.NewReader(msg)}).Header(max)
		if err != nil {
			t.Fatal(err)
		}
		if len(hdr) > max || !bytes.HasPrefix(msg, hdr) {
			t.Fatalf("header %q is not a prefix of %q within %d bytes", hdr, msg, max)
		}
		for _, l := range bytes.SplitAfter(hdr, []byte("\n")) {
			if string(l) == "\n" || string(l) == "\r\n" {
				t.Fatalf("header %q holds an empty line", hdr)
			}
		}
		rest := msg[len(hdr):]
		if complete && len(rest) > 0 && !bytes.HasPrefix(rest, []byte("\n")) && !bytes.HasPrefix(rest, []byte("\r\n")) {
			t.Fatalf("complete header %q not followed by an empty line: %q", hdr, rest)
		}
	})
}
