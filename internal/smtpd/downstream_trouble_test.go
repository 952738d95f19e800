package smtpd

import (
	"strings"
	"testing"

	"mxguard/internal/detect"
	"mxguard/internal/testutil"
)

// TestDownstreamTroubleCountsForNoSenderRule: a temporary failure of the
// downstream's mail system or network (RFC 3463 X.3.x, X.4.x: "452 4.3.1
// insufficient system storage" at RCPT, "451 4.3.0 queue file write
// error" after the dot) is passed through, and to the sender it is ours
// as much as an outage is (INTERFACE.md §3): a legitimate sender retrying
// through it must count toward neither bad_sessions nor mailbomb. The
// control, a downstream 4xx about the sender (450 4.7.1), still counts.
func TestDownstreamTroubleCountsForNoSenderRule(t *testing.T) {
	msg := "Subject: m\r\n\r\n" + strings.Repeat(strings.Repeat("x", 70)+"\r\n", 100)
	for _, tc := range []struct {
		name   string
		script testutil.Script
		ip     string
		counts bool
	}{
		{"rcpt storage", testutil.Script{"RCPT": "452 4.3.1 Insufficient system storage"}, "127.0.0.40", false},
		{"final dot", testutil.Script{".": "451 4.3.0 Error: queue file write error"}, "127.0.0.41", false},
		{"control: greylisting", testutil.Script{"RCPT": "450 4.7.1 Greylisted, try later"}, "127.0.0.42", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			det := newFakeDetector()
			down := testutil.ScriptedSMTP(t, tc.script)
			addr, _, _ := startOpts(t, serverOpts{downstream: down.Addr(), detector: det})
			for range 3 {
				c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: tc.ip})
				c.Expect(220)
				c.Cmd("EHLO retry.test", 250)
				c.Cmd("MAIL FROM:<a@remote.test>", 250)
				if _, ok := tc.script["RCPT"]; ok {
					c.Send("RCPT TO:<alice@example.test>\r\n")
					if code, _, _ := c.ReadReply(); code/100 != 4 {
						t.Fatalf("RCPT got %d, want the downstream's 4xx", code)
					}
				} else {
					c.Cmd("RCPT TO:<alice@example.test>", 250)
					c.Data(msg, 451)
				}
				c.Cmd("QUIT", 221)
				c.ExpectClosed()
			}
			// Last, a session without mail from the same source, which
			// counts: once it is seen, the others were accounted for.
			c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: tc.ip})
			c.Expect(220)
			c.Cmd("EHLO retry.test", 250)
			c.Cmd("QUIT", 221)
			want := 1
			if tc.counts {
				want = 4
			}
			waitUntil(t, "the probe session counted", func() bool { return det.count(detect.KindBadSession, tc.ip) >= want })
			bad, msgs := det.count(detect.KindBadSession, tc.ip), det.count(detect.KindMessage, tc.ip)
			if bad != want || msgs != 0 {
				t.Errorf("%d bad sessions and %d messages counted, want %d and 0", bad, msgs, want)
			}
		})
	}
}
