package gateway_test

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"mxguard/internal/admin"
	"mxguard/internal/cli"
	"mxguard/internal/testutil"
)

type sessionList struct{ admin.SessionList }

func (e *env) sessions(query string) sessionList {
	e.t.Helper()
	var l sessionList
	e.getJSON("/api/v1/sessions"+query, &l.SessionList)
	return l
}

// summary is "source/listener/state[/tls]" per session, in the API's order.
func (l sessionList) summary() string {
	var b strings.Builder
	for _, s := range l.Sessions {
		fmt.Fprintf(&b, "%s/%s/%s", s.Source, s.Listener, s.State)
		if s.TLS {
			b.WriteString("/tls")
		}
		b.WriteString(" ")
	}
	return strings.TrimSpace(b.String())
}

// waitSessions waits until the API lists exactly want (see summary).
func (e *env) waitSessions(query, want string) sessionList {
	e.t.Helper()
	var l sessionList
	testutil.WaitUntil(e.t, "sessions "+want, func() bool {
		l = e.sessions(query)
		return l.summary() == want && l.Total == len(l.Sessions)
	})
	return l
}

// console logs in to the web console like a browser and returns a client
// holding the session cookie.
func (e *env) console() *http.Client {
	e.t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	resp := e.post(c, "/login", url.Values{"token": {token}, "next": {"/connections"}})
	if resp.Request.URL.Path != "/connections" {
		e.t.Fatalf("login landed on %s", resp.Request.URL)
	}
	return c
}

// post posts a console form, as the browser does, from the console's own
// origin.
func (e *env) post(c *http.Client, path string, form url.Values) *http.Response {
	e.t.Helper()
	base := "http://" + e.gw.AdminAddr()
	req, _ := http.NewRequest("POST", base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		e.t.Fatalf("POST %s: %d", path, resp.StatusCode)
	}
	return resp
}

var csrfInput = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// TestSessionsLive: real clients from distinct loopback addresses on both
// listeners, one stuck at the greeting, one in DATA, three from one
// source, one over STARTTLS; the API, the CLI and the Connections page
// show them with their states and the busiest source first. Blocking
// that source from the page (and another through the API) refuses its
// open sessions at their next command (421 4.7.0), and closed sessions
// leave the list.
func TestSessionsLive(t *testing.T) {
	e := submissionEnv(t, "")
	smtpAddr := e.gw.SMTPAddr()

	stuck := e.dial("127.0.0.81")
	stuck.Expect(220)

	data := e.session("127.0.0.82")
	data.Cmd("RCPT TO:<alice@example.test>", 250)
	data.Cmd("DATA", 354)
	data.Send("Subject: slow\r\n\r\nstill typing")

	var many []*testutil.SMTPClient
	for range 3 {
		c := e.dial("127.0.0.83")
		c.Expect(220)
		c.Cmd("EHLO bot.example", 250)
		many = append(many, c)
	}

	secure := e.dial("127.0.0.84")
	secure.Expect(220)
	secure.Cmd("EHLO tls.example", 250)
	secure.StartTLS(&tls.Config{InsecureSkipVerify: true})
	secure.Cmd("EHLO tls.example", 250)

	sub := testutil.Dial(t, e.gw.SubmissionAddr(), testutil.DialOptions{LocalIP: "127.0.0.85"})
	sub.Expect(220)
	sub.Cmd("EHLO laptop.example", 250)

	want := "127.0.0.83/smtp/helo 127.0.0.83/smtp/helo 127.0.0.83/smtp/helo " +
		"127.0.0.81/smtp/greeting 127.0.0.82/smtp/data 127.0.0.84/smtp/helo/tls 127.0.0.85/submission/helo"
	l := e.waitSessions("", want)
	if l.Total != 7 || len(l.BySource) != 5 || l.BySource[0].Source != "127.0.0.83" || l.BySource[0].Count != 3 {
		t.Errorf("total %d, by_source %+v: want 7 sessions, 127.0.0.83 first with 3", l.Total, l.BySource)
	}
	for _, s := range l.Sessions {
		if s.Source == "127.0.0.82" && (s.Helo != "client.test" || s.BytesIn < int64(len("still typing"))) {
			t.Errorf("DATA session %+v: want HELO client.test and its bytes", s)
		}
	}
	e.waitSessions("?source=127.0.0.0/30", "") // nothing from there
	e.waitSessions("?source=127.0.0.85", "127.0.0.85/submission/helo")

	var out, errOut bytes.Buffer
	if code := cli.Sessions([]string{"--api", e.gw.AdminAddr(), "--token", token, "--source", "127.0.0.80/29"}, &out, &errOut); code != 0 {
		t.Fatalf("mxguard sessions: exit %d: %s", code, errOut.String())
	}
	for _, w := range []string{"127.0.0.83  3\n", "smtp      greeting", "smtp      data", "submission  helo", "laptop.example", "yes", "7 of 7 sessions\n"} {
		if !strings.Contains(strings.Join(strings.Fields(out.String()), " "), strings.Join(strings.Fields(w), " ")) {
			t.Errorf("mxguard sessions output lacks %q:\n%s", w, out.String())
		}
	}

	// Block the busiest source from the Connections page.
	browser := e.console()
	resp, err := browser.Get("http://" + e.gw.AdminAddr() + "/connections")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := csrfInput.FindSubmatch(page)
	if m == nil || !bytes.Contains(page, []byte(`<input type="hidden" name="source" value="127.0.0.83">`)) {
		t.Fatalf("connections page without a Block form for 127.0.0.83:\n%s", page)
	}
	e.post(browser, "/blocks", url.Values{"csrf": {string(m[1])}, "source": {"127.0.0.83"}, "for": {"1h"}, "reason": {"from the connections page"}})
	for _, c := range many {
		c.Send("NOOP\r\n")
		if code, text, _ := c.ReadReply(); code != 421 || !strings.HasPrefix(text, "4.7.0 ") {
			t.Errorf("blocked source's open session at its next command: %d %s, want 421 4.7.0", code, text)
		}
		c.ExpectClosed()
	}
	e.waitSessions("", "127.0.0.81/smtp/greeting 127.0.0.82/smtp/data 127.0.0.84/smtp/helo/tls 127.0.0.85/submission/helo")
	// A new connection from it is refused at connect, never listed.
	again := testutil.Dial(t, smtpAddr, testutil.DialOptions{LocalIP: "127.0.0.83"})
	again.Expect(421)

	// A block through the API reaches a submission session the same way.
	if code, body := e.api("POST", "/api/v1/blocks", `{"source": "127.0.0.85", "for": "10m"}`); code != 201 {
		t.Fatalf("block: %d %s", code, body)
	}
	sub.Send("MAIL FROM:<alice@example.test>\r\n")
	if code, text, _ := sub.ReadReply(); code != 421 || !strings.HasPrefix(text, "4.7.0 ") {
		t.Errorf("blocked submission session at its next command: %d %s, want 421 4.7.0", code, text)
	}
	sub.ExpectClosed()
	e.waitSessions("", "127.0.0.81/smtp/greeting 127.0.0.82/smtp/data 127.0.0.84/smtp/helo/tls")

	stuck.Close()
	data.Close()
	secure.Cmd("QUIT", 221)
	e.waitSessions("", "")
}
