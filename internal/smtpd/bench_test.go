package smtpd

import (
	"bufio"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// BenchmarkSessionMessages measures the front end's cost per message in
// one long session (MAIL, RCPT, DATA, a 1 KiB message, each answered
// before the next, as smtp-source sends them) relayed to the in-process
// sink: the per-command work of conn (buffering, deadlines, limits) is on
// this path.
func BenchmarkSessionMessages(b *testing.B) {
	// Production timeouts: the test server's short ones would end the
	// session (2 × (command + data), limits.go) in the middle of a long
	// run on a loaded machine.
	addr, _ := startServer(b, nil, func(_ *Options, s *Settings) {
		s.Timeouts.Command, s.Timeouts.Data = 5*time.Minute, 10*time.Minute
	})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	expect := func(code string) {
		for {
			conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			l, err := r.ReadString('\n')
			if err != nil {
				b.Fatal(err)
			}
			if !strings.HasPrefix(l, code) {
				b.Fatalf("want %s, got %q", code, l)
			}
			if l[3] == ' ' {
				return
			}
		}
	}
	cmd := func(line, code string) {
		conn.Write([]byte(line))
		expect(code)
	}
	expect("220")
	cmd("EHLO bench.test\r\n", "250")
	msg := "Subject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 62)+"\r\n", 16) + ".\r\n"
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cmd("MAIL FROM:<a@remote.test>\r\n", "250")
		cmd("RCPT TO:<alice@example.test>\r\n", "250")
		cmd("DATA\r\n", "354")
		cmd(msg, "250")
	}
	b.StopTimer()
	cmd("QUIT\r\n", "221")
}

// BenchmarkLiveTracking is what session tracking (sessions.go) adds to
// each command: the bytes and time of the read and a state change, all
// atomic stores on the connection's own struct.
func BenchmarkLiveTracking(b *testing.B) {
	var l live
	for b.Loop() {
		l.read(32, time.Now())
		l.setState(StateRcpt)
	}
}

// BenchmarkSessionsSnapshot lists 1000 open sessions (half the default
// limits.max_connections), as GET /api/v1/sessions does. It takes no lock
// a session uses: the sessions' own updates are atomic stores it only
// loads.
func BenchmarkSessionsSnapshot(b *testing.B) {
	r := NewSessions()
	ls := make([]live, 1000)
	for i := range ls {
		ls[i] = live{id: uint64(i), listener: "smtp", key: netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), started: time.Now()}
		r.add(&ls[i])
	}
	for b.Loop() {
		if n := len(r.Snapshot(time.Now())); n != len(ls) {
			b.Fatalf("snapshot of %d sessions, want %d", n, len(ls))
		}
	}
}
