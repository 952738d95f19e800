package policyd

import (
	"bytes"
	"context"
	"net/netip"
	"strconv"

	"mxguard/internal/address"
	"mxguard/internal/detect"
	"mxguard/internal/pipeline"
	"mxguard/internal/recipients"
	"mxguard/internal/reply"
)

// service is the Service of every observation: Postfix's smtpd is an
// SMTP listener like mxguard's own.
const service = "smtp"

// verdict is an answer: the action as sent and its metric label.
type verdict struct {
	action []byte
	label  string
}

// verdictOf renders a reply as a Postfix access(5) action, "CODE X.Y.Z
// text". Postfix puts its own context before the text ("<rcpt>: Recipient
// address rejected: text", captured in ../shared/samples), so the texts
// name no address.
func verdictOf(r *reply.Reply) verdict {
	v := verdict{action: r.Line()}
	switch {
	case r.Code == 421:
		v.label = label421
	case r.Code >= 500:
		v.label = labelReject
	default:
		v.label = labelDefer
	}
	return v
}

// The answers. DUNNO lets the next restriction decide (access(5)).
var (
	dunno      = verdict{action: []byte("DUNNO"), label: labelDunno}
	badRequest = verdict{action: []byte("DUNNO"), label: labelBadRequest}
	// blocked: Postfix answers the SMTP client "421 4.7.0 <rcpt>:
	// Recipient address rejected: Service refused: ..." and disconnects.
	blocked = verdictOf(&reply.Blocked)
	// unknownUser: "550 5.1.1 <rcpt>: Recipient address rejected: User
	// unknown", as Postfix's own local_recipient_maps would say it.
	unknownUser = verdictOf(reply.UnknownUser.WithText("User unknown").By("recipients"))
	suspended   = verdictOf(&reply.Suspended)
)

// maxAccountMessages bounds the observations one END-OF-MESSAGE makes for
// an account (one per recipient, as the submission listener counts).
const maxAccountMessages = 1000

// session is what the connection knows of the SMTP session its requests
// are about. Postfix sends no request when a session ends, so a session
// ends, for mxguard, when a request of another session arrives on the same
// connection (smtpd serves one session at a time), or when the connection
// closed and no new one took the session over (parked.go).
type session struct {
	active    bool
	id        []byte // client_address, client_port, server_address, server_port
	addr      netip.Addr
	protected bool // trusted_networks or allowlist
	// refusal answers every request of the session: a connect check
	// refused the client (a DNSBL listing; a 421 ends it anyway).
	refusal *verdict
	// refused: mxguard refused the client (blocked); its session counts
	// toward nothing more.
	refused bool
	// accepted are the recipients mxguard did not refuse, unknown those
	// it refused as unknown; messages the END-OF-MESSAGE requests.
	accepted, unknown, messages int
	// instance is the transaction whose message was last counted (its
	// END-OF-MESSAGE, or a suspended account's refusal), so a repeat
	// counts once.
	instance []byte
}

// judge answers one request.
func (c *conn) judge(ctx context.Context, r *Request) verdict {
	if string(r.Kind) != "smtpd_access_policy" {
		return badRequest
	}
	addr, err := netip.ParseAddr(string(r.ClientAddress))
	if err != nil || addr.Zone() != "" {
		// Postfix always sends the client's address; without one there
		// is nobody to judge. DUNNO: Postfix's own restrictions decide.
		return badRequest
	}
	addr = addr.Unmap()
	// The same SMTP event asked again right away comes from a second
	// check_policy_service in another restriction list (with
	// smtpd_delay_reject, every list is evaluated at RCPT): the same
	// answer, counted once.
	c.key = eventKey(c.key[:0], r)
	if bytes.Equal(c.key, c.lastKey) {
		return c.lastVerdict
	}
	v := c.decide(ctx, addr, r)
	c.lastKey = append(c.lastKey[:0], c.key...)
	c.lastVerdict = v
	return v
}

func eventKey(b []byte, r *Request) []byte {
	// Values hold no control characters (ReadRequest), so 0 separates
	// them unambiguously.
	for _, f := range [...][]byte{r.StateName, r.ClientAddress, r.ClientPort, r.ServerAddress, r.ServerPort,
		r.Instance, r.Sender, r.Recipient, r.SASLUsername} {
		b = append(b, f...)
		b = append(b, 0)
	}
	return strconv.AppendInt(b, r.Size, 10)
}

func (c *conn) decide(ctx context.Context, addr netip.Addr, r *Request) verdict {
	e := c.s.o.Engine
	if !c.sameSession(r) {
		c.endSession()
		if v, done := c.startSession(ctx, addr, r); done {
			return v
		}
	}
	s := &c.sess
	if s.refusal != nil {
		return *s.refusal
	}
	// A block that came during the session (this client's harvest
	// crossing its threshold, another node's, an operator's) refuses its
	// next request, as the SMTP listener refuses the next command.
	if !s.protected && e.Blocked(addr) {
		e.Refused(addr)
		s.refused = true
		return blocked
	}
	var account string
	if len(r.SASLUsername) > 0 {
		account = detect.AccountName(string(r.SASLUsername))
		if e.Suspended(account) {
			if c.newMessage(r) {
				e.Observe(detect.Observation{Kind: detect.KindAccountMessage, Addr: addr, Account: account,
					Service: service, Refused: true, Text: "Postfix policy: message of a suspended account: 550 5.7.1"})
			}
			return suspended
		}
	}
	switch r.State {
	case stateRcpt:
		return c.recipient(addr, r, true)
	case stateVrfy:
		return c.recipient(addr, r, false)
	case stateEOM:
		c.message(addr, r, account)
	}
	return dunno
}

