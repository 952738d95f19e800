package reply

import (
	"errors"
	"testing"
)

func TestLineAndVariants(t *testing.T) {
	r := RelayDenied.WithText("<x@evil.test>: Relay access denied")
	if got := string(r.Line()); got != "554 5.7.1 <x@evil.test>: Relay access denied" {
		t.Errorf("Line = %q", got)
	}
	if RelayDenied.Text != "Relay access denied" {
		t.Errorf("WithText changed the shared reply: %q", RelayDenied.Text)
	}
	cause := errors.New("disk on fire")
	w := InternalError.With(cause).By("spool")
	if !errors.Is(w, cause) || w.Check != "spool" || !w.Temporary() {
		t.Errorf("With/By: %+v", w)
	}
	if got := w.Error(); got != "451 4.3.0 Temporary local problem, try again later: disk on fire" {
		t.Errorf("Error = %q", got)
	}
	if (&Reply{Code: 250, Text: "ok"}).Line()[3] != ' ' {
		t.Error("a reply without enhanced code")
	}
	if len(Blocked.Fields()) != 2 || len(w.Fields()) != 4 {
		t.Errorf("Fields: %v / %v", Blocked.Fields(), w.Fields())
	}
}
