// Package pipeline defines the Check interface every per-transaction decision
// implements (blocklist, limits, relay domains, DNSBL, content scanners, ...)
// and the ordered chain the SMTP and policy front ends run. The order lives in
// one place: order.go.
package pipeline

import (
	"context"
	"fmt"
	"net/netip"
)

// Reply is a client-visible SMTP answer (RFC 5321 §4.2, RFC 3463 enhanced
// codes). A check returns one to refuse; Cause carries the internal reason
// for the log and is never shown to the client.
type Reply struct {
	Code     int
	Enhanced [3]int
	Text     string
	Cause    error
	// Close asks the front end to close the connection after the reply
	// (421 replies always close).
	Close bool
}

func (r *Reply) Error() string {
	s := fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2], r.Text)
	if r.Cause != nil {
		s += ": " + r.Cause.Error()
	}
	return s
}

func (r *Reply) Unwrap() error { return r.Cause }

// Temporary reports whether the reply is a 4xx.
func (r *Reply) Temporary() bool { return r.Code >= 400 && r.Code < 500 }

// Replies of INTERFACE.md §4. Texts are fixed; checks may copy and change Text.
var (
	ReplyBlocked       = Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Service refused: your address is temporarily blocked", Close: true}
	ReplyBlocklisted   = Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Service refused: your address is blocklisted", Close: true}
	ReplyTooManyConns  = Reply{Code: 421, Enhanced: [3]int{4, 7, 0}, Text: "Too many connections from your address", Close: true}
	ReplyBusy          = Reply{Code: 421, Enhanced: [3]int{4, 3, 2}, Text: "Too many connections, try again later", Close: true}
	ReplyRelayDenied   = Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Relay access denied"}
	ReplyUnknownUser   = Reply{Code: 550, Enhanced: [3]int{5, 1, 1}, Text: "Recipient address rejected: user unknown"}
	ReplyTooBig        = Reply{Code: 552, Enhanced: [3]int{5, 3, 4}, Text: "Message size exceeds fixed limit"}
	ReplyTooManyRcpts  = Reply{Code: 452, Enhanced: [3]int{4, 5, 3}, Text: "Too many recipients"}
	ReplyContent       = Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Message content rejected"}
	ReplyServersDown   = Reply{Code: 451, Enhanced: [3]int{4, 4, 1}, Text: "Mail servers temporarily unavailable, try again later"}
	ReplySpoolFull     = Reply{Code: 452, Enhanced: [3]int{4, 3, 1}, Text: "Insufficient system storage, try again later"}
	ReplyAuthFailed    = Reply{Code: 535, Enhanced: [3]int{5, 7, 8}, Text: "Authentication credentials invalid"}
	ReplySuspended     = Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Account suspended"}
	ReplyInternalError = Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Text: "Temporary local problem, try again later"}
)

// With returns a copy of r carrying cause for the log.
func (r Reply) With(cause error) *Reply {
	r.Cause = cause
	return &r
}

// Session is what checks see of an SMTP (or policy) session and its current
// transaction. Front ends fill it; checks only read it.
type Session struct {
	Listener string     // "smtp", "submission", "policy"
	Addr     netip.Addr // client address (after PROXY protocol)
	Helo     string
	Account  string // authenticated user, if any
	// Trusted is set for trusted_networks; Allowlisted for the allowlist.
	Trusted     bool
	Allowlisted bool
	From        string   // envelope sender of the current transaction
	Rcpts       []string // accepted recipients so far
}

// Message is the content handed to data checks.
type Message struct {
	Data []byte // full message as received (headers and body, CRLF lines)
}

// ConnectCheck runs when a connection is accepted, before the greeting.
type ConnectCheck interface {
	Name() string
	CheckConnect(ctx context.Context, s *Session) *Reply
}

// RcptCheck runs for each RCPT TO before it is relayed downstream.
type RcptCheck interface {
	Name() string
	CheckRcpt(ctx context.Context, s *Session, rcpt string) *Reply
}

// DataCheck runs at end of DATA, before the message is handed on.
type DataCheck interface {
	Name() string
	CheckData(ctx context.Context, s *Session, m *Message) *Reply
}
