package smtpd

import (
	"strings"
	"testing"

	"mxguard/internal/testutil"
)

// TestReceivedHeloIsPrintable: the HELO name is raw client text. go-smtp
// keeps everything up to the first space, bare CR, NUL and 8-bit octets
// included, and the Received line we prepend is read by the downstream: a
// bare CR there is a line end to some MTAs (a forged header after our
// trace line), a NUL or a line past 998 octets (RFC 5322 §2.1.1) gets the
// message refused. The name goes into the trace line with anything
// unprintable replaced and its length bounded, as Postfix's smtpd does.
func TestReceivedHeloIsPrintable(t *testing.T) {
	s := startSpill(t, t.TempDir())
	for i, helo := range []string{
		"evil.test\rX-Injected:\x00yes\xff",
		strings.Repeat("h", 1500),
	} {
		c := testutil.Dial(t, s.addr, testutil.DialOptions{LocalIP: "127.0.0.22"})
		c.Expect(220)
		c.Cmd("EHLO "+helo, 250)
		transaction(c)
		subject := "helo" + string(rune('0'+i))
		c.Data("Subject: "+subject+"\r\n\r\nbody\r\n", 250)
		trace, _, ok := s.sink.Relayed(subject)
		if !ok {
			t.Fatalf("%q: message never reached the sink", helo)
		}
		for _, l := range strings.SplitAfter(strings.TrimSuffix(trace, "\r\n"), "\r\n") {
			l = strings.TrimSuffix(l, "\r\n")
			if len(l) > 998 {
				t.Errorf("trace line of %d octets", len(l))
			}
			for j := 0; j < len(l); j++ {
				if c := l[j]; (c < 32 && c != '\t') || c > 126 {
					t.Errorf("octet 0x%02x in the Received line %.120q", c, l)
					break
				}
			}
		}
		c.Close()
	}
}
