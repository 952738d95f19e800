package builtin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"runtime"
	"testing"
)

// bigMessage is a 10 MB message with 50 base64 attachments of random
// bytes (about 150 KB each, 200 KB encoded), as a mail client sends them.
func bigMessage() []byte {
	var b bytes.Buffer
	b.WriteString("From: <a@example.org>\r\nTo: <b@example.test>\r\nSubject: many files\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"=_outer\"\r\n\r\n--=_outer\r\n" +
		"Content-Type: multipart/alternative; boundary=\"=_alt\"\r\n\r\n--=_alt\r\nContent-Type: text/plain\r\n\r\nHello.\r\n" +
		"--=_alt\r\nContent-Type: text/html\r\n\r\n<p>Hello.</p>\r\n--=_alt--\r\n")
	raw := make([]byte, 150_000)
	for i := range 50 {
		rand.Read(raw)
		fmt.Fprintf(&b, "--=_outer\r\nContent-Type: application/pdf; name=\"doc%02d.pdf\"\r\n"+
			"Content-Disposition: attachment; filename=\"doc%02d.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n", i, i)
		enc := base64.StdEncoding.EncodeToString(raw)
		for len(enc) > 76 {
			b.WriteString(enc[:76])
			b.WriteString("\r\n")
			enc = enc[76:]
		}
		b.WriteString(enc + "\r\n")
	}
	b.WriteString("--=_outer--\r\n")
	return b.Bytes()
}

// smallMessage is a typical 3 KB text message.
func smallMessage() []byte {
	return []byte("From: Alice <alice@example.org>\r\nTo: Bob <bob@example.test>\r\nSubject: lunch\r\n" +
		"Date: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.org>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n\r\n" + string(bytes.Repeat([]byte("Shall we meet at noon? See you there.\r\n"), 75)))
}

// BenchmarkBuiltin: the built-in checks on one message (docs/benchmarks.md).
func BenchmarkBuiltin(b *testing.B) {
	for _, m := range []struct {
		name string
		msg  []byte
	}{{"3KB_text", smallMessage()}, {"10MB_50_attachments", bigMessage()}} {
		b.Run(m.name, func(b *testing.B) {
			c := check()
			b.SetBytes(int64(len(m.msg)))
			b.ReportAllocs()
			for b.Loop() {
				if v := c.Scan(context.Background(), bytes.NewReader(m.msg)); v.Reply != nil {
					b.Fatal(v.Reply)
				}
			}
		})
	}
}

// TestBoundedMemory: walking the 10 MB message with 50 attachments
// allocates a small, fixed amount — the walk streams; it never holds a
// part, let alone the message. (Bytes allocated are counted, not time.)
func TestBoundedMemory(t *testing.T) {
	msg := bigMessage()
	c := check()
	c.Scan(context.Background(), bytes.NewReader(msg)) // warm up pools
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	v := c.Scan(context.Background(), bytes.NewReader(msg))
	runtime.ReadMemStats(&after)
	if v.Reply != nil {
		t.Fatal(v.Reply)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 2<<20 {
		t.Errorf("walking %d bytes allocated %d bytes; want under 2 MiB", len(msg), alloc)
	} else {
		t.Logf("walking %d bytes allocated %d bytes", len(msg), alloc)
	}
}
