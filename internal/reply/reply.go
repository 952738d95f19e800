// Package reply is the client-visible SMTP answer (RFC 5321 §4.2, RFC 3463
// enhanced status codes) that checks, the spool and the front ends give.
// A Reply knows which check made it, so metrics and logs can be labelled
// by check without comparing reply text; the internal cause travels with
// it for the log and never reaches the client.
package reply

import (
	"fmt"
	"log/slog"
	"strconv"
)

// Reply is one SMTP reply line.
type Reply struct {
	Code     int
	Enhanced [3]int
	Text     string
	// Check names the check or component that made the reply
	// ("blocklist", "relay_domains", "spool", ...); empty for replies of
	// the front end itself.
	Check string
	// Cause is the internal reason, for the log; never shown to the client.
	Cause error
	// Close asks the front end to close the connection after the reply
	// (421 replies always close).
	Close bool
}

func (r *Reply) Error() string {
	s := string(r.Line())
	if r.Cause != nil {
		s += ": " + r.Cause.Error()
	}
	return s
}

// Unwrap returns the internal cause.
func (r *Reply) Unwrap() error { return r.Cause }

// Temporary reports whether the reply is a 4xx.
func (r *Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

// Line renders the reply as the client sees it, without CRLF:
// "554 5.7.1 Relay access denied".
func (r *Reply) Line() []byte {
	b := make([]byte, 0, 16+len(r.Text))
	b = strconv.AppendInt(b, int64(r.Code), 10)
	if r.Enhanced[0] != 0 {
		b = fmt.Appendf(b, " %d.%d.%d", r.Enhanced[0], r.Enhanced[1], r.Enhanced[2])
	}
	b = append(b, ' ')
	return append(b, r.Text...)
}

// With returns a copy of r carrying cause for the log.
func (r Reply) With(cause error) *Reply {
	r.Cause = cause
	return &r
}

// WithText returns a copy of r with another text (an address in the
// text, say); code, enhanced code and check stay.
func (r Reply) WithText(text string) *Reply {
	r.Text = text
	return &r
}

// By returns a copy of r attributed to check.
func (r Reply) By(check string) *Reply {
	r.Check = check
	return &r
}

// Fields are the slog attributes of r: code, enhanced code, check and
// the internal cause.
func (r *Reply) Fields() []any {
	f := []any{
		slog.Int("code", r.Code),
		slog.String("enhanced", fmt.Sprintf("%d.%d.%d", r.Enhanced[0], r.Enhanced[1], r.Enhanced[2])),
	}
	if r.Check != "" {
		f = append(f, slog.String("check", r.Check))
	}
	if r.Cause != nil {
		f = append(f, slog.String("cause", r.Cause.Error()))
	}
	return f
}

// The replies of INTERFACE.md §4. Texts are fixed; use WithText, With or
// By for a variant, never change these.
var (
	Blocked       = Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Service refused: your address is temporarily blocked", Close: true}
	Blocklisted   = Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Service refused: your address is blocklisted", Close: true}
	TooManyConns  = Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Too many connections from your address", Close: true}
	Busy          = Reply{Code: 421, Enhanced: [3]int{4, 3, 2}, Text: "Too many connections, try again later", Close: true}
	Timeout       = Reply{Code: 421, Enhanced: [3]int{4, 4, 2}, Text: "Error: timeout exceeded, closing connection", Close: true}
	SessionTime   = Reply{Code: 421, Enhanced: [3]int{4, 4, 2}, Text: "Error: session time limit exceeded, closing connection", Close: true}
	TooManyErrors = Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Error: too many errors, closing connection", Close: true}
	JunkCommands  = Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Error: too many commands without mail, closing connection", Close: true}
	BadSequence   = Reply{Code: 503, Enhanced: [3]int{5, 5, 1}, Text: "Error: access denied, send QUIT"}
	Listed        = Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Service unavailable; client blocked using a DNS block list"}
	RelayDenied   = Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Relay access denied"}
	UnknownUser   = Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "Recipient address rejected: user unknown"}
	TooBig        = Reply{Code: 552, Enhanced: [3]int{5, 3, 4}, Text: "Message size exceeds fixed limit"}
	Content       = Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Message content rejected"}
	ContentDefer  = Reply{Code: 451, Enhanced: [3]int{4, 7, 1}, Text: "Message deferred by the content filter, try again later"}
	ServersDown   = Reply{Code: 451, Enhanced: [3]int{4, 4, 1}, Text: "Mail servers temporarily unavailable, try again later"}
	SpoolFull     = Reply{Code: 452, Enhanced: [3]int{4, 3, 1}, Text: "Insufficient system storage, try again later"}
	AuthFailed    = Reply{Code: 535, Enhanced: [3]int{5, 7, 8}, Text: "Authentication credentials invalid"}
	Suspended     = Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Account suspended"}
	// Backscatter: a bounce to one of our addresses without our BATV tag:
	// we never sent what it bounces.
	Backscatter   = Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Bounce refused: we did not send the message it answers"}
	InternalError = Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Text: "Temporary local problem, try again later"}
)

