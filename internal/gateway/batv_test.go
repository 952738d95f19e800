package gateway_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// BATV end to end: an authenticated account's mail leaves with a signed
// sender; the bounce of it comes back to the tag and reaches the account
// with the tag removed (and counts for its bounce_spammer rule); bounces
// to untagged or forged addresses are refused as backscatter.
func TestBATV(t *testing.T) {
	key := filepath.Join(t.TempDir(), "batv.key")
	if err := os.WriteFile(key, []byte("a-batv-secret-of-enough-length\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := submissionEnv(t, fmt.Sprintf(`batv: {key_file: %s}
rules:
  - {name: backscatter, type: backscatter, window: 10m, threshold: 3, actions: [block], block_for: 1h}
  - {name: bounces, type: bounce_spammer, window: 1h, threshold: 1}
`, key))
	if _, code := swaks(t, e.gw.SubmissionAddr(), "127.0.0.160", append(auth("PLAIN", "alice@example.test", "correct horse"),
		"--from", "alice@example.test", "--to", "partner@elsewhere.example")...); code != 0 {
		t.Fatal("submission refused")
	}
	msgs := e.sink.Messages()
	if len(msgs) != 1 || !strings.HasPrefix(msgs[0].From, "prvs=0") || !strings.HasSuffix(msgs[0].From, "=alice@example.test") || len(msgs[0].From) != len("prvs=0123abcdef=alice@example.test") {
		t.Fatalf("downstream got sender %q, want prvs=KDDDSSSSSS=alice@example.test", msgs[0].From)
	}
	tagged := msgs[0].From

	// The remote server bounces it: accepted, delivered to alice untagged.
	bounce := func(ip, rcpt string, code int) {
		t.Helper()
		c := e.dial(ip)
		c.Expect(220)
		c.Cmd("EHLO mx.elsewhere.example", 250)
		c.Cmd("MAIL FROM:<>", 250)
		c.Cmd("RCPT TO:<"+rcpt+">", code)
		if code == 250 {
			c.Data("From: MAILER-DAEMON@elsewhere.example\r\nSubject: Undelivered Mail Returned to Sender\r\n\r\nsorry\r\n", 250)
		}
		c.Close()
	}
	bounce("127.0.0.161", tagged, 250)
	msgs = e.sink.Messages()
	if len(msgs) != 2 || msgs[1].From != "" || strings.Join(msgs[1].To, ",") != "alice@example.test" {
		t.Fatalf("bounce downstream: from %q to %v, want <> to alice@example.test", msgs[1].From, msgs[1].To)
	}
	if evs := e.events("type=bounce_spammer"); evs.Total != 1 || evs.Events[0].Source != "alice@example.test" {
		t.Errorf("bounce_spammer events %+v, want one for alice's account", evs)
	}
	// Mail with a sender to the tagged address (a reply to the envelope
	// sender) is not a bounce: accepted, untagged downstream.
	c := e.dial("127.0.0.162")
	c.Expect(220)
	c.Cmd("EHLO mx.elsewhere.example", 250)
	c.Cmd("MAIL FROM:<partner@elsewhere.example>", 250)
	c.Cmd("RCPT TO:<"+tagged+">", 250)
	c.Data("Subject: re\r\n\r\nthanks\r\n", 250)
	c.Cmd("QUIT", 221)
	if msgs := e.sink.Messages(); len(msgs) != 3 || msgs[2].To[0] != "alice@example.test" {
		t.Errorf("reply to the tagged sender went to %v", msgs[len(msgs)-1].To)
	}
	// Postmaster takes every bounce (RFC 5321 §4.5.1).
	bounce("127.0.0.163", "postmaster@example.test", 250)

	// Backscatter: untagged and forged tags are refused; the third from
	// one source fires the rule.
	const spamvictim = "127.0.0.164"
	bounce(spamvictim, "alice@example.test", 550)
	bounce(spamvictim, "prvs=0123abcdef=alice@example.test", 550)
	bounce(spamvictim, "bob@example.test", 550)
	evs := e.events("type=backscatter")
	if evs.Total != 1 || evs.Events[0].Source != spamvictim {
		t.Fatalf("backscatter events %+v", evs)
	}
	whats, texts := e.evidence("type=backscatter")
	want := []string{"alice@example.test>: 550 5.7.1 ", "prvs=0123abcdef=alice@example.test>: 550 5.7.1 ", "bob@example.test>: 550 5.7.1 "}
	for i, text := range texts {
		if whats[i] != "backscatter" || i >= len(want) || !strings.HasPrefix(text, "bounce (MAIL FROM:<>) RCPT TO:<"+want[i]) {
			t.Errorf("backscatter evidence[%d] = %s %q", i, whats[i], text)
		}
	}
	if len(texts) != 3 {
		t.Errorf("backscatter evidence: %q, want the 3 bounces", texts)
	}
	c = e.dial(spamvictim)
	c.Expect(421)
}
