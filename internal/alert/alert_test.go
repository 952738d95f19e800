package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/events"
	"mxguard/internal/mailsink"
	"mxguard/internal/metrics"
	tu "mxguard/internal/testutil"
)

// hook is a webhook receiver: every request, and the status to answer
// (one per request in turn; 200 once they run out).
type hook struct {
	srv   *httptest.Server
	mu    sync.Mutex
	reqs  []hookReq
	codes []int
	got   chan hookReq
}

type hookReq struct {
	header http.Header
	body   []byte
}

func newHook(t *testing.T, codes ...int) *hook {
	h := &hook{codes: codes, got: make(chan hookReq, 4096)}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		code := http.StatusOK
		if len(h.codes) > 0 {
			code, h.codes = h.codes[0], h.codes[1:]
		}
		req := hookReq{header: r.Header.Clone(), body: body}
		h.reqs = append(h.reqs, req)
		h.mu.Unlock()
		w.WriteHeader(code)
		if code == http.StatusOK {
			h.got <- req
		}
	}))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *hook) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.reqs)
}

// next waits for the next request answered 200.
func (h *hook) next(t *testing.T) (hookReq, Body) {
	t.Helper()
	select {
	case r := <-h.got:
		var b Body
		if err := json.Unmarshal(r.body, &b); err != nil {
			t.Fatalf("webhook body %q: %v", r.body, err)
		}
		return r, b
	case <-time.After(20 * time.Second):
		t.Fatal("no webhook request within 20s")
	}
	panic("unreachable")
}

type rig struct {
	*Dispatcher
	clock *tu.FakeClock
	m     *metrics.Metrics
}

