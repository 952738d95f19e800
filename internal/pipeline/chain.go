package pipeline

import (
	"context"
	"time"

	"mxguard/internal/metrics"
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
func (c *Chain) RunConnect(ctx context.Context, s *Session) *Reply {
	for _, ch := range c.Connect {
		start := time.Now()
		r := ch.CheckConnect(ctx, s)
		c.observe(ch.Name(), start)
		if r != nil {
			return r
		}
	}
	return nil
}

// RunRcpt runs the recipient checks in order; the first refusal wins.
func (c *Chain) RunRcpt(ctx context.Context, s *Session, rcpt string) *Reply {
	for _, ch := range c.Rcpt {
		start := time.Now()
		r := ch.CheckRcpt(ctx, s, rcpt)
		c.observe(ch.Name(), start)
		if r != nil {
			return r
		}
	}
	return nil
}

// RunData runs the content checks in order; the first refusal wins.
func (c *Chain) RunData(ctx context.Context, s *Session, m *Message) *Reply {
	for _, ch := range c.Data {
		start := time.Now()
		r := ch.CheckData(ctx, s, m)
		c.observe(ch.Name(), start)
		if r != nil {
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
