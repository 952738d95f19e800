package queuemon

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/metrics"
	tu "mxguard/internal/testutil"
)

type startedEvent struct {
	id                int64
	rule, typ, source string
	detail            map[string]any
}

// fakeEvents records StartEvent and EndEvent calls.
type fakeEvents struct {
	mu       sync.Mutex
	started  []startedEvent
	ended    []int64
	active   map[string]int64 // left active by a "previous run"
	startErr error
}

func (f *fakeEvents) StartRuleEvent(_ context.Context, rule, typ, source, _ string, detail map[string]any) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.startErr != nil {
		return 0, f.startErr
	}
	id := int64(len(f.started) + 100)
	f.started = append(f.started, startedEvent{id, rule, typ, source, detail})
	return id, nil
}

func (f *fakeEvents) EndEvent(_ context.Context, id int64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ended = append(f.ended, id)
	return nil
}

func (f *fakeEvents) ActiveEvent(_ context.Context, typ, source string) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.active[typ+" "+source], nil
}

// fixedSource answers the next value of a script at each Snapshot.
type fixedSource struct {
	counts []int
	err    error
	i      int
}

func (s *fixedSource) Snapshot(context.Context) (Snapshot, error) {
	if s.err != nil {
		return Snapshot{}, s.err
	}
	n := s.counts[min(s.i, len(s.counts)-1)]
	s.i++
	return Snapshot{Messages: n, Senders: []SenderCount{{"spam@example.test", n}}}, nil
}

