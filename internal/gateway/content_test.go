package gateway_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/testutil"
)

// attachment is a message with one base64 attachment.
func attachment(subject, name string, content []byte) string {
	return "Subject: " + subject + "\r\nFrom: <a@remote.test>\r\nTo: <alice@example.test>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" +
		"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n" +
		"Content-Disposition: attachment; filename=\"" + name + "\"\r\n\r\n" +
		base64.StdEncoding.EncodeToString(content) + "\r\n--b--\r\n"
}

// sendMsg runs one transaction from ip and returns the final reply code and
// text; the session ends with QUIT unless the server closed it.
func (e *env) sendMsg(ip, msg string) (int, string) {
	e.t.Helper()
	c := e.session(ip)
	defer c.Close()
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Cmd("DATA", 354)
	c.Send(strings.ReplaceAll(strings.TrimSuffix(msg, "\r\n"), "\r\n.", "\r\n..") + "\r\n.\r\n")
	code, text, err := c.ReadReply()
	if err != nil {
		e.t.Fatalf("end of DATA: %v", err)
	}
	return code, text
}

// TestContentScanners runs mail through real rspamd, spamd and clamd (private
// instances with rules and signatures only they know, so a refusal proves
// the scanner judged), and shows a spam attack and a virus outbreak from one
// source each becoming an event that blocks the source.
func TestContentScanners(t *testing.T) {
	probe := make([]byte, 16)
	rand.Read(probe)
	virus := []byte("mxguard-clamd-probe-" + hex.EncodeToString(probe))
	cd := testutil.StartClamd(t, testutil.ClamdOptions{Signatures: map[string][]byte{"Mxguard-Probe": virus}})
	sd := testutil.StartSpamd(t, testutil.SpamdOptions{LocalCF: "body MXGUARD_PROBE /spamd-probe/\nscore MXGUARD_PROBE 50.0\n"})
	rs := testutil.StartRspamd(t, testutil.RspamdOptions{LocalLua: testutil.RspamdProbeRules})
	e := start(t, fmt.Sprintf(`content:
  rspamd: %s
  spamd: %s
  clamd: tcp://%s
rules:
  - {name: spam, type: spam_attack, window: 10m, threshold: 3, actions: [block], block_for: 1h}
  - {name: virus, type: virus_outbreak, window: 10m, threshold: 3, actions: [block], block_for: 1h}
`, rs.URL, sd.Addr, cd.Addr))

	clean := "Subject: lunch\r\nFrom: Alice <a@remote.test>\r\nTo: <alice@example.test>\r\nDate: Tue, 1 Dec 2026 10:00:00 +0000\r\nMessage-ID: <l1@remote.test>\r\n\r\nnoon?\r\n"
	for _, tc := range []struct {
		name    string
		ip      string
		msg     string
		code    int
		headers []string // in the delivered message
		absent  string   // not in the delivered message
	}{
		{"clean", "127.0.0.20", clean, 250, []string{"X-Virus-Status: Clean", "X-Spam-Status: No, score=", "X-Spam-Status: No, score="}, ""},
		// The sender's own verdict fields are dropped, ours added.
		{"forged verdict headers", "127.0.0.20", "X-Spam-Status: No, forged\r\nX-Virus-Status: Clean\r\n (forged too)\r\n" + clean, 250,
			[]string{"X-Virus-Status: Clean", "X-Spam-Status: No, score="}, "forged"},
		{"rspamd rule", "127.0.0.21", strings.Replace(clean, "lunch", "probe-reject", 1), 554, nil, ""},
		{"rspamd soft reject", "127.0.0.21", strings.Replace(clean, "lunch", "probe-soft", 1), 451, nil, ""},
		{"rspamd add header", "127.0.0.21", strings.Replace(clean, "lunch", "probe-header", 1), 250, []string{"X-Spam: Yes"}, ""},
		{"spamd rule", "127.0.0.22", strings.Replace(clean, "noon?", "spamd-probe", 1), 554, nil, ""},
		{"clamd signature", "127.0.0.23", attachment("notes", "notes.txt", virus), 554, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.sink.Messages())
			code, text := e.sendMsg(tc.ip, tc.msg)
			if code != tc.code {
				t.Fatalf("got %d %s, want %d", code, text, tc.code)
			}
			msgs := e.sink.Messages()
			if tc.code != 250 {
				if len(msgs) != before {
					t.Errorf("a refused message was delivered")
				}
				return
			}
			if len(msgs) != before+1 {
				t.Fatalf("delivered %d, want 1", len(msgs)-before)
			}
			data := string(msgs[len(msgs)-1].Data)
			hdr, _, _ := strings.Cut(data, "\r\n\r\n")
			t.Logf("delivered header:\n%s", hdr)
			if tc.absent != "" && strings.Contains(hdr, tc.absent) {
				t.Errorf("delivered header has %q:\n%s", tc.absent, hdr)
			}
			for _, h := range tc.headers {
				if strings.Count(hdr, h) < strings.Count(strings.Join(tc.headers, "\n"), h) {
					t.Errorf("delivered header lacks %q:\n%s", h, hdr)
				}
			}
		})
	}

	// A spam attack from one source: the third spam fires the rule, the
	// source is refused at connect from then on.
	spam := strings.Replace(clean, "lunch", "probe-reject", 1)
	for i := 0; i < 3; i++ {
		if code, text := e.sendMsg("127.0.0.30", spam); code != 554 {
			t.Fatalf("spam %d: %d %s", i, code, text)
		}
	}
	e.dial("127.0.0.30").Expect(421)
	// A virus outbreak from another: clamd's verdicts, then the block.
	for i := 0; i < 3; i++ {
		if code, text := e.sendMsg("127.0.0.31", attachment(fmt.Sprint("invoice ", i), "invoice.txt", virus)); code != 554 {
			t.Fatalf("virus %d: %d %s", i, code, text)
		}
	}
	e.dial("127.0.0.31").Expect(421)
	for typ, src := range map[string]string{"spam_attack": "127.0.0.30", "virus_outbreak": "127.0.0.31"} {
		l := e.events("type=" + typ)
		if l.Total != 1 || l.Events[0].Source != src || strings.Join(l.Events[0].Actions, ",") != "block" || l.Events[0].Impact < 1 {
			t.Errorf("%s events: %+v", typ, l)
		}
		// The evidence: the refused messages with our 554 to each.
		_, texts := e.evidence("type=" + typ)
		if len(texts) == 0 || !everyOne(texts, func(s string) bool { return strings.HasPrefix(s, "MAIL FROM:<") && strings.Contains(s, ": 554 5.7.1 ") }) {
			t.Errorf("%s evidence: %q", typ, texts)
		}
	}
	scans := e.gw.Metrics.Scans
	for _, s := range []struct {
		scanner, result string
		min             float64
	}{{"rspamd", "spam", 4}, {"rspamd", "defer", 1}, {"spamd", "spam", 1}, {"clamd", "virus", 4}, {"clamd", "clean", 1}} {
		if n := promtest.ToFloat64(scans.WithLabelValues(s.scanner, s.result)); n < s.min {
			t.Errorf("scans{%s,%s} = %v, want >= %v", s.scanner, s.result, n, s.min)
		}
	}
}

