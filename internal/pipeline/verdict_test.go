package pipeline

import (
	"io"
	"strings"
	"testing"
)

// TestAppendHeaders: short fields stay on one line; long ones fold within
// 78 characters and unfold (CRLF removed, RFC 5322 §2.2.3) to the value,
// a comma list gaining only the tab of its folds.
func TestAppendHeaders(t *testing.T) {
	tests := strings.Repeat("SOME_RULE_NAME,", 20) + "LAST"
	hs := []Header{
		{"X-Virus-Status", "Clean"},
		{"X-Spam-Status", "No, score=0.50 required=15.00 tests=" + tests},
		{"Authentication-Results", "mx.example.test; spf=pass smtp.mailfrom=example.org; dkim=pass header.d=example.org header.s=sel; dmarc=pass"},
	}
	out := string(AppendHeaders(nil, hs))
	if !strings.HasPrefix(out, "X-Virus-Status: Clean\r\nX-Spam-Status: No, score=0.50") || !strings.HasSuffix(out, "\r\n") {
		t.Errorf("headers:\n%s", out)
	}
	for _, l := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
		if len(l) > 78 {
			t.Errorf("line of %d: %q", len(l), l)
		}
	}
	u := strings.ReplaceAll(strings.TrimSuffix(out, "\r\n"), "\r\n\t", "") // our comma folds
	u = strings.ReplaceAll(u, "\r\n ", " ")                                // RFC 5322 unfolding
	unfolded := strings.Split(u, "\r\n")
	if len(unfolded) != 3 || unfolded[1] != "X-Spam-Status: "+hs[1].Value || unfolded[2] != "Authentication-Results: "+hs[2].Value {
		t.Errorf("unfolded:\n%s", strings.Join(unfolded, "\n"))
	}
}

// TestWithoutFields: the named fields go, folded continuation lines with
// them, whatever their case; everything else, the body included, stays
// byte for byte.
func TestWithoutFields(t *testing.T) {
	msg := "Received: from a\r\n\tby b\r\nX-Spam-Status: No, score=-100\r\n\tforged=yes\r\nSubject: hi\r\n" +
		"x-spam-status: No\r\nX-Spam-Statuses: kept\r\nX-Virus-Status: Clean\r\n\r\nX-Spam-Status: in the body\r\n"
	m := &Message{Content: strings.NewReader(msg)}
	r, n, err := WithoutFields(m, []string{"X-Spam-Status", "X-Virus-Status"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r)
	want := "Received: from a\r\n\tby b\r\nSubject: hi\r\nX-Spam-Statuses: kept\r\n\r\nX-Spam-Status: in the body\r\n"
	if string(b) != want || n != int64(len(want)) {
		t.Errorf("got %q (%d), want %q (%d)", b, n, want, len(want))
	}
	for _, names := range [][]string{nil, {"X-Other"}} {
		r, n, _ := WithoutFields(m, names)
		if b, _ := io.ReadAll(r); string(b) != msg || n != int64(len(msg)) {
			t.Errorf("names %v changed the message: %q", names, b)
		}
	}
	if got := Names([]Header{{"X-Spam-Status", "a"}, {"x-spam-status", "b"}, {"X-Spam", "Yes"}}); len(got) != 2 {
		t.Errorf("Names = %v", got)
	}
}
