package relay_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"mxguard/internal/relay"
	"mxguard/internal/testutil"
)

// TestProtocolErrors: at every stage, a downstream reply that has no place
// there (a 2xx or 3xx other than the expected one, a garbled, mixed,
// over-long or unasked-for reply, a close before the reply) is never
// passed on as a verdict: the transaction fails with a non-SMTP error, the
// connection is dropped, and the server counts one failure. A 250 to DATA
// is the case that once made mxguard answer 250 for a message nobody took.
func TestProtocolErrors(t *testing.T) {
	long := strings.Repeat("x", 3000)
	var manyLines strings.Builder
	for range 150 {
		manyLines.WriteString("250-LINE\n")
	}
	manyLines.WriteString("250 PIPELINING")
	for _, tc := range []struct {
		name      string
		script    testutil.Script
		stage     string // where the transaction fails
		protocol  bool   // an ErrProtocol, not a broken connection
		wantInErr string
	}{
		{"greeting 250", testutil.Script{"greeting": "250 hello"}, "connect", true, "250 where 220 was expected"},
		{"greeting 354", testutil.Script{"greeting": "354 hello"}, "connect", true, "354 where 220"},
		{"greeting garbled", testutil.Script{"greeting": "hello there"}, "connect", true, "malformed reply"},
		{"greeting code out of range", testutil.Script{"greeting": "290 hello"}, "connect", true, "malformed reply"},
		{"greeting closed", testutil.Script{"greeting": testutil.Hangup}, "connect", false, "greeting"},
		{"greeting then unasked reply", testutil.Script{"greeting": "220 hello\n250 extra"}, "connect", true, "unasked"},
		{"EHLO 220", testutil.Script{"EHLO": "220 again"}, "connect", true, "220 where 250"},
		{"EHLO mixed codes", testutil.Script{"EHLO": "250-fake\n550 no"}, "connect", true, "malformed reply"},
		{"EHLO too many lines", testutil.Script{"EHLO": manyLines.String()}, "connect", true, "more than 100 lines"},
		{"EHLO line too long", testutil.Script{"EHLO": "250-fake\n250 " + long}, "connect", true, "longer than 2048"},
		{"EHLO closed", testutil.Script{"EHLO": testutil.Hangup}, "connect", false, "EHLO"},
		{"MAIL 354", testutil.Script{"MAIL": "354 go"}, "RCPT", true, "354 where 250"},
		{"MAIL 251", testutil.Script{"MAIL": "251 forwarded"}, "RCPT", true, "251 where 250"},
		{"MAIL closed", testutil.Script{"MAIL": testutil.Hangup}, "RCPT", false, "MAIL"},
		{"RCPT 354", testutil.Script{"RCPT": "354 go"}, "RCPT", true, "354 where 251"},
		{"RCPT 220", testutil.Script{"RCPT": "220 hi"}, "RCPT", true, "220 where"},
		{"RCPT refusal too long", testutil.Script{"RCPT": "550 " + long}, "RCPT", true, "longer than"},
		{"RCPT garbled", testutil.Script{"RCPT": "25O ok"}, "RCPT", true, "malformed"},
		{"RCPT closed", testutil.Script{"RCPT": testutil.Hangup}, "RCPT", false, "RCPT"},
		{"RCPT then unasked reply", testutil.Script{"RCPT": "250 2.1.5 Ok\n250 2.0.0 extra"}, "DATA", true, "unasked"},
		{"DATA 250", testutil.Script{"DATA": "250 2.0.0 Ok"}, "DATA", true, "250 where 354"},
		{"DATA 221", testutil.Script{"DATA": "221 bye"}, "DATA", true, "221 where 354"},
		{"DATA closed", testutil.Script{"DATA": testutil.Hangup}, "DATA", false, "DATA"},
		{"DATA mixed codes", testutil.Script{"DATA": "354-go\n250 ok"}, "DATA", true, "malformed"},
		{"final 354", testutil.Script{".": "354 more please"}, "DATA", true, "354 where 250"},
		{"final 221", testutil.Script{".": "221 bye"}, "DATA", true, "221 where 250"},
		{"final mixed codes", testutil.Script{".": "250-ok\n550 no"}, "DATA", true, "malformed"},
		{"final garbled", testutil.Script{".": "ok, queued"}, "DATA", true, "malformed"},
		{"closed before the final reply", testutil.Script{".": testutil.Hangup}, "DATA", false, "after the final dot"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testutil.ScriptedSMTP(t, tc.script)
			r := relay.New(relay.Options{Hostname: "mx.test"})
			defer r.Close()
			rt := newRoute(srv.Addr())
			_, stage, err := transact(t, r, rt)
			if stage != tc.stage {
				t.Fatalf("failed at %q (%v), want at %q", stage, err, tc.stage)
			}
			if se, ok := errors.AsType[*smtp.SMTPError](err); ok {
				t.Fatalf("passed on as the server's verdict: %d %s", se.Code, se.Message)
			}
			// Before the transaction started downstream (connect,
			// MAIL) the causes are flattened into ErrUnavailable, so
			// that none may pass for a verdict: the text tells there.
			msg := err.Error()
			if tc.protocol && !strings.Contains(msg, relay.ErrProtocol.Error()) || tc.stage == "DATA" && tc.protocol != errors.Is(err, relay.ErrProtocol) {
				t.Errorf("error %v, want ErrProtocol: %v", err, tc.protocol)
			}
			if !tc.protocol && !strings.Contains(msg, io.ErrUnexpectedEOF.Error()) && !strings.Contains(msg, "connection reset") {
				t.Errorf("error %v, want a closed connection", err)
			}
			if !strings.Contains(err.Error(), tc.wantInErr) {
				t.Errorf("error %q does not say %q", err, tc.wantInErr)
			}
			if f := rt.failures(); len(f) != 1 || !strings.Contains(f[0], tc.wantInErr) {
				t.Errorf("server failures reported: %q, want one saying %q", f, tc.wantInErr)
			}
		})
	}
}

