package gateway_test

import (
	"strings"
	"testing"
)

// delivery.tls: require reaches the relay: the in-process sink offers no
// STARTTLS, so no mail goes to it; the client is deferred, and the server
// shows the reason.
func TestDeliveryTLSRequire(t *testing.T) {
	e := start(t, "delivery:\n  servers: [{address: {SINK}, role: primary}]\n  tls: require\n")
	c := e.session("127.0.0.48")
	if text := c.Cmd("RCPT TO:<alice@example.test>", 451); !strings.HasPrefix(text, "4.4.1 ") {
		t.Errorf("want 451 4.4.1, got 451 %s", text)
	}
	if st := e.gw.Delivery.Servers()[0]; !strings.Contains(st.LastError, "STARTTLS not offered") {
		t.Errorf("server state: %+v", st)
	}
	if n := e.sink.Count(); n != 0 {
		t.Errorf("the sink got %d messages in plaintext", n)
	}
}
