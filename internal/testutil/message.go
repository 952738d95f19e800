package testutil

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
)

// LargeMessage returns a reader of a message of about n bytes, generated
// as it is read (a 24 MiB one costs no memory): a Subject header naming
// it, then CRLF lines of which every seventh starts with a dot, so a
// large-message test also checks transparency (RFC 5321 §4.5.2).
func LargeMessage(subject string, n int) io.Reader {
	return &messageReader{subject: subject, left: n}
}

// LargeMessageString is LargeMessage read whole.
func LargeMessageString(subject string, n int) string {
	var b strings.Builder
	io.Copy(&b, LargeMessage(subject, n))
	return b.String()
}

type messageReader struct {
	subject string
	left    int // bytes still to start new lines for
	line    int
	pending []byte
}

func (r *messageReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		if len(r.pending) == 0 {
			if r.left <= 0 {
				break
			}
			r.pending = r.next()
			r.left -= len(r.pending)
		}
		k := copy(p[n:], r.pending)
		r.pending = r.pending[k:]
		n += k
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

func (r *messageReader) next() []byte {
	defer func() { r.line++ }()
	if r.line == 0 {
		return fmt.Appendf(nil, "Subject: %s\r\n\r\n", r.subject)
	}
	dot := ""
	if r.line%7 == 0 {
		dot = "."
	}
	return fmt.Appendf(nil, "%sline %d of %s, long enough to make the message grow\r\n", dot, r.line, r.subject)
}

// Message is a small, well-formed message from alice@example.org to
// bob@example.test (display names, Date, Message-ID), CRLF lines.
func Message(subject, body string) []byte {
	return []byte("From: Alice <alice@example.org>\r\nTo: Bob <bob@example.test>\r\nSubject: " + subject +
		"\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\n\r\n" + body + "\r\n")
}

// AddSeedFiles adds the files (captured protocol samples, say) to f's
// seed corpus.
func AddSeedFiles(f *testing.F, files ...string) {
	f.Helper()
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}
