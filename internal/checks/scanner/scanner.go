// Package scanner is what the external content scanners (rspamd, spamd,
// clamd) share: a bounded number of scans in flight, one time budget per
// call, the content.on_failure policy and the mxguard_scans_total counter.
// A failing scanner gives a temporary failure or, when the operator chose
// to fail open, a passed message marked "X-Mxguard-Scan: failed" — never
// silence (DESIGN.md "Content verdicts").
package scanner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// OnFailure is what a failed scan does to the message (content.on_failure).
type OnFailure string

// The content.on_failure values.
const (
	Tempfail OnFailure = "tempfail" // 451 4.3.0: the sender retries later
	Accept   OnFailure = "accept"   // pass, with X-Mxguard-Scan: failed
)

// FailedHeader marks a message passed although a scan failed.
var FailedHeader = pipeline.Header{Name: "X-Mxguard-Scan", Value: "failed"}

// Results of mxguard_scans_total{scanner,result}.
const (
	ResultClean   = "clean"
	ResultSpam    = "spam"
	ResultVirus   = "virus"
	ResultDefer   = "defer"   // the scanner asked for a retry (rspamd soft reject, greylist)
	ResultError   = "error"   // the scanner failed or answered garbage
	ResultTimeout = "timeout" // no answer within content.timeout
	ResultBusy    = "busy"    // no free slot within content.timeout (max_concurrency)
)

// Results lists every result label, to create the series up front.
var Results = []string{ResultClean, ResultSpam, ResultVirus, ResultDefer, ResultError, ResultTimeout, ResultBusy}

// Defaults of content.timeout and content.max_concurrency (INTERFACE.md §2).
const (
	DefaultTimeout        = 20 * time.Second
	DefaultMaxConcurrency = 8
)

// Options configures a Gate.
type Options struct {
	// Timeout bounds one call: waiting for a free slot and the scan
	// together, so a scanner adds at most this much to a message's DATA.
	Timeout time.Duration
	// MaxConcurrency is the number of scans in flight; a scan that finds
	// no free slot within Timeout fails ("busy"), so a saturated scanner
	// yields a 451, never an unbounded queue of sessions.
	MaxConcurrency int
	OnFailure      OnFailure
	// Scans counts calls by scanner and result; may be nil.
	Scans *prometheus.CounterVec
	// Log records failures the message passes despite (on_failure accept);
	// nil: slog.Default.
	Log *slog.Logger
}

// Gate runs the scans of one scanner. It is safe for concurrent use.
type Gate struct {
	name  string
	o     Options
	slots chan struct{}
}

// New returns the gate of the scanner name ("rspamd", "spamd", "clamd").
func New(name string, o Options) *Gate {
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxConcurrency <= 0 {
		o.MaxConcurrency = DefaultMaxConcurrency
	}
	if o.OnFailure == "" {
		o.OnFailure = Tempfail
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Scans != nil {
		for _, r := range Results {
			o.Scans.WithLabelValues(name, r)
		}
	}
	return &Gate{name: name, o: o, slots: make(chan struct{}, o.MaxConcurrency)}
}

// Name is the scanner's name.
func (g *Gate) Name() string { return g.name }

// Func is one scan. It returns the verdict and the metric result for it
// (ResultClean, ResultSpam, ResultVirus, ResultDefer), or an error when
// the scanner did not give a usable answer.
type Func func(ctx context.Context) (pipeline.Verdict, string, error)

// Run runs scan in a free slot, within the time budget, and turns a
// failure into the configured answer.
func (g *Gate) Run(ctx context.Context, scan Func) pipeline.Verdict {
	ctx, cancel := context.WithTimeout(ctx, g.o.Timeout)
	defer cancel()
	select {
	case g.slots <- struct{}{}:
	case <-ctx.Done():
		return g.failed(ctx, ResultBusy, fmt.Errorf("%s: no free scan slot within %s (max_concurrency %d)", g.name, g.o.Timeout, g.o.MaxConcurrency))
	}
	v, result, err := scan(ctx)
	<-g.slots
	if err != nil {
		result = ResultError
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
			result = ResultTimeout
		}
		return g.failed(ctx, result, fmt.Errorf("%s: %w", g.name, err))
	}
	g.count(result)
	if v.Reply != nil && v.Reply.Check == "" {
		v.Reply.Check = g.name
	}
	return v
}

