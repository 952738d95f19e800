package gateway

import (
	"context"
	"fmt"

	"mxguard/internal/batv"
	"mxguard/internal/config"
	"mxguard/internal/msgbuf"
	"mxguard/internal/smtpd"
	"mxguard/internal/users"
)

// startSubmission builds the submission listener (listen.submission):
// the same settings and checks as the MX listener, plus AUTH checked
// against auth.users_file or by relaying it to the delivery servers
// (auth.downstream), and suspensions.
func (g *Gateway) startSubmission(ctx context.Context, cfg *config.Config, set *smtpd.Settings, buffers *msgbuf.Store) error {
	if cfg.Listen.Submission == "" {
		return nil
	}
	o := users.CheckerOptions{Logger: g.o.Logger.With("component", "auth")}
	if cfg.Auth.Downstream {
		o.Verify = func(ctx context.Context, name, password string) (bool, error) {
			return g.Relay.Authenticate(ctx, g.Delivery, name, password)
		}
	} else {
		o.Path = cfg.Auth.UsersFile
	}
	checker, err := users.NewChecker(o)
	if err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	g.Users = checker
	g.Metrics.Prime("submission", nil, nil)
	for _, r := range []string{"success", "failure", "temporary", "malformed"} {
		g.Metrics.Auth.WithLabelValues("submission", r)
	}
	so := g.listenerOptions("submission", "submission", buffers)
	so.Auth, so.Accounts = checker, g.Engine
	g.Submission = smtpd.New(so, set)
	if g.submissionLn, err = smtpd.Listen(ctx, cfg.Listen.Submission); err != nil {
		return fmt.Errorf("listen submission: %w", err)
	}
	return nil
}

// SubmissionAddr is the bound submission listener address ("" when off).
func (g *Gateway) SubmissionAddr() string {
	if g.submissionLn == nil {
		return ""
	}
	return g.submissionLn.Addr().String()
}

// loadBATV reads batv.key_file: BATV signs outbound senders and checks
// bounces on both listeners. A new key takes a restart (the tags of the
// last days would stop verifying at once).
func (g *Gateway) loadBATV(cfg *config.Config) error {
	if cfg.BATV.KeyFile == "" {
		return nil
	}
	key, err := batv.LoadKey(cfg.BATV.KeyFile)
	if err != nil {
		return err
	}
	if g.batv, err = batv.New(key, batv.Options{}); err != nil {
		return err
	}
	g.senders = smtpd.NewSenderAccounts(0)
	return nil
}
