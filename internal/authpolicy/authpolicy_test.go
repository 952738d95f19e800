package authpolicy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/detect"
	"mxguard/internal/metrics"
)

// captured is one request of testdata/dovecot-authpolicy-*.txt, real
// traffic of Dovecot 2.3.19.1 (copied from ../shared/samples).
type captured struct {
	file, command, apiKey, body string
}

func loadCaptures(t *testing.T) []captured {
	t.Helper()
	files, err := filepath.Glob("testdata/dovecot-authpolicy-*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no captures: %v", err)
	}
	var out []captured
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var cur *captured
		for line := range strings.SplitSeq(string(b), "\n") {
			switch {
			case strings.HasPrefix(line, "=== "):
				out = append(out, captured{file: filepath.Base(f)})
				cur = &out[len(out)-1]
			case cur == nil:
			case strings.HasPrefix(line, "POST /?command="):
				cur.command = strings.Fields(strings.TrimPrefix(line, "POST /?command="))[0]
			case strings.HasPrefix(line, "X-API-Key: "):
				cur.apiKey = strings.TrimPrefix(line, "X-API-Key: ")
			case strings.HasPrefix(line, "{"):
				cur.body = line
			}
		}
	}
	for _, c := range out {
		if c.command == "" || c.body == "" || c.apiKey == "" {
			t.Fatalf("%s: incomplete capture %+v", c.file, c)
		}
	}
	return out
}

func answerOf(t *testing.T, body string) Answer {
	t.Helper()
	var a Answer
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		t.Fatalf("answer %q is not {status, msg}: %v", body, err)
	}
	return a
}

