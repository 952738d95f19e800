package smtpd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"mxguard/internal/address"
	"mxguard/internal/detect"
	"mxguard/internal/msgbuf"
	"mxguard/internal/pipeline"
	"mxguard/internal/recipients"
	"mxguard/internal/relay"
	"mxguard/internal/reply"
	"mxguard/internal/spool"
)

// backend creates a session per EHLO/HELO (go-smtp's model).
type backend struct{ s *Server }

func (b backend) NewSession(sc *smtp.Conn) (smtp.Session, error) {
	// go-smtp never runs TLS itself (its handshake is refused, conn runs
	// STARTTLS, starttls.go): its connection is always ours.
	c, ok := sc.Conn().(*conn)
	if !ok {
		return nil, errors.New("internal error: unknown connection type")
	}
	c.attach(sc)
	c.ps.Helo = sc.Hostname()
	c.live.setState(StateHelo)
	c.live.setHelo(c.ps.Helo)
	// A new session (the first EHLO, or the one after STARTTLS) starts
	// unauthenticated (RFC 3207 §4.2: forget what was learnt before TLS).
	c.ps.Account = ""
	return guard{&session{c: c}}, nil
}

// session is one EHLO-to-QUIT (or STARTTLS) span of a connection.
//
// mu serialises the session's methods: with BDAT (CHUNKING, which go-smtp
// always offers) Data runs on a goroutine of its own while RSET, QUIT or a
// disconnect call Reset or Logout; go-smtp ends the BDAT pipe first, so
// Data returns and the others wait only for that.
type session struct {
	mu sync.Mutex
	c  *conn
	// account is the authenticated login (submission), lowercased; empty
	// before AUTH.
	account string
	txn     *relay.Txn
	opts    relay.MailOptions
	from    address.Mailbox
	broken  bool // the downstream transaction was lost: defer until RSET
	// spooling: every server is down and this transaction goes to the
	// outage spool; recipients are checked locally only.
	spooling bool
	decided  bool
}

var _ smtp.Session = (*session)(nil)

// ctx is the connection's context: it ends when the client is gone or the
// server closes the session, and interrupts the downstream calls.
func (s *session) ctx() context.Context {
	if s.c.ctx == nil {
		return context.Background()
	}
	return s.c.ctx
}

// Mail starts a transaction. The downstream MAIL is sent with the first
// recipient that passes the checks, so a transaction whose recipients are
// all refused locally never occupies a downstream connection.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abort()
	if r := s.mayMail(); r != nil {
		s.c.log().Info("sender refused", "from", from, "reply", r.Error())
		return s.answer(r)
	}
	s.opts = relay.MailOptions{}
	if opts != nil {
		s.opts.Size = opts.Size
		s.opts.EightBit = opts.Body == smtp.Body8BitMIME
		s.opts.UTF8 = opts.UTF8
	}
	m, r := s.parseAddr(from, address.Options{UTF8: s.opts.UTF8, Null: true}, &reply.BadSenderSyntax)
	if r != nil {
		// go-smtp then has no transaction: RCPT gets 502 until a MAIL
		// is accepted.
		s.c.log().Info("sender refused", "from", from, "reply", r.Error())
		return s.answer(r)
	}
	// Checks see the sender as given; the downstream and the spool get
	// it signed (BATV) when we send for the organisation.
	s.from = s.signSender(m)
	s.c.ps.From = m.String()
	return nil
}

// parseAddr reads an address as go-smtp hands it to the session and
// applies the edge rules before any check sees it: no RFC 5321 §4.1.2
// address (or one over a §4.5.3.1 limit) gets bad (501 5.1.7 for a
// sender, 501 5.1.3 for a recipient), non-ASCII without SMTPUTF8 553 5.6.7
// (RFC 6531 §3.5), and routing in the local part (%, !, @) from a client
// that may not relay 554 5.7.1: a downstream that trusts us would act on
// it (Postfix's allow_percent_hack, swap_bangpath).
//
// go-smtp has already removed the quotes of a quoted local part and any
// source route (see internal/address/README.md); what reaches the
// downstream is written from the parsed Mailbox, re-quoted.
func (s *session) parseAddr(raw string, o address.Options, bad *reply.Reply) (address.Mailbox, *reply.Reply) {
	m, err := address.ParseUnquoted(raw, o)
	if err != nil {
		var ae *address.Error
		if errors.As(err, &ae) && ae.Kind == address.NeedUTF8 {
			return m, reply.NeedSMTPUTF8.With(err)
		}
		return m, bad.With(err)
	}
	if m.HasRouting() && !s.c.ps.MayRelay() {
		return m, reply.RoutingDenied.WithText("<" + m.String() + ">: " + reply.RoutingDenied.Text)
	}
	return m, nil
}

