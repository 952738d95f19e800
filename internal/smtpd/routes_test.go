package smtpd

import (
	"testing"

	"mxguard/internal/address"
)

// The watch assembles lines across reads (a client may send a byte at a
// time), ignores what is not a routed RCPT, and forgets commands go-smtp
// refused before the session took them.
func TestRouteWatch(t *testing.T) {
	var w routeWatch
	in := "EHLO x\r\nMAIL FROM:<@a.test:s@r.test>\r\nrcpt to: <@a.test,@b.test:Bob@Example.TEST.>\r\n" +
		"RCPT TO:<carol@example.test>\r\nRCPT TO:<@c.test:dave@example.test>\r\nRCPT TO:<@broken:>\r\n" +
		"Received: RCPT TO:<@x.test:eve@example.test>\r\n"
	for i := range len(in) {
		w.feed([]byte{in[i]})
	}
	if len(w.routed) != 2 {
		t.Fatalf("routed = %q, want bob's and dave's", w.routed)
	}
	if w.take("carol@example.test") {
		t.Error("carol's RCPT had no route")
	}
	// dave's take skips bob's entry (as if go-smtp had refused bob's RCPT).
	if !w.take("dave@example.test") || w.take("Bob@example.test") || len(w.routed) != 0 {
		t.Errorf("take: %q left", w.routed)
	}
	w.feed([]byte("RCPT TO:<@a.test:" + string(make([]byte, maxRouteLine)) + "@x.test>\r\n"))
	if len(w.routed) != 0 {
		t.Error("an over-long line was parsed")
	}
	for range maxRoutes + 5 {
		w.feed([]byte("RCPT TO:<@a.test:f@example.test>\r\n"))
	}
	if len(w.routed) != maxRoutes {
		t.Errorf("kept %d routes, limit %d", len(w.routed), maxRoutes)
	}
}

// TestRouteWatchAsGoSMTPReads: every spelling go-smtp takes as a routed
// RCPT is noted (go-smtp drops any route up to the first ':', valid or
// not, and allows white space around "TO:"), under the mailbox the
// session then sees.
func TestRouteWatchAsGoSMTPReads(t *testing.T) {
	for _, tc := range []struct{ line, mailbox string }{
		{"RCPT TO:\t<@a.test:v@example.test>", "v@example.test"},
		{"RCPT  TO:<@a.test:v@example.test>", "v@example.test"},
		{"RCPT TO:  <@a.test:v@example.test> ", "v@example.test"},
		{"RCPT TO:<@[192.0.2.1]:v@example.test>", "v@example.test"},
		{"RCPT TO:<@bad_name:v@example.test>", "v@example.test"},
		{"RCPT TO:<@a.test:\"v w\"@example.test>", `"v w"@example.test`},
		{"RCPT TO:<@a.test:v..w@Example.test>", `"v..w"@example.test`},
	} {
		var w routeWatch
		w.feed([]byte(tc.line + "\r\n"))
		if !w.take(tc.mailbox) {
			t.Errorf("%q: no route noted for %s (noted %q)", tc.line, tc.mailbox, w.routed)
		}
	}
}

// FuzzRouteWatch: any client bytes, cut anywhere, keep the watch within
// its bounds, and every noted mailbox is one the session could see.
func FuzzRouteWatch(f *testing.F) {
	f.Add([]byte("RCPT TO:<@a.test:\"v\\\"w\"@example.test>\r\n"), uint8(3))
	f.Add([]byte("rcpt  to:\t<@[1.2.3.4]:x@y.test>\r\nRCPT TO:<@:\r\n"), uint8(1))
	f.Fuzz(func(t *testing.T, in []byte, cut uint8) {
		var w routeWatch
		step := int(cut%16) + 1
		for i := 0; i < len(in); i += step {
			w.feed(in[i:min(i+step, len(in))])
		}
		if len(w.routed) > maxRoutes || len(w.line) > maxRouteLine {
			t.Fatalf("watch grew past its bounds: %d routes, line of %d", len(w.routed), len(w.line))
		}
		for _, m := range w.routed {
			if _, err := address.Parse(m, address.Options{UTF8: true, Postmaster: true}); err != nil {
				t.Errorf("noted %q, which is no canonical mailbox: %v", m, err)
			}
		}
	})
}
