package relay_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/emersion/go-smtp"

	"mxguard/internal/address"
	"mxguard/internal/relay"
	"mxguard/internal/testutil"
)

// postfixLike is a downstream that keeps the transaction open after it
// refuses DATA and answers a nested MAIL with 503, as Postfix does.
func postfixLike(t *testing.T) string {
	return testutil.FakeSMTP(t, "220 pf ESMTP", func() func(string) (string, bool) {
		inTxn, grey, inData := false, false, false
		return func(line string) (string, bool) {
			if inData {
				if line != "." {
					return "", false
				}
				inData, inTxn = false, false
				return "250 2.0.0 Ok: queued", false
			}
			cmd := strings.ToUpper(line)
			switch {
			case strings.HasPrefix(cmd, "EHLO"):
				return "250-pf\n250 PIPELINING", false
			case strings.HasPrefix(cmd, "MAIL") && inTxn:
				return "503 5.5.1 Error: nested MAIL command", false
			case strings.HasPrefix(cmd, "MAIL"):
				inTxn, grey = true, strings.Contains(cmd, "GREY@")
				return "250 2.1.0 Ok", false
			case strings.HasPrefix(cmd, "RCPT"):
				return "250 2.1.5 Ok", false
			case cmd == "DATA" && grey:
				return "450 4.7.1 greylisted, try later", false
			case cmd == "DATA":
				inData = true
				return "354 go", false
			case cmd == "RSET":
				inTxn = false
				return "250 2.0.0 Ok", false
			case cmd == "QUIT":
				return "221 2.0.0 Bye", true
			}
			return "502 5.5.2 what", false
		}
	})
}

// TestRefusedDataLeavesCleanConnection: after a downstream refuses DATA,
// the pooled connection must not carry the open transaction into the next
// one (which would get "503 nested MAIL" and bounce a valid message).
func TestRefusedDataLeavesCleanConnection(t *testing.T) {
	addr := postfixLike(t)
	r := relay.New(relay.Options{Hostname: "mx.test", MaxIdle: 1})
	rt := newRoute(addr)
	defer r.Close()
	ctx := context.Background()

	txn, err := r.Begin(ctx, rt, address.MustParse("grey@remote.test"), relay.MailOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Rcpt(ctx, address.MustParse("alice@example.test")); err != nil {
		t.Fatal(err)
	}
	var se *smtp.SMTPError
	if _, err := txn.Data(ctx, nil, strings.NewReader("Subject: x\r\n\r\nx\r\n")); !errors.As(err, &se) || se.Code != 450 {
		t.Fatalf("DATA: %v, want the downstream's 450", err)
	}
	for i := 0; i < 3; i++ {
		txn, err := r.Begin(ctx, rt, address.MustParse("ok@remote.test"), relay.MailOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := txn.Rcpt(ctx, address.MustParse("alice@example.test")); err != nil {
			t.Fatalf("transaction %d after a refused DATA: RCPT %v", i, err)
		}
		if _, err := txn.Data(ctx, nil, strings.NewReader("Subject: y\r\n\r\ny\r\n")); err != nil {
			t.Fatalf("transaction %d: DATA %v", i, err)
		}
	}
}

// TestUnreadableBodyIsNotTheServers: a message that cannot be read (a
// damaged spool file, a failing disk) ends its transaction without the
// final dot, wraps ErrBody, and is not reported against the server, which
// takes the next message.
func TestUnreadableBodyIsNotTheServers(t *testing.T) {
	addr := postfixLike(t)
	r := relay.New(relay.Options{Hostname: "mx.test"})
	rt := newRoute(addr)
	defer r.Close()
	ctx := context.Background()
	txn, err := r.Begin(ctx, rt, address.MustParse("a@remote.test"), relay.MailOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := txn.Rcpt(ctx, address.MustParse("alice@example.test")); err != nil {
		t.Fatal(err)
	}
	damaged := errors.New("checksum mismatch")
	body := io.MultiReader(strings.NewReader("Subject: x\r\n\r\nx\r\n"), iotest.ErrReader(damaged))
	if _, err := txn.Data(ctx, nil, body); !errors.Is(err, relay.ErrBody) || !errors.Is(err, damaged) {
		t.Fatalf("DATA with an unreadable body: %v", err)
	}
	if f := rt.failures(); len(f) != 0 {
		t.Fatalf("our own read error was reported against the server: %v", f)
	}
	if _, err := send(t, r, rt); err != nil {
		t.Fatalf("next message: %v", err)
	}
}
