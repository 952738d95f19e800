package smtpd

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"mxguard/internal/config"
	"mxguard/internal/testutil"
)

// bySourceState counts a snapshot's sessions per source and state.
func bySourceState(ss []SessionInfo) map[string]int {
	m := map[string]int{}
	for _, s := range ss {
		m[s.Source+" "+s.State.String()]++
	}
	return m
}

// waitSessions waits until the registry shows want (source and state →
// count) and nothing else.
func waitSessions(t *testing.T, r *Sessions, want map[string]int) []SessionInfo {
	t.Helper()
	var got []SessionInfo
	testutil.WaitUntil(t, fmt.Sprintf("sessions %v", want), func() bool {
		got = r.Snapshot(time.Now())
		m := bySourceState(got)
		if len(m) != len(want) {
			return false
		}
		for k, n := range want {
			if m[k] != n {
				return false
			}
		}
		return true
	})
	return got
}

// TestSessionRegistry: real clients from distinct loopback addresses in
// every state are listed with their source, state, HELO, TLS and bytes;
// each disappears when it closes.
func TestSessionRegistry(t *testing.T) {
	ts := startTestServer(t, serverOpts{tls: true, timeouts: config.Timeouts{Greeting: time.Minute, Command: time.Minute, Data: time.Minute}})
	reg := ts.srv.Sessions()

	stuck := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: "127.0.0.2"})
	stuck.Expect(220) // and says nothing

	data := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: "127.0.0.3"})
	data.Expect(220)
	data.Cmd("EHLO sender.test", 250)
	data.Cmd("MAIL FROM:<a@remote.test>", 250)
	data.Cmd("RCPT TO:<alice@example.test>", 250)
	data.Cmd("DATA", 354)
	data.Send("Subject: half\r\n\r\nhalf a message") // no end of data

	var many []*testutil.SMTPClient
	for i := range 3 {
		c := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: "127.0.0.4"})
		c.Expect(220)
		c.Cmd("EHLO many.test", 250)
		if i == 1 {
			c.Cmd("MAIL FROM:<a@remote.test>", 250)
		}
		if i == 2 {
			c.Cmd("MAIL FROM:<a@remote.test>", 250)
			c.Cmd("RCPT TO:<alice@example.test>", 250)
			c.Data("Subject: one\r\n\r\none\r\n", 250) // then idle
		}
		many = append(many, c)
	}

	secure := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: "127.0.0.5"})
	secure.Expect(220)
	secure.Cmd("EHLO tls.test", 250)
	secure.StartTLS(insecure)
	secure.Cmd("EHLO tls-again.test", 250)
	secure.Cmd("MAIL FROM:<a@remote.test>", 250)
	secure.Cmd("RSET", 250) // the transaction is dropped: idle

	got := waitSessions(t, reg, map[string]int{
		"127.0.0.2 greeting": 1,
		"127.0.0.3 data":     1,
		"127.0.0.4 helo":     1, "127.0.0.4 mail": 1, "127.0.0.4 idle": 1,
		"127.0.0.5 idle": 1,
	})
	ids := map[uint64]bool{}
	for _, s := range got {
		ids[s.ID] = true
		if s.Listener != "smtp" || s.StartedAt.IsZero() || s.IdleFor < 0 {
			t.Errorf("session %+v: want listener smtp, a start time, idle_for >= 0", s)
		}
		switch s.Source {
		case "127.0.0.2":
			if s.BytesIn != 0 || s.Helo != "" || s.TLS {
				t.Errorf("greeting session %+v: no bytes, no HELO, no TLS", s)
			}
		case "127.0.0.3":
			// EHLO, MAIL, RCPT, DATA and the half message.
			want := int64(len("EHLO sender.test\r\nMAIL FROM:<a@remote.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n" +
				"Subject: half\r\n\r\nhalf a message"))
			if s.BytesIn != want || s.Helo != "sender.test" || s.TLS {
				t.Errorf("data session %+v: want %d bytes in, HELO sender.test, no TLS", s, want)
			}
		case "127.0.0.5":
			// The TLS records count as they came: more than the commands.
			if !s.TLS || s.Helo != "tls-again.test" || s.BytesIn < 200 {
				t.Errorf("STARTTLS session %+v: want TLS, the second HELO, the handshake's bytes", s)
			}
		}
	}
	if len(ids) != 6 {
		t.Errorf("session ids %v: want 6 distinct", ids)
	}

	many[0].Cmd("QUIT", 221)
	stuck.Close()
	waitSessions(t, reg, map[string]int{
		"127.0.0.3 data": 1,
		"127.0.0.4 mail": 1, "127.0.0.4 idle": 1,
		"127.0.0.5 idle": 1,
	})
	data.Close()
	many[1].Close()
	many[2].Close()
	secure.Close()
	waitSessions(t, reg, map[string]int{})
}

// TestSessionIdleFor: idle_for is the time since the client's last byte,
// taken at the snapshot's now.
func TestSessionIdleFor(t *testing.T) {
	ts := startTestServer(t, serverOpts{timeouts: config.Timeouts{Greeting: time.Minute, Command: time.Minute, Data: time.Minute}})
	c := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: "127.0.0.6"})
	c.Expect(220)
	c.Cmd("EHLO idle.test", 250)
	ss := waitSessions(t, ts.srv.Sessions(), map[string]int{"127.0.0.6 helo": 1})
	later := ss[0].StartedAt.Add(time.Hour)
	got := ts.srv.Sessions().Snapshot(later)[0].IdleFor
	if got <= 59*time.Minute || got > time.Hour {
		t.Errorf("idle_for an hour after the start = %v, want just under 1h (EHLO came after the start)", got)
	}
}

func TestCanonicalSource(t *testing.T) {
	for _, tc := range []struct {
		addr string
		bits int
		want string
	}{
		{"192.0.2.7", 64, "192.0.2.7"},
		{"2001:db8:1:2::", 64, "2001:db8:1:2::/64"},
		{"2001:db8::7", 128, "2001:db8::7"},
		{"2001:db8::7", 0, "2001:db8::7"},
	} {
		if got := canonicalSource(netip.MustParseAddr(tc.addr), tc.bits); got != tc.want {
			t.Errorf("canonicalSource(%s, %d) = %s, want %s", tc.addr, tc.bits, got, tc.want)
		}
	}
}

// TestSessionHeloBounded: a client's EHLO name of tens of kilobytes
// (go-smtp takes lines up to 64 KiB) is kept cut to maxHeloShown octets
// of valid UTF-8: the sessions API lists up to 500 sessions, and each
// must not cost a whole line of the client's choosing.
func TestSessionHeloBounded(t *testing.T) {
	ts := startTestServer(t, serverOpts{timeouts: config.Timeouts{Greeting: time.Minute, Command: time.Minute, Data: time.Minute}})
	c := testutil.Dial(t, ts.addr, testutil.DialOptions{LocalIP: "127.0.0.7"})
	c.Expect(220)
	long := "<script>" + strings.Repeat("\u00e9", 30000) + ".test"
	c.Send("EHLO " + long + "\r\n")
	if _, _, err := c.ReadReply(); err != nil { // whatever the HELO checks answer
		t.Fatal(err)
	}
	ss := waitSessions(t, ts.srv.Sessions(), map[string]int{"127.0.0.7 helo": 1})
	h := ss[0].Helo
	if len(h) > maxHeloShown || !utf8.ValidString(h) || !strings.HasPrefix(long, h) || h == "" {
		t.Errorf("HELO kept as %d octets (valid UTF-8 %v), want a prefix of at most %d", len(h), utf8.ValidString(h), maxHeloShown)
	}
}
