package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/emersion/go-smtp"
)

// failure is one recipient's line in a delivery status notification.
type failure struct {
	Recipient string
	Status    [3]int // RFC 3463 enhanced status
	// Diagnostic is the Diagnostic-Code value (RFC 3464 §2.3.6):
	// "smtp; 550 5.1.1 ..." for a downstream reply, "X-mxguard; ..." for
	// a local reason.
	Diagnostic string
}

// failureOf describes the refusal err of rcpt.
func failureOf(rcpt string, err error) failure {
	if se, ok := errors.AsType[*smtp.SMTPError](err); ok {
		st := [3]int(se.EnhancedCode)
		diag := fmt.Sprintf("smtp; %d %d.%d.%d %s", se.Code, st[0], st[1], st[2], clean(se.Message))
		if st[0] <= 0 {
			// No enhanced code from the downstream: the class is the
			// reply's first digit (RFC 3463 §3.1 X.0.0).
			st = [3]int{se.Code / 100, 0, 0}
			diag = fmt.Sprintf("smtp; %d %s", se.Code, clean(se.Message))
		}
		return failure{Recipient: rcpt, Status: st, Diagnostic: diag}
	}
	f := failure{Recipient: rcpt, Status: [3]int{4, 0, 0}}
	if err != nil {
		f.Diagnostic = "X-mxguard; " + clean(err.Error())
	}
	return f
}

// expired describes rcpt given up after MaxAge; err is the last attempt's.
func expired(rcpt string, err error) failure {
	f := failureOf(rcpt, err)
	// RFC 3463 §3.5: 4.4.7 "delivery time expired".
	f.Status = [3]int{4, 4, 7}
	return f
}

// clean makes s fit a header field: printable US-ASCII on one line.
func clean(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = ' '
		}
	}
	if len(b) > 400 {
		b = b[:400]
	}
	return strings.TrimSpace(string(b))
}

// bounce queues a DSN to env's sender for the failed recipients. The DSN
// goes through the spool like any message (durable, retried), with the
// null reverse-path so that it is never bounced itself (RFC 5321 §4.5.5),
// and Source "bounce:ID" naming the message it reports on. A message with
// the null sender is never bounced (RFC 5321 §6.1): the caller holds or
// drops it instead (holdBounce, dropBounce).
func (m *Manager) bounce(ctx context.Context, env Envelope, fails []failure) error {
	log := m.log.With("id", env.ID, "recipients", recipientsOf(fails))
	headers, err := m.originalHeaders(env.ID)
	if err != nil {
		return err
	}
	now := m.clock.Now()
	msg := buildDSN(dsnInput{Hostname: m.o.Hostname, Now: now, Env: env, Failures: fails, Headers: headers})
	// The DSN may pass max_size: it replaces a larger message at once.
	id, err := m.o.Spool.put(ctx, Envelope{From: "", Recipients: []string{env.From}, Received: now, Source: dsnSource + env.ID}, false, int64(len(msg)), bytes.NewReader(msg))
	if err != nil {
		return err
	}
	log.Info("spool: bounce queued", "dsn", id, "to", env.From)
	return nil
}

// dsnSource prefixes the Source of our own DSNs.
const dsnSource = "bounce:"

// isDSN reports a DSN of ours (bounce), as opposed to a message with the
// null sender that a client sent (someone else's bounce).
func (e *Envelope) isDSN() bool { return e.From == "" && strings.HasPrefix(e.Source, dsnSource) }

// Reasons of mxguard_spool_bounces_dropped_total.
const (
	dropNullSender = "null_sender" // an incoming bounce the downstream refused: never bounced
	dropHeldFull   = "held_full"   // our bounce, refused, with the bounces area full
)

// holdBounce moves our DSN env, which the downstream refused for good or
// never took, to the bounces area for the operator (held.go): bouncing it
// would send a notification about a notification (RFC 5321 §4.5.5), and
// dropping it would lose the only report of a message we accepted. It is
// counted in mxguard_spool_bounces_held_total and logged with the
// downstream's answer.
func (m *Manager) holdBounce(env Envelope, fails []failure) error {
	var why []string
	for _, f := range fails {
		why = append(why, fmt.Sprintf("<%s>: %d.%d.%d %s", f.Recipient, f.Status[0], f.Status[1], f.Status[2], f.Diagnostic))
	}
	if err := m.o.Spool.hold(env.ID, strings.Join(why, "; ")); err != nil {
		return err
	}
	if m.heldTotal != nil {
		m.heldTotal.Inc()
	}
	m.log.Error("spool: bounce undeliverable, held for the operator in the spool's bounces/ (mxguard spool unspool retries it)",
		"id", env.ID, "reports_on", strings.TrimPrefix(env.Source, dsnSource), "recipients", recipientsOf(fails), "status", why[0])
	return nil
}

