package rspamd

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"mxguard/internal/checks/scanner"
	"mxguard/internal/pipeline"
	"mxguard/internal/testutil"
)

// milter_headers makes rspamd ask for Authentication-Results and
// X-Spamd-Bar on every message it does not skip.
const milterHeaders = `milter_headers { use = ["authentication-results", "x-spamd-bar"]; }
`

var session = &pipeline.Session{
	Addr: netip.MustParseAddr("192.0.2.10"), Helo: "mail.example.org",
	From: "alice@example.org", Rcpts: []string{"bob@example.test", "carol@example.test"},
}

// TestRealRspamd runs every action of a private rspamd through the check.
func TestRealRspamd(t *testing.T) {
	rs := testutil.StartRspamd(t, testutil.RspamdOptions{LocalLua: testutil.RspamdProbeRules, Config: milterHeaders})
	c, err := NewClient(rs.URL, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch := New(c, scanner.Options{Timeout: 30 * time.Second})
	big := bytes.Repeat([]byte("a long line of an attachment that goes on and on\r\n"), 60000) // 3 MB
	for _, tc := range []struct {
		name    string
		msg     []byte
		code    int // 0: passed
		class   pipeline.Class
		symbol  string
		headers []string // names of added headers
	}{
		{"clean", testutil.Message("lunch", "see you at noon"), 0, pipeline.ClassNone, "MXGUARD_ENVELOPE", []string{"X-Spam-Status", "Authentication-Results", "X-Spamd-Bar"}},
		{"gtube", testutil.Message("test", testutil.GTUBE()), 554, pipeline.ClassSpam, "", nil},
		{"custom reject rule", testutil.Message("probe-reject", "hello"), 554, pipeline.ClassSpam, "MXGUARD_REJECT", nil},
		{"add header", testutil.Message("probe-header", "hello"), 0, pipeline.ClassSpam, "MXGUARD_HEADER", []string{"X-Spam", "X-Spam-Status", "Authentication-Results", "X-Spamd-Bar"}},
		{"greylist", testutil.Message("probe-grey", "hello"), 451, pipeline.ClassNone, "MXGUARD_GREY", nil},
		{"soft reject", testutil.Message("probe-soft", "hello"), 451, pipeline.ClassNone, "MXGUARD_SOFT", nil},
		{"3 MB message", append(testutil.Message("big", "x"), big...), 0, pipeline.ClassNone, "", []string{"X-Spam-Status", "Authentication-Results", "X-Spamd-Bar"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := c.Check(ctx, session, bytes.NewReader(tc.msg), int64(len(tc.msg)))
			if err != nil {
				t.Fatal(err)
			}
			if tc.symbol != "" && !slices.Contains(res.Symbols, tc.symbol) {
				t.Errorf("symbols %v lack %s", res.Symbols, tc.symbol)
			}
			v := ch.CheckData(ctx, session, &pipeline.Message{Content: bytes.NewReader(tc.msg)})
			switch {
			case tc.code == 0 && v.Reply != nil:
				t.Fatalf("refused: %v", v.Reply)
			case tc.code != 0 && (v.Reply == nil || v.Reply.Code != tc.code || v.Reply.Check != Name):
				t.Fatalf("verdict %+v, want %d by rspamd", v, tc.code)
			case tc.code == 451 && v.Reply.Enhanced != [3]int{4, 7, 1}, tc.code == 554 && v.Reply.Enhanced != [3]int{5, 7, 1}:
				t.Errorf("enhanced code %v", v.Reply.Enhanced)
			}
			if v.Class != tc.class {
				t.Errorf("class %v, want %v", v.Class, tc.class)
			}
			var names []string
			for _, h := range v.Headers {
				names = append(names, h.Name)
			}
			for _, want := range tc.headers {
				if !slices.Contains(names, want) {
					t.Errorf("headers %v lack %s", names, want)
				}
			}
			if tc.code != 0 && len(v.Headers) != 0 {
				t.Errorf("a refused message got headers %v", v.Headers)
			}
		})
	}
}

// TestFailures: rspamd down, slow, failing or answering nonsense is an
// error (the gate's on_failure applies), never a clean verdict.
func TestFailures(t *testing.T) {
	serve := func(status int, body string, delay bool) string {
		stop := make(chan struct{})
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if delay {
				select {
				case <-r.Context().Done():
				case <-stop:
				}
				return
			}
			w.WriteHeader(status)
			w.Write([]byte(body))
		}))
		t.Cleanup(s.Close)
		t.Cleanup(func() { close(stop) }) // runs first: the handler returns, Close does not wait
		return s.URL
	}
	msg := testutil.Message("x", "y")
	for _, tc := range []struct{ name, url string }{
		{"down", "http://" + testutil.FreeAddr(t)},
		{"slow", serve(200, "", true)},
		{"HTTP 500", serve(500, `{"error":"internal"}`, false)},
		{"not JSON", serve(200, "<html>hello</html>", false)},
		{"error answer", serve(200, `{"error":"cannot parse"}`, false)},
		{"unknown action", serve(200, `{"action":"quarantine","score":1}`, false)},
		{"no score", serve(200, `{"action":"no action"}`, false)},
		{"too big", serve(200, `{"action":"no action","score":0,"x":"`+strings.Repeat("a", maxAnswer)+`"}`, false)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewClient(tc.url, Options{})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if res, err := c.Check(ctx, session, bytes.NewReader(msg), int64(len(msg))); err == nil {
				t.Errorf("Check = %+v, nil error", res)
			}
		})
	}
	for _, bad := range []string{"127.0.0.1:11333", "ftp://127.0.0.1", "http://", "http://h/?q=1"} {
		if _, err := NewClient(bad, Options{}); err == nil {
			t.Errorf("NewClient(%q): nil error", bad)
		}
	}
}

