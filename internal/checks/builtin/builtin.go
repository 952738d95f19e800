// Package builtin is the data check of the built-in content inspectors
// (gtube, eicar, attach): one streaming walk of the message's MIME
// structure (internal/mimewalk) shows every part to all of them, so the
// message is parsed once however many inspectors look at it. They always
// run, with or without external scanners (INTERFACE.md §3). See README.md.
package builtin

import (
	"context"
	"errors"
	"io"

	"mxguard/internal/mimewalk"
	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// Name labels the check in mxguard_check_duration_seconds; the replies
// name the inspector that refused ("gtube", "eicar", "attach") or "mime"
// for a message past the walk's limits.
const Name = "builtin"

// Check walks each message once for its inspectors.
type Check struct {
	w *mimewalk.Walker
}

// New returns the check with the walk's default limits.
func New(in ...mimewalk.Inspector) *Check { return &Check{w: mimewalk.New(mimewalk.Limits{}, in...)} }

// Name is the metric label.
func (*Check) Name() string { return Name }

var _ pipeline.DataCheck = (*Check)(nil)

// CheckData walks the message.
func (c *Check) CheckData(ctx context.Context, _ *pipeline.Session, m *pipeline.Message) pipeline.Verdict {
	return c.Scan(ctx, m.Reader())
}

// Scan walks the message read from r. A finding refuses the message
// (554 5.7.1); a structure past the limits too ("mime"); a read error of
// the message buffer is ours, 451 4.3.0.
func (c *Check) Scan(ctx context.Context, r io.Reader) pipeline.Verdict {
	_, err := c.w.Walk(ctx, r)
	var f *pipeline.Finding
	var le *mimewalk.LimitError
	switch {
	case err == nil:
		return pipeline.Verdict{}
	case errors.As(err, &f):
		return f.Verdict()
	case errors.As(err, &le):
		return pipeline.Verdict{Reply: reply.Content.WithText("Message content rejected: MIME structure too complex").With(err).By("mime")}
	}
	return pipeline.Verdict{Reply: reply.InternalError.With(err).By(Name)}
}
