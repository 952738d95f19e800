package queuemon

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func FuzzParseOutput(f *testing.F) {
	for _, s := range []string{
		"", "0\n", "12", "-3", "1\n2\n", "Mail queue is empty\n",
		`{"queue_name": "hold", "queue_id": "9A08F98C5A5", "arrival_time": 1796117143, "message_size": 346, "forced_expire": false, "sender": "spammer@example.test", "recipients": [{"address": "alice@example.test"}]}` + "\n",
		`{"sender": "MAILER-DAEMON"}` + "\n" + `{"sender": null}` + "\n" + `{"sender": 7}` + "\n",
		`{"sender": "a\u0000b"}`, "{\"sender\": \"\xff\"}\n", "{\n}\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, out []byte) {
		s, err := ParseOutput(bytes.NewReader(out))
		if err != nil {
			return
		}
		if s.Messages < 0 || len(s.Senders) > TopSenders || s.Sampled > s.Messages {
			t.Fatalf("snapshot %+v", s)
		}
		sum := 0
		for _, sc := range s.Senders {
			checkSender(t, sc.Sender)
			sum += sc.Messages
		}
		if sum > s.Messages {
			t.Fatalf("senders count %d of %d messages", sum, s.Messages)
		}
	})
}

func FuzzSender(f *testing.F) {
	f.Add([]byte("C\x05    1S\x14spammer@example.test"))
	f.Add(append(rec('C', "1"), rec('S', strings.Repeat("a", 200))...))
	f.Add([]byte("Return-Path: <bob@example.test>\r\n\r\n"))
	f.Add([]byte("S\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, head []byte) {
		s, ok := Sender(head)
		if !ok && s != "" {
			t.Fatalf("no sender but %q", s)
		}
		if ok {
			checkSender(t, cleanSender(s))
		}
	})
}

// checkSender: what reaches an event record is bounded, printable UTF-8.
func checkSender(t *testing.T, s string) {
	t.Helper()
	if s == "" || len(s) > 256 || !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		t.Fatalf("sender %q", s)
	}
}
