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
// It reads the client's bytes as they arrive on the plaintext connection.
// After STARTTLS only ciphertext passes below go-smtp, so routes sent over
// TLS are dropped by go-smtp, never passed on, but not refused
// (internal/smtpd/README.md). Lines are assembled across reads, so a
// client sending a byte at a time is seen too; only the first
// maxRouteLine bytes of a line are kept, and at most maxRoutes routed
// recipients are remembered until the session's Rcpt takes them.
type routeWatch struct {
	line   []byte
	skip   bool     // the current line cannot be a RCPT command, or is too long
	routed []string // canonical mailboxes of routed RCPT commands, oldest first
}

const (
	maxRouteLine = 1024
	maxRoutes    = 64
)

// feed takes the bytes the client sent.
func (w *routeWatch) feed(b []byte) {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		seg := b
		if i >= 0 {
			seg = b[:i]
		}
		if len(w.line) == 0 && !w.skip && len(seg) > 0 && seg[0] != 'R' && seg[0] != 'r' {
			w.skip = true // the common case: no copy
		}
		if !w.skip {
			if len(w.line)+len(seg) > maxRouteLine {
				w.skip, w.line = true, w.line[:0]
			} else {
				w.line = append(w.line, seg...)
			}
		}
		if i < 0 {
			return
		}
		if !w.skip {
			w.check(w.line)
		}
		w.line, w.skip = w.line[:0], false
		b = b[i+1:]
	}
}

func (w *routeWatch) check(line []byte) {
	const verb = "RCPT TO:"
	line = bytes.TrimRight(line, "\r")
	if len(line) < len(verb) || !bytes.EqualFold(line[:len(verb)], []byte(verb)) {
		return
	}
	arg := bytes.TrimLeft(line[len(verb):], " ")
	if !bytes.HasPrefix(arg, []byte("<@")) {
		return
	}
	p, _, err := address.ParsePath(string(arg), address.Options{UTF8: true, Postmaster: true})
	if err != nil || len(p.Route) == 0 {
		return // go-smtp refuses it, or it is no route
	}
	if len(w.routed) == maxRoutes {
		w.routed = append(w.routed[:0], w.routed[1:]...)
	}
	w.routed = append(w.routed, p.Mailbox.String())
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
