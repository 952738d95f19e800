package alert

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"mxguard/internal/events"
)

// FuzzCompose feeds hostile event fields (an account name from AUTH, SMTP
// lines in the evidence) to the mail composer: the Subject stays one line
// and no body line carries a control character, whatever they hold.
func FuzzCompose(f *testing.F) {
	f.Add("203.0.113.7", "harvest", "RCPT TO:<a@example.test>: 550 5.1.1", "ok")
	f.Add("evil\r\nBcc: x@example.net", "r\x00ule", "line\r\n.\r\nQUIT", "\x1b[31mred")
	f.Add(strings.Repeat("é", 300), "\u2028", "\xff\xfe", "")
	f.Fuzz(func(t *testing.T, source, rule, text, note string) {
		ev := harvest(1, source)
		ev.Rule = rule
		ev.Detail["evidence"] = []any{map[string]any{"at": text, "what": note, "text": text}}
		ev.Detail[note] = text
		for _, m := range []message{{kind: Started, events: []events.Event{ev}}, {kind: Ended, events: []events.Event{ended(ev, 3)}},
			{kind: Digest, events: []events.Event{ev, ev}}} {
			subject, body := compose(&Settings{ConsoleURL: "http://127.0.0.1:8025", MaxPerMinute: 20}, m)
			if i := strings.IndexFunc(subject, unicode.IsControl); i >= 0 || !utf8.ValidString(subject) {
				t.Fatalf("subject %q has a control character or bad UTF-8", subject)
			}
			for _, line := range strings.Split(body, "\n") {
				if i := strings.IndexFunc(line, func(r rune) bool { return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' }); i >= 0 {
					t.Fatalf("body line %q has a control character", line)
				}
				if len(line) > 2000 {
					t.Fatalf("body line of %d bytes", len(line))
				}
			}
			if !utf8.ValidString(body) {
				t.Fatal("body is not UTF-8")
			}
		}
	})
}
