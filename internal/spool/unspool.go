package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Deliverer hands a spooled message to the downstream. env.Recipients holds
// only the recipients still pending. Deliver must read msg to the end
// before committing the message (the final dot of DATA): the reader fails
// there if the spooled bytes are damaged.
//
// Outcome: nil means the downstream said 250 for every recipient. A
// *smtp.SMTPError (found with errors.As) with a 5xx code is a permanent
// refusal of the whole message and produces a bounce; any other error
// (4xx, connection failure, no server) is temporary and the message is
// retried with backoff. When the downstream refused only some recipients,
// return RecipientErrors.
type Deliverer interface {
	Deliver(ctx context.Context, env Envelope, msg io.Reader) error
}

// RecipientError is one recipient refused at RCPT TO.
type RecipientError struct {
	Recipient string
	Err       error // *smtp.SMTPError for a downstream reply
}

// RecipientErrors is the Deliverer's error when the downstream refused the
// listed recipients at RCPT and accepted the message (250 after DATA) for
// every other pending recipient. If it refused them all, return a
// RecipientErrors listing all: nothing was delivered.
type RecipientErrors []RecipientError

func (e RecipientErrors) Error() string {
	var b strings.Builder
	b.WriteString("recipients refused:")
	for _, r := range e {
		fmt.Fprintf(&b, " %s: %v;", r.Recipient, r.Err)
	}
	return strings.TrimSuffix(b.String(), ";")
}

// DefaultBackoff doubles the wait from 1 minute up to 1 hour (1m, 2m, 4m,
// ... 32m, 1h, 1h, ...). RFC 5321 §4.5.4.1 asks for at least 30 minutes
// between retries to a remote site; the spool retries its own
// organisation's servers, which just came back, so it starts sooner and
// backs off to the same order of magnitude.
func DefaultBackoff(n int) time.Duration {
	d := time.Minute
	for i := 1; i < n && d < time.Hour; i++ {
		d *= 2
	}
	return min(d, time.Hour)
}

const idleWait = time.Minute // re-check now and then even without a wake-up

// noServerWait is the pause after a Deliverer found no server at all.
const noServerWait = time.Second

// ErrNoServer is what a Deliverer returns when no downstream server can
// take a message at all (every one is down): that is not an attempt on the
// message, so it is not deferred with backoff; the unspooler pauses and
// tries again when a server is back.
var ErrNoServer = errors.New("spool: no delivery server available")

// Run releases the spool until ctx ends: whenever a server is up, release
// is on and the spool is not suspended, due messages are delivered oldest
// first at no more than UnspoolRate per second. Decisions use the Clock;
// only the waiting between steps uses real timers.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-m.wake:
		case <-t.C:
		}
		_, wait := m.step(ctx)
		t.Reset(wait)
	}
}

// RunOnce does one unspool step at the Clock's now and returns how many
// messages it handled (delivered, bounced or deferred). Tests drive the
// manager with it and a fake clock.
func (m *Manager) RunOnce(ctx context.Context) int {
	n, _ := m.step(ctx)
	return n
}

// step handles the due messages the token bucket allows and returns how
// long to wait before the next step.
func (m *Manager) step(ctx context.Context) (int, time.Duration) {
	// Files recovery could not read (an I/O error) join the spool as soon
	// as they can be read, whether or not it is releasing now.
	m.o.Spool.retryUnreadable()
	n, wait := m.release(ctx)
	if next, ok := m.o.Spool.nextUnreadable(); ok {
		wait = min(wait, max(next.Sub(m.clock.Now()), 0))
	}
	return n, wait
}

// release is the unspool part of step.
func (m *Manager) release(ctx context.Context) (int, time.Duration) {
	now := m.clock.Now()
	m.mu.Lock()
	if !m.releasing() {
		m.mu.Unlock()
		return 0, idleWait
	}
	m.refill(now)
	allowed := int(m.tokens)
	m.mu.Unlock()

	batch, more := m.o.Spool.due(now, allowed)
	if len(batch) == 0 && !more {
		if n, _ := m.o.Spool.Stats(); n == 0 {
			m.mu.Lock()
			m.requested = false // drained: the request is fulfilled
			m.mu.Unlock()
			return 0, idleWait
		}
	}
	m.mu.Lock()
	m.tokens -= float64(len(batch))
	m.mu.Unlock()

	sem := make(chan struct{}, m.o.Workers)
	var wg sync.WaitGroup
	for _, env := range batch {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			m.handle(ctx, env)
		})
	}
	wg.Wait()

	m.mu.Lock()
	noServer := m.noServer
	m.noServer = false
	m.mu.Unlock()
	if noServer {
		return len(batch), noServerWait
	}
	if more {
		m.mu.Lock()
		defer m.mu.Unlock()
		now = m.clock.Now()
		m.refill(now)
		if m.tokens >= 1 {
			return len(batch), 0
		}
		return len(batch), time.Duration((1 - m.tokens) / m.rate * float64(time.Second))
	}
	next, ok := m.o.Spool.nextAttempt()
	if !ok {
		return len(batch), idleWait
	}
	return len(batch), min(max(next.Sub(m.clock.Now()), 0), idleWait)
}

// refill is a token bucket: rate tokens per second, at most burst.
func (m *Manager) refill(now time.Time) {
	if m.refilled.IsZero() {
		m.tokens = m.burst
	} else if d := now.Sub(m.refilled); d > 0 {
		m.tokens = min(m.burst, m.tokens+d.Seconds()*m.rate)
	}
	m.refilled = now
}

