package smtpd

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"mxguard/internal/reply"
)

// fakeSASL records the logins a mechanism asked to check.
type fakeSASL struct{ checked [][2]string }

func (f *fakeSASL) check(user, pw string) error {
	f.checked = append(f.checked, [2]string{user, pw})
	if pw == "secret" {
		return nil
	}
	return f.refuse(&reply.AuthFailed)
}

func (f *fakeSASL) refuse(r *reply.Reply) error {
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Enhanced), Message: r.Text}
}

// exchange runs a mechanism over client responses as go-smtp does: the
// first is the initial response (nil: none).
func exchange(m sasl.Server, responses ...[]byte) (challenges []string, err error) {
	var resp []byte
	if len(responses) > 0 {
		resp, responses = responses[0], responses[1:]
	}
	for i := 0; i < 10; i++ {
		ch, done, err := m.Next(resp)
		if done || err != nil {
			return challenges, err
		}
		challenges = append(challenges, string(ch))
		if len(responses) == 0 {
			return challenges, errors.New("client has nothing more to say")
		}
		resp, responses = responses[0], responses[1:]
	}
	return challenges, errors.New("exchange does not end")
}

func code(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestSASLPlain(t *testing.T) {
	long := strings.Repeat("a", 256)
	for _, tc := range []struct {
		name      string
		responses [][]byte
		code      int
		checked   string
	}{
		{"initial response", [][]byte{[]byte("\x00alice\x00secret")}, 0, "alice/secret"},
		{"after an empty challenge", [][]byte{nil, []byte("\x00alice\x00secret")}, 0, "alice/secret"},
		{"same authzid", [][]byte{[]byte("alice\x00alice\x00secret")}, 0, "alice/secret"},
		{"wrong password", [][]byte{[]byte("\x00alice\x00guess")}, 535, "alice/guess"},
		{"another authzid", [][]byte{[]byte("admin\x00alice\x00secret")}, 535, ""},
		{"one NUL", [][]byte{[]byte("alice\x00secret")}, 501, ""},
		{"three NULs", [][]byte{[]byte("\x00alice\x00sec\x00ret")}, 501, ""},
		{"no NUL", [][]byte{[]byte("alicesecret")}, 501, ""},
		{"empty user", [][]byte{[]byte("\x00\x00secret")}, 501, ""},
		{"empty password", [][]byte{[]byte("\x00alice\x00")}, 501, ""},
		{"empty message (=)", [][]byte{{}}, 501, ""},
		{"user over 255", [][]byte{[]byte("\x00" + long + "\x00secret")}, 500, ""},
		{"password over 255", [][]byte{[]byte("\x00alice\x00" + long)}, 500, ""},
		{"not UTF-8", [][]byte{[]byte("\x00al\xffice\x00secret")}, 501, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSASL{}
			_, err := exchange(&plainServer{s: f}, tc.responses...)
			if code(err) != tc.code || (err != nil && tc.code == 0) {
				t.Fatalf("err %v, want code %d", err, tc.code)
			}
			got := ""
			if len(f.checked) > 0 {
				got = f.checked[0][0] + "/" + f.checked[0][1]
			}
			if got != tc.checked || len(f.checked) > 1 {
				t.Errorf("checked %v, want %q", f.checked, tc.checked)
			}
		})
	}
}

func TestSASLLogin(t *testing.T) {
	for _, tc := range []struct {
		name       string
		responses  [][]byte
		challenges string
		code       int
		checked    string
	}{
		{"two challenges", [][]byte{nil, []byte("alice"), []byte("secret")}, "Username:|Password:", 0, "alice/secret"},
		{"user in the initial response", [][]byte{[]byte("alice"), []byte("secret")}, "Password:", 0, "alice/secret"},
		{"wrong password", [][]byte{nil, []byte("alice"), []byte("guess")}, "Username:|Password:", 535, "alice/guess"},
		{"empty user", [][]byte{nil, {}}, "Username:", 501, ""},
		{"NUL in user", [][]byte{nil, []byte("ali\x00ce")}, "Username:", 501, ""},
		{"empty password", [][]byte{[]byte("alice"), {}}, "Password:", 501, ""},
		{"long password", [][]byte{[]byte("alice"), bytes.Repeat([]byte("p"), 256)}, "Password:", 500, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSASL{}
			ch, err := exchange(&loginServer{s: f}, tc.responses...)
			if code(err) != tc.code || (err != nil && tc.code == 0) {
				t.Fatalf("err %v, want code %d", err, tc.code)
			}
			if got := strings.Join(ch, "|"); got != tc.challenges {
				t.Errorf("challenges %q, want %q", got, tc.challenges)
			}
			got := ""
			if len(f.checked) > 0 {
				got = f.checked[0][0] + "/" + f.checked[0][1]
			}
			if got != tc.checked {
				t.Errorf("checked %v, want %q", f.checked, tc.checked)
			}
		})
	}
}

// FuzzSASL runs both mechanisms over arbitrary client responses (as
// go-smtp hands them, decoded): an exchange always ends, with a reply of
// RFC 4954 §6, and only a well-formed name and password are ever checked.
func FuzzSASL(f *testing.F) {
	f.Add(true, []byte("\x00alice\x00secret"), []byte{}, []byte{})
	f.Add(false, []byte{}, []byte("alice"), []byte("secret"))
	f.Add(true, []byte("a\x00b\x00c\x00d"), []byte("\xff"), []byte{})
	f.Fuzz(func(t *testing.T, plain bool, r1, r2, r3 []byte) {
		fs := &fakeSASL{}
		var m sasl.Server = &loginServer{s: fs}
		if plain {
			m = &plainServer{s: fs}
		}
		if len(r1) == 0 {
			r1 = nil // no initial response
		}
		_, err := exchange(m, r1, r2, r3)
		switch c := code(err); {
		case err == nil, c == 535, c == 501, c == 500:
		case err.Error() == "client has nothing more to say":
		default:
			t.Fatalf("exchange ended with %v", err)
		}
		if len(fs.checked) > 1 {
			t.Fatalf("checked %d times", len(fs.checked))
		}
		for _, c := range fs.checked {
			for _, s := range c {
				if s == "" || len(s) > maxCredential || !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
					t.Fatalf("checked %q", c)
				}
			}
		}
	})
}

// FuzzSASLLines: whatever line a client sends as an AUTH response or
// AUTH command, go-smtp gets one it can decode (or "*"), and a line it
// could decode is never changed.
func FuzzSASLLines(f *testing.F) {
	f.Add([]byte("dGVzdA==\r\n"))
	f.Add([]byte("AUTH PLAIN !!!\r\n"))
	f.Add([]byte("*\r\n"))
	f.Fuzz(func(t *testing.T, line []byte) {
		if bytes.Count(line, []byte("\n")) > 1 {
			return // conn frames one line at a time
		}
		out := saslLine(line)
		s := bytes.TrimSuffix(bytes.TrimSuffix(out, []byte("\n")), []byte("\r"))
		if !validSASL(s) && string(s) != "*" {
			t.Errorf("saslLine(%q) = %q, which go-smtp cannot decode", line, out)
		}
		if in := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r")); validSASL(in) && !bytes.Equal(out, line) {
			t.Errorf("saslLine changed the valid %q to %q", line, out)
		}
		if a, ok := authLine(line); ok {
			f := strings.Fields(string(a))
			if len(f) < 3 || f[2] != "=" || !strings.HasSuffix(string(a), "\r\n") {
				t.Errorf("authLine(%q) = %q", line, a)
			}
		}
	})
}