// Every captured request, replayed byte for byte, gets the answer Dovecot
// expects; only failed password checks become observations.
func TestCapturedTraffic(t *testing.T) {
	caps := loadCaptures(t)
	eng := newFakeEngine()
	s, err := New(Options{Engine: eng, APIKey: "testkey123"})
	if err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, serve(t, s))
	var wantObs []detect.Observation
	for _, cp := range caps {
		code, body := c.do(t, dovecotRequest(cp.command, cp.apiKey, cp.body))
		if code != 200 {
			t.Fatalf("%s %s: HTTP %d %s", cp.file, cp.command, code, body)
		}
		a := answerOf(t, body)
		if cp.command == "allow" && a.Status != statusAllow {
			t.Errorf("%s allow of an unblocked source: status %d, want 0", cp.file, a.Status)
		}
		var req Request
		if err := json.Unmarshal([]byte(cp.body), &req); err != nil {
			t.Fatal(err)
		}
		if cp.command == "report" && !req.Success && !req.PolicyReject {
			wantObs = append(wantObs, detect.Observation{Kind: detect.KindAuthFailure,
				Addr: netip.MustParseAddr(req.Remote), Account: req.Login, Service: req.Protocol,
				Password: eng.DovecotPasswordKey(req.Login, req.PWHash), Refused: true,
				Text: req.Protocol + ` login "` + req.Login + `": authentication failed (Dovecot auth policy report)`})
		}
	}
	got := eng.observations()
	for _, o := range got {
		// The evidence names the login, never the password's hash.
		for _, cp := range caps {
			var req Request
			if json.Unmarshal([]byte(cp.body), &req) == nil && req.PWHash != "" && strings.Contains(o.Text, req.PWHash) {
				t.Errorf("evidence text %q carries the password hash", o.Text)
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(wantObs) || len(wantObs) == 0 {
		t.Errorf("observations:\n got %v\nwant %v", got, wantObs)
	}
}

// A blocked source gets -1 on every service; the refusal counts as impact
// once (at allow), and the report that echoes it (policy_reject) adds no
// failure.
func TestBlockedSourceEveryService(t *testing.T) {
	eng := newFakeEngine("127.0.0.7")
	s, _ := New(Options{Engine: eng})
	c := dialRaw(t, serve(t, s))
	for _, proto := range []string{"imap", "pop3", "sieve", "submission"} {
		body := fmt.Sprintf(`{"device_id":"","login":"alice","protocol":%q,"pwhash":"0fff","remote":"127.0.0.7","session_id":"x","tls":false}`, proto)
		code, resp := c.do(t, dovecotRequest("allow", "", body))
		if a := answerOf(t, resp); code != 200 || a.Status != statusReject || a.Msg == "" {
			t.Errorf("%s allow from a blocked source: HTTP %d %+v, want 200 status -1 with a message", proto, code, a)
		}
		report := strings.Replace(body, `"tls"`, `"success":false,"policy_reject":true,"tls"`, 1)
		if code, resp := c.do(t, dovecotRequest("report", "", report)); code != 200 {
			t.Errorf("report: HTTP %d %s", code, resp)
		}
	}
	// Another source is not affected.
	code, resp := c.do(t, dovecotRequest("allow", "", `{"login":"alice","protocol":"imap","remote":"127.0.0.8"}`))
	if a := answerOf(t, resp); code != 200 || a.Status != statusAllow {
		t.Errorf("allow from 127.0.0.8: HTTP %d %+v, want status 0", code, a)
	}
	if got := eng.refusals(); len(got) != 4 {
		t.Errorf("refusals counted: %v, want 4 (one per allow)", got)
	}
	if got := eng.observations(); len(got) != 0 {
		t.Errorf("policy rejections counted as failures: %v", got)
	}
}

func TestAPIKey(t *testing.T) {
	eng := newFakeEngine("127.0.0.7")
	m := metrics.New()
	s, _ := New(Options{Engine: eng, APIKey: "testkey123", Metrics: m})
	c := dialRaw(t, serve(t, s))
	failure := `{"login":"alice","protocol":"imap","pwhash":"093a","remote":"127.0.0.7","success":false,"policy_reject":false}`
	for _, key := range []string{"", "wrong", "testkey1234", "TESTKEY123"} {
		for _, cmd := range []string{"allow", "report"} {
			code, body := c.do(t, dovecotRequest(cmd, key, failure))
			if code != 401 || !strings.Contains(body, `"error"`) {
				t.Errorf("key %q %s: HTTP %d %s, want 401 with an error", key, cmd, code, body)
			}
		}
	}
	if len(eng.observations()) != 0 || len(eng.refusals()) != 0 {
		t.Errorf("requests with a wrong key were counted: %v %v", eng.observations(), eng.refusals())
	}
	if got := testutil.ToFloat64(m.PolicyRequests.WithLabelValues("dovecot", "unauthorized")); got != 8 {
		t.Errorf("unauthorized requests counted %v, want 8", got)
	}
	// The right key, same connection: counted.
	if code, body := c.do(t, dovecotRequest("report", "testkey123", failure)); code != 200 {
		t.Fatalf("right key: HTTP %d %s", code, body)
	}
	if len(eng.observations()) != 1 {
		t.Errorf("observations with the right key: %v, want 1", eng.observations())
	}
	// A reload changes the key.
	s.Reconfigure("newkey", nil)
	if code, _ := c.do(t, dovecotRequest("allow", "testkey123", failure)); code != 401 {
		t.Errorf("old key after Reconfigure: HTTP %d, want 401", code)
	}
	if code, _ := c.do(t, dovecotRequest("allow", "newkey", failure)); code != 200 {
		t.Errorf("new key after Reconfigure: HTTP %d, want 200", code)
	}
}

// Bad requests get a clear 4xx, count nothing, and leave the connection
// usable (except 413, whose body is not read).
func TestBadRequests(t *testing.T) {
	eng := newFakeEngine()
	s, _ := New(Options{Engine: eng})
	addr := serve(t, s)
	good := dovecotRequest("report", "", `{"login":"alice","protocol":"imap","remote":"127.0.0.9","success":false}`)
	for _, tc := range []struct {
		name, raw string
		code      int
		errPart   string
	}{
		{"GET", "GET /?command=allow HTTP/1.1\r\nHost: x\r\n\r\n", 405, "POST"},
		{"no command", dovecotRequest("", "", `{}`), 400, "command"},
		{"unknown command", dovecotRequest("delete", "", `{}`), 400, "command"},
		{"not JSON", dovecotRequest("allow", "", `login=alice`), 400, "not JSON"},
		{"truncated JSON", dovecotRequest("allow", "", `{"login":"alice","protocol":"im`), 400, "JSON"},
		{"trailing garbage", dovecotRequest("allow", "", `{"protocol":"imap"} {}`), 400, "JSON"},
		{"array", dovecotRequest("allow", "", `[1,2]`), 400, "JSON object"},
		{"null", dovecotRequest("allow", "", `null`), 400, "protocol"},
		{"login a number", dovecotRequest("allow", "", `{"login":7,"protocol":"imap"}`), 400, "login"},
		{"success a string", dovecotRequest("report", "", `{"protocol":"imap","success":"false"}`), 400, "success"},
		{"remote not an IP", dovecotRequest("allow", "", `{"protocol":"imap","remote":"mail.example.net"}`), 400, "remote"},
		{"remote with zone", dovecotRequest("allow", "", `{"protocol":"imap","remote":"fe80::1%eth0"}`), 400, "remote"},
		{"remote CIDR", dovecotRequest("allow", "", `{"protocol":"imap","remote":"10.0.0.0/8"}`), 400, "remote"},
		{"no protocol", dovecotRequest("allow", "", `{"login":"alice","remote":"127.0.0.9"}`), 400, "protocol"},
		{"protocol with space", dovecotRequest("allow", "", `{"protocol":"im ap","remote":"127.0.0.9"}`), 400, "protocol"},
		{"protocol too long", dovecotRequest("allow", "", `{"protocol":"`+strings.Repeat("a", 33)+`"}`), 400, "protocol"},
		{"pwhash too long", dovecotRequest("allow", "", `{"protocol":"imap","pwhash":"`+strings.Repeat("0", 129)+`"}`), 400, "pwhash"},
		{"invalid UTF-8 in JSON", dovecotRequest("allow", "", "{\"protocol\":\"imap\",\"login\":\"\xff\"}"), 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, addr)
			code, body := c.do(t, tc.raw)
			if code != tc.code || !strings.Contains(body, tc.errPart) {
				t.Fatalf("HTTP %d %s, want %d containing %q", code, body, tc.code, tc.errPart)
			}
			if code == 200 {
				return
			}
			// The same connection still serves a good request.
			if code, body := c.do(t, good); code != 200 {
				t.Fatalf("next request on the connection: HTTP %d %s", code, body)
			}
		})
	}
	if got := len(eng.observations()); got != 17 {
		t.Errorf("observations: %d, want 17 (only the good reports)", got)
	}
}

