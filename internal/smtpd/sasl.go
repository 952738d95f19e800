package smtpd

import (
	"bytes"
	"encoding/base64"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-sasl"

	"mxguard/internal/reply"
)

// The SASL mechanisms of the submission listener (RFC 4954): PLAIN (RFC
// 4616) and LOGIN (draft-murchison-sasl-login, what Outlook and many
// phones still use). Both carry a password in the clear, so they are
// offered only over TLS, or to trusted clients (INTERFACE.md §4).
//
// go-smtp decodes the base64 of each client line before a mechanism sees
// it; what it cannot decode it would answer itself with 454 4.7.0
// "Invalid base64 data" (go-smtp v0.25 and v0.26 conn.go handleAuth), so
// conn rewrites such lines first (saslLine). "*" (the client cancelling)
// go-smtp answers 501 5.0.0. Everything after decoding is checked here
// and refused with a 5xx of RFC 4954 §6.
const (
	mechPlain = "PLAIN"
	mechLogin = "LOGIN"
	// maxCredential bounds each of authzid, authcid and password (RFC 4616
	// §2: 255 octets each); past it the exchange is too long (500 5.5.6).
	maxCredential = 255
)

// saslSession is what a mechanism needs of the session: check decides a
// login once the name and password are known (nil for success, else the
// reply as an error: 535 5.7.8 wrong, 454 4.7.0 temporary, 421 when the
// source just got blocked); refuse turns a reply into an error.
type saslSession interface {
	check(user, password string) error
	refuse(r *reply.Reply) error
}

// plainServer is SASL PLAIN: message = [authzid] NUL authcid NUL passwd.
type plainServer struct {
	s       saslSession
	started bool
}

var _ sasl.Server = (*plainServer)(nil)

func (p *plainServer) Next(response []byte) ([]byte, bool, error) {
	if response == nil && !p.started {
		// No initial response: RFC 4954 §4, an empty challenge ("334 ").
		p.started = true
		return []byte{}, false, nil
	}
	authz, user, pw, r := parsePlain(response)
	if r != nil {
		return nil, true, p.s.refuse(r)
	}
	if authz != "" && authz != user {
		// Acting for another identity is not offered (RFC 4616 §2).
		return nil, true, p.s.refuse(&reply.AuthzDenied)
	}
	return nil, true, p.s.check(user, pw)
}

// parsePlain splits a PLAIN message (RFC 4616 §2) and checks its fields:
// exactly two NULs, authcid and passwd not empty, each field at most 255
// octets of UTF-8 without NUL.
func parsePlain(msg []byte) (authz, user, pw string, r *reply.Reply) {
	parts := bytes.Split(msg, []byte{0})
	if len(parts) != 3 {
		return "", "", "", &reply.AuthMalformed
	}
	for _, f := range parts {
		if len(f) > maxCredential {
			return "", "", "", &reply.AuthTooLong
		}
		if !utf8.Valid(f) {
			return "", "", "", &reply.AuthMalformed
		}
	}
	if len(parts[1]) == 0 || len(parts[2]) == 0 {
		return "", "", "", &reply.AuthMalformed
	}
	return string(parts[0]), string(parts[1]), string(parts[2]), nil
}

// loginServer is SASL LOGIN: "Username:" and "Password:" challenges, an
// initial response being the user name.
type loginServer struct {
	s    saslSession
	step int // 0 nothing yet, 1 asked for the user, 2 asked for the password
	user string
}

var _ sasl.Server = (*loginServer)(nil)

var (
	challengeUser     = []byte("Username:")
	challengePassword = []byte("Password:")
)

func (l *loginServer) Next(response []byte) ([]byte, bool, error) {
	switch l.step {
	case 0:
		if response == nil {
			l.step = 1
			return challengeUser, false, nil
		}
		fallthrough // the initial response is the user name
	case 1:
		if r := loginField(response); r != nil {
			return nil, true, l.s.refuse(r)
		}
		l.user, l.step = string(response), 2
		return challengePassword, false, nil
	default:
		if r := loginField(response); r != nil {
			return nil, true, l.s.refuse(r)
		}
		return nil, true, l.s.check(l.user, string(response))
	}
}

func loginField(f []byte) *reply.Reply {
	switch {
	case len(f) > maxCredential:
		return &reply.AuthTooLong
	case len(f) == 0 || bytes.IndexByte(f, 0) >= 0 || !utf8.Valid(f):
		return &reply.AuthMalformed
	}
	return nil
}

// RFC 4954 §4: a response (or initial response) that is not valid base64
// must be refused with 501. go-smtp decodes it before the mechanism sees
// it and answers 454 4.7.0 itself, so conn (input.go) rewrites such a line
// before go-smtp reads it to "=", the empty response: the mechanism then
// refuses it as malformed (AuthMalformed, 501 5.5.2), as it refuses an
// empty PLAIN message or LOGIN field. "*" (the client cancelling) stays
// as it is: go-smtp answers it 501 5.0.0. Neither counts toward
// brute_force: no credential was tried (the junk command limit bounds a
// client repeating them).

// saslLine is a SASL response line as go-smtp is to read it.
func saslLine(line []byte) []byte {
	s := bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	if string(s) == "*" || validSASL(s) {
		return line
	}
	return []byte("=\r\n")
}

// authLine rewrites an AUTH command whose initial response is not valid
// base64 (go-smtp's handleAuth: the second field).
func authLine(line []byte) ([]byte, bool) {
	verb, arg, ok := commandVerb(line)
	if !ok || !strings.EqualFold(verb, "AUTH") {
		return nil, false
	}
	f := strings.Fields(arg)
	if len(f) < 2 || validSASL([]byte(f[1])) {
		return nil, false
	}
	f[1] = "="
	return []byte("AUTH " + strings.Join(f, " ") + "\r\n"), true
}

// validSASL: what go-smtp's decodeSASLResponse decodes ("=" is empty).
func validSASL(s []byte) bool {
	if string(s) == "=" {
		return true
	}
	_, err := base64.StdEncoding.DecodeString(string(s))
	return err == nil
}
