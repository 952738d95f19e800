package relay_test

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"mxguard/internal/relay"
	"mxguard/internal/smtpd"
	"mxguard/internal/testutil"
)

// noMail reports whether the server received no MAIL command.
func noMail(srv *testutil.FakeServer) bool {
	return !slices.ContainsFunc(srv.Lines(), func(l string) bool { return strings.HasPrefix(strings.ToUpper(l), "MAIL") })
}

// TestTLSWithoutSTARTTLS: a server without STARTTLS, or one that refuses
// it, gets no mail with delivery.tls: require — the transaction is
// deferred and the server counts a failure saying why, and nothing goes
// out in plaintext; with may the mail goes in plaintext. Data the server
// sends after its 220 to STARTTLS would be read as if it came over TLS:
// a protocol error in both modes.
func TestTLSWithoutSTARTTLS(t *testing.T) {
	for _, tc := range []struct {
		name   string
		script testutil.Script
		mode   relay.TLSMode
		want   string // in the failure; "" = delivered
	}{
		{"require, not offered", testutil.Script{}, relay.TLSRequire, "STARTTLS not offered"},
		{"require, refused", testutil.Script{"EHLO": "250-fake\n250 STARTTLS", "STARTTLS": "454 4.7.0 TLS not available"}, relay.TLSRequire, "454"},
		{"may, not offered", testutil.Script{}, relay.TLSMay, ""},
		{"may, refused", testutil.Script{"EHLO": "250-fake\n250 STARTTLS", "STARTTLS": "454 4.7.0 TLS not available"}, relay.TLSMay, ""},
		{"may, injected after 220", testutil.Script{"EHLO": "250-fake\n250 STARTTLS", "STARTTLS": "220 go ahead\n250 injected"}, relay.TLSMay, "after the 220 to STARTTLS"},
		{"none, offered", testutil.Script{"EHLO": "250-fake\n250 STARTTLS", "STARTTLS": "500 must not be asked"}, relay.TLSNone, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testutil.ScriptedSMTP(t, tc.script)
			r := relay.New(relay.Options{Hostname: "mx.test", TLS: tc.mode})
			defer r.Close()
			rt := newRoute(srv.Addr())
			_, err := send(t, r, rt)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("not delivered: %v", err)
				}
				if tc.mode == relay.TLSNone && slices.Contains(srv.Lines(), "STARTTLS") {
					t.Error("STARTTLS sent with delivery.tls: none")
				}
				return
			}
			if !errors.Is(err, relay.ErrUnavailable) {
				t.Fatalf("send: %v, want ErrUnavailable (a deferral)", err)
			}
			if f := rt.failures(); len(f) != 1 || !strings.Contains(f[0], tc.want) {
				t.Errorf("failures %q, want one saying %q", f, tc.want)
			}
			if !noMail(srv) {
				t.Errorf("MAIL sent anyway: %q", srv.Lines())
			}
			// The health check says the same.
			if err := r.Probe(t.Context(), srv.Addr(), 5*time.Second); tc.mode == relay.TLSRequire && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("Probe: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestTLSPostfix relays into a real Postfix that offers STARTTLS with a
// certificate made for the test (self-signed, so it only works because
// certificates are not verified): may and require deliver over TLS,
// none in plaintext, as Postfix's own log shows; health checks with
// require make the TLS handshake too. A Postfix without TLS fails
// require, checks included.
func TestTLSPostfix(t *testing.T) {
	dir := t.TempDir()
	if _, err := smtpd.LoadTLS("", "", dir, "postfix.example.test"); err != nil {
		t.Fatal(err)
	}
	pf := testutil.StartPostfix(t, testutil.PostfixOptions{Main: map[string]string{
		"smtpd_tls_security_level": "may",
		"smtpd_tls_cert_file":      filepath.Join(dir, "tls", "cert.pem"),
		"smtpd_tls_key_file":       filepath.Join(dir, "tls", "key.pem"),
		"smtpd_tls_loglevel":       "1",
	}})
	tlsSessions := func() int { return strings.Count(pf.Log(), "TLS connection established from") }
	delivered := 0
	for _, tc := range []struct {
		mode relay.TLSMode
		tls  bool
	}{{relay.TLSMay, true}, {relay.TLSRequire, true}, {relay.TLSNone, false}} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			before := tlsSessions()
			r := relay.New(relay.Options{Hostname: "mx.test", TLS: tc.mode})
			rt := newRoute(pf.Addr())
			if _, err := send(t, r, rt); err != nil {
				t.Fatalf("send: %v\n%s", err, pf.Log())
			}
			r.Close()
			delivered++
			pf.WaitDelivered(t, "alice@example.test", delivered, 30*time.Second)
			if got := tlsSessions() > before; got != tc.tls {
				t.Errorf("TLS session seen by Postfix: %v, want %v\n%s", got, tc.tls, pf.Log())
			}
		})
	}
	t.Run("check with require", func(t *testing.T) {
		before := tlsSessions()
		r := relay.New(relay.Options{Hostname: "mx.test", TLS: relay.TLSRequire})
		defer r.Close()
		if err := r.Probe(t.Context(), pf.Addr(), 10*time.Second); err != nil {
			t.Fatalf("Probe: %v\n%s", err, pf.Log())
		}
		if tlsSessions() == before {
			t.Errorf("the check made no TLS handshake:\n%s", pf.Log())
		}
	})
	t.Run("require without TLS", func(t *testing.T) {
		plain := testutil.StartPostfix(t, testutil.PostfixOptions{})
		r := relay.New(relay.Options{Hostname: "mx.test", TLS: relay.TLSRequire})
		defer r.Close()
		rt := newRoute(plain.Addr())
		if _, err := send(t, r, rt); !errors.Is(err, relay.ErrUnavailable) || !strings.Contains(err.Error(), "STARTTLS not offered") {
			t.Errorf("send to a Postfix without TLS: %v, want a deferral for want of STARTTLS", err)
		}
		if err := r.Probe(t.Context(), plain.Addr(), 10*time.Second); err == nil || !strings.Contains(err.Error(), "STARTTLS not offered") {
			t.Errorf("Probe: %v", err)
		}
		if strings.Contains(plain.Log(), "from=<") {
			t.Errorf("Postfix took a sender in plaintext:\n%s", plain.Log())
		}
	})
}
