package smtpd

import "testing"

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
