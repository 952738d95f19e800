package smtpd

import (
	"context"
	"errors"
	"strconv"

	"github.com/emersion/go-sasl"

	"mxguard/internal/detect"
	"mxguard/internal/reply"
)

// The submission listener (listen.submission, RFC 6409): a Server whose
// Options carry an Authenticator offers AUTH PLAIN and LOGIN, over TLS or
// to trusted clients only, and takes mail only from authenticated (or
// trusted) clients, to any domain. The MX listener has no Authenticator
// and never offers AUTH.

// Authenticator checks a login: auth.users_file or auth.downstream
// (internal/users.Checker). An error is temporary (454 4.7.0), never a
// wrong password.
type Authenticator interface {
	Check(ctx context.Context, name, password string) (bool, error)
}

// Accounts is what the submission listener needs of the detection engine
// about accounts: suspensions, and password fingerprints so the same wrong
// password again counts once.
type Accounts interface {
	Suspended(account string) bool
	PasswordKey(login, password string) uint64
}

var (
	_ Accounts    = (*detect.Engine)(nil)
	_ saslSession = authExchange{}
)

// submission reports whether this listener is the submission listener.
func (s *session) submission() bool { return s.c.srv.o.Auth != nil }

// AuthMechanisms is what EHLO advertises (go-smtp's AuthSession): PLAIN
// and LOGIN on the submission listener once the session runs over TLS, or
// to a trusted client; nothing before STARTTLS (INTERFACE.md §4: AUTH is
// not advertised before TLS) and nothing on the MX listener.
func (s *session) AuthMechanisms() []string {
	if !s.submission() || (!s.secure() && !s.c.ps.Trusted) {
		return nil
	}
	return []string{mechPlain, mechLogin}
}

// Auth starts an AUTH exchange (RFC 4954 §4).
func (s *session) Auth(mech string) (sasl.Server, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !s.submission():
		return nil, s.answer(&reply.AuthNotOffered)
	case s.account != "":
		return nil, s.answer(&reply.AuthTwice)
	case !s.secure() && !s.c.ps.Trusted:
		return nil, s.answer(&reply.StartTLSFirst)
	}
	switch mech {
	case mechPlain:
		return &plainServer{s: authExchange{s}}, nil
	case mechLogin:
		return &loginServer{s: authExchange{s}}, nil
	}
	return nil, s.answer(&reply.AuthMechanism)
}

// authExchange is the session as a mechanism sees it; go-smtp calls the
// mechanism under no lock of ours.
type authExchange struct{ s *session }

func (x authExchange) refuse(r *reply.Reply) error {
	x.s.mu.Lock()
	defer x.s.mu.Unlock()
	x.s.c.log().Info("auth refused", "reply", r.Error())
	x.s.countAuth("malformed")
	return x.s.answer(r)
}

// check decides a login: the Authenticator's bounded check, then the
// failure counted toward brute_force (per source and service) and
// account_brute_force with the password's fingerprint, never the
// password.
func (x authExchange) check(user, password string) error {
	s := x.s
	ok, err := s.c.srv.o.Auth.Check(s.ctx(), user, password)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.c
	switch {
	case err != nil:
		s.countAuth("temporary")
		if !errors.Is(err, context.Canceled) {
			c.log().Warn("auth check failed", "user", user, "err", err)
		}
		return s.answer(reply.AuthTemporary.With(err))
	case !ok:
		s.countAuth("failure")
		c.log().Info("auth failed", "user", user)
		if d := c.srv.o.Detector; d != nil {
			var fp uint64
			if a := c.srv.o.Accounts; a != nil {
				fp = a.PasswordKey(user, password)
			}
			// The evidence names the login, never the password.
			text := "AUTH as " + strconv.Quote(user) + ": " + string(reply.AuthFailed.Line())
			if d.Observe(detect.Observation{Kind: detect.KindAuthFailure, Addr: c.addr, Account: user,
				Service: c.srv.o.Name, Password: fp, Refused: true, Text: text}) {
				// This failure crossed brute_force's threshold: the
				// block is in force, the session ends now.
				return s.answer(&reply.Blocked)
			}
		}
		return s.answer(&reply.AuthFailed)
	}
	s.account = detect.AccountName(user)
	c.ps.Account = s.account
	s.countAuth("success")
	c.log().Info("authenticated", "account", s.account)
	return nil
}

// mayMail refuses MAIL on the submission listener before AUTH (530 5.7.0,
// RFC 4954 §6; trusted clients need none), and from a suspended account
// (550 5.7.1): the refused message is impact of the event that suspended
// it.
func (s *session) mayMail() *reply.Reply {
	if !s.submission() {
		return nil
	}
	if s.account == "" {
		if s.c.ps.Trusted {
			return nil
		}
		return &reply.AuthRequired
	}
	if a := s.c.srv.o.Accounts; a != nil && a.Suspended(s.account) {
		if d := s.c.srv.o.Detector; d != nil {
			d.Observe(detect.Observation{Kind: detect.KindAccountMessage, Addr: s.c.addr, Account: s.account,
				Service: s.c.srv.o.Name, Refused: true, Text: "MAIL refused: " + string(reply.Suspended.Line())})
		}
		return &reply.Suspended
	}
	return nil
}

func (s *session) countAuth(result string) {
	if m := s.c.srv.o.Metrics; m != nil {
		m.Auth.WithLabelValues(s.c.srv.o.Name, result).Inc()
	}
}
