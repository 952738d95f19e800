package pipeline

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"mxguard/internal/address"
	"mxguard/internal/metrics"
	"mxguard/internal/reply"
)

// Chain is the ordered list of checks for each stage. It is built once per
// configuration (see internal/checks/order.go) and is read-only afterwards,
// so sessions share it without locking.
type Chain struct {
	Connect []ConnectCheck
	Rcpt    []RcptCheck
	Data    []DataCheck
	Metrics *metrics.Metrics // may be nil
}

// RunConnect runs the connect checks in order; the first refusal wins.
func (c *Chain) RunConnect(ctx context.Context, s *Session) *reply.Reply {
	return run(c, c.Connect, func(ch ConnectCheck) *reply.Reply { return ch.CheckConnect(ctx, s) })
}

// RunRcpt runs the recipient checks in order; the first refusal wins.
func (c *Chain) RunRcpt(ctx context.Context, s *Session, rcpt address.Mailbox) *reply.Reply {
	return run(c, c.Rcpt, func(ch RcptCheck) *reply.Reply { return ch.CheckRcpt(ctx, s, rcpt) })
}

// RunData runs the content checks in order. The first refusal (or
// deferral) wins and is the verdict, with what it found; a passed message
// collects the headers of every check and the gravest class found (rspamd
// passes spam with a header). A check that panics defers the message
// (451 4.3.0, counted in mxguard_session_panics_total): content checks
// read hostile input, and a bug in one must neither pass the message
// unchecked nor drop the session.
func (c *Chain) RunData(ctx context.Context, s *Session, m *Message) Verdict {
	var out Verdict
	for _, ch := range c.Data {
		start := time.Now()
		v := c.checkData(ctx, ch, s, m)
		c.observe(ch.Name(), start)
		out.Class = max(out.Class, v.Class)
		if v.Reply != nil {
			if v.Reply.Check == "" {
				v.Reply.Check = ch.Name()
			}
			return Verdict{Reply: v.Reply, Class: out.Class}
		}
		for _, h := range v.Headers {
			if !slices.Contains(out.Headers, h) {
				out.Headers = append(out.Headers, h)
			}
		}
	}
	return out
}

func (c *Chain) checkData(ctx context.Context, ch DataCheck, s *Session, m *Message) (v Verdict) {
	defer func() {
		if p := recover(); p != nil {
			if c.Metrics != nil {
				c.Metrics.Panics.Inc()
			}
			v = Verdict{Reply: reply.InternalError.With(fmt.Errorf("check %s panicked: %v\n%s", ch.Name(), p, debug.Stack())).By(ch.Name())}
		}
	}()
	return ch.CheckData(ctx, s, m)
}

// run calls each check in order, timing it, until one refuses; the
// refusal is attributed to the check that made it.
func run[C interface{ Name() string }](c *Chain, checks []C, call func(C) *reply.Reply) *reply.Reply {
	for _, ch := range checks {
		start := time.Now()
		r := call(ch)
		c.observe(ch.Name(), start)
		if r != nil {
			if r.Check == "" {
				r.Check = ch.Name()
			}
			return r
		}
	}
	return nil
}

func (c *Chain) observe(name string, start time.Time) {
	if c.Metrics != nil {
		c.Metrics.CheckDuration.WithLabelValues(name).Observe(time.Since(start).Seconds())
	}
}

// Runner is a check with background work (the dnsbl zone health check);
// Run returns when ctx ends.
type Runner interface {
	Run(ctx context.Context)
}

// Run runs the background work of the chain's checks until ctx ends: the
// front end starts it with the chain and cancels it when a reload
// replaces the chain.
func (c *Chain) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, ch := range c.Connect {
		if r, ok := ch.(Runner); ok {
			wg.Go(func() { r.Run(ctx) })
		}
	}
	for _, ch := range c.Data {
		if r, ok := ch.(Runner); ok {
			wg.Go(func() { r.Run(ctx) })
		}
	}
	wg.Wait()
}

// Names lists the checks of every stage, for metrics.
func (c *Chain) Names() []string {
	var n []string
	for _, ch := range c.Connect {
		n = append(n, ch.Name())
	}
	for _, ch := range c.Rcpt {
		n = append(n, ch.Name())
	}
	for _, ch := range c.Data {
		n = append(n, ch.Name())
	}
	return n
}