// TestParseAnswer reads the captured answers (../shared/samples) and
// milter headers, folded ones included; a header that would inject a
// line is dropped.
func TestParseAnswer(t *testing.T) {
	for file, want := range map[string]string{"rspamd-checkv2-gtube.json": "reject", "rspamd-checkv2-clean.json": "no action"} {
		b, err := os.ReadFile("testdata/" + file) // copied from ../shared/samples
		if err != nil {
			t.Fatal(err)
		}
		res, err := ParseAnswer(b)
		if err != nil || res.Action != want || res.Required != 15 {
			t.Errorf("%s: %+v, %v", file, res, err)
		}
	}
	res, err := ParseAnswer([]byte(`{"action":"add header","score":7,"required_score":15,
		"symbols":{"B":{},"A":{},"bad name":{}},
		"milter":{"add_headers":{"Authentication-Results":{"value":"mx;\r\n\tnone","order":1},
		"X-Spamd-Bar":"+++","X-Two":[{"value":"1"},"2"],"X-Evil":"a\r\nBcc: victim@example.test","Bad Name":"x"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []pipeline.Header{{Name: "Authentication-Results", Value: "mx; none"}, {Name: "X-Spamd-Bar", Value: "+++"}, {Name: "X-Two", Value: "1"}, {Name: "X-Two", Value: "2"}}
	if !slices.Equal(res.AddHeaders, want) {
		t.Errorf("AddHeaders = %q, want %q", res.AddHeaders, want)
	}
	if !slices.Equal(res.Symbols, []string{"A", "B"}) {
		t.Errorf("Symbols = %v", res.Symbols)
	}
}

// FuzzParseAnswer: nothing crashes the parser, and every header it hands
// on is a single line.
func FuzzParseAnswer(f *testing.F) {
	testutil.AddSeedFiles(f, "testdata/rspamd-checkv2-gtube.json", "testdata/rspamd-checkv2-clean.json")
	f.Add([]byte(`{"action":"no action","score":0,"milter":{"add_headers":{"A":{"value":"x\r\n y"}}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := ParseAnswer(b)
		if err != nil {
			return
		}
		for _, h := range res.AddHeaders {
			if strings.ContainsAny(h.Name+h.Value, "\r\n") || strings.Contains(h.Name, ":") {
				t.Errorf("header %q from %q", h, b)
			}
		}
		if _, _, err := Verdict(res); err != nil {
			t.Errorf("a parsed answer has no verdict: %v", err)
		}
	})
}