// TestBuiltinChecks: without any scanner, GTUBE, EICAR and a blocked
// attachment are refused at end of DATA, and clean mail passes.
func TestBuiltinChecks(t *testing.T) {
	e := start(t, "")
	for _, tc := range []struct {
		name string
		msg  string
		code int
	}{
		{"clean", attachment("report", "report.pdf", []byte("%PDF-1.4")), 250},
		{"gtube", "Subject: test\r\n\r\n" + testutil.GTUBE() + "\r\n", 554},
		{"eicar", attachment("test", "eicar.com", []byte(testutil.EICAR())), 554},
		{"exe", attachment("invoice", "invoice.pdf.exe", []byte("MZ")), 554},
	} {
		if code, text := e.sendMsg("127.0.0.24", tc.msg); code != tc.code {
			t.Errorf("%s: %d %s, want %d", tc.name, code, text, tc.code)
		}
	}
}

// hangingServer accepts connections and never answers; arrived gets a
// value for each connection.
func hangingServer(t *testing.T) (addr string, arrived chan struct{}) {
	arrived = make(chan struct{}, 16)
	return testutil.ServeTCP(t, func(c net.Conn) {
		arrived <- struct{}{}
		io.Copy(io.Discard, c)
	}), arrived
}

// TestScannerFailures: a scanner that is down, slow or saturated defers
// the message (451 4.3.0), never passes it silently; with on_failure
// accept it passes marked X-Mxguard-Scan: failed.
func TestScannerFailures(t *testing.T) {
	down := testutil.FreeAddr(t)
	slow, _ := hangingServer(t)
	clean := "Subject: hi\r\n\r\nhello\r\n"
	for _, tc := range []struct {
		name, cfg string
		code      int
	}{
		{"clamd down", "content: {clamd: tcp://" + down + "}", 451},
		{"rspamd down", "content: {rspamd: http://" + down + "}", 451},
		{"spamd slow", "content: {spamd: " + slow + ", timeout: 300ms}", 451},
		{"accept when down", "content: {clamd: tcp://" + down + ", on_failure: accept}", 250},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := start(t, tc.cfg+"\n")
			code, text := e.sendMsg("127.0.0.25", clean)
			if code != tc.code {
				t.Fatalf("%d %s, want %d", code, text, tc.code)
			}
			if code == 451 && !strings.HasPrefix(text, "4.3.0 ") {
				t.Errorf("451 %s, want 4.3.0", text)
			}
			if code == 250 {
				m := e.sink.Messages()
				if len(m) != 1 || !strings.Contains(string(m[0].Data), "X-Mxguard-Scan: failed\r\n") {
					t.Errorf("delivered without the failure mark: %q", m)
				}
			}
		})
	}

	// Saturated: with one slot held by a scan that never ends, the next
	// message waits at most the timeout and is deferred.
	addr, arrived := hangingServer(t)
	e := start(t, "content: {clamd: tcp://"+addr+", max_concurrency: 1, timeout: 1s}\n")
	var wg sync.WaitGroup
	codes := make([]int, 2)
	wg.Go(func() { codes[0], _ = e.sendMsg("127.0.0.26", clean) })
	<-arrived // the first scan holds the slot
	codes[1], _ = e.sendMsg("127.0.0.27", clean)
	wg.Wait()
	if codes[0] != 451 || codes[1] != 451 {
		t.Errorf("saturated: %v, want both 451", codes)
	}
}
