// Package pipeline defines the Check interface every per-transaction decision
// implements (blocklist, limits, relay domains, DNSBL, content scanners, ...)
// and the ordered chain the SMTP and policy front ends run. The order lives in
// one place: order.go.
package pipeline

import (
	"context"
	"net/netip"

	"mxguard/internal/address"
	"mxguard/internal/reply"
)

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
	// From and Rcpts are the envelope of the current transaction in
	// canonical form (address.Mailbox.String()): the sender ("" for the
	// null path) and the recipients accepted so far.
	From  string
	Rcpts []string
}

// MayRelay reports a client that may send to any domain: a trusted
// network or an authenticated user. Everyone else may only reach our
// domains, and only without routing in the address (RFC 5321 §3.6.2).
func (s *Session) MayRelay() bool { return s.Trusted || s.Account != "" }

// Message is the content handed to data checks.
type Message struct {
	Data []byte // full message as received (headers and body, CRLF lines)
}

// ConnectCheck runs when a connection is accepted, before the greeting.
type ConnectCheck interface {
	Name() string
	CheckConnect(ctx context.Context, s *Session) *reply.Reply
}

// RcptCheck runs for each RCPT TO before it is relayed downstream. The
// front end has parsed the recipient strictly (internal/address) before
// any check runs; a check never sees raw client text.
type RcptCheck interface {
	Name() string
	CheckRcpt(ctx context.Context, s *Session, rcpt address.Mailbox) *reply.Reply
}

// DataCheck runs at end of DATA, before the message is handed on.
type DataCheck interface {
	Name() string
	CheckData(ctx context.Context, s *Session, m *Message) *reply.Reply
}