// Rcpt runs the recipient checks, then asks the downstream in the same
// session: its verdict is the client's verdict, and the recipients
// directory remembers it. While the downstream cannot be asked (every
// server down), the directory answers: recipients known not to exist get
// 550 5.1.1 even during the spool delay, so typos, forged-sender spam and
// a harvest are refused during an outage too.
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rcpt, r := s.parseAddr(to, address.Options{UTF8: s.opts.UTF8, Postmaster: true}, &reply.BadRcptSyntax)
	if r != nil {
		s.c.log().Info("recipient refused", "rcpt", to, "reply", r.Error())
		return s.reply(r, "refused")
	}
	// From here on only the canonical form is used: in the checks, the
	// downstream command, the spool, logs and replies.
	to = rcpt.String()
	if s.c.routes.take(to) && !s.c.ps.MayRelay() {
		r := reply.RoutingDenied.WithText("<" + to + ">: " + reply.RoutingDenied.Text + " (source route)")
		s.c.log().Info("recipient refused", "rcpt", to, "reply", r.Error())
		return s.reply(r, "refused")
	}
	rcpt, r = s.checkBATV(rcpt)
	if r != nil {
		s.c.log().Info("bounce refused", "rcpt", to, "reply", r.Error())
		return s.reply(r, "refused")
	}
	to = rcpt.String() // without a valid BATV tag
	if s.broken {
		return s.reply(&reply.ServersDown, "deferred")
	}
	if r := s.c.set.Chain.RunRcpt(s.ctx(), &s.c.ps, rcpt); r != nil {
		return s.refuse(to, r, "refused")
	}
	if !s.decided {
		// One decision per transaction, at its first acceptable
		// recipient: relay-denied recipients still get their 554 during
		// an outage.
		s.decided = true
		if sp := s.c.srv.o.Spooler; sp != nil {
			d := sp.Decide()
			switch d.Mode {
			case spool.ModeRefuse:
				s.decided = false
				if r := s.directory(rcpt, true); r != nil && !r.Temporary() {
					return s.refuse(to, r, "unknown")
				}
				s.c.log().Info("transaction deferred", "reply", d.Reply.Error())
				return s.reply(d.Reply, "deferred")
			case spool.ModeSpool:
				s.spooling = true
			}
		}
	}
	if r := s.directory(rcpt, s.spooling); r != nil {
		result := "unknown"
		if r.Temporary() {
			result = "deferred"
		}
		return s.refuse(to, r, result)
	}
	if s.spooling {
		return s.accept(to, "spooled")
	}
	s.c.watchHangup()
	stage, err := s.relayRcpt(rcpt)
	s.c.unwatchHangup()
	if d := s.c.srv.o.Directory; d != nil && stage == "RCPT" {
		d.Record(rcpt, recipients.VerdictOf(err))
	}
	if err != nil {
		if stage == "MAIL" {
			return s.downstreamError(stage, to, err)
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) && recipients.IsUnknownUser(se.Code, [3]int(se.EnhancedCode), se.Message) {
			r := reply.UnknownUser.WithText("<" + to + ">: Recipient address rejected: user unknown")
			text := rcptText(to, r.Error()) + " (downstream: " + downstreamLine(se) + ")"
			s.observeUnknown(text)
			s.observeAccount(detect.KindBounce, 1, text)
			s.c.log().Info("unknown recipient", "rcpt", to, "downstream", se.Message)
			return s.reply(r, "unknown")
		}
		return s.downstreamError("RCPT", to, err)
	}
	return s.accept(to, "accepted")
}

// accept adds the recipient to the transaction and counts it as result.
func (s *session) accept(to, result string) error {
	s.c.ps.Rcpts = append(s.c.ps.Rcpts, to)
	if m := s.c.srv.o.Metrics; m != nil {
		m.Recipients.WithLabelValues(result).Inc()
	}
	return nil
}

