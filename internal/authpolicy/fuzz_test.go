package authpolicy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// seedBodies are the captured request bodies plus hostile variants.
func seedBodies(f *testing.F) []string {
	files, _ := filepath.Glob("testdata/dovecot-authpolicy-*.txt")
	var out []string
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if strings.HasPrefix(line, "{") {
				out = append(out, line)
			}
		}
	}
	if len(out) == 0 {
		f.Fatal("no captured bodies in testdata")
	}
	return append(out,
		`{"login":"`+strings.Repeat("A", 300)+`","protocol":"IMAP","remote":"::ffff:127.0.0.1","success":false}`,
		`{"login":"a\u0000b","protocol":"pop3","remote":"2001:db8::1"}`,
		`{"protocol":"imap","remote":"127.0.0.1","nested":{"a":[1,2,{"b":null}]}}`,
		`{"protocol":"imap","protocol":"pop3"}`,
		`{"protocol":"imap","remote":"1.2.3.4.5"}`,
		`{"protocol":"imap","remote":"fe80::1%lo"}`,
		`{"success":1}`, `[]`, `null`, `"x"`, `{`, ``, "\xff\xfe",
		`{"protocol":"imap"}`+strings.Repeat(" ", 100)+`x`,
		strings.Repeat("[", 20000)+strings.Repeat("]", 20000),
	)
}

func FuzzParseRequest(f *testing.F) {
	for _, b := range seedBodies(f) {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		p, err := ParseRequest(body)
		if err != nil {
			if p != nil {
				t.Fatal("error with a result")
			}
			return
		}
		if !validProtocol(p.Service) {
			t.Fatalf("service %q accepted", p.Service)
		}
		if len(p.Account) > 256 || !utf8.ValidString(p.Account) || p.Account != strings.ToLower(p.Account) {
			t.Fatalf("account %q kept", p.Account)
		}
		if p.Addr.IsValid() && (p.Addr.Is4In6() || p.Addr.Zone() != "") {
			t.Fatalf("address %v kept", p.Addr)
		}
	})
}

// FuzzServeHTTP feeds whole requests (head and body) to the handler: every
// one gets a well-formed answer of a known status, and a 200 is Dovecot's
// {"status", "msg"}.
func FuzzServeHTTP(f *testing.F) {
	for _, b := range seedBodies(f) {
		for _, cmd := range []string{"allow", "report"} {
			f.Add([]byte(dovecotRequest(cmd, "testkey123", b)))
		}
	}
	f.Add([]byte(dovecotRequest("allow", "wrong", `{}`)))
	f.Add([]byte("GET /?command=allow HTTP/1.1\r\nHost: x\r\nX-API-Key: testkey123\r\n\r\n"))
	f.Add([]byte("POST /x?command=report&command=allow HTTP/1.1\r\nHost: x\r\nX-API-Key: testkey123\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n0\r\n\r\n"))
	eng := newFakeEngine("127.0.0.7")
	s, err := New(Options{Engine: eng, APIKey: "testkey123"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return // net/http answers 400 itself before the handler
		}
		w := httptest.NewRecorder()
		s.ServeHTTP(w, req)
		switch w.Code {
		case 200:
			var a Answer
			if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil || (a.Status != statusAllow && a.Status != statusReject) || a.Msg == "" {
				t.Fatalf("200 with %q", w.Body.String())
			}
		case 400, 401, 405, 413:
			var e struct{ Error string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%d with %q", w.Code, w.Body.String())
			}
		default:
			t.Fatalf("status %d", w.Code)
		}
		if w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("content type %q", w.Header().Get("Content-Type"))
		}
	})
}