func TestMonitor(t *testing.T) {
	clock := tu.NewFakeClock()
	ev := &fakeEvents{}
	src := &fixedSource{counts: []int{10, 99, 100, 250, 50, 60, 40, 30, 120}}
	m := metrics.New()
	mon, err := New(Options{Clock: clock, Events: ev, Metrics: m, Sources: map[string]Source{"spool": src},
		Rules: []Rule{{Name: "queue", Queue: "spool", Threshold: 100, Window: time.Minute}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	poll := func() { mon.Poll(ctx); clock.Advance(Interval) }
	poll() // 10
	poll() // 99
	if len(ev.started) != 0 {
		t.Fatalf("event below the threshold: %+v", ev.started)
	}
	poll() // 100: reaches the threshold
	if len(ev.started) != 1 || ev.started[0].typ != EventType || ev.started[0].source != "spool" || ev.started[0].rule != "queue" {
		t.Fatalf("events %+v", ev.started)
	}
	d := ev.started[0].detail
	if d["count"] != 100 || d["threshold"] != 100 || d["rule"] != "queue" || d["window"] != "1m" ||
		!reflect.DeepEqual(d["top_senders"], []SenderCount{{"spam@example.test", 100}}) {
		t.Errorf("detail %v", d)
	}
	if got := testutil.ToFloat64(m.QueueMessages.WithLabelValues("spool")); got != 100 {
		t.Errorf("mxguard_queue_messages = %v", got)
	}
	poll() // 250: same event
	poll() // 50: below since now
	poll() // 60
	poll() // 40: 30 s below
	poll() // 30: 45 s below
	if len(ev.ended) != 0 {
		t.Fatalf("ended after less than a window below: %v", ev.ended)
	}
	clock.Advance(15 * time.Second)
	src.counts = append(src.counts[:src.i], 20) // a whole window below
	mon.Poll(ctx)
	if len(ev.ended) != 1 || ev.ended[0] != ev.started[0].id {
		t.Fatalf("ended %v", ev.ended)
	}
	src.counts = append(src.counts[:src.i], 120)
	mon.Poll(ctx)
	if len(ev.started) != 2 {
		t.Errorf("a new rise starts a new event: %+v", ev.started)
	}
}

// A queue that cannot be read, or a store that refuses the event, changes
// nothing and is retried at the next poll; an event a previous run left
// active is taken over.
func TestMonitorFailures(t *testing.T) {
	clock := tu.NewFakeClock()
	ev := &fakeEvents{startErr: errors.New("store down"), active: map[string]int64{}}
	src := &fixedSource{counts: []int{500}}
	mon, err := New(Options{Clock: clock, Events: ev, Sources: map[string]Source{"spool": src},
		Rules: []Rule{{Name: "q", Queue: "spool", Threshold: 100, Window: time.Minute}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mon.Poll(ctx)
	ev.startErr = nil
	mon.Poll(ctx)
	if len(ev.started) != 1 {
		t.Fatalf("start not retried: %+v", ev.started)
	}
	src.err = errors.New("permission denied")
	for range 10 {
		clock.Advance(time.Minute)
		mon.Poll(ctx)
	}
	if len(ev.ended) != 0 {
		t.Errorf("an unreadable queue ended the event: %v", ev.ended)
	}

	ev2 := &fakeEvents{active: map[string]int64{"outbound_queue spool": 7}}
	mon2, _ := New(Options{Clock: clock, Events: ev2, Sources: map[string]Source{"spool": &fixedSource{counts: []int{500, 0}}},
		Rules: []Rule{{Name: "q", Queue: "spool", Threshold: 100, Window: time.Minute}}})
	mon2.Poll(ctx)
	clock.Advance(time.Minute)
	mon2.Poll(ctx)
	clock.Advance(time.Minute)
	mon2.Poll(ctx)
	if len(ev2.started) != 0 || !reflect.DeepEqual(ev2.ended, []int64{7}) {
		t.Errorf("previous run's event: started %+v, ended %v; want it taken over and ended", ev2.started, ev2.ended)
	}
}

func TestParse(t *testing.T) {
	if _, err := Parse("spool", nil); !errors.Is(err, ErrNoSpool) {
		t.Errorf("spool without a spool: %v", err)
	}
	s, err := Parse("spool", func() []string { return []string{"a@x", "", "a@x"} })
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := s.Snapshot(context.Background())
	if snap.Messages != 3 || !reflect.DeepEqual(snap.Senders, []SenderCount{{"a@x", 2}, {"<>", 1}}) {
		t.Errorf("spool snapshot %+v", snap)
	}
	if c, err := Parse("command:postqueue  -j", nil); err != nil || !reflect.DeepEqual(c.(*Command).Argv, []string{"postqueue", "-j"}) {
		t.Errorf("command: %v %v", c, err)
	}
	for _, bad := range []string{"command:", "command:   ", "queue", "file:/x"} {
		if _, err := Parse(bad, nil); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestParseOutput(t *testing.T) {
	line := func(sender string) string {
		return `{"queue_name": "deferred", "queue_id": "1", "arrival_time": 1, "message_size": 1, "forced_expire": false, "sender": "` + sender + `", "recipients": [{"address": "x@y", "delay_reason": "connect to y: Connection refused"}]}` + "\n"
	}
	long := `{"queue_name": "active", "sender": "big@example.test", "recipients": [` + strings.Repeat(`{"address": "r@example.net"},`, maxLine/28) + `{"address": "last@x"}]}` + "\n"
	for _, tc := range []struct {
		name, out string
		msgs      int
		senders   []SenderCount
		sampled   int
		err       bool
	}{
		{"empty queue", "", 0, []SenderCount{}, 0, false},
		{"a count", "42\n", 42, nil, 0, false},
		{"a count with spaces", "  7  \n\n", 7, nil, 0, false},
		{"negative", "-1\n", 0, nil, 0, true},
		{"two numbers", "4\n5\n", 0, nil, 0, true},
		{"two numbers, a blank line between", "5\n\n7\n", 0, nil, 0, true},
		{"two numbers, a space between", "5\n 7", 0, nil, 0, true},
		{"a count and endless blanks", "5\n" + strings.Repeat(" ", maxTrailing+1), 0, nil, 0, true},
		{"text", "Mail queue is empty\n", 0, nil, 0, true},
		{"postqueue", line("a@x") + line("b@x") + line("a@x") + line("MAILER-DAEMON"), 4,
			[]SenderCount{{"a@x", 2}, {"<>", 1}, {"b@x", 1}}, 0, false},
		{"no final newline", strings.TrimSuffix(line("a@x"), "\n"), 1, []SenderCount{{"a@x", 1}}, 0, false},
		{"a line over 1 MiB", line("a@x") + long + line("a@x"), 3, []SenderCount{{"a@x", 2}}, 2, false},
		{"no sender field", line("a@x") + `{"queue_id": "2"}` + "\n", 2, []SenderCount{{"a@x", 1}}, 1, false},
		{"garbage line", line("a@x") + "oops\n", 0, nil, 0, true},
		{"control characters", line(`evil\u0007\r\nX-Injected: 1`), 1, []SenderCount{{"evil???X-Injected: 1", 1}}, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseOutput(strings.NewReader(tc.out))
			if tc.err {
				if err == nil {
					t.Fatalf("parsed: %+v", s)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Messages != tc.msgs || s.Sampled != tc.sampled || (tc.senders != nil && !reflect.DeepEqual(s.Senders, tc.senders)) {
				t.Errorf("got %+v, want %d messages, senders %v, sampled %d", s, tc.msgs, tc.senders, tc.sampled)
			}
		})
	}
}

// rec writes one Postfix queue file record.
func rec(typ byte, data string) []byte {
	out := []byte{typ}
	n := len(data)
	for {
		c := byte(n & 0x7f)
		if n >>= 7; n > 0 {
			c |= 0x80
		}
		out = append(out, c)
		if n == 0 {
			break
		}
	}
	return append(out, data...)
}

func TestSender(t *testing.T) {
	long := strings.Repeat("x", 300) // a two-byte length
	for _, tc := range []struct {
		name   string
		head   []byte
		sender string
		ok     bool
	}{
		{"postfix", bytes.Join([][]byte{rec('C', "  346  681"), rec('T', "1796117143 589705"), rec('A', "log_ident="+long), rec('S', "spam@example.test"), rec('M', "")}, nil), "spam@example.test", true},
		{"postfix null sender", bytes.Join([][]byte{rec('C', "1"), rec('S', ""), rec('M', "")}, nil), "", true},
		{"postfix, sender after the content", bytes.Join([][]byte{rec('C', "1"), rec('M', ""), rec('S', "x@y")}, nil), "", false},
		{"postfix truncated length", append(rec('C', "1"), 'S', 0x85), "", false},
		{"postfix length past the end", append(rec('C', "1"), 'S', 0x40, 'a'), "", false},
		{"message with Return-Path", []byte("Return-Path: <bob@example.test>\r\nReceived: from x\r\n\tby y\r\nSubject: hi\r\n\r\nReturn-Path: <body@x>\r\n"), "bob@example.test", true},
		{"Return-Path after a folded header", []byte("Received: from x\n by y\nreturn-path:<c@d>\n\n"), "c@d", true},
		{"Return-Path only in the body", []byte("Subject: hi\n\nReturn-Path: <body@x>\n"), "", false},
		{"not a message", []byte("just some bytes\nReturn-Path: <x@y>\n"), "", false},
		{"empty", nil, "", false},
	} {
		s, ok := Sender(tc.head)
		if s != tc.sender || ok != tc.ok {
			t.Errorf("%s: Sender = %q, %v; want %q, %v", tc.name, s, ok, tc.sender, tc.ok)
		}
	}
}

func TestDir(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string, data []byte) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		write("deferred/A/"+strconv.Itoa(i), bytes.Join([][]byte{rec('C', "1"), rec('S', "spam@example.test"), rec('M', "")}, nil))
	}
	write("maildrop/x", []byte("Return-Path: <alice@example.test>\n\nhi\n"))
	write("maildrop/y", []byte("garbage"))
	if err := os.Symlink(filepath.Join(dir, "maildrop/x"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := &Dir{Path: dir}
	s, err := d.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Messages != 5 || s.Sampled != 0 || !reflect.DeepEqual(s.Senders, []SenderCount{{"spam@example.test", 3}, {"alice@example.test", 1}}) {
		t.Errorf("snapshot %+v; want 5 regular files (no link, no fifo), 3 from the spammer", s)
	}
	d.SampleFiles = 2
	s, _ = d.Snapshot(context.Background())
	if s.Messages != 5 || s.Sampled != 2 {
		t.Errorf("sampled snapshot %+v, want 5 messages with senders from 2", s)
	}
	if _, err := (&Dir{Path: filepath.Join(dir, "none")}).Snapshot(context.Background()); err == nil {
		t.Error("a missing directory gave a snapshot")
	}
	if _, err := (&Dir{Path: filepath.Join(dir, "maildrop/x")}).Snapshot(context.Background()); err == nil {
		t.Error("a file gave a snapshot")
	}
}

func TestCommand(t *testing.T) {
	ctx := context.Background()
	if s, err := (&Command{Argv: []string{"echo", "17"}}).Snapshot(ctx); err != nil || s.Messages != 17 {
		t.Errorf("echo 17: %+v %v", s, err)
	}
	if _, err := (&Command{Argv: []string{"sh", "-c", "echo oops >&2; exit 3"}}).Snapshot(ctx); err == nil || !strings.Contains(err.Error(), "oops") {
		t.Errorf("failing command: %v, want its stderr in the error", err)
	}
	t0 := time.Now()
	if _, err := (&Command{Argv: []string{"sleep", "30"}, Timeout: 50 * time.Millisecond}).Snapshot(ctx); err == nil || !strings.Contains(err.Error(), "no answer") {
		t.Errorf("slow command: %v", err)
	}
	if time.Since(t0) > 10*time.Second {
		t.Error("the timeout did not stop the command")
	}
	if _, err := (&Command{Argv: []string{"/nonexistent/postqueue"}}).Snapshot(ctx); err == nil {
		t.Error("a missing command gave a snapshot")
	}
	// Output that is not a queue listing is an error, even when long.
	if _, err := (&Command{Argv: []string{"sh", "-c", "yes | head -c 3000000"}}).Snapshot(ctx); !errors.Is(err, ErrOutput) {
		t.Errorf("yes: %v, want ErrOutput", err)
	}
}
