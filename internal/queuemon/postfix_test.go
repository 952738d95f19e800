package queuemon

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"mxguard/internal/testutil"
)

// heldPostfix starts a private Postfix that puts every message it accepts
// on hold (an access map answering HOLD, as an operator would to stop a
// spamming account's mail) and sends it n messages from each sender.
func heldPostfix(t *testing.T, perSender map[string]int) *testutil.Postfix {
	t.Helper()
	p := testutil.StartPostfix(t, testutil.PostfixOptions{Main: map[string]string{
		"smtpd_recipient_restrictions": "check_client_access static:HOLD, permit_mynetworks, reject_unauth_destination",
	}})
	total := 0
	for sender, n := range perSender {
		for i := range n {
			c := testutil.Dial(t, p.Addr(), testutil.DialOptions{})
			c.Expect(220)
			c.Cmd("EHLO client.example.net", 250)
			c.Cmd("MAIL FROM:<"+sender+">", 250)
			c.Cmd("RCPT TO:<alice@example.test>", 250)
			c.Data(fmt.Sprintf("Subject: held %d\r\n\r\nbody\r\n", i), 250)
			c.Cmd("QUIT", 221)
			c.Close()
			total++
		}
	}
	// cleanup(8) files each accepted message into hold/ by itself.
	waitHeld(t, p, total)
	return p
}

func waitHeld(t *testing.T, p *testutil.Postfix, n int) {
	t.Helper()
	hold := filepath.Join(p.Dir(), "spool", "hold")
	deadline := time.Now().Add(20 * time.Second)
	for {
		ents, _ := os.ReadDir(hold)
		if len(ents) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages in hold/, want %d\n%s", len(ents), n, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The three kinds of queue, on a real Postfix queue with held mail: the
// postqueue -j command, the hold/ directory of queue files, and the whole
// queue directory; each counts the messages and names the senders.
func TestPostfixQueue(t *testing.T) {
	p := heldPostfix(t, map[string]int{"spammer@example.test": 5, "alice@example.test": 2, "": 1})
	want := []SenderCount{{"spammer@example.test", 5}, {"alice@example.test", 2}, {"<>", 1}}
	etc := filepath.Join(p.Dir(), "etc")
	for _, tc := range []struct {
		name string
		src  Source
	}{
		{"postqueue -j", mustParse(t, "command:/usr/sbin/postqueue -c "+etc+" -j")},
		{"dir hold", mustParse(t, "dir:"+filepath.Join(p.Dir(), "spool", "hold"))},
		{"dir spool", mustParse(t, "dir:"+filepath.Join(p.Dir(), "spool"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tc.src.Snapshot(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			// The whole spool holds Postfix's own files too (pid/master.pid,
			// the quick-start marker); hold/ and postqueue only the mail.
			if tc.name != "dir spool" && s.Messages != 8 {
				t.Errorf("%d messages, want 8", s.Messages)
			}
			if tc.name == "dir spool" && s.Messages < 8 {
				t.Errorf("%d files, want at least the 8 messages", s.Messages)
			}
			if !reflect.DeepEqual(s.Senders, want) {
				t.Errorf("senders %v, want %v", s.Senders, want)
			}
		})
	}

	// The monitor starts an event naming the spammer, and ends it once the
	// operator deleted the mail and a window passed.
	clock := testutil.NewFakeClock()
	ev := &fakeEvents{}
	m, err := New(Options{Clock: clock, Events: ev, Rules: []Rule{{Name: "queue", Queue: "command:/usr/sbin/postqueue -c " + etc + " -j", Threshold: 6, Window: 10 * time.Minute}}})
	if err != nil {
		t.Fatal(err)
	}
	m.Poll(context.Background())
	if len(ev.started) != 1 || ev.started[0].detail["count"] != 8 || !reflect.DeepEqual(ev.started[0].detail["top_senders"], want) {
		t.Fatalf("events %+v", ev.started)
	}
	if out, err := exec.Command("/usr/sbin/postsuper", "-c", etc, "-d", "ALL", "hold").CombinedOutput(); err != nil {
		t.Fatalf("postsuper: %v %s", err, out)
	}
	waitHeld(t, p, 0)
	m.Poll(context.Background())
	clock.Advance(10 * time.Minute)
	m.Poll(context.Background())
	if len(ev.ended) != 1 || ev.ended[0] != ev.started[0].id {
		t.Errorf("ended %v, want event %d", ev.ended, ev.started[0].id)
	}
}

func mustParse(t *testing.T, q string) Source {
	t.Helper()
	s, err := Parse(q, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