// TestVerdictsPassThrough: 4xx and 5xx replies are the server's verdict
// at every stage of a transaction, with or without text, and leave the
// connection usable; none counts as a failure of the server. A 421 is
// the server closing the channel: a failure, not a verdict.
func TestVerdictsPassThrough(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script testutil.Script
		stage  string
		code   int
		text   string
	}{
		{"MAIL refused", testutil.Script{"MAIL": "553 5.1.8 sender rejected"}, "RCPT", 553, "sender rejected"},
		{"RCPT unknown", testutil.Script{"RCPT": "550 5.1.1 <alice@example.test>: User unknown"}, "RCPT", 550, "<alice@example.test>: User unknown"},
		{"RCPT refused, no text", testutil.Script{"RCPT": "550"}, "RCPT", 550, ""},
		{"DATA greylisted", testutil.Script{"DATA": "451 4.7.1 greylisted"}, "DATA", 451, "greylisted"},
		{"final refusal", testutil.Script{".": "554 5.7.1 spam"}, "DATA", 554, "spam"},
		{"final refusal then garbage", testutil.Script{".": "554 5.7.1 spam\n\x01\x02 garbage"}, "DATA", 554, "spam"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testutil.ScriptedSMTP(t, tc.script)
			r := relay.New(relay.Options{Hostname: "mx.test"})
			defer r.Close()
			rt := newRoute(srv.Addr())
			_, stage, err := transact(t, r, rt)
			se, ok := errors.AsType[*smtp.SMTPError](err)
			if stage != tc.stage || !ok || se.Code != tc.code || se.Message != tc.text {
				t.Fatalf("at %q: %v, want the server's %d %q at %q", stage, err, tc.code, tc.text, tc.stage)
			}
			if f := rt.failures(); len(f) != 0 {
				t.Errorf("a verdict counted as a server failure: %q", f)
			}
			// The next transaction must not trip over what the last
			// one left (an open transaction, unread garbage).
			if tc.stage == "DATA" {
				if _, stage, err := transact(t, r, newRoute(srv.Addr())); stage != tc.stage || !errors.As(err, &se) || se.Code != tc.code {
					t.Errorf("next transaction: at %q: %v", stage, err)
				}
			}
		})
	}
	t.Run("421 is no verdict", func(t *testing.T) {
		srv := testutil.ScriptedSMTP(t, testutil.Script{"RCPT": "421 4.3.2 shutting down"})
		r := relay.New(relay.Options{Hostname: "mx.test"})
		defer r.Close()
		rt := newRoute(srv.Addr())
		if _, _, err := transact(t, r, rt); err == nil || errors.Is(err, relay.ErrProtocol) {
			t.Fatalf("421: %v", err)
		}
		if f := rt.failures(); len(f) != 1 {
			t.Errorf("failures: %q, want one", f)
		}
	})
}

// TestReplyWithoutText: "250" alone is a complete reply (RFC 5321 §4.2:
// the text is optional).
func TestReplyWithoutText(t *testing.T) {
	srv := testutil.ScriptedSMTP(t, testutil.Script{"greeting": "220", "EHLO": "250", "MAIL": "250", "RCPT": "250", "DATA": "354", ".": "250"})
	r := relay.New(relay.Options{Hostname: "mx.test"})
	defer r.Close()
	rt := newRoute(srv.Addr())
	if _, stage, err := transact(t, r, rt); err != nil {
		t.Fatalf("at %s: %v", stage, err)
	}
}

// TestFinalReplyTimeout: the downstream's final-reply timeout is clearly
// below the sending client's DATA timeout, so a slow downstream cannot make
// the client give up and resend while the first copy is accepted.
func TestFinalReplyTimeout(t *testing.T) {
	for _, client := range []time.Duration{30 * time.Second, 2 * time.Minute, 10 * time.Minute, time.Hour} {
		got := relay.FinalReplyTimeout(client)
		if got <= 0 || got > client/2 || got > 5*time.Minute {
			t.Errorf("FinalReplyTimeout(%v) = %v, want at most half of it and 5m", client, got)
		}
	}
	if got := relay.FinalReplyTimeout(10 * time.Minute); got != 5*time.Minute {
		t.Errorf("default: %v, want 5m (RFC 5321 §4.5.3.2.6's 10 minutes, halved)", got)
	}
}