func start(t *testing.T, s Settings) *rig {
	t.Helper()
	r := &rig{clock: tu.NewFakeClock(), m: metrics.New()}
	r.Dispatcher = New(Options{Settings: s, Clock: r.clock, Metrics: r.m, Backoff: 5 * time.Millisecond, Tick: 5 * time.Millisecond, Timeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func (r *rig) metric(channel, result string) float64 {
	return testutil.ToFloat64(r.m.Alerts.WithLabelValues(channel, result))
}

// harvest is an event as the engine reports it.
func harvest(id int64, src string) events.Event {
	at := time.Date(2026, 11, 25, 9, 59, 58, 120e6, time.UTC)
	return events.Event{
		ID: id, Type: "directory_harvest", Rule: "harvest", Mode: events.ModeEnforce, Status: events.StatusActive,
		StartedAt: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), Source: src, Service: "smtp", Impact: 0,
		Actions: []string{"alert", "block"}, Node: "mx1",
		Detail: map[string]any{"threshold": float64(20), "window": "10m", "count": float64(20),
			"evidence": []any{map[string]any{"at": at.Format(time.RFC3339Nano), "what": "rcpt_unknown",
				"text": "RCPT TO:<guess17@example.test>: 550 5.1.1 <guess17@example.test>: User unknown"}}},
	}
}

func ended(e events.Event, impact int64) events.Event {
	t := e.StartedAt.Add(14 * time.Minute)
	e.Status, e.EndedAt, e.Impact = events.StatusEnded, &t, impact
	return e
}

// The webhook gets the event JSON exactly as the API shows it, signed:
// the receiver recomputes the HMAC over the raw body.
func TestWebhookSignedStartedAndEnded(t *testing.T) {
	h := newHook(t)
	r := start(t, Settings{Webhook: Webhook{URL: h.srv.URL + "/mxguard", Secret: "s3cret-hook"}})
	ev := harvest(42, "203.0.113.7")
	r.Notify(Started, ev)

	req, b := h.next(t)
	if ct := req.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	sig := req.header.Get(SignatureHeader)
	mac := hmacHex("s3cret-hook", req.body)
	if !hmac.Equal([]byte(sig), []byte("sha256="+mac)) {
		t.Errorf("signature %q, recomputed sha256=%s", sig, mac)
	}
	if b.Alert != Started || b.Event == nil || b.Events != nil {
		t.Fatalf("body %s", req.body)
	}
	// The event's JSON keys are those of INTERFACE.md §3, and its values
	// the event's.
	var raw map[string]map[string]any
	json.Unmarshal(req.body, &raw)
	var keys []string
	for k := range raw["event"] {
		keys = append(keys, k)
	}
	want := []string{"actions", "detail", "ended_at", "id", "impact", "mode", "node", "rule", "service", "source", "started_at", "status", "type"}
	if !equalSet(keys, want) {
		t.Errorf("event keys %v, want %v", keys, want)
	}
	if !reflect.DeepEqual(*b.Event, ev) {
		t.Errorf("event\n got %+v\nwant %+v", *b.Event, ev)
	}

	r.Notify(Ended, ended(ev, 137))
	_, b = h.next(t)
	if b.Alert != Ended || b.Event.Status != events.StatusEnded || b.Event.Impact != 137 || b.Event.EndedAt == nil {
		t.Errorf("ended alert %+v", b)
	}
	tu.WaitUntil(t, "mxguard_alerts_total{webhook,sent} 2", func() bool { return r.metric(ChannelWebhook, "sent") == 2 })
}

func hmacHex(secret string, body []byte) string {
	return strings.TrimPrefix(Sign(secret, body), "sha256=")
}

func equalSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}

// Without a secret there is no signature header.
func TestWebhookUnsigned(t *testing.T) {
	h := newHook(t)
	r := start(t, Settings{Webhook: Webhook{URL: h.srv.URL}})
	r.Notify(Started, harvest(1, "192.0.2.1"))
	if req, _ := h.next(t); req.header.Get(SignatureHeader) != "" {
		t.Errorf("unsigned webhook carries %q", req.header.Get(SignatureHeader))
	}
}

// min_impact filters "ended" alerts only; shadow events and events that
// do not list the alert action never alert. The queue is FIFO: the alert
// that arrives first proves the ones notified before it were not sent.
func TestFilters(t *testing.T) {
	h := newHook(t)
	r := start(t, Settings{Webhook: Webhook{URL: h.srv.URL}, MinImpact: 100})
	small := harvest(1, "192.0.2.1")
	r.Notify(Started, small) // started: always
	if _, b := h.next(t); b.Event.ID != 1 || b.Alert != Started {
		t.Fatalf("first alert %+v", b)
	}
	r.Notify(Ended, ended(small, 99)) // below min_impact
	shadow := harvest(2, "192.0.2.2")
	shadow.Mode = events.ModeShadow
	r.Notify(Started, shadow)
	quiet := harvest(3, "192.0.2.3")
	quiet.Actions = []string{"block"}
	r.Notify(Started, quiet)
	r.Notify(Ended, ended(harvest(4, "192.0.2.4"), 100)) // reached min_impact
	if _, b := h.next(t); b.Event.ID != 4 || b.Alert != Ended {
		t.Fatalf("second alert %+v, want the ended alert of event 4", b)
	}
	if n := h.count(); n != 2 {
		t.Errorf("%d webhook requests, want 2", n)
	}
}

// A 500 is retried with backoff until it succeeds; a 400 is not retried.
func TestWebhookRetries(t *testing.T) {
	h := newHook(t, 500, 503)
	r := start(t, Settings{Webhook: Webhook{URL: h.srv.URL}})
	r.Notify(Started, harvest(7, "192.0.2.7"))
	if _, b := h.next(t); b.Event.ID != 7 {
		t.Fatalf("alert %+v", b)
	}
	if n := h.count(); n != 3 {
		t.Errorf("%d requests, want 3 (500, 503, 200)", n)
	}
	tu.WaitUntil(t, "mxguard_alerts_total{webhook,sent} 1", func() bool { return r.metric(ChannelWebhook, "sent") == 1 })
	if f := r.metric(ChannelWebhook, "failed"); f != 0 {
		t.Errorf("failed %v, want 0: the retries succeeded", f)
	}

	h2 := newHook(t, 400)
	r2 := start(t, Settings{Webhook: Webhook{URL: h2.srv.URL}})
	r2.Notify(Started, harvest(8, "192.0.2.8"))
	tu.WaitUntil(t, "the refused alert counted failed", func() bool { return r2.metric(ChannelWebhook, "failed") == 1 })
	if n := h2.count(); n != 1 {
		t.Errorf("a 400 was tried %d times, want once", n)
	}
}

// A webhook on a closed port: every attempt fails at once, the alert is
// counted failed after its bounded attempts, and Notify never waited.
func TestWebhookClosedPort(t *testing.T) {
	url := "http://" + closedAddr(t) + "/hook"
	r := start(t, Settings{Webhook: Webhook{URL: url}})
	for i := range 3 {
		r.Notify(Started, harvest(int64(i+1), "192.0.2.9"))
	}
	tu.WaitUntil(t, "three failed alerts", func() bool { return r.metric(ChannelWebhook, "failed") == 3 })
	if n := r.metric(ChannelWebhook, "sent"); n != 0 {
		t.Errorf("sent = %v", n)
	}
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A storm of 1000 events within a minute: max_per_minute (20) alerts go
// out one by one, the other 980 wait for ONE digest, sent once the cap
// has room again (the fake clock a minute on). 21 messages, not 1000.
func TestStormCapAndDigest(t *testing.T) {
	h := newHook(t)
	r := start(t, Settings{Webhook: Webhook{URL: h.srv.URL}})
	for i := range 1000 {
		r.Notify(Started, harvest(int64(i+1), "198.51.100.1"))
		if i%100 == 0 {
			r.clock.Advance(time.Second) // the storm spans 10 s
		}
	}
	for i := range 20 {
		if _, b := h.next(t); b.Alert != Started || b.Event.ID != int64(i+1) {
			t.Fatalf("alert %d: %+v", i, b)
		}
	}
	tu.WaitUntil(t, "the storm queued", func() bool { return len(r.channels[0].queue) == 0 })
	if n := h.count(); n != 20 {
		t.Fatalf("%d requests before the minute is over, want 20", n)
	}
	r.clock.Advance(time.Minute)
	_, b := h.next(t)
	if b.Alert != Digest || len(b.Events) != 980 || b.Events[0].ID != 21 || b.Events[979].ID != 1000 {
		t.Fatalf("digest: alert %q with %d events", b.Alert, len(b.Events))
	}
	// The next alert goes out on its own again: the digest took one slot
	// of the cap, the minute-old sends left it.
	r.Notify(Ended, ended(harvest(1, "198.51.100.1"), 5000))
	if _, b := h.next(t); b.Alert != Ended {
		t.Errorf("after the digest: %+v", b)
	}
	tu.WaitUntil(t, "22 sent", func() bool { return r.metric(ChannelWebhook, "sent") == 22 })
	if d := r.metric(ChannelWebhook, "dropped"); d != 0 {
		t.Errorf("dropped %v, want 0", d)
	}
}

// The cap holds over any 60 s, not per calendar minute, and the digest of
// a channel goes at most once a minute.
func TestCapIsSliding(t *testing.T) {
	h := newHook(t)
	r := start(t, Settings{Webhook: Webhook{URL: h.srv.URL}, MaxPerMinute: 3})
	for i := range 3 {
		r.Notify(Started, harvest(int64(i+1), "192.0.2.1"))
		h.next(t)
		r.clock.Advance(20 * time.Second) // sends at 0, 20, 40 s
	}
	// At 60 s the first send has left the window: one slot free.
	r.Notify(Started, harvest(4, "192.0.2.1"))
	if _, b := h.next(t); b.Event.ID != 4 {
		t.Fatalf("%+v", b)
	}
	r.Notify(Started, harvest(5, "192.0.2.1")) // 60 s: full again (20, 40, 60)
	r.clock.Advance(15 * time.Second)          // 75 s: still full
	r.Notify(Started, harvest(6, "192.0.2.1"))
	tu.WaitUntil(t, "two alerts waiting for the digest", func() bool { return r.metric(ChannelWebhook, "sent") == 4 && len(r.channels[0].queue) == 0 })
	r.clock.Advance(6 * time.Second) // 81 s: the send at 20 s has left
	_, b := h.next(t)
	if b.Alert != Digest || len(b.Events) != 2 {
		t.Fatalf("digest %+v", b)
	}
}

// A reload takes effect with the next message: a new URL, a new secret.
func TestConfigure(t *testing.T) {
	h1, h2 := newHook(t), newHook(t)
	r := start(t, Settings{Webhook: Webhook{URL: h1.srv.URL}})
	r.Notify(Started, harvest(1, "192.0.2.1"))
	h1.next(t)
	r.Configure(Settings{Webhook: Webhook{URL: h2.srv.URL, Secret: "new"}})
	r.Notify(Started, harvest(2, "192.0.2.2"))
	req, b := h2.next(t)
	if b.Event.ID != 2 || req.header.Get(SignatureHeader) != Sign("new", req.body) {
		t.Errorf("after reload: %+v %q", b, req.header.Get(SignatureHeader))
	}
	r.Configure(Settings{})
	r.Notify(Started, harvest(3, "192.0.2.3"))
	r.Configure(Settings{Webhook: Webhook{URL: h2.srv.URL}})
	r.Notify(Started, harvest(4, "192.0.2.4"))
	if _, b := h2.next(t); b.Event.ID != 4 {
		t.Errorf("alert while alerts were off was sent: %+v", b)
	}
}

// An alert mail through the project's SMTP server: who, what, since when,
// impact, what was done, the console link and the evidence.
func TestEmailToMailsink(t *testing.T) {
	ctx := context.Background()
	sink := newInbox(t)
	r := start(t, Settings{Email: Email{To: []string{"postmaster@example.test", "Ops <ops@example.test>"}, From: "mxguard@mx.example.test", Server: sink.Addr()},
		ConsoleURL: "http://127.0.0.1:8025", Hostname: "mx.example.test"})
	ev := harvest(42, "203.0.113.7")
	r.Notify(Started, ev)
	r.Notify(Ended, ended(ev, 137))
	if err := sink.WaitCount(ctx, 2); err != nil {
		t.Fatal(err)
	}
	msgs := sink.Messages()
	if msgs[0].From != "mxguard@mx.example.test" || !reflect.DeepEqual(msgs[0].To, []string{"postmaster@example.test", "ops@example.test"}) {
		t.Errorf("envelope %s -> %v", msgs[0].From, msgs[0].To)
	}
	data := string(msgs[0].Data)
	for _, want := range []string{
		"From: <mxguard@mx.example.test>\r\n",
		"Subject: [mxguard] directory_harvest started: 203.0.113.7\r\n",
		"MIME-Version: 1.0\r\n", "Content-Type: text/plain; charset=utf-8\r\n", "Auto-Submitted: auto-generated\r\n",
		"What:     directory_harvest (rule harvest): recipients rejected as unknown",
		"Who:      203.0.113.7 (source, service smtp)",
		"Since:    2026-11-25 10:00:00 UTC",
		"Impact:   0 unknown recipients refused so far",
		"Done:     alerted; blocked (new connections refused, open sessions get 421)",
		"Why:      20 unknown recipients in 10m (threshold 20)",
		"Mode:     enforce", "Node:     mx1",
		"Console:  http://127.0.0.1:8025/events/42",
		"2026-11-25T09:59:58.12Z  rcpt_unknown  RCPT TO:<guess17@example.test>: 550 5.1.1",
	} {
		if !strings.Contains(data, want) {
			t.Errorf("started mail lacks %q:\n%s", want, data)
		}
	}
	m, err := parseMail(msgs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Header.Date(); err != nil {
		t.Errorf("Date: %v", err)
	}
	if id := m.Header.Get("Message-Id"); !strings.HasPrefix(id, "<") || !strings.HasSuffix(id, "@mx.example.test>") {
		t.Errorf("Message-ID %q", id)
	}
	end := string(msgs[1].Data)
	for _, want := range []string{"Subject: [mxguard] directory_harvest ended: 203.0.113.7 (impact 137)\r\n",
		"Since:    2026-11-25 10:00:00 UTC, ended 2026-11-25 10:14:00 UTC (14m0s)", "Impact:   137 unknown recipients refused while it lasted"} {
		if !strings.Contains(end, want) {
			t.Errorf("ended mail lacks %q:\n%s", want, end)
		}
	}
	tu.WaitUntil(t, "mxguard_alerts_total{email,sent} 2", func() bool { return r.metric(ChannelEmail, "sent") == 2 })
}

// A hostile source (an account name is what a client sent in AUTH) cannot
// add headers: the Subject stays one line.
func TestEmailHeaderInjection(t *testing.T) {
	ctx := context.Background()
	sink := newInbox(t)
	r := start(t, Settings{Email: Email{To: []string{"postmaster@example.test"}, From: "mxguard@example.test", Server: sink.Addr()}})
	ev := harvest(1, "evil\r\nBcc: victim@example.net\r\n\r\nbody")
	ev.Type, ev.Detail = "account_brute_force", map[string]any{"note": "line1\nline2"}
	r.Notify(Started, ev)
	if err := sink.WaitCount(ctx, 1); err != nil {
		t.Fatal(err)
	}
	m, err := parseMail(sink.Messages()[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("Bcc") != "" || !strings.Contains(m.Header.Get("Subject"), "evil  Bcc: victim@example.net") {
		t.Errorf("headers %v", m.Header)
	}
	body, _ := io.ReadAll(m.Body)
	if !strings.Contains(string(body), "note: line1 line2\r\n") {
		t.Errorf("detail not kept on one line:\n%s", body)
	}
	if to := sink.Messages()[0].To; len(to) != 1 {
		t.Errorf("recipients %v", to)
	}
}

// The email digest lists what went past the cap, one a line.
func TestEmailDigest(t *testing.T) {
	ctx := context.Background()
	sink := newInbox(t)
	r := start(t, Settings{Email: Email{To: []string{"postmaster@example.test"}, From: "mxguard@example.test", Server: sink.Addr()},
		MaxPerMinute: 2, ConsoleURL: "http://mx.example.test:8025"})
	for i := range 5 {
		r.Notify(Started, harvest(int64(i+1), "198.51.100.1"))
	}
	if err := sink.WaitCount(ctx, 2); err != nil {
		t.Fatal(err)
	}
	tu.WaitUntil(t, "the rest queued", func() bool { return len(r.channels[1].queue) == 0 })
	r.clock.Advance(time.Minute)
	if err := sink.WaitCount(ctx, 3); err != nil {
		t.Fatal(err)
	}
	m, err := parseMail(sink.Messages()[2].Data)
	if err != nil {
		t.Fatal(err)
	}
	subject, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil || subject != "[mxguard] digest: 3 more events (directory_harvest ×3)" {
		t.Errorf("digest Subject %q (%v)", subject, err)
	}
	body, _ := io.ReadAll(m.Body)
	for i := 3; i <= 5; i++ {
		want := fmt.Sprintf("started  2026-11-25 10:00:00 UTC  directory_harvest  198.51.100.1  impact 0  http://mx.example.test:8025/events/%d\r\n", i)
		if !strings.Contains(string(body), want) {
			t.Errorf("digest lacks %q:\n%s", want, body)
		}
	}
}

// newInbox is the project's SMTP server as the alert mailbox.
func newInbox(t *testing.T) *mailsink.Server {
	sink, err := mailsink.Start(context.Background(), mailsink.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	return sink
}

func parseMail(data []byte) (*mail.Message, error) { return mail.ReadMessage(bytes.NewReader(data)) }

// An alert mail to Postfix's smtp-sink: a real MTA's SMTP server takes
// it, and its dump shows envelope, Subject and body.
func TestEmailToPostfixSmtpSink(t *testing.T) {
	bin, err := exec.LookPath("smtp-sink")
	if err != nil {
		bin = "/usr/sbin/smtp-sink"
	}
	_, serr := os.Stat(bin)
	tu.RequireComponent(t, "postfix (smtp-sink)", serr == nil && os.Geteuid() == 0, "Postfix's smtp-sink binary, run as root (it drops to nobody)")
	dir, err := os.MkdirTemp("", "mxguard-sink-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777) // smtp-sink writes as nobody
	addr := tu.FreeAddr(t)
	cmd := exec.Command(bin, "-u", "nobody", "-d", filepath.Join(dir, "msg."), addr, "10")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	tu.WaitUntil(t, "smtp-sink listening", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	r := start(t, Settings{Email: Email{To: []string{"postmaster@example.test"}, From: "mxguard@mx.example.test", Server: addr},
		ConsoleURL: "http://127.0.0.1:8025", Hostname: "mx.example.test"})
	ev := events.Event{ID: 9, Type: "mail_server_down", Mode: events.ModeEnforce, Status: events.StatusActive,
		StartedAt: time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC), Source: "10.0.0.5:25", Service: "smtp",
		Actions: []string{"alert"}, Node: "mx1", Detail: map[string]any{"last_error": "dial tcp 10.0.0.5:25: connection refused"}}
	r.Notify(Started, ev)
	var dump string
	tu.WaitUntil(t, "smtp-sink dumped the alert", func() bool {
		files, _ := filepath.Glob(filepath.Join(dir, "msg.*"))
		if len(files) != 1 {
			return false
		}
		b, _ := os.ReadFile(files[0])
		dump = string(b)
		return strings.Contains(dump, "mxguard alert (started)")
	})
	for _, want := range []string{
		"X-Helo-Args: mx.example.test", "X-Mail-Args: <mxguard@mx.example.test>", "X-Rcpt-Args: <postmaster@example.test>",
		"Subject: [mxguard] mail_server_down started: 10.0.0.5:25",
		"What:     mail_server_down: one delivery server failing its health checks",
		"Who:      10.0.0.5:25 (server)",
		"Done:     alerted",
		"last_error: dial tcp 10.0.0.5:25: connection refused",
		"Console:  http://127.0.0.1:8025/events/9",
	} {
		if !strings.Contains(dump, want) {
			t.Errorf("smtp-sink dump lacks %q:\n%s", want, dump)
		}
	}
	tu.WaitUntil(t, "one sent", func() bool { return r.metric(ChannelEmail, "sent") == 1 })
}

// An SMTP server that refuses the sender permanently: not retried, failed.
func TestEmailPermanentFailure(t *testing.T) {
	srv := tu.ScriptedSMTP(t, tu.Script{"MAIL": "550 5.7.1 relaying denied"})
	r := start(t, Settings{Email: Email{To: []string{"postmaster@example.test"}, From: "mxguard@example.test", Server: srv.Addr()}})
	r.Notify(Started, harvest(1, "192.0.2.1"))
	tu.WaitUntil(t, "failed alert", func() bool { return r.metric(ChannelEmail, "failed") == 1 })
	if n := srv.Hangups(); n > 1 {
		t.Errorf("%d connections for a permanent refusal, want 1", n)
	}
}

// The engine's in-memory detail may hold a typed evidence list, the
// store's decoded JSON: the mail shows both alike.
func TestEvidenceTyped(t *testing.T) {
	type entry struct {
		At   time.Time `json:"at"`
		What string    `json:"what"`
		Text string    `json:"text"`
	}
	ev := harvest(5, "192.0.2.5")
	ev.Detail["evidence"] = []entry{{At: time.Date(2026, 11, 25, 9, 59, 1, 0, time.UTC), What: "rcpt_unknown", Text: "RCPT TO:<a@example.test>: 550 5.1.1"}}
	_, body := compose(&Settings{}, message{kind: Started, events: []events.Event{ev}})
	if !strings.Contains(body, "  2026-11-25T09:59:01Z  rcpt_unknown  RCPT TO:<a@example.test>: 550 5.1.1\n") {
		t.Errorf("typed evidence not shown:\n%s", body)
	}
	delete(ev.Detail, "evidence")
	if _, body := compose(&Settings{}, message{kind: Started, events: []events.Event{ev}}); strings.Contains(body, "Evidence") {
		t.Errorf("evidence section without evidence:\n%s", body)
	}
}

// A secret in the webhook's URL (chat services put their token in the
// path) never reaches the log.
func TestWebhookURLNotLogged(t *testing.T) {
	var logs tu.LockedBuffer
	url := "http://" + closedAddr(t) + "/services/T0/B0/s3cr3t-token"
	d := New(Options{Settings: Settings{Webhook: Webhook{URL: url}}, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Attempts: 2, Backoff: time.Millisecond, Tick: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	d.Notify(Started, harvest(1, "192.0.2.1"))
	tu.WaitUntil(t, "the failure logged", func() bool { return strings.Contains(logs.String(), "alert: failed") })
	if strings.Contains(logs.String(), "s3cr3t-token") {
		t.Errorf("the webhook URL's secret is in the log:\n%s", logs.String())
	}
}

// hangingServer accepts connections and never answers; accepted reports
// each connection.
func hangingServer(t *testing.T) (addr string, accepted chan struct{}) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = make(chan struct{}, 64)
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			accepted <- struct{}{}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String(), accepted
}

// A webhook that never answers: each attempt ends at the timeout, and the
// alert fails after its attempts.
func TestWebhookTimeout(t *testing.T) {
	addr, accepted := hangingServer(t)
	m := metrics.New()
	d := New(Options{Settings: Settings{Webhook: Webhook{URL: "http://" + addr + "/"}}, Metrics: m,
		Timeout: 50 * time.Millisecond, Attempts: 2, Backoff: time.Millisecond, Tick: time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	d.Notify(Started, harvest(1, "192.0.2.1"))
	tu.WaitUntil(t, "failed after two timed-out attempts", func() bool {
		return testutil.ToFloat64(m.Alerts.WithLabelValues(ChannelWebhook, "failed")) == 1
	})
	if n := len(accepted); n != 2 {
		t.Errorf("%d connections, want 2 attempts", n)
	}
}

// While the channel is stuck on a silent webhook, its queue fills: 1024
// alerts wait, the rest are dropped and counted; Notify never blocks.
func TestQueueFullDrops(t *testing.T) {
	addr, accepted := hangingServer(t)
	r := start(t, Settings{Webhook: Webhook{URL: "http://" + addr + "/"}})
	r.Notify(Started, harvest(1, "192.0.2.1"))
	select {
	case <-accepted: // the channel's goroutine is now stuck in that request
	case <-time.After(20 * time.Second):
		t.Fatal("the webhook was never called")
	}
	for i := range queueSize + 76 {
		r.Notify(Started, harvest(int64(i+2), "192.0.2.1"))
	}
	if d := r.metric(ChannelWebhook, "dropped"); d != 76 {
		t.Errorf("dropped %v, want 76", d)
	}
}

// Sign is HMAC-SHA256: RFC 4231 §4.3 test case 2.
func TestSignRFC4231(t *testing.T) {
	got := Sign("Jefe", []byte("what do ya want for nothing?"))
	if want := "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"; got != want {
		t.Errorf("Sign = %s, want %s", got, want)
	}
}
