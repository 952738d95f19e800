package pipeline

import (
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
