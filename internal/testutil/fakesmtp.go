package testutil

import (
	"bufio"
	"net"
	"strings"
	"testing"
)

// FakeSMTP is a scripted SMTP server for tests of odd downstream behaviour
// that a real MTA shows only under load or in failure: every connection
// gets greeting, then a handler from newConn that sees each line the
// client sends (commands and message lines alike, without CRLF) and returns
// the reply to write ("" for none) and whether to close after it. It
// returns the listen address; the listener closes at cleanup.
func FakeSMTP(t testing.TB, greeting string, newConn func() func(line string) (reply string, close bool)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle := newConn()
				c.Write([]byte(greeting + "\r\n"))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					reply, closeAfter := handle(strings.TrimRight(line, "\r\n"))
					if reply != "" {
						c.Write([]byte(strings.ReplaceAll(reply, "\n", "\r\n") + "\r\n"))
					}
					if closeAfter {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
