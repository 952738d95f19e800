package spamd

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"mxguard/internal/checks/scanner"
	"mxguard/internal/pipeline"
	"mxguard/internal/testutil"
)

// TestRealSpamd asks a private spamd with a custom local rule: GTUBE and
// the custom rule are spam, a plain message is not; only spamd knows the
// custom rule, so its name in the verdict proves spamd judged.
func TestRealSpamd(t *testing.T) {
	sd := testutil.StartSpamd(t, testutil.SpamdOptions{LocalCF: "body MXGUARD_PROBE /mxguard-spamd-probe/\n" +
		"score MXGUARD_PROBE 50.0\ndescribe MXGUARD_PROBE mxguard test rule\n"})
	c := &Client{Address: sd.Addr}
	for _, tc := range []struct {
		name   string
		msg    []byte
		spam   bool
		symbol string
	}{
		{"clean", testutil.Message("lunch", "see you at noon"), false, ""},
		{"gtube", testutil.Message("test", testutil.GTUBE()), true, "GTUBE"},
		{"custom rule", testutil.Message("offer", "this mail carries the mxguard-spamd-probe marker"), true, "MXGUARD_PROBE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := c.Check(ctx, bytes.NewReader(tc.msg), int64(len(tc.msg)))
			if err != nil {
				t.Fatal(err)
			}
			if res.Spam != tc.spam || res.Threshold != 5 {
				t.Errorf("Check = %+v, want spam %v against 5.0", res, tc.spam)
			}
			if tc.symbol != "" && !slices.Contains(res.Symbols, tc.symbol) {
				t.Errorf("symbols %v lack %s", res.Symbols, tc.symbol)
			}
		})
	}

	ch := New(c, scanner.Options{Timeout: 30 * time.Second})
	scan := func(b []byte) pipeline.Verdict {
		return ch.CheckData(context.Background(), &pipeline.Session{}, &pipeline.Message{Content: bytes.NewReader(b)})
	}
	v := scan(testutil.Message("x", "mxguard-spamd-probe"))
	if v.Reply == nil || v.Reply.Code != 554 || v.Reply.Enhanced != [3]int{5, 7, 1} || v.Reply.Check != Name || v.Class != pipeline.ClassSpam {
		t.Errorf("spam verdict = %+v", v)
	}
	v = scan(testutil.Message("x", "hello"))
	if v.Reply != nil || len(v.Headers) != 1 || v.Headers[0].Name != "X-Spam-Status" || !strings.HasPrefix(v.Headers[0].Value, "No, score=") {
		t.Errorf("clean verdict = %+v", v)
	}
}

// fakeSpamd reads one request and writes answer ("hang": none).
func fakeSpamd(t *testing.T, answer string) string {
	return testutil.ServeTCP(t, func(c net.Conn) {
		c.Read(make([]byte, 4096))
		if answer == "hang" {
			io.Copy(io.Discard, c)
			return
		}
		c.Write([]byte(answer))
	})
}

// TestFailures: down, slow, garbage, an error code or a short message are
// errors, never a clean verdict.
func TestFailures(t *testing.T) {
	msg := testutil.Message("x", "y")
	for _, tc := range []struct{ name, addr string }{
		{"down", testutil.FreeAddr(t)},
		{"slow", fakeSpamd(t, "hang")},
		{"garbage", fakeSpamd(t, "HTTP/1.1 200 OK\r\n\r\n")},
		{"error code", fakeSpamd(t, "SPAMD/1.0 76 Bad header line: X\r\n\r\n")},
		{"no Spam header", fakeSpamd(t, "SPAMD/1.1 0 EX_OK\r\n\r\n")},
		{"truncated", fakeSpamd(t, "SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.0 / 5.0")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			if res, err := (&Client{Address: tc.addr}).Check(ctx, bytes.NewReader(msg), int64(len(msg))); err == nil {
				t.Errorf("Check = %+v, nil error", res)
			}
		})
	}
	// A message shorter than announced is our error, caught before spamd
	// waits forever for the missing bytes.
	ok := fakeSpamd(t, "SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.0 / 5.0\r\n\r\n")
	if _, err := (&Client{Address: ok}).Check(context.Background(), bytes.NewReader(msg), int64(len(msg))+10); err == nil {
		t.Error("short message: nil error")
	}
}

// TestParseReply reads the captured answers (../shared/samples) and
// malformed ones.
func TestParseReply(t *testing.T) {
	for file, want := range map[string]Result{
		"spamd-check-clean.txt":   {Spam: false, Score: 0, Threshold: 5},
		"spamd-check-gtube.txt":   {Spam: true, Score: 1000, Threshold: 5},
		"spamd-symbols-clean.txt": {Spam: false, Score: 0, Threshold: 5, Symbols: []string{"NO_RECEIVED", "NO_RELAYS"}},
		"spamd-symbols-gtube.txt": {Spam: true, Score: 1000, Threshold: 5, Symbols: []string{"GTUBE", "NO_RECEIVED", "NO_RELAYS"}},
	} {
		b, err := os.ReadFile("testdata/" + file) // copied from ../shared/samples
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseReply(b)
		if err != nil || got.Spam != want.Spam || got.Score != want.Score || got.Threshold != want.Threshold || !slices.Equal(got.Symbols, want.Symbols) {
			t.Errorf("%s: %+v, %v; want %+v", file, got, err, want)
		}
	}
	for _, bad := range []string{
		"",
		"SPAMD/1.1 0 EX_OK\r\nSpam: Maybe ; 1 / 5\r\n\r\n",
		"SPAMD/1.1 0 EX_OK\r\nSpam: True ; NaN / 5\r\n\r\n",
		"SPAMD/1.1 0 EX_OK\r\nSpam: True 1 5\r\n\r\n",
		"SPAMD/1.1 0 EX_OK\r\nContent-length: 50\r\nSpam: True ; 1 / 5\r\n\r\nGTUBE",
		"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1 / 5\r\n\r\nGTUBE,\r\nX-Evil: 1",
		"SPAMD/1.1 0 EX_OK\r\nbroken\r\n\r\n",
	} {
		if res, err := ParseReply([]byte(bad)); err == nil {
			t.Errorf("ParseReply(%q) = %+v, nil error", bad, res)
		}
	}
}

// FuzzParseReply: nothing crashes the parser, and what it accepts is safe
// to write into a header.
func FuzzParseReply(f *testing.F) {
	testutil.AddSeedFiles(f, "testdata/spamd-check-clean.txt", "testdata/spamd-symbols-gtube.txt")
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := ParseReply(b)
		if err != nil {
			return
		}
		if s := scanner.SpamStatus(res.Spam, res.Score, res.Threshold, res.Symbols); strings.ContainsAny(s, "\r\n") {
			t.Errorf("header value %q from %q", s, b)
		}
	})
}
