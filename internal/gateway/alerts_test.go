package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"mxguard/internal/alert"
	"mxguard/internal/config"
	"mxguard/internal/gateway"
	"mxguard/internal/mailsink"
	"mxguard/internal/testutil"
)

// hookServer receives the gateway's webhook alerts.
type hookServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  []hookAlert
	wake chan struct{}
}

type hookAlert struct {
	alert.Body
	raw       map[string]json.RawMessage
	signature string
	body      []byte
}

func newHookServer(t *testing.T) *hookServer {
	h := &hookServer{wake: make(chan struct{}, 1)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		a := hookAlert{signature: r.Header.Get(alert.SignatureHeader), body: b}
		if err := json.Unmarshal(b, &a.Body); err != nil || json.Unmarshal(b, &a.raw) != nil {
			http.Error(w, "bad json", 400)
			return
		}
		h.mu.Lock()
		h.got = append(h.got, a)
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hookServer) alerts() []hookAlert {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]hookAlert(nil), h.got...)
}

// wait returns the alerts once there are n.
func (h *hookServer) wait(t *testing.T, n int) []hookAlert {
	t.Helper()
	testutil.WaitUntil(t, fmt.Sprintf("%d webhook alerts", n), func() bool { return len(h.alerts()) >= n })
	return h.alerts()
}

// startClocked runs a gateway on a fake clock, so a test can move past an
// event's quiet window.
func startClocked(t *testing.T, extra string) (*env, *testutil.FakeClock) {
	t.Helper()
	sink := newSink(t, "alice@example.test")
	dir := t.TempDir()
	cfg, err := config.Parse("test.yaml", []byte(testConfig(sink.Addr(), extra, dir)))
	if err != nil {
		t.Fatal(err)
	}
	clock := testutil.NewFakeClock()
	gw, err := gateway.Start(t.Context(), cfg, gateway.Options{Logger: testLogger(t), Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	return &env{t: t, gw: gw, sink: sink, dir: dir}, clock
}

// A harvest through the gateway: the webhook gets "started" with the
// event JSON the API shows, signed, and an email goes to the alert
// mailbox; after the quiet window "ended" follows, with the final event.
func TestAlertsEndToEnd(t *testing.T) {
	h := newHookServer(t)
	inbox, err := mailsink.Start(t.Context(), mailsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inbox.Close() })
	e, clock := startClocked(t, fmt.Sprintf(`rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 5, actions: [block, alert]}
alerts:
  webhook: {url: "%s/hook", secret: "e2e-secret"}
  email: {to: [oncall@example.test], from: mxguard@mx.example.test, server: %s}
`, h.srv.URL, inbox.Addr()))
	c := e.session("127.0.0.40")
	for i := 1; i <= 5; i++ {
		c.Cmd(fmt.Sprintf("RCPT TO:<guess%d@example.test>", i), 550)
	}
	c.Cmd("RCPT TO:<alice@example.test>", 421)

	got := h.wait(t, 1)
	a := got[0]
	if a.Alert != alert.Started || a.Event == nil || a.Event.Type != "directory_harvest" || a.Event.Source != "127.0.0.40" ||
		strings.Join(a.Event.Actions, ",") != "alert,block" || a.Event.ID == 0 {
		t.Fatalf("started alert %s", a.body)
	}
	if a.signature != alert.Sign("e2e-secret", a.body) {
		t.Errorf("signature %q does not match the body", a.signature)
	}
	if err := inbox.WaitCount(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	mail := string(inbox.Messages()[0].Data)
	for _, want := range []string{"Subject: [mxguard] directory_harvest started: 127.0.0.40",
		fmt.Sprintf("Console:  http://%s/events/%d", e.gw.AdminAddr(), a.Event.ID)} {
		if !strings.Contains(mail, want) {
			t.Errorf("alert mail lacks %q:\n%s", want, mail)
		}
	}

	// Quiet for a full window: the event ends, and so does the alert.
	clock.Advance(11 * time.Minute)
	got = h.wait(t, 2)
	end := got[1]
	if end.Alert != alert.Ended || end.Event.ID != a.Event.ID || end.Event.Status != "ended" || end.Event.EndedAt == nil {
		t.Fatalf("ended alert %s", end.body)
	}
	// The event JSON is the API's, field for field.
	_, body := e.api("GET", fmt.Sprintf("/api/v1/events/%d", a.Event.ID), "")
	var api, hooked map[string]any
	json.Unmarshal([]byte(body), &api)
	json.Unmarshal(end.raw["event"], &hooked)
	if !reflect.DeepEqual(api, hooked) {
		t.Errorf("webhook event\n %s\nAPI event\n %s", end.raw["event"], body)
	}
	if err := inbox.WaitCount(t.Context(), 2); err != nil {
		t.Fatal(err)
	}
	if m := string(inbox.Messages()[1].Data); !strings.Contains(m, "Subject: [mxguard] directory_harvest ended: 127.0.0.40 (impact ") {
		t.Errorf("ended mail:\n%s", m)
	}
}

// Alerts never delay mail: with the webhook hanging (it accepts and never
// answers) and the email server's port closed, a harvest fires and mail
// from another source still goes through at once.
func TestAlertsNeverDelayMail(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c // read nothing, answer nothing
		}
	}()
	t.Cleanup(func() {
		for {
			select {
			case c := <-accepted:
				c.Close()
			default:
				return
			}
		}
	})
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	e := start(t, fmt.Sprintf(`rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 2, actions: [block, alert]}
alerts:
  webhook: {url: "http://%s/hook"}
  email: {to: [oncall@example.test], server: %s}
`, ln.Addr(), closedAddr))
	c := e.session("127.0.0.50")
	c.Cmd("RCPT TO:<guess1@example.test>", 550)
	c.Cmd("RCPT TO:<guess2@example.test>", 550)
	var hung net.Conn
	select {
	case hung = <-accepted:
		accepted <- hung // closed at cleanup
	case <-time.After(20 * time.Second):
		t.Fatal("the webhook was never called")
	}
	// The webhook's request is in flight and will not be answered: mail
	// flows regardless.
	for i := range 3 {
		m := e.session(fmt.Sprintf("127.0.0.%d", 51+i))
		m.Cmd("RCPT TO:<alice@example.test>", 250)
		m.Data("Subject: during a stuck alert\r\n\r\nbody\r\n", 250)
		m.Cmd("QUIT", 221)
	}
	_, body := e.api("GET", "/metrics", "")
	if !strings.Contains(body, `mxguard_alerts_total{channel="webhook",result="sent"} 0`) ||
		!strings.Contains(body, `mxguard_alerts_total{channel="email",result="sent"} 0`) {
		t.Errorf("alert metrics:\n%s", grepLines(body, "mxguard_alerts_total"))
	}
}

