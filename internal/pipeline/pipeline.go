// Package pipeline defines the Check interface every per-transaction decision
// implements (blocklist, limits, relay domains, DNSBL, content scanners, ...)
// and the ordered chain the SMTP and policy front ends run. The order lives in
// one place: order.go.
package pipeline

import (
	"bytes"
	"context"
	"io"
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

// Content is a message as received (header and body, CRLF lines), readable
// at any offset and as often as needed. A large message lives mostly in a
// file (internal/msgbuf), so a check streams it (Reader) or reads what it
// needs (ReadAt, Header); none may load the whole of it into memory.
// *bytes.Reader is a Content, for tests.
type Content interface {
	io.ReaderAt
	Size() int64
}

// Message is the content handed to data checks.
type Message struct {
	Content Content
}

// Size is the message's length in bytes.
func (m *Message) Size() int64 { return m.Content.Size() }

// Reader returns a new reader of the whole message from its first byte.
func (m *Message) Reader() io.Reader { return io.NewSectionReader(m.Content, 0, m.Content.Size()) }

// Header returns the header section (RFC 5322 §2.1): the lines before the
// first empty line, with their line ends. complete is false when no empty
// line came within the first max bytes; hdr is then those bytes cut after
// their last line end, so a field may be missing but none is half there.
// A message without a body (no empty line at all) is all header.
func (m *Message) Header(max int) (hdr []byte, complete bool, err error) {
	n := int(min(int64(max), m.Content.Size()))
	b := make([]byte, n)
	if _, err := m.Content.ReadAt(b, 0); err != nil && err != io.EOF {
		return nil, false, err
	}
	for i := 0; i < len(b); {
		if b[i] == '\n' || (b[i] == '\r' && i+1 < len(b) && b[i+1] == '\n') {
			return b[:i], true, nil
		}
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			break
		}
		i += j + 1
	}
	if int64(n) == m.Content.Size() {
		return b, true, nil
	}
	return b[:bytes.LastIndexByte(b, '\n')+1], false, nil
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

// DataCheck runs at end of DATA, before the message is handed on. Its
// verdict refuses or defers the message, or passes it with headers, and
// says what it found (spam, virus) for the detection rules.
type DataCheck interface {
	Name() string
	CheckData(ctx context.Context, s *Session, m *Message) Verdict
}
