package gateway_test

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"mxguard/internal/cli"
	"mxguard/internal/events"
	"mxguard/internal/testutil"
)

// evidence returns what and text of each observation in the evidence of
// the one event the query finds.
func (e *env) evidence(query string) (whats, texts []string) {
	e.t.Helper()
	l := e.events(query)
	if len(l.Events) != 1 {
		e.t.Fatalf("events %s: %+v, want one", query, l)
	}
	list, _ := e.event(l.Events[0].ID).Detail["evidence"].([]any)
	for _, o := range list {
		m, _ := o.(map[string]any)
		w, _ := m["what"].(string)
		t, _ := m["text"].(string)
		whats, texts = append(whats, w), append(texts, t)
	}
	return whats, texts
}

// everyOne reports whether every string of ss passes ok (and there is
// at least one).
func everyOne(ss []string, ok func(string) bool) bool {
	for _, s := range ss {
		if !ok(s) {
			return false
		}
	}
	return len(ss) > 0
}

// guess plays a harvester: n made-up recipients, each refused 550.
func guess(c *testutil.SMTPClient, n int) {
	for i := 1; i <= n; i++ {
		c.Cmd(fmt.Sprintf("RCPT TO:<guess%d@example.test>", i), 550)
	}
}

// A harvest over real SMTP: the event says why the source was blocked,
// with the guessed RCPT commands and the 550 5.1.1 they got, through the
// API and `mxguard events show`.
func TestHarvestEvidence(t *testing.T) {
	e := start(t, `rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 20, actions: [block], block_for: 1h}
`)
	c := e.session("127.0.0.42")
	guess(c, 20)
	c.Cmd("RCPT TO:<alice@example.test>", 421)
	c.ExpectClosed()

	l := e.events("type=directory_harvest")
	if len(l.Events) != 1 {
		t.Fatalf("events: %+v", l)
	}
	ev := e.event(l.Events[0].ID)
	if ev.Detail["threshold"] != 20.0 || ev.Detail["count"] != 20.0 || ev.Detail["window"] != "10m" || ev.Mode != events.ModeEnforce {
		t.Errorf("detail = %v, mode %q", ev.Detail, ev.Mode)
	}
	list, _ := ev.Detail["evidence"].([]any)
	// The evidence ring of a threshold of 20 starts at the 5th guess.
	if len(list) != 16 {
		t.Fatalf("%d observations in the evidence, want guesses 5 to 20:\n%v", len(list), list)
	}
	for i, o := range list {
		m := o.(map[string]any)
		n := i + 5
		text, _ := m["text"].(string)
		if m["what"] != "rcpt_unknown" || !strings.HasPrefix(text, fmt.Sprintf("RCPT TO:<guess%d@example.test>: 550 5.1.1 ", n)) ||
			!strings.Contains(text, "user unknown") {
			t.Errorf("evidence[%d] = %v, want guess%d refused with 550 5.1.1", i, m, n)
		}
		if at, _ := m["at"].(string); len(at) != len("2026-11-25T09:59:58.120Z") || !strings.HasSuffix(at, "Z") {
			t.Errorf("evidence[%d].at = %q, want RFC 3339 UTC with milliseconds", i, at)
		}
	}

	var out, errOut bytes.Buffer
	args := []string{"show", strconv.FormatInt(ev.ID, 10), "--api", "http://" + e.gw.AdminAddr(), "--token", token}
	if code := cli.Events(args, &out, &errOut); code != 0 {
		t.Fatalf("mxguard events show: exit %d: %s", code, errOut.String())
	}
	t.Logf("mxguard events show %d:\n%s", ev.ID, out.String())
	for _, want := range []string{
		"blocked because 20 unknown recipients in 10m (threshold 20)\n",
		"evidence (16 of the 20 in the window, oldest first):\n",
		"rcpt_unknown  RCPT TO:<guess5@example.test>: 550 5.1.1 ",
		"rcpt_unknown  RCPT TO:<guess20@example.test>: 550 5.1.1 ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("mxguard events show lacks %q:\n%s", want, out.String())
		}
	}
}