// Replies of the submission listener's AUTH (RFC 4954 §6, §4).
var (
	// AuthRequired: MAIL before AUTH on the submission listener.
	AuthRequired = Reply{Code: 530, Enhanced: [3]int{5, 7, 0}, Text: "Authentication required"}
	// StartTLSFirst: AUTH before STARTTLS from an untrusted client (AUTH
	// is not advertised to it either).
	StartTLSFirst = Reply{Code: 530, Enhanced: [3]int{5, 7, 0}, Text: "Must issue a STARTTLS command first"}
	// AuthTemporary: the check could not be made now (too many logins in
	// flight, the delivery servers' AUTH unavailable).
	AuthTemporary = Reply{Code: 454, Enhanced: [3]int{4, 7, 0}, Text: "Temporary authentication failure, try again later"}
	// AuthMalformed: a decoded response that is no valid message of the
	// mechanism (RFC 4616 §2 for PLAIN).
	AuthMalformed = Reply{Code: 501, Enhanced: [3]int{5, 5, 2}, Text: "Malformed authentication response"}
	// AuthTooLong: a name or password over 255 octets (RFC 4616 §2).
	AuthTooLong = Reply{Code: 500, Enhanced: [3]int{5, 5, 6}, Text: "Authentication exchange line is too long"}
	// AuthMechanism: a mechanism other than PLAIN and LOGIN.
	AuthMechanism = Reply{Code: 504, Enhanced: [3]int{5, 5, 4}, Text: "Unrecognized authentication type"}
	// AuthzDenied: a PLAIN authorization identity other than the user.
	AuthzDenied = Reply{Code: 535, Enhanced: [3]int{5, 7, 8}, Text: "Authorization identity not allowed"}
	// AuthNotOffered: AUTH on the MX listener, which never offers it.
	AuthNotOffered = Reply{Code: 502, Enhanced: [3]int{5, 5, 1}, Text: "Authentication not available here; use the submission port"}
	// AuthTwice: AUTH after a successful AUTH (RFC 4954 §4).
	AuthTwice = Reply{Code: 503, Enhanced: [3]int{5, 5, 1}, Text: "Already authenticated"}
)

// ReadyTLS answers STARTTLS (RFC 3207 §4), given by smtpd itself, which
// runs the TLS layer below go-smtp.
var ReadyTLS = Reply{Code: 220, Enhanced: [3]int{2, 0, 0}, Text: "Ready to start TLS"}

// Replies about envelope addresses (internal/address, RFC 5321 §4.1.2).
var (
	// RoutingDenied: an untrusted client's address with routing in the
	// local part (%, !, @) that a downstream would relay on.
	RoutingDenied = Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Relay access denied: address routing not allowed"}
	// BadRcptSyntax and BadSenderSyntax: no RFC 5321 §4.1.2 address, or
	// one over a §4.5.3.1 limit (RFC 3463 X.1.3 and X.1.7; Postfix's texts).
	BadRcptSyntax   = Reply{Code: 501, Enhanced: [3]int{5, 1, 3}, Text: "Bad recipient address syntax"}
	BadSenderSyntax = Reply{Code: 501, Enhanced: [3]int{5, 1, 7}, Text: "Bad sender address syntax"}
	// NeedSMTPUTF8: a non-ASCII address without SMTPUTF8 (RFC 6531 §3.5).
	NeedSMTPUTF8 = Reply{Code: 553, Enhanced: [3]int{5, 6, 7}, Text: "Must declare SMTPUTF8 to send unicode address"}
)