// relayRcpt asks the downstream about one recipient, beginning the
// downstream transaction first if needed; stage says which failed: "MAIL"
// for no connection or the downstream refusing the sender (its reply
// comes with the first RCPT), "RCPT" for the verdict on the recipient.
func (s *session) relayRcpt(to address.Mailbox) (stage string, err error) {
	if s.txn == nil {
		txn, err := s.c.srv.o.Relay.Begin(s.ctx(), s.from, s.opts)
		if err != nil {
			return "MAIL", err
		}
		s.txn = txn
	}
	err = s.txn.Rcpt(s.ctx(), to)
	if errors.Is(err, relay.ErrSenderRefused) {
		return "MAIL", err
	}
	return "RCPT", err
}

// directory asks the recipients directory about rcpt (see Directory).
func (s *session) directory(rcpt address.Mailbox, outage bool) *reply.Reply {
	if d := s.c.srv.o.Directory; d != nil {
		return d.Check(rcpt, outage)
	}
	return nil
}

// refuse answers a recipient with a refusal of ours (a check's or the
// directory's): "user unknown" counts toward directory_harvest.
func (s *session) refuse(to string, r *reply.Reply, result string) error {
	line := r.Error()
	if recipients.IsUnknownUser(r.Code, r.Enhanced, r.Text) {
		s.observeUnknown(rcptText(to, line))
	}
	s.c.log().Info("recipient refused", "rcpt", to, "reply", line)
	return s.reply(r, result)
}

// downstreamLine is the downstream's reply for evidence: "550 <x>: User
// unknown".
func downstreamLine(se *smtp.SMTPError) string { return strconv.Itoa(se.Code) + " " + se.Message }

// rcptText is the evidence of a refused recipient: the command and our
// reply, "RCPT TO:<guess17@example.test>: 550 5.1.1 ...".
func rcptText(to, reply string) string { return "RCPT TO:<" + to + ">: " + reply }

// observeUnknown counts an unknown recipient toward directory_harvest;
// text is the evidence (rcptText).
func (s *session) observeUnknown(text string) {
	if d := s.c.srv.o.Detector; d != nil {
		d.Observe(detect.Observation{Kind: detect.KindUnknownRecipient, Addr: s.c.addr, Service: s.c.srv.o.Name, Refused: true, Text: text})
	}
}

// observeAccount feeds the account rules of an authenticated session: n
// copies of a message sent (internal_spammer counts each recipient as a
// message, as n messages would count), or a delivery failure the
// downstream reported for the account's mail (bounce_spammer); text is
// the evidence.
func (s *session) observeAccount(k detect.Kind, n int, text string) {
	d := s.c.srv.o.Detector
	if d == nil || s.account == "" {
		return
	}
	for range n {
		d.Observe(detect.Observation{Kind: k, Addr: s.c.addr, Account: s.account, Service: s.c.srv.o.Name, Text: text})
	}
}

// observeMessage feeds mailbomb with a message that got the answer of
// the downstream, a check or the spool; one that met our own temporary
// failure is not counted (INTERFACE.md §3). result is what became of it
// (the engine adds the size to the evidence).
func (s *session) observeMessage(size int64, result string) {
	if d := s.c.srv.o.Detector; d != nil {
		d.Observe(detect.Observation{Kind: detect.KindMessage, Addr: s.c.addr, Service: s.c.srv.o.Name, Size: size, Text: s.messageText(result)})
	}
}

// messageText is the evidence of a message: its envelope and what became
// of it, "MAIL FROM:<a@example.net> (2 recipients): relayed".
func (s *session) messageText(result string) string {
	rcpts := " recipients): "
	if len(s.c.ps.Rcpts) == 1 {
		rcpts = " recipient): "
	}
	return "MAIL FROM:<" + s.c.ps.From + "> (" + strconv.Itoa(len(s.c.ps.Rcpts)) + rcpts + result
}

// observeVerdict reports what a content check found to the spam_attack
// and virus_outbreak rules; refused (a 554) adds to an active event's
// impact. Spam passed with a header (rspamd's "add header") counts toward
// the rule but is no impact. result is what became of the message.
func (s *session) observeVerdict(class pipeline.Class, refused bool, result string) {
	d := s.c.srv.o.Detector
	if d == nil {
		return
	}
	var kind detect.Kind
	switch class {
	case pipeline.ClassSpam:
		kind = detect.KindSpam
	case pipeline.ClassVirus:
		kind = detect.KindVirus
	default:
		return
	}
	d.Observe(detect.Observation{Kind: kind, Addr: s.c.addr, Service: s.c.srv.o.Name, Refused: refused, Text: s.messageText(result)})
}

