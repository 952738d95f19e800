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

// TestReceivedNamesTheLastHelo: a client may say EHLO again (RFC 5321
// §4.1.4, a reset); the trace line names the greeting of the session the
// message came in, not the first one of the connection.
func TestReceivedNamesTheLastHelo(t *testing.T) {
	s := startSpill(t, t.TempDir())
	c := s.session(t, "127.0.0.23") // EHLO big.test
	c.Cmd("EHLO second.test", 250)
	transaction(c)
	c.Data("Subject: again\r\n\r\nbody\r\n", 250)
	trace, _, ok := s.sink.Relayed("again")
	if !ok {
		t.Fatal("message never reached the sink")
	}
	if !strings.HasPrefix(trace, "Received: from second.test ") {
		t.Errorf("trace %.80q, want it from second.test", trace)
	}
}
