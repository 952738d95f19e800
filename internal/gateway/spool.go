package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/emersion/go-smtp"

	"mxguard/internal/address"
	"mxguard/internal/config"
	"mxguard/internal/recipients"
	"mxguard/internal/relay"
	"mxguard/internal/spool"
)

// spooler joins the spool manager (the decision) and the spool (the
// storage) for the SMTP front end.
type spooler struct {
	*spool.Manager
	store *spool.Spool
}

func (s spooler) Put(ctx context.Context, env spool.Envelope, size int64, msg io.Reader) (string, error) {
	return s.store.Put(ctx, env, size, msg)
}

// openSpool opens data_dir/spool (recovering what a crash left) and builds
// its manager; the relay delivers what it releases.
func (g *Gateway) openSpool(cfg *config.Config) error {
	store, err := spool.Open(filepath.Join(cfg.DataDir, "spool"), spool.Options{
		MaxBytes: int64(cfg.Spool.MaxSize),
		Logger:   g.o.Logger.With("component", "spool"),
		Metrics:  g.Metrics,
		Clock:    g.o.Clock,
	})
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	g.spoolStore = store
	g.Spool = spool.NewManager(spool.ManagerOptions{
		Spool:       store,
		Delay:       cfg.Spool.Delay,
		UnspoolRate: cfg.Spool.UnspoolRate,
		AutoUnspool: cfg.Spool.AutoUnspool,
		Deliver:     relayDeliverer{g},
		Clock:       g.o.Clock,
		Logger:      g.o.Logger.With("component", "spool"),
		Metrics:     g.Metrics,
		Hostname:    cfg.Hostname,
	})
	return nil
}

// relayDeliverer hands spooled messages to the downstream through the
// relay, with the Deliverer contract of internal/spool.
type relayDeliverer struct{ g *Gateway }

// The message streams from the spool file to the downstream: a damaged
// file fails its checksum at the end of the read, before the final dot,
// so the downstream drops it (relay.ErrBody wrapping the spool's error).
func (d relayDeliverer) Deliver(ctx context.Context, env spool.Envelope, msg io.Reader) error {
	// The envelope holds canonical addresses (smtpd writes
	// address.Mailbox.String()); it is parsed back strictly, so a damaged
	// or hand-edited spool file cannot put raw text into a command. What
	// does not parse is refused permanently: it would never get better.
	from, err := address.Parse(env.From, address.Options{Null: true})
	if err != nil {
		return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 7}, Message: "bad sender address in the spool: " + err.Error()}
	}
	var refused spool.RecipientErrors
	type rcpt struct {
		raw string // as spooled: the spool tracks recipients by it
		m   address.Mailbox
	}
	var rcpts []rcpt
	for _, r := range env.Recipients {
		m, err := address.Parse(r, address.Options{Postmaster: true})
		if err != nil {
			refused = append(refused, spool.RecipientError{Recipient: r, Err: &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "bad recipient address in the spool: " + err.Error()}})
			continue
		}
		rcpts = append(rcpts, rcpt{r, m})
	}
	if len(rcpts) == 0 {
		return refused
	}
	txn, err := d.g.Delivery.Begin(ctx, from, relay.MailOptions{Size: env.Size, EightBit: true})
	if err != nil {
		return noServer(err)
	}
	for _, r := range rcpts {
		err := txn.Rcpt(ctx, r.m)
		// The downstream's verdict at unspool teaches the directory too;
		// a refused sender says nothing about the recipient.
		if !errors.Is(err, relay.ErrSenderRefused) {
			d.g.Recipients.Record(r.m, recipients.VerdictOf(err))
		}
		if err != nil {
			se, ok := relay.Verdict(err)
			if !ok {
				txn.Abort()
				return noServer(err) // connection lost: retry the whole message later
			}
			refused = append(refused, spool.RecipientError{Recipient: r.raw, Err: se})
		}
	}
	if len(refused) == len(env.Recipients) {
		txn.Abort()
		return refused
	}
	if _, err := txn.Data(ctx, nil, msg); err != nil {
		return err
	}
	if len(refused) > 0 {
		return refused
	}
	return nil
}

// noServer marks "no server could take it" for the spool, which then waits
// for a server instead of counting an attempt (spool.ErrNoServer). A local
// resource shortage is no attempt on the message either.
func noServer(err error) error {
	if errors.Is(err, relay.ErrUnavailable) || errors.Is(err, relay.ErrLocal) {
		return fmt.Errorf("%w: %v", spool.ErrNoServer, err)
	}
	return err
}
