package testutil

import (
	"bufio"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Special replies of a FakeSMTP handler, a greeting, or a Script step.
const (
	// Hangup closes the connection instead of replying.
	Hangup = "\x00hangup"
	// Silence sends nothing and keeps the connection open: a server that
	// stalls.
	Silence = "\x00silence"
)

// FakeServer is a running FakeSMTP.
type FakeServer struct {
	addr    string
	mu      sync.Mutex
	lines   []string // every line received, in order, across connections
	hangups int      // connections the client closed
	changed chan struct{}
}

// FakeSMTP is a scripted SMTP server for tests of odd downstream behaviour
// that a real MTA shows only under load or in failure: every connection
// gets greeting, then a handler from newConn that sees each line the
// client sends (commands and message lines alike, without CRLF) and returns
// the reply to write ("" or Silence for none; "\n" separates lines and
// becomes CRLF; Hangup to close instead) and whether to close after it.
// A greeting of Hangup closes at once, Silence sends none. It returns the
// listen address; the listener closes at cleanup.
func FakeSMTP(t testing.TB, greeting string, newConn func() func(line string) (reply string, close bool)) string {
	return StartFakeSMTP(t, greeting, newConn).Addr()
}

// StartFakeSMTP is FakeSMTP returning the server, which also tells what
// it received and how its connections ended.
func StartFakeSMTP(t testing.TB, greeting string, newConn func() func(line string) (reply string, close bool)) *FakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &FakeServer{addr: ln.Addr().String(), changed: make(chan struct{})}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				stop := make(chan struct{})
				defer close(stop)
				go func() {
					select {
					case <-done: // a stalled session ends with the test
						c.Close()
					case <-stop:
					}
				}()
				f.serve(c, greeting, newConn())
			})
		}
	})
	return f
}

func (f *FakeServer) serve(c net.Conn, greeting string, handle func(string) (string, bool)) {
	defer c.Close()
	if !write(c, greeting) {
		return
	}
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			f.event(func() { f.hangups++ })
			return
		}
		line = strings.TrimRight(line, "\r\n")
		f.event(func() {
			if len(f.lines) < 10000 {
				f.lines = append(f.lines, line)
			}
		})
		reply, closeAfter := handle(line)
		if !write(c, reply) || closeAfter {
			return
		}
	}
}

// write sends a reply, reporting false for Hangup.
func write(c net.Conn, reply string) bool {
	switch reply {
	case Hangup:
		return false
	case "", Silence:
		return true
	}
	c.Write([]byte(strings.ReplaceAll(reply, "\n", "\r\n") + "\r\n"))
	return true
}

// event changes the state under the lock and wakes the waiters.
func (f *FakeServer) event(change func()) {
	f.mu.Lock()
	change()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// Addr is the listen address.
func (f *FakeServer) Addr() string { return f.addr }

// Lines returns every line received so far, commands and message lines.
func (f *FakeServer) Lines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.lines...)
}

// Hangups is the number of connections the client closed.
func (f *FakeServer) Hangups() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hangups
}

// WaitHangups waits until the client closed at least n connections; it
// fails the test after timeout.
func (f *FakeServer) WaitHangups(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	f.wait(t, timeout, fmt.Sprintf("%d connections closed by the client", n), func() bool { return f.hangups >= n })
}

// WaitLine waits until a line starting with prefix was received; it
// fails the test after timeout.
func (f *FakeServer) WaitLine(t testing.TB, prefix string, timeout time.Duration) {
	t.Helper()
	f.wait(t, timeout, "a line "+strconv.Quote(prefix), func() bool {
		return slices.ContainsFunc(f.lines, func(l string) bool { return strings.HasPrefix(l, prefix) })
	})
}

// wait waits until cond, called under the lock, holds.
func (f *FakeServer) wait(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		ok, changed := cond(), f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("fake SMTP %s: no %s within %v (received %q)", f.addr, what, timeout, f.Lines())
		}
	}
}

// Script is what ScriptedSMTP answers where it differs from a
// well-behaved server; keys are stages, values replies (or Hangup,
// Silence). Stages: "greeting", a command verb ("EHLO", "HELO",
// "STARTTLS", "MAIL", "RCPT", "DATA", "RSET", "QUIT", ...), and "." for
// the final dot. Without an entry: greeting "220 fake ESMTP", EHLO
// "250-fake\n250 PIPELINING", DATA "354 go ahead", "." "250 2.0.0 Ok:
// queued", QUIT "221 2.0.0 Bye" (and close), anything else "250 2.0.0 Ok".
// A 421 closes the connection after it.
type Script map[string]string

// ScriptedSMTP is a FakeSMTP playing s: a downstream that misbehaves at
// one stage of the dialogue.
func ScriptedSMTP(t testing.TB, s Script) *FakeServer {
	t.Helper()
	greeting, ok := s["greeting"]
	if !ok {
		greeting = "220 fake ESMTP"
	}
	return StartFakeSMTP(t, greeting, func() func(string) (string, bool) {
		inData := false
		return func(line string) (string, bool) {
			stage := strings.ToUpper(line)
			if i := strings.IndexAny(stage, " :"); i >= 0 {
				stage = stage[:i]
			}
			if inData {
				if line != "." {
					return "", false
				}
				inData, stage = false, "."
			}
			reply, ok := s[stage]
			if !ok {
				switch stage {
				case "EHLO":
					reply = "250-fake\n250 PIPELINING"
				case "DATA":
					reply = "354 go ahead"
				case ".":
					reply = "250 2.0.0 Ok: queued"
				case "QUIT":
					return "221 2.0.0 Bye", true
				default:
					reply = "250 2.0.0 Ok"
				}
			}
			if stage == "DATA" && strings.HasPrefix(reply, "354") {
				inData = true
			}
			// RFC 5321 §3.8: a server closes after its 421.
			return reply, strings.HasPrefix(reply, "421")
		}
	})
}
