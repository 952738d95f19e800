package relay_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"mxguard/internal/relay"
)

// postfixLike is a downstream that keeps the transaction open after it
// refuses DATA and answers a nested MAIL with 503, as Postfix does.
func postfixLike(t *testing.T) string {
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
				r := bufio.NewReader(c)
				w := func(s string) { c.Write([]byte(s + "\r\n")) }
				w("220 pf ESMTP")
				inTxn, grey := false, false
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					cmd := strings.ToUpper(strings.TrimSpace(line))
					switch {
					case strings.HasPrefix(cmd, "EHLO"):
						w("250-pf")
						w("250 PIPELINING")
					case strings.HasPrefix(cmd, "MAIL"):
						if inTxn {
							w("503 5.5.1 Error: nested MAIL command")
							continue
						}
						inTxn, grey = true, strings.Contains(cmd, "GREY@")
						w("250 2.1.0 Ok")
					case strings.HasPrefix(cmd, "RCPT"):
						w("250 2.1.5 Ok")
					case cmd == "DATA" && grey:
						w("450 4.7.1 greylisted, try later")
					case cmd == "DATA":
						w("354 go")
						for {
							l, err := r.ReadString('\n')
							if err != nil || l == ".\r\n" {
								break
							}
						}
						inTxn = false
						w("250 2.0.0 Ok: queued")
					case cmd == "RSET":
						inTxn = false
						w("250 2.0.0 Ok")
					case cmd == "QUIT":
						w("221 2.0.0 Bye")
						return
					default:
						w("502 5.5.2 what")
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestRefusedDataLeavesCleanConnection: after a downstream refuses DATA,
// the pooled connection must not carry the open transaction into the next
// one (which would get "503 nested MAIL" and bounce a valid message).
func TestRefusedDataLeavesCleanConnection(t *testing.T) {
	addr := postfixLike(t)
	r := relay.New(relay.Options{Servers: []relay.Server{{Address: addr, Role: "primary"}}, Hostname: "mx.test", MaxIdle: 1})
	defer r.Close()
	ctx := context.Background()

	txn, err := r.Begin(ctx, "grey@remote.test", relay.MailOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Rcpt(ctx, "alice@example.test"); err != nil {
		t.Fatal(err)
	}
	var se *smtp.SMTPError
	if _, err := txn.Data(ctx, nil, []byte("Subject: x\r\n\r\nx\r\n")); !errors.As(err, &se) || se.Code != 450 {
		t.Fatalf("DATA: %v, want the downstream's 450", err)
	}
	for i := 0; i < 3; i++ {
		txn, err := r.Begin(ctx, "ok@remote.test", relay.MailOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := txn.Rcpt(ctx, "alice@example.test"); err != nil {
			t.Fatalf("transaction %d after a refused DATA: RCPT %v", i, err)
		}
		if _, err := txn.Data(ctx, nil, []byte("Subject: y\r\n\r\ny\r\n")); err != nil {
			t.Fatalf("transaction %d: DATA %v", i, err)
		}
	}
}