// handle makes one delivery attempt of env and records its outcome.
func (m *Manager) handle(ctx context.Context, env Envelope) {
	log := m.log.With("id", env.ID)
	pending := env.Pending()
	if len(pending) == 0 {
		m.remove(env.ID)
		return
	}
	_, rc, err := m.o.Spool.Open(env.ID)
	if err != nil {
		switch {
		case errors.Is(err, ErrNotFound):
		case errors.Is(err, errCorrupt), errors.Is(err, fs.ErrNotExist):
			m.o.Spool.takeOut(env.ID, err)
		default:
			// EIO, EMFILE, ...: says nothing about the message; try
			// again after the usual backoff.
			log.Error("spool: cannot read message", "err", err)
			m.deferMsg(env, nil, err)
		}
		return
	}
	denv := env.clone()
	denv.Recipients, denv.Done = pending, nil
	m.o.Spool.startAttempt(&env)
	err = m.o.Deliver.Deliver(ctx, denv, rc)
	rc.Close()
	if err != nil && ctx.Err() != nil {
		// Shutting down: this was no real attempt, the next start
		// retries it (flagged as a possible redelivery by the journal).
		return
	}
	if errors.Is(err, ErrNoServer) {
		m.mu.Lock()
		m.noServer = true
		m.mu.Unlock()
		return
	}
	m.outcome(ctx, env, pending, err)
}

// outcome sorts the pending recipients into delivered, bounced and retried
// after a delivery attempt that returned err.
func (m *Manager) outcome(ctx context.Context, env Envelope, pending []string, err error) {
	log := m.log.With("id", env.ID)
	if errors.Is(err, errCorrupt) {
		// The Deliverer stopped at the checksum failure of our reader:
		// nothing reached the downstream, and no retry can fix it.
		m.o.Spool.takeOut(env.ID, err)
		return
	}
	var delivered, retry []string
	var bounced []failure
	retryErr := map[string]error{}
	var rerrs RecipientErrors
	switch {
	case err == nil:
		delivered = pending
	case errors.As(err, &rerrs):
		refused := map[string]error{}
		for _, re := range rerrs {
			refused[re.Recipient] = re.Err
		}
		for _, r := range pending {
			switch e, ok := refused[r]; {
			case !ok:
				delivered = append(delivered, r)
			case permanent(e):
				bounced = append(bounced, failureOf(r, e))
			default:
				retry = append(retry, r)
				retryErr[r] = e
			}
		}
	case permanent(err):
		for _, r := range pending {
			bounced = append(bounced, failureOf(r, err))
		}
	default:
		retry = pending
		for _, r := range pending {
			retryErr[r] = err
		}
	}
	if len(delivered) > 0 {
		log.Info("spool: delivered", "recipients", delivered, "attempt", env.Attempts+1)
		if env.Redelivery {
			// The attempt the crash interrupted may have reached the
			// downstream too.
			log.Warn("spool: message delivered again after an interrupted delivery, possible duplicate")
			if m.redelivered != nil {
				m.redelivered.Inc()
			}
		}
	}
	now := m.clock.Now()
	if len(retry) > 0 && now.Sub(env.Received) >= m.o.MaxAge {
		// Too long in the spool: stop retrying, like Postfix at
		// maximal_queue_lifetime (RFC 5321 §4.5.4.1 give-up time).
		for _, r := range retry {
			bounced = append(bounced, expired(r, retryErr[r]))
		}
		retry = nil
	}
	done := delivered
	if len(bounced) > 0 {
		var berr error
		switch {
		case env.From != "":
			berr = m.bounce(ctx, env, bounced)
		case env.isDSN():
			if berr = m.holdBounce(env, bounced); berr == nil {
				return // moved to the bounces area, with its pending recipients
			}
			if errors.Is(berr, errHeldFull) {
				m.dropBounce(env, bounced, dropHeldFull)
				berr = nil
			}
		default:
			m.dropBounce(env, bounced, dropNullSender)
		}
		if berr != nil {
			log.Error("spool: cannot queue or hold the bounce, retrying the message later", "err", berr)
			for _, f := range bounced {
				retry = append(retry, f.Recipient)
			}
		} else {
			for _, f := range bounced {
				done = append(done, f.Recipient)
			}
		}
	}
	if len(retry) == 0 {
		m.remove(env.ID)
		return
	}
	log.Info("spool: deferred", "recipients", retry, "attempt", env.Attempts+1, "err", err)
	m.deferMsg(env, done, err)
}

func (m *Manager) remove(id string) {
	if err := m.o.Spool.Remove(id); err != nil && !errors.Is(err, ErrNotFound) {
		// The message stays and will be delivered again: a duplicate,
		// never a loss.
		m.log.Error("spool: cannot remove delivered message", "id", id, "err", err)
	}
}

func (m *Manager) deferMsg(env Envelope, done []string, cause error) {
	next := m.clock.Now().Add(m.o.Backoff(env.Attempts + 1))
	msg := "unknown error"
	if cause != nil {
		msg = cause.Error()
	}
	if len(msg) > 512 {
		msg = msg[:512]
	}
	if err := m.o.Spool.Defer(env.ID, next, msg, done...); err != nil {
		// Without the new state the message is retried at once and the
		// done recipients may get it again.
		m.log.Error("spool: cannot record deferral", "id", env.ID, "err", err)
	}
}

// permanent reports a 5xx downstream reply; everything else, including
// errors that are not SMTP replies at all, is worth retrying.
func permanent(err error) bool {
	se, ok := errors.AsType[*smtp.SMTPError](err)
	return ok && se.Code >= 500 && se.Code <= 599
}