func (g *Gate) failed(ctx context.Context, result string, err error) pipeline.Verdict {
	g.count(result)
	if g.o.OnFailure == Accept {
		g.o.Log.WarnContext(ctx, "scan failed, message passed (content.on_failure: accept)", "scanner", g.name, "result", result, "err", err)
		return pipeline.Verdict{Headers: []pipeline.Header{FailedHeader}}
	}
	return pipeline.Verdict{Reply: reply.InternalError.With(err).By(g.name)}
}

func (g *Gate) count(result string) {
	if g.o.Scans != nil {
		g.o.Scans.WithLabelValues(g.name, result).Inc()
	}
}

// Scanner is the protocol side of one external scanner: it asks the
// scanner about a message and maps the answer to a verdict and the
// metric result (ResultClean, ResultSpam, ResultVirus, ResultDefer), or
// fails.
type Scanner interface {
	Judge(ctx context.Context, s *pipeline.Session, m *pipeline.Message) (pipeline.Verdict, string, error)
}

// Check is the data check of one scanner: its Scanner behind a Gate.
type Check struct {
	gate *Gate
	sc   Scanner
}

var (
	_ pipeline.DataCheck = (*Check)(nil)
	_ pipeline.Runner    = (*Check)(nil)
)

// NewCheck returns the check of scanner name.
func NewCheck(name string, sc Scanner, o Options) *Check {
	return &Check{gate: New(name, o), sc: sc}
}

// Name is the metric label: the scanner's name.
func (c *Check) Name() string { return c.gate.Name() }

// CheckData judges the message within the gate's slots and time budget.
func (c *Check) CheckData(ctx context.Context, s *pipeline.Session, m *pipeline.Message) pipeline.Verdict {
	return c.gate.Run(ctx, func(ctx context.Context) (pipeline.Verdict, string, error) {
		return c.sc.Judge(ctx, s, m)
	})
}

// Run waits for the chain to be replaced (or the gateway to stop), then
// closes the scanner's idle connections, if it keeps any.
func (c *Check) Run(ctx context.Context) {
	<-ctx.Done()
	if cl, ok := c.sc.(interface{ Close() }); ok {
		cl.Close()
	}
}

// SpamStatus is an X-Spam-Status value in SpamAssassin's form, which
// mail filters (Sieve, procmail) already read:
// "No, score=0.5 required=15.0 tests=MID_RHS_NOT_FQDN,RCPT_COUNT_ONE".
func SpamStatus(spam bool, score, required float64, tests []string) string {
	yes := "No"
	if spam {
		yes = "Yes"
	}
	t := strings.Join(tests, ",")
	if t == "" {
		t = "none"
	}
	return fmt.Sprintf("%s, score=%.1f required=%.1f tests=%s", yes, score, required, t)
}

// DialFunc opens a connection (net.Dialer.DialContext, or a test's).
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Dial connects for one scan (dial nil: a net.Dialer) and ties the
// connection to ctx: its deadline, and an immediate one when ctx is
// cancelled, so a scanner that stops answering never holds the session
// past the budget. Close the connection when done; that also unties it.
func Dial(ctx context.Context, dial DialFunc, network, address string) (net.Conn, error) {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, network, address)
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	return &tiedConn{Conn: conn, stop: stop}, nil
}

type tiedConn struct {
	net.Conn
	stop func() bool
}

func (c *tiedConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// Clip shortens a scanner's answer for an error message: a hostile or
// broken scanner may send megabytes, and the log line stays bounded.
func Clip[T string | []byte](b T) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}