// A shadow harvest rule on live traffic: the client is never refused with
// 421, nobody is alerted, and the event says mode shadow with the actions
// it would have taken; mxguard_shadow_would_block_total counts what it
// would have refused. An enforcing alert-only rule of the same type, with
// a higher threshold, is the control: its alert arrives, the shadow
// rule's never does.
func TestShadowHarvest(t *testing.T) {
	h := newHookServer(t)
	e := start(t, fmt.Sprintf(`rules:
  - {name: try-harvest, type: directory_harvest, window: 10m, threshold: 3, actions: [block, alert], block_for: 1h, mode: shadow}
  - {name: harvest-watch, type: directory_harvest, window: 10m, threshold: 12, actions: [alert]}
alerts:
  webhook: {url: "%s/hook"}
`, h.srv.URL))
	c := e.session("127.0.0.43")
	guess(c, 12)
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Cmd("QUIT", 221)
	// A new connection of the source is welcome too.
	e.session("127.0.0.43").Cmd("RCPT TO:<alice@example.test>", 250)

	code, body := e.api("GET", "/api/v1/blocks", "")
	if code != 200 || strings.Contains(body, "127.0.0.43") {
		t.Errorf("blocks: %d %s, want none", code, body)
	}
	var shadow events.Event
	for _, l := range e.events("type=directory_harvest").Events {
		if ev := e.event(l.ID); ev.Rule == "try-harvest" {
			shadow = ev
		}
	}
	// Guesses 3 to 12: what a block would have refused.
	if shadow.Mode != events.ModeShadow || strings.Join(shadow.Actions, ",") != "alert,block" || shadow.Impact != 10 {
		t.Errorf("shadow event = %+v, want mode shadow, actions [alert block], impact 10", shadow)
	}
	if list, _ := shadow.Detail["evidence"].([]any); len(list) != 3 {
		t.Errorf("evidence = %v, want the 3 guesses that fired it", list)
	}
	// The control's alert came; alerts go out in order, so the shadow
	// event's, started before it, would have come first.
	got := h.wait(t, 1)
	for _, a := range got {
		if a.Event == nil || a.Event.Rule != "harvest-watch" || a.Event.Mode != events.ModeEnforce {
			t.Errorf("alert %s, want only the enforcing rule's", a.body)
		}
	}
	_, metrics := e.api("GET", "/metrics", "")
	if !strings.Contains(metrics, `mxguard_shadow_would_block_total{rule="try-harvest"} 10`) {
		t.Errorf("metrics lack mxguard_shadow_would_block_total{rule=\"try-harvest\"} 10:\n%s", grepLines(metrics, "shadow"))
	}
	code, body = e.api("GET", "/api/v1/rules", "")
	if code != 200 || !strings.Contains(body, `"mode":"shadow"`) {
		t.Errorf("rules: %d %s", code, body)
	}
}

// A shadow rule switched to enforce by a reload: the open harvest session
// is not refused by the reload itself; its shadow event ends, and its
// next guess (over the threshold) starts an enforcing event and the 421.
func TestShadowToEnforceReload(t *testing.T) {
	const rules = "rules:\n  - {name: try-harvest, type: directory_harvest, window: 10m, threshold: 3, actions: [block], block_for: 1h, mode: %s}\n"
	e, f := startFromFile(t, fmt.Sprintf(rules, "shadow"))
	c := e.session("127.0.0.44")
	guess(c, 5)
	f.write(f.yaml(fmt.Sprintf(rules, "enforce")))
	if code, body := e.api("POST", "/api/v1/reload", ""); code != 200 {
		t.Fatalf("reload: %d %s", code, body)
	}
	c.Cmd("RCPT TO:<alice@example.test>", 250) // the reload blocked nobody
	l := e.events("type=directory_harvest&status=ended")
	if len(l.Events) != 1 || e.event(l.Events[0].ID).Mode != events.ModeShadow {
		t.Fatalf("ended events after the reload: %+v, want the shadow one", l)
	}
	c.Cmd("RCPT TO:<guess6@example.test>", 550)
	c.Cmd("RCPT TO:<alice@example.test>", 421)
	l = e.events("type=directory_harvest&status=active")
	if len(l.Events) != 1 || strings.Join(l.Events[0].Actions, ",") != "block" || e.event(l.Events[0].ID).Mode != events.ModeEnforce {
		t.Fatalf("active events: %+v, want one enforcing event that blocked", l)
	}
}
