package smtpd

import (
	"testing"
	"time"

	"mxguard/internal/detect"
	"mxguard/internal/recipients"
	"mxguard/internal/testutil"
)

// TestSenderRefusalIsNoRecipientVerdict: the downstream's MAIL reply
// comes back with the first RCPT (they are pipelined), but it is a verdict
// on the sender. Read as the recipient's, a forged sender refused with
// "550 Sender unknown" (an older server, no enhanced code) marked a real
// recipient unknown in the directory, which then refuses it with 550
// 5.1.1 through the next outage, and counted toward directory_harvest.
// It passes through to the client and is remembered for nobody; the
// session goes on and a later transaction reaches the downstream.
func TestSenderRefusalIsNoRecipientVerdict(t *testing.T) {
	down := testutil.ScriptedSMTP(t, testutil.Script{"MAIL": "550 Sender unknown"})
	det := newFakeDetector()
	dir := recipients.New(recipients.Options{Settings: recipients.Settings{Domains: []string{"example.test"}, TTL: time.Hour}})
	addr, _ := startServerTo(t, down.Addr(), nil, func(o *Options, _ *Settings) { o.Directory, o.Detector = dir, det })
	c := testutil.Dial(t, addr, testutil.DialOptions{LocalIP: "127.0.0.43"})
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<forged@example.test>", 250)
	c.Cmd("RCPT TO:<ceo@example.test>", 550)
	if known, unknown := dir.Len(); known != 0 || unknown != 0 {
		t.Errorf("directory learnt %d known and %d unknown recipients from a refused sender", known, unknown)
	}
	if n := det.count(detect.KindUnknownRecipient, "127.0.0.43"); n != 0 {
		t.Errorf("%d unknown recipients observed for a refused sender", n)
	}
	c.Cmd("RSET", 250)
	c.Cmd("MAIL FROM:<other@remote.test>", 250)
	c.Cmd("RCPT TO:<ceo@example.test>", 550)
	down.WaitLine(t, "MAIL FROM:<other@remote.test>", 10*time.Second)
}