// A reload turns alerts on: the built-in actions then include alert (a
// rule without actions takes it), and the delivery manager's outage
// events alert too.
func TestAlertsReload(t *testing.T) {
	h := newHookServer(t)
	// Health-check timing changes only on restart: quick from the start.
	const quick = "delivery:\n  servers: [{address: {SINK}}]\n  check_interval: 100ms\n  down_after: 1\n"
	e, f := startFromFile(t, quick+"rules:\n  - {name: harvest, type: directory_harvest, window: 10m, threshold: 2}\n")
	c := e.session("127.0.0.60")
	c.Cmd("RCPT TO:<guess1@example.test>", 550)
	c.Cmd("RCPT TO:<guess2@example.test>", 550)
	if l := e.events("type=directory_harvest"); l.Total != 1 || len(l.Events[0].Actions) != 0 {
		t.Fatalf("without an alert channel: %+v, want one event that lists no action", l)
	}

	f.write(f.yaml(quick + fmt.Sprintf(`rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 2}
alerts: {webhook: {url: "%s/hook"}}
`, h.srv.URL)))
	if code, body := e.api("POST", "/api/v1/reload", ""); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	c = e.session("127.0.0.61")
	c.Cmd("RCPT TO:<guess1@example.test>", 550)
	c.Cmd("RCPT TO:<guess2@example.test>", 550)
	a := h.wait(t, 1)[0]
	if a.Alert != alert.Started || a.Event.Source != "127.0.0.61" || strings.Join(a.Event.Actions, ",") != "alert" {
		t.Fatalf("alert after reload: %s", a.body)
	}
	// An outage is heard of: mail_server_down alerts without any rule.
	e.sink.SetDown(true)
	testutil.WaitUntil(t, "a mail_server_down alert", func() bool {
		for _, a := range h.alerts() {
			if a.Event != nil && a.Event.Type == "mail_server_down" && a.Alert == alert.Started {
				return true
			}
		}
		return false
	})
}
