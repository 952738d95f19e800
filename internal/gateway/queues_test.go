package gateway_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An outbound_queue rule on a directory of queued messages: once the
// directory holds the threshold, the event names the sender that fills
// it; it is listed by the API like every event.
func TestOutboundQueueEvent(t *testing.T) {
	q := t.TempDir()
	e := start(t, fmt.Sprintf("rules:\n  - {name: queue, type: outbound_queue, queue: \"dir:%s\", threshold: 4, window: 1m}\n", q))
	for i, from := range []string{"spammer@example.test", "spammer@example.test", "alice@example.test", "spammer@example.test"} {
		msg := "Return-Path: <" + from + ">\r\nSubject: " + fmt.Sprint(i) + "\r\n\r\nbody\r\n"
		if err := os.WriteFile(filepath.Join(q, fmt.Sprint(i)), []byte(msg), 0o600); err != nil {
			t.Fatal(err)
		}
		e.gw.Queues.Poll(t.Context())
		if n := e.events("type=outbound_queue").Total; (i < 3 && n != 0) || (i == 3 && n != 1) {
			t.Fatalf("%d messages queued: %d events", i+1, n)
		}
	}
	code, body := e.api("GET", "/api/v1/events?type=outbound_queue", "")
	var res struct {
		Events []struct {
			Rule   string         `json:"rule"`
			Source string         `json:"source"`
			Detail map[string]any `json:"detail"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(body), &res); code != 200 || err != nil || len(res.Events) != 1 {
		t.Fatalf("%d %s", code, body)
	}
	ev := res.Events[0]
	top, _ := json.Marshal(ev.Detail["top_senders"])
	if ev.Rule != "queue" || ev.Source != "dir:"+q || !strings.HasPrefix(string(top), `[{"messages":3,"sender":"spammer@example.test"}`) {
		t.Errorf("event %+v, top senders %s", ev, top)
	}
	if m := e.metrics(); !strings.Contains(m, `mxguard_queue_messages{queue="dir:`+q+`"} 4`) {
		t.Errorf("mxguard_queue_messages of %s not 4 in /metrics", q)
	}
}
