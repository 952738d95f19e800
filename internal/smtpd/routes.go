package smtpd

import (
	"bytes"

	"mxguard/internal/address"
)

// routeWatch notices source routes (RFC 5321 §4.1.2 A-d-l,
// "<@relay.test:user@example.test>") in RCPT TO commands. go-smtp drops a
// route before the session sees the address, so without this an
// untrusted client's routed recipient would be taken as the plain
// mailbox; INTERFACE.md §4 refuses it with 554 5.7.1, as a strict edge
// should (RFC 5321 §3.6.1 lets a server decline routed addresses).
//
// It sees the client's command lines as conn frames them (input.go):
// message data is never read as commands. After STARTTLS go-smtp's TLS
// layer sits above conn, so routes sent over TLS are dropped by go-smtp,
// never passed on, but not refused (internal/smtpd/README.md). At most
// maxRoutes routed recipients are remembered until the session's Rcpt
// takes them.
type routeWatch struct {
	routed []string // canonical mailboxes of routed RCPT commands, oldest first
}

const maxRoutes = 64

// check reads line the way go-smtp does (parseCmd, handleRcpt,
// parser.parsePath): a verb of four letters in any case, one space, then
// any white space around "TO:" and the path. go-smtp skips a route up to
// the first ':' whatever it holds, so a route is noted whenever the path
// starts with "<@" (or "@": go-smtp's brackets are optional), and the
// mailbox after it is read as go-smtp reads it:
// a route with no valid domain (an address literal, an underscore) is
// dropped by go-smtp just as silently as a valid one.
func (w *routeWatch) check(line []byte) {
	arg, ok := rcptPath(line)
	if !ok {
		return
	}
	// go-smtp's '<' is optional (parser.parsePath): "TO:@relay:user@x"
	// is a routed path to it too.
	arg = bytes.TrimPrefix(arg, []byte("<"))
	if !bytes.HasPrefix(arg, []byte("@")) {
		return
	}
	i := bytes.IndexByte(arg, ':')
	if i < 0 {
		return // go-smtp refuses it
	}
	raw, ok := goSMTPMailbox(arg[i+1:])
	if !ok {
		return
	}
	m, err := address.ParseUnquoted(raw, address.Options{UTF8: true, Postmaster: true})
	if err != nil {
		return // the session refuses it
	}
	if len(w.routed) == maxRoutes {
		w.routed = append(w.routed[:0], w.routed[1:]...)
	}
	w.routed = append(w.routed, m.String())
}

// rcptPath is what follows "TO:" in a RCPT command line, as go-smtp reads
// it (parseCmd, handleRcpt): a verb of four letters in any case, one
// space, then any white space around "TO:" and the path; ok is false for
// any other line.
func rcptPath(line []byte) (arg []byte, ok bool) {
	line = bytes.TrimRight(line, "\r\n")
	if len(line) < 6 || !bytes.EqualFold(line[:4], []byte("RCPT")) || line[4] != ' ' {
		return nil, false
	}
	arg = bytes.TrimSpace(line[5:])
	if len(arg) < 3 || !bytes.EqualFold(arg[:3], []byte("TO:")) {
		return nil, false
	}
	return bytes.TrimSpace(arg[3:]), true
}

// goSMTPMailbox is the mailbox at the start of b as go-smtp v0.25.1 hands
// it to Session.Rcpt (parser.parseMailbox): a quoted local part unquoted
// (a backslash escapes any octet), or a dot-string up to the '@', then the
// domain up to a space, tab or '>'.
func goSMTPMailbox(b []byte) (string, bool) {
	var out []byte
	i := 0
	if i < len(b) && b[i] == '"' {
		for i++; ; i++ {
			if i >= len(b) {
				return "", false
			}
			c := b[i]
			if c == '"' {
				i++
				break
			}
			if c == '\\' {
				if i++; i >= len(b) {
					return "", false
				}
				c = b[i]
			}
			out = append(out, c)
		}
	} else {
		for ; i < len(b) && b[i] != '@'; i++ {
			if bytes.IndexByte([]byte("()<>[]:;\\,\" \t"), b[i]) >= 0 {
				return "", false
			}
			out = append(out, b[i])
		}
	}
	if len(out) == 0 || i >= len(b) || b[i] != '@' {
		return "", false
	}
	j := i + 1
	for j < len(b) && b[j] != ' ' && b[j] != '\t' && b[j] != '>' {
		j++
	}
	return string(append(out, b[i:j]...)), true
}

// take reports whether the RCPT for mailbox carried a route, forgetting
// that one and any older ones (commands go-smtp refused before the
// session saw them).
func (w *routeWatch) take(mailbox string) bool {
	for i, m := range w.routed {
		if m == mailbox {
			w.routed = append(w.routed[:0], w.routed[i+1:]...)
			return true
		}
	}
	return false
}

// postmasterLine rewrites "RCPT TO:<Postmaster>" (any case, white space
// as go-smtp allows it) to the postmaster of domain. RFC 5321 §4.1.1.3
// says a server MUST accept the bare form, which names its own
// postmaster; go-smtp's parser wants a domain and would answer 501
// 5.5.2. The mailbox the session then sees is postmaster@domain, the
// first of `domains`; ESMTP parameters after the path stay as they were.
func postmasterLine(line []byte, domain string) ([]byte, bool) {
	const pm = "<postmaster>"
	if domain == "" {
		return nil, false
	}
	arg, ok := rcptPath(line)
	if !ok || len(arg) < len(pm) || !bytes.EqualFold(arg[:len(pm)], []byte(pm)) {
		return nil, false
	}
	rest := arg[len(pm):]
	if len(rest) > 0 && rest[0] != ' ' && rest[0] != '\t' {
		return nil, false // go-smtp refuses what is glued to the path
	}
	out := make([]byte, 0, len(line)+len(domain)+8)
	out = append(out, "RCPT TO:<postmaster@"...)
	out = append(out, domain...)
	out = append(out, '>')
	out = append(out, rest...)
	return append(out, "\r\n"...), true
}