// recipient judges the address of RCPT TO (rcpt) or VRFY: one the
// recipients directory knows to be unknown gets 550 5.1.1 and counts
// toward directory_harvest (probing by VRFY is harvesting too).
func (c *conn) recipient(addr netip.Addr, r *Request, rcpt bool) verdict {
	s := &c.sess
	if d := c.s.o.Directory; d != nil && len(r.Recipient) > 0 {
		m, err := address.ParseUnquoted(string(r.Recipient), address.Options{UTF8: true, Postmaster: true})
		if err == nil && d.Lookup(m).Verdict == recipients.Unknown {
			s.unknown++
			c.s.o.Engine.Observe(detect.Observation{Kind: detect.KindUnknownRecipient, Addr: addr, Service: service, Refused: true,
				Text: "Postfix policy RCPT <" + m.String() + ">: 550 5.1.1 User unknown"})
			c.log.Debug("policy: unknown recipient", "client", addr, "rcpt", m.String())
			return unknownUser
		}
	}
	if rcpt {
		s.accepted++
	}
	return dunno
}

// message counts the message of an END-OF-MESSAGE request: its size for
// mailbomb, and for an authenticated client one message per recipient for
// internal_spammer. Postfix decides after this answer; mxguard counts
// what was about to be accepted.
func (c *conn) message(addr netip.Addr, r *Request, account string) {
	if !c.newMessage(r) {
		return
	}
	c.sess.messages++
	e := c.s.o.Engine
	if r.Size >= 0 {
		e.Observe(detect.Observation{Kind: detect.KindMessage, Addr: addr, Service: service, Size: r.Size,
			Text: "Postfix policy END-OF-MESSAGE"})
	}
	if account != "" {
		n := min(max(r.RecipientCount, 1), maxAccountMessages)
		for range n {
			e.Observe(detect.Observation{Kind: detect.KindAccountMessage, Addr: addr, Account: account, Service: service,
				Text: "Postfix policy END-OF-MESSAGE (sasl_username)"})
		}
	}
}

// newMessage reports whether r's transaction (instance) has not had its
// message counted yet, and marks it counted. Without an instance every
// request is new.
func (c *conn) newMessage(r *Request) bool {
	s := &c.sess
	if len(r.Instance) > 0 && bytes.Equal(r.Instance, s.instance) {
		return false
	}
	s.instance = append(s.instance[:0], r.Instance...)
	return true
}

func (c *conn) sameSession(r *Request) bool {
	id := c.sess.id
	if !c.sess.active {
		return false
	}
	for _, f := range [...][]byte{r.ClientAddress, r.ClientPort, r.ServerAddress, r.ServerPort} {
		if len(id) < len(f)+1 || !bytes.Equal(id[:len(f)], f) || id[len(f)] != 0 {
			return false
		}
		id = id[len(f)+1:]
	}
	return len(id) == 0
}

// startSession begins a new SMTP session: the connection counts toward
// dos, unless the client is refused at once (blocked: 421; blocklisted by
// address or host name). done means v is the answer.
func (c *conn) startSession(ctx context.Context, addr netip.Addr, r *Request) (v verdict, done bool) {
	e := c.s.o.Engine
	id := c.sess.id[:0]
	for _, f := range [...][]byte{r.ClientAddress, r.ClientPort, r.ServerAddress, r.ServerPort} {
		id = append(id, f...)
		id = append(id, 0)
	}
	if old, ok := c.s.adopt(id); ok {
		// The session went on over this new connection: counted already.
		c.sess = old
		return verdict{}, false
	}
	c.sess = session{active: true, id: id, addr: addr, protected: e.Protected(addr), instance: c.sess.instance[:0]}
	s := &c.sess
	if !s.protected && e.Blocked(addr) {
		// A blocked source's attempt is impact of its event, not new
		// evidence (internal/detect "For front ends").
		e.Refused(addr)
		s.refused = true
		return blocked, true
	}
	if set := c.s.set.Load(); set.Connect != nil {
		trusted := inAny(set.Trusted, addr)
		ps := pipeline.Session{Listener: "policy", Addr: addr, Trusted: trusted, Allowlisted: s.protected && !trusted}
		if ref := set.Connect.RunConnect(ctx, &ps); ref != nil {
			rv := verdictOf(ref)
			if ref.Code == 421 {
				// Blocked or blocklisted: refused, not counted (as the
				// SMTP listener refuses at connect).
				s.refused = true
				return rv, true
			}
			// A DNSBL listing: the connection counts toward dos, and
			// every request of the session gets the listing.
			s.refusal = &rv
			s.refused = true
		}
	}
	e.Observe(detect.Observation{Kind: detect.KindConnect, Addr: addr, Service: service, Text: "Postfix policy: new SMTP session"})
	return verdict{}, false
}

// endSession ends the current session: a request of another session
// came on the connection (smtpd serves one session at a time).
func (c *conn) endSession() {
	if c.sess.active {
		c.s.judgeEnded(&c.sess)
		c.sess.active = false
	}
}
