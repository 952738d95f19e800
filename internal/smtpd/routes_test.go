package smtpd

import (
	"bytes"
	"strings"
	"testing"

	"mxguard/internal/address"
	"mxguard/internal/testutil"
)

// The watch assembles lines across reads (a client may send a byte at a
// time), ignores what is not a routed RCPT, and forgets commands go-smtp
// refused before the session took them.
func TestRouteWatch(t *testing.T) {
	var w routeWatch
	var fr input
	in := "EHLO x\r\nMAIL FROM:<@a.test:s@r.test>\r\nrcpt to: <@a.test,@b.test:Bob@Example.TEST.>\r\n" +
		"RCPT TO:<carol@example.test>\r\nRCPT TO:<@c.test:dave@example.test>\r\nRCPT TO:<@broken:>\r\n" +
		"Received: RCPT TO:<@x.test:eve@example.test>\r\n"
	feedWatch(&fr, &w, in, 1)
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
	feedWatch(&fr, &w, "RCPT TO:<@a.test:"+strings.Repeat("x", maxHeldLine)+"@x.test>\r\n", 512)
	if len(w.routed) != 0 {
		t.Error("an over-long line was parsed")
	}
	for range maxRoutes + 5 {
		feedWatch(&fr, &w, "RCPT TO:<@a.test:f@example.test>\r\n", 7)
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
		// go-smtp's '<' is optional (parser.parsePath), its route skip too.
		{"RCPT TO:@a.test:v@example.test", "v@example.test"},
		{"RCPT TO: @a.test,@b.test:v@example.test NOTIFY=NEVER", "v@example.test"},
	} {
		var w routeWatch
		w.check([]byte(tc.line + "\r\n"))
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
	f.Add([]byte("rcpt TO: <PostMaster> SIZE=1\r\n"), uint8(2))
	f.Fuzz(func(t *testing.T, in []byte, cut uint8) {
		var w routeWatch
		var fr input
		feedWatch(&fr, &w, string(in), int(cut%16)+1)
		if len(w.routed) > maxRoutes {
			t.Fatalf("watch grew past its bounds: %d routes", len(w.routed))
		}
		for l := range bytes.Lines(in) {
			pm, ok := postmasterLine(l, "example.test")
			if ok && (!strings.HasPrefix(string(pm), "RCPT TO:<postmaster@example.test>") || strings.Count(string(pm), "\n") != 1 || !strings.HasSuffix(string(pm), "\r\n")) {
				t.Errorf("postmaster line %q from %q", pm, l)
			}
		}
		for _, m := range w.routed {
			if _, err := address.Parse(m, address.Options{UTF8: true, Postmaster: true}); err != nil {
				t.Errorf("noted %q, which is no canonical mailbox: %v", m, err)
			}
		}
	})
}

// feedWatch frames in, step octets at a time, as conn does, and shows
// every command line to w; go-smtp's answers are not simulated (no DATA
// is answered 354).
func feedWatch(fr *input, w *routeWatch, in string, step int) {
	for i := 0; i < len(in); i += step {
		fr.raw = append(fr.raw, in[i:min(i+step, len(in))]...)
		for fr.frame(func(l []byte) []byte { w.check(l); return l }) {
			fr.ready = nil
		}
	}
}

// TestUnbracketedRouteRefused: go-smtp takes a path without its angle
// brackets, route and all ("RCPT TO:@evil.test:alice@example.test"), so
// such a RCPT from an untrusted client is refused 554 5.7.1 like the
// bracketed one and never reaches the downstream.
func TestUnbracketedRouteRefused(t *testing.T) {
	d, down := newDownstreamRecorder(t)
	ts := startTestServer(t, serverOpts{downstream: down})
	c := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: "127.0.0.27"})
	c.Expect(220)
	c.Cmd("EHLO client.test", 250)
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	wantEnhanced(t, c.Cmd("RCPT TO:@evil.test:alice@example.test", 554), "5.7.1")
	c.Cmd("RCPT TO:bob@example.test", 250)
	c.Cmd("QUIT", 221)
	d.wantRcpts(t, "RCPT TO:<bob@example.test>")
}