// downstreamError maps a downstream failure to the client's reply: the
// downstream's own SMTP reply passes through; a lost connection or an
// unreachable server is a temporary failure (451 4.4.1), never a 5xx.
func (s *session) downstreamError(stage, to string, err error) error {
	if se, ok := relay.Verdict(err); ok {
		s.c.log().Info("downstream refused", "stage", stage, "rcpt", to, "code", se.Code, "text", se.Message)
		if se.Code/100 == 5 && s.account != "" {
			s.observeAccount(detect.KindBounce, 1, "downstream refused "+stage+" for <"+to+">: "+downstreamLine(se))
		}
		if stage == "MAIL" && s.txn != nil {
			// The downstream refused the sender; the transaction did
			// not start there, and its connection goes back to the pool.
			s.txn.Abort()
			s.txn = nil
		}
		s.noteTrouble(se)
		return se
	}
	if s.txn != nil || stage != "MAIL" {
		s.broken = true
	}
	s.txn = nil
	switch {
	case s.ctx().Err() != nil:
		// The client left (or the server is closing): nobody reads
		// this reply, and the downstream is not to blame.
		s.c.log().Info("downstream call ended: client gone", "stage", stage, "err", err)
	case errors.Is(err, relay.ErrLocal):
		// Out of file descriptors or ports here: the servers are not
		// down, the fault is ours (relay logs and counts it).
		return s.reply(reply.InternalError.With(err), "deferred")
	default:
		s.c.log().Warn("downstream failed", "stage", stage, "err", err)
	}
	return s.reply(&reply.ServersDown, "deferred")
}

// reply answers a recipient with r and counts it.
func (s *session) reply(r *reply.Reply, result string) error {
	if m := s.c.srv.o.Metrics; m != nil {
		m.Recipients.WithLabelValues(result).Inc()
	}
	return s.answer(r)
}

// answer turns r into go-smtp's reply. Our own temporary failure marks
// the connection: it then counts toward no sender rule.
func (s *session) answer(r *reply.Reply) error {
	if ownFailure(r) {
		s.c.ownFail.Store(true)
	}
	return s.smtpError(r)
}

// ownFailure reports mxguard's own temporary failures: the outage (451
// 4.4.1: every server down, the spool delay, a suspended spool, a
// downstream lost mid-transaction, or known_only deferring an unseen
// recipient), a full spool (452 4.3.1) and an internal error (451 4.3.0).
// They say nothing about the sender (INTERFACE.md §3): a legitimate
// sender retrying through an outage must never be blocked for it.
func ownFailure(r *reply.Reply) bool {
	if !r.Temporary() {
		return false
	}
	switch r.Enhanced {
	case reply.ServersDown.Enhanced, reply.SpoolFull.Enhanced, reply.InternalError.Enhanced:
		return true
	}
	return false
}

// noteTrouble marks the connection when the downstream's verdict se is
// a temporary failure of its own mail system or network (RFC 3463 X.3.x,
// X.4.x: "452 4.3.1 Insufficient system storage", "451 4.3.0 queue file
// write error"). Passed through, it reaches the sender as ours, and like
// our own it says nothing about the sender (INTERFACE.md §3): a sender
// retrying through it must count toward no sender rule.
func (s *session) noteTrouble(se *smtp.SMTPError) bool {
	if !systemTrouble(se) {
		return false
	}
	s.c.ownFail.Store(true)
	return true
}

// smtpError is r as go-smtp's reply; a 421 closes the session after it.
func (s *session) smtpError(r *reply.Reply) error {
	if r.Close || r.Code == 421 {
		s.c.closeNext = true
	}
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Enhanced), Message: r.Text}
}