// dropBounce gives up on a message with the null sender for the failed
// recipients: an incoming bounce (RFC 5321 §6.1: a notification is never
// sent about it), or one of ours with no room left to hold it. Counted in
// mxguard_spool_bounces_dropped_total{reason} and logged.
func (m *Manager) dropBounce(env Envelope, fails []failure, reason string) {
	if m.dropped != nil {
		m.dropped.WithLabelValues(reason).Inc()
	}
	m.log.Warn("spool: undeliverable bounce dropped", "id", env.ID, "reason", reason, "source", env.Source,
		"recipients", recipientsOf(fails), "status", fails[0].Diagnostic)
}

func recipientsOf(fails []failure) []string {
	rcpts := make([]string, len(fails))
	for i, f := range fails {
		rcpts[i] = f.Recipient
	}
	return rcpts
}

// maxReturnedHeaders bounds the header block copied into a DSN.
const maxReturnedHeaders = 64 << 10

// originalHeaders returns the header section of message id.
func (m *Manager) originalHeaders(id string) ([]byte, error) {
	_, rc, err := m.o.Spool.Open(id)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxReturnedHeaders))
	if err != nil && !errors.Is(err, errCorrupt) {
		return nil, err
	}
	return headerSection(b), nil
}

// headerSection cuts b at the blank line ending the header section
// (RFC 5322 §2.1), or at its last complete line if b was cut short.
func headerSection(b []byte) []byte {
	if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
		return b[:i+2]
	}
	if i := bytes.Index(b, []byte("\n\n")); i >= 0 {
		return b[:i+1]
	}
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return b[:i+1]
	}
	return nil
}

type dsnInput struct {
	Hostname string
	Now      time.Time
	Env      Envelope
	Failures []failure
	Headers  []byte
}

// buildDSN writes a delivery status notification (RFC 3464): a
// multipart/report (RFC 6522) with report-type=delivery-status made of a
// human-readable part, the machine-readable message/delivery-status, and
// the original header section as text/rfc822-headers.
func buildDSN(in dsnInput) []byte {
	var b bytes.Buffer
	boundary := fmt.Sprintf("=_mxguard_%s_%08x", in.Env.ID, rand.Uint32())
	host := clean(in.Hostname)
	date := in.Now.Format(time.RFC1123Z)
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\r\n", a...) }

	w("From: Mail Delivery System <MAILER-DAEMON@%s>", host)
	w("To: <%s>", clean(in.Env.From))
	w("Subject: Undelivered Mail Returned to Sender")
	w("Date: %s", date)
	w("Message-ID: <%s.%08x.dsn@%s>", in.Env.ID, rand.Uint32(), host)
	w("Auto-Submitted: auto-replied") // RFC 3834 §5
	w("MIME-Version: 1.0")
	w("Content-Type: multipart/report; report-type=delivery-status;")
	w("\tboundary=\"%s\"", boundary)
	w("")
	w("This is a MIME-encapsulated message.")
	w("")

	w("--%s", boundary)
	w("Content-Type: text/plain; charset=us-ascii")
	w("")
	w("This is the mail system at host %s.", host)
	w("")
	w("Your message could not be delivered to the recipients below. It was")
	w("kept while their mail servers were unavailable and then refused, or it")
	w("could not be delivered in time.")
	w("")
	for _, f := range in.Failures {
		w("<%s>: %d.%d.%d %s", clean(f.Recipient), f.Status[0], f.Status[1], f.Status[2], f.Diagnostic)
	}
	w("")

	// RFC 3464 §2.2 per-message fields, then §2.3 per-recipient groups,
	// each group preceded by a blank line.
	w("--%s", boundary)
	w("Content-Type: message/delivery-status")
	w("")
	w("Reporting-MTA: dns; %s", host)
	w("Arrival-Date: %s", in.Env.Received.Format(time.RFC1123Z))
	for _, f := range in.Failures {
		w("")
		w("Final-Recipient: rfc822; %s", clean(f.Recipient))
		w("Action: failed")
		w("Status: %d.%d.%d", f.Status[0], f.Status[1], f.Status[2])
		if f.Diagnostic != "" {
			w("Diagnostic-Code: %s", f.Diagnostic)
		}
		w("Last-Attempt-Date: %s", date)
	}
	w("")

	w("--%s", boundary)
	w("Content-Type: text/rfc822-headers")
	w("")
	b.Write(in.Headers)
	w("")
	w("--%s--", boundary)
	return b.Bytes()
}