func TestOversizedBodies(t *testing.T) {
	eng := newFakeEngine()
	s, _ := New(Options{Engine: eng})
	addr := serve(t, s)
	big := `{"protocol":"imap","login":"` + strings.Repeat("a", MaxBody) + `"}`
	t.Run("Content-Length", func(t *testing.T) {
		c := dialRaw(t, addr)
		// Only the head is sent: the server must answer without waiting
		// for a body it will not read.
		head := fmt.Sprintf("POST /?command=allow HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(big))
		code, body := c.do(t, head)
		if code != 413 {
			t.Fatalf("HTTP %d %s, want 413", code, body)
		}
	})
	t.Run("chunked", func(t *testing.T) {
		c := dialRaw(t, addr)
		raw := fmt.Sprintf("POST /?command=allow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(big), big)
		code, body := c.do(t, raw)
		if code != 413 {
			t.Fatalf("HTTP %d %s, want 413", code, body)
		}
	})
	t.Run("at the limit", func(t *testing.T) {
		c := dialRaw(t, addr)
		exact := `{"protocol":"imap","x":"` + strings.Repeat("a", MaxBody-len(`{"protocol":"imap","x":""}`)) + `"}`
		if len(exact) != MaxBody {
			t.Fatalf("test body %d bytes", len(exact))
		}
		if code, body := c.do(t, dovecotRequest("allow", "", exact)); code != 200 {
			t.Fatalf("HTTP %d %s, want 200", code, body)
		}
	})
	if len(eng.observations()) != 0 {
		t.Errorf("observations: %v", eng.observations())
	}
}

// fixedListener hands out connections whose RemoteAddr claims to be peer.
type fixedListener struct {
	net.Listener
	peer *net.TCPAddr
}

func (l *fixedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &peerConn{Conn: c, peer: l.peer}, nil
}

type peerConn struct {
	net.Conn
	peer net.Addr
}

func (c *peerConn) RemoteAddr() net.Addr { return c.peer }

// Only loopback and trusted peers are served; anyone else is disconnected
// before a byte is read or written.
func TestPeers(t *testing.T) {
	for _, tc := range []struct {
		peer    string
		trusted []netip.Prefix
		served  bool
	}{
		{"192.0.2.1", nil, false},
		{"192.0.2.1", []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, true},
		{"198.51.100.1", []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, false},
		{"2001:db8::1", nil, false},
		{"::ffff:192.0.2.1", []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}, true},
		{"::1", nil, true},
	} {
		t.Run(tc.peer, func(t *testing.T) {
			eng := newFakeEngine()
			m := metrics.New()
			s, _ := New(Options{Engine: eng, Trusted: tc.trusted, Metrics: m})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			fl := &fixedListener{Listener: ln, peer: net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(tc.peer), 4000))}
			done := make(chan struct{})
			ctx, cancel := context.WithCancel(context.Background())
			go func() { _ = s.Serve(ctx, fl); close(done) }()
			t.Cleanup(func() { cancel(); <-done })

			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := conn.Write([]byte(dovecotRequest("allow", "", `{"protocol":"imap","remote":"127.0.0.9"}`))); err != nil && tc.served {
				t.Fatal(err)
			}
			line, err := bufio.NewReader(conn).ReadString('\n')
			if tc.served {
				if !strings.HasPrefix(line, "HTTP/1.1 200") {
					t.Fatalf("trusted peer: %q %v", line, err)
				}
				return
			}
			if line != "" || err == nil {
				t.Fatalf("refused peer got %q (err %v), want the connection closed with nothing written", line, err)
			}
			if got := testutil.ToFloat64(m.PolicyRequests.WithLabelValues("dovecot", "peer_refused")); got != 1 {
				t.Errorf("peer_refused = %v, want 1", got)
			}
		})
	}
}