// Data receives the message into a buffer that spills to disk past its
// first part (internal/msgbuf), runs the content checks on it, hands it
// downstream or into the spool streaming from that buffer, and answers 250
// only after the downstream's 250 or the spool's fsync.
func (s *session) Data(r io.Reader) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c
	buf := c.srv.o.Buffers.NewBuffer()
	defer buf.Close()
	if _, err := buf.ReadFrom(r); err != nil {
		s.abort()
		s.countMsg("rejected")
		switch {
		case errors.Is(err, smtp.ErrDataTooLarge):
			return s.answer(&reply.TooBig)
		case errors.Is(err, smtp.ErrTooLongLine):
			r := reply.Content
			r.Enhanced, r.Text = [3]int{5, 6, 0}, "Message has a line longer than 64 KiB"
			return s.answer(&r)
		case errors.Is(err, smtp.ErrDataReset):
			return err // BDAT ended by RSET: go-smtp answers it
		case errors.Is(err, msgbuf.ErrStorage):
			// Our disk failed: a temporary failure; go-smtp reads and
			// drops the rest of the message before answering.
			c.log().Error("message not stored", "err", err)
			return s.answer(&reply.InternalError)
		}
		// The connection failed mid-message (or timed out): a temporary
		// failure, never the 554 go-smtp would make of a plain error. It
		// is the client's connection that failed, not us, so the session
		// is not exempt from the sender rules.
		c.log().Info("message not received", "err", err)
		return s.smtpError(&reply.InternalError)
	}
	size := buf.Size()
	if !s.spooling && (s.txn == nil || s.broken) {
		s.countMsg("deferred")
		return s.answer(&reply.ServersDown)
	}
	msg := &pipeline.Message{Content: buf}
	verdict := c.set.Chain.RunData(s.ctx(), &c.ps, msg)
	if rep := verdict.Reply; rep != nil {
		s.abort()
		s.countMsg("rejected")
		line := rep.Error()
		c.log().Info("message refused", "reply", line)
		if !ownFailure(rep) {
			s.observeMessage(size, line)
			s.observeVerdict(verdict.Class, !rep.Temporary(), line)
		}
		return s.answer(rep)
	}
	id := newID()
	// The verdict headers follow our Received line (RFC 5321 §4.4: the
	// trace field goes first).
	hdr := pipeline.AppendHeaders(s.received(id), verdict.Headers)
	// The sender's own fields of the names the checks add are dropped: a
	// forged "X-Spam-Status: No" never reaches the mailbox.
	body, bodySize, err := pipeline.WithoutFields(msg, pipeline.Names(verdict.Headers))
	if err != nil {
		s.abort()
		s.countMsg("deferred")
		c.log().Error("message not read back", "err", err)
		return s.answer(&reply.InternalError)
	}
	if s.spooling {
		s.observeVerdict(verdict.Class, false, "spooled with the verdict's headers")
		return s.spool(hdr, body, bodySize, size)
	}
	txn := s.txn
	s.txn = nil
	text, err := txn.Data(s.ctx(), hdr, body)
	if err != nil {
		if se, ok := relay.Verdict(err); ok {
			if !s.noteTrouble(se) {
				text := "downstream refused the message: " + downstreamLine(se)
				s.observeMessage(size, text)
				s.observeAccount(detect.KindBounce, 1, text)
			}
			s.countMsg("rejected")
			c.log().Info("downstream refused message", "code", se.Code, "text", se.Message)
			return se
		}
		s.countMsg("deferred")
		if errors.Is(err, relay.ErrBody) {
			// Our buffer could not be read back: nothing was delivered.
			c.log().Error("message not relayed", "err", err)
			return s.answer(&reply.InternalError)
		}
		c.log().Warn("downstream failed during DATA", "err", err)
		return s.answer(&reply.ServersDown)
	}
	s.accepted(size, len(s.c.ps.Rcpts), "relayed")
	s.observeVerdict(verdict.Class, false, "relayed with the verdict's headers")
	c.log().Info("relayed", "id", id, "from", s.from.String(), "rcpts", len(s.c.ps.Rcpts), "size", size, "server", txn.Server(), "downstream", text)
	s.c.ps.Rcpts = s.c.ps.Rcpts[:0]
	// A 250 from Data must carry our own text; go-smtp sends an
	// SMTPError's code verbatim.
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + id}
}

// spool writes the message durably into the outage spool: hdr (our
// Received line and the verdict headers), then body streamed from the
// message buffer (bodySize bytes; size is the message as received); 250
// only after the file and its directory were fsynced (INTERFACE.md §4).
func (s *session) spool(hdr []byte, body io.Reader, bodySize, size int64) error {
	c := s.c
	env := spool.Envelope{From: s.from.String(), Recipients: append([]string(nil), s.c.ps.Rcpts...), Source: c.addr.String()}
	id, err := c.srv.o.Spooler.Put(s.ctx(), env, int64(len(hdr))+bodySize, io.MultiReader(bytes.NewReader(hdr), body))
	s.abort()
	if errors.Is(err, spool.ErrFull) {
		s.countMsg("deferred")
		c.log().Warn("spool full", "size", size)
		return s.answer(&reply.SpoolFull)
	}
	if err != nil {
		s.countMsg("deferred")
		c.log().Error("spool write failed", "err", err)
		return s.answer(&reply.InternalError)
	}
	s.accepted(size, len(env.Recipients), "spooled")
	c.log().Info("spooled", "id", id, "from", env.From, "rcpts", len(env.Recipients), "size", size)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + id + " (servers unavailable, spooled)"}
}

