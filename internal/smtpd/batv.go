package smtpd

import (
	"slices"
	"strings"
	"sync"

	"mxguard/internal/address"
	"mxguard/internal/batv"
	"mxguard/internal/detect"
	"mxguard/internal/reply"
)

// BATV (batv.key_file, internal/batv): the envelope sender of mail an
// authenticated account or a trusted host sends is signed with a prvs tag
// when it is one of our domains; a bounce (null sender) to one of our
// addresses must carry a valid tag, or it is backscatter from mail we
// never sent (550 5.7.1, counted toward backscatter); a valid tag is
// removed before the recipient goes downstream, whatever the sender.

// signSender tags m (the parsed MAIL FROM) when this session sends on
// behalf of the organisation, and remembers which account used it.
func (s *session) signSender(m address.Mailbox) address.Mailbox {
	o := &s.c.srv.o
	if o.BATV == nil || m.IsNull() || !s.local(m.Domain) || (s.account == "" && !s.c.ps.Trusted) {
		return m
	}
	if s.account != "" && o.Senders != nil {
		o.Senders.remember(m, s.account)
	}
	signed, _ := o.BATV.Sign(m)
	return signed
}

// checkBATV looks at a recipient: a valid tag is removed (out is the
// address without it); a bounce to a local address from a stranger
// without one is refused with r.
func (s *session) checkBATV(rcpt address.Mailbox) (out address.Mailbox, r *reply.Reply) {
	o := &s.c.srv.o
	if o.BATV == nil {
		return rcpt, nil
	}
	orig, res := o.BATV.Verify(rcpt)
	bounce := s.from.IsNull() && s.local(rcpt.Domain) && !s.c.ps.MayRelay() &&
		!strings.EqualFold(rcpt.Local, "postmaster") // RFC 5321 §4.5.1: postmaster takes everything
	switch {
	case res == batv.Valid && bounce:
		// A bounce of mail we sent: it counts for the account that sent it.
		if o.Senders != nil {
			if acct := o.Senders.account(orig); acct != "" && o.Detector != nil {
				o.Detector.Observe(detect.Observation{Kind: detect.KindBounce, Addr: s.c.addr, Account: acct, Service: o.Name,
					Text: "bounce (MAIL FROM:<>) to <" + orig.String() + "> (valid BATV tag)"})
			}
		}
		return orig, nil
	case res == batv.Valid:
		return orig, nil
	case bounce:
		why := map[batv.Result]string{batv.Untagged: "no BATV tag", batv.Expired: "expired BATV tag", batv.Forged: "forged BATV tag"}[res]
		r := reply.Backscatter.WithText("<" + rcpt.String() + ">: " + reply.Backscatter.Text + " (" + why + ")")
		if d := o.Detector; d != nil {
			d.Observe(detect.Observation{Kind: detect.KindBackscatter, Addr: s.c.addr, Service: o.Name, Refused: true,
				Text: "bounce (MAIL FROM:<>) " + rcptText(rcpt.String(), r.Error())})
		}
		return rcpt, r
	}
	return rcpt, nil
}

// local reports whether domain is one of ours (domains).
func (s *session) local(domain string) bool {
	return slices.Contains(s.c.set.Domains, domain)
}

// SenderAccounts remembers which account sent with which envelope sender,
// so a bounce to a tagged address counts toward that account's
// bounce_spammer rule. It is shared by the listeners (submission signs,
// the MX listener sees the bounces), in memory, bounded.
type SenderAccounts struct {
	mu  sync.Mutex
	m   map[string]string // sender address, lowercased -> account
	max int
}

// NewSenderAccounts returns a memory of at most max senders (default
// 100 000); past it, half is forgotten at random (Go's map order).
func NewSenderAccounts(max int) *SenderAccounts {
	if max <= 0 {
		max = 100_000
	}
	return &SenderAccounts{m: make(map[string]string), max: max}
}

func (a *SenderAccounts) remember(sender address.Mailbox, account string) {
	k := strings.ToLower(sender.String())
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.m[k]; !ok && len(a.m) >= a.max {
		n := 0
		for old := range a.m {
			delete(a.m, old)
			if n++; n >= a.max/2 {
				break
			}
		}
	}
	a.m[k] = account
}

// account is the account that last sent as sender, or the address itself
// when none is known (users who log in with their address).
func (a *SenderAccounts) account(sender address.Mailbox) string {
	k := strings.ToLower(sender.String())
	a.mu.Lock()
	defer a.mu.Unlock()
	if acct, ok := a.m[k]; ok {
		return acct
	}
	return detect.AccountName(k)
}
