package relay_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"mxguard/internal/relay"
	"mxguard/internal/testutil"
)

// auth.downstream against a real Postfix that offers AUTH (smtpd SASL
// through a real Dovecot's auth service): the user's password is what the
// downstream says it is.
func TestAuthenticatePostfix(t *testing.T) {
	dv := testutil.StartDovecot(t, testutil.DovecotOptions{AuthListener: true, Users: map[string]string{"alice": "secret"}})
	pf := testutil.StartPostfix(t, testutil.PostfixOptions{Main: map[string]string{
		"smtpd_sasl_auth_enable": "yes",
		"smtpd_sasl_type":        "dovecot",
		"smtpd_sasl_path":        "inet:" + dv.AuthAddr(),
	}})
	r := relay.New(relay.Options{Hostname: "mx.test"})
	ctx := context.Background()
	for _, tc := range []struct {
		user, pw string
		ok       bool
	}{
		{"alice", "secret", true},
		{"alice", "wrong", false},
		{"mallory", "secret", false},
	} {
		rt := newRoute(pf.Addr())
		ok, err := r.Authenticate(ctx, rt, tc.user, tc.pw)
		if err != nil || ok != tc.ok {
			t.Errorf("Authenticate(%s, %s) = %v, %v; want %v", tc.user, tc.pw, ok, err, tc.ok)
		}
		if len(rt.failures()) != 0 {
			t.Errorf("failures reported: %v", rt.failures())
		}
	}
	// A Postfix without AUTH: an error, never a "wrong password".
	plain := testutil.StartPostfix(t, testutil.PostfixOptions{})
	if ok, err := r.Authenticate(ctx, newRoute(plain.Addr()), "alice", "secret"); ok || !errors.Is(err, relay.ErrNoAuth) {
		t.Errorf("server without AUTH: %v, %v; want ErrNoAuth", ok, err)
	}
}

func TestAuthenticateReplies(t *testing.T) {
	ehlo := "250-fake\n250 AUTH LOGIN PLAIN"
	for _, tc := range []struct {
		name, auth string
		ok         bool
		err        bool
	}{
		{"accepted", "235 2.7.0 Authentication successful", true, false},
		{"wrong password", "535 5.7.8 Error: authentication failed", false, false},
		{"temporary", "454 4.7.0 Temporary authentication failure", false, true},
		{"needs encryption", "538 5.7.11 Encryption required", false, true},
		{"a challenge instead of a verdict", "334 ", false, true},
		{"a 250", "250 ok", false, true},
		{"hangup", testutil.Hangup, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testutil.ScriptedSMTP(t, testutil.Script{"EHLO": ehlo, "AUTH": tc.auth})
			ok, err := relay.New(relay.Options{Hostname: "mx.test"}).Authenticate(context.Background(), newRoute(srv.Addr()), "alice", "p@ss word")
			if ok != tc.ok || (err != nil) != tc.err {
				t.Fatalf("Authenticate = %v, %v; want %v, error %v", ok, err, tc.ok, tc.err)
			}
			if tc.auth == testutil.Hangup {
				return
			}
			var sent string
			for _, l := range srv.Lines() {
				if strings.HasPrefix(l, "AUTH ") {
					sent = l
				}
			}
			want := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice\x00p@ss word"))
			if sent != want {
				t.Errorf("sent %q, want %q", sent, want)
			}
		})
	}
	// The route: an unreachable first server is reported and skipped.
	good := testutil.ScriptedSMTP(t, testutil.Script{"EHLO": ehlo, "AUTH": "235 ok"})
	rt := newRoute(testutil.FreeAddr(t), good.Addr())
	if ok, err := relay.New(relay.Options{Hostname: "mx.test"}).Authenticate(context.Background(), rt, "alice", "x"); !ok || err != nil {
		t.Errorf("second server: %v %v", ok, err)
	}
	if len(rt.failures()) != 1 {
		t.Errorf("failures %v, want the unreachable one", rt.failures())
	}
	if _, err := relay.New(relay.Options{Hostname: "mx.test"}).Authenticate(context.Background(), newRoute(), "alice", "x"); !errors.Is(err, relay.ErrUnavailable) {
		t.Errorf("no server: %v", err)
	}
	if ok, _ := relay.New(relay.Options{Hostname: "mx.test"}).Authenticate(context.Background(), newRoute(good.Addr()), "alice\x00admin", "x"); ok {
		t.Error("a user name with NUL was relayed")
	}
}