// accepted records a message of size bytes for n recipients that got our
// 250 (result: relayed or spooled): mailbomb and internal_spammer see it,
// and the session is no bad session.
func (s *session) accepted(size int64, n int, result string) {
	s.observeMessage(size, result)
	if s.account != "" {
		s.observeAccount(detect.KindAccountMessage, n, s.messageText(result))
	}
	s.c.sentMessage.Store(true)
	s.countMsg(result)
}

// countMsg counts a message by direction: what an authenticated account
// sends is outbound, everything else inbound.
func (s *session) countMsg(result string) {
	if m := s.c.srv.o.Metrics; m != nil {
		dir := "inbound"
		if s.account != "" {
			dir = "outbound"
		}
		m.Message(dir, result)
	}
}

// received builds the trace header (RFC 5321 §4.4, RFC 3848 protocol
// names) prepended to the message.
func (s *session) received(id string) []byte {
	c := s.c
	proto := "ESMTP"
	if s.secure() {
		proto = "ESMTPS"
	}
	b := make([]byte, 0, 192+len(c.set.Hostname))
	b = append(b, "Received: from "...)
	b = appendPrintable(b, c.ps.Helo, address.MaxDomain)
	b = append(b, " (["...)
	if c.addr.Is6() {
		b = append(b, "IPv6:"...)
	}
	b = append(b, c.addr.String()...)
	b = append(b, "])\r\n\tby "...)
	b = append(b, c.set.Hostname...)
	b = append(b, " (mxguard) with "...)
	b = append(b, proto...)
	b = append(b, " id "...)
	b = append(b, id...)
	if len(s.c.ps.Rcpts) == 1 {
		b = append(b, "\r\n\tfor <"...)
		b = append(b, s.c.ps.Rcpts[0]...)
		b = append(b, '>')
	}
	b = append(b, "; "...)
	b = time.Now().AppendFormat(b, time.RFC1123Z)
	return append(b, "\r\n"...)
}

// appendPrintable appends the client's own text s (the HELO name: go-smtp
// passes on anything up to the first space, bare CR, NUL and 8-bit octets
// included) into a header, every octet outside printable ASCII replaced
// by '?' and at most max octets of it, as Postfix's smtpd does with its
// printable(): a bare CR is a line end to some MTAs, so it could forge a
// header after our trace line, and a NUL or a line over 998 octets (RFC
// 5322 §2.1.1) would get the message refused downstream.
func appendPrintable(b []byte, s string, max int) []byte {
	if s == "" {
		return append(b, "unknown"...)
	}
	if len(s) > max {
		s = s[:max]
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c > ' ' && c < 127 {
			b = append(b, c)
		} else {
			b = append(b, '?')
		}
	}
	return b
}

func newID() string {
	var b [6]byte
	rand.Read(b[:])
	return strings.ToUpper(hex.EncodeToString(b[:]))
}

// secure: the session runs over TLS, as the registry shows it. conn
// marks it (switchTLS) before the session after STARTTLS is made, never
// for the plaintext one; an atomic, since with BDAT Data (received) runs
// on another goroutine than conn's.
func (s *session) secure() bool { return s.c.live.secure.Load() }

// abort ends a downstream transaction the client gave up on.
func (s *session) abort() {
	if s.txn != nil {
		s.txn.Abort()
		s.txn = nil
	}
	s.broken = false
	s.spooling = false
	s.decided = false
	s.c.ps.Rcpts = s.c.ps.Rcpts[:0]
}

// Reset is RSET, a new EHLO, or the end of DATA. go-smtp makes no new
// session for a second EHLO (RFC 5321 §4.1.4), so the name is taken again
// here: the Received line and the checks see the current greeting.
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abort()
	if s.c.sc != nil {
		s.c.ps.Helo = s.c.sc.Hostname()
	}
}

// Logout ends the session (QUIT, disconnect, or STARTTLS).
func (s *session) Logout() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.abort()
	return nil
}
