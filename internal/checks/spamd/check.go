package spamd

import (
	"context"
	"fmt"
	"io"
	"strings"

	"mxguard/internal/checks/scanner"
	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// Name is the check's and the scanner's label in metrics and replies.
const Name = "spamd"

// Check asks spamd about each message.
type Check struct {
	Client *Client
	Gate   *scanner.Gate
}

// New returns the check for content.spamd.
func New(c *Client, o scanner.Options) *Check {
	return &Check{Client: c, Gate: scanner.New(Name, o)}
}

// Name is the metric label.
func (*Check) Name() string { return Name }

var _ pipeline.DataCheck = (*Check)(nil)

// CheckData asks spamd about the message.
func (c *Check) CheckData(ctx context.Context, _ *pipeline.Session, m *pipeline.Message) pipeline.Verdict {
	return c.Scan(ctx, m.Reader(), m.Size())
}

// Scan judges the message (size bytes from r). spamd's only verdict is
// spam or not, against its required_score: spam is refused with 554 5.7.1
// (set required_score in spamd's local.cf to the score you refuse at); a
// passed message gets SpamAssassin's own X-Spam-Status line.
func (c *Check) Scan(ctx context.Context, r io.Reader, size int64) pipeline.Verdict {
	return c.Gate.Run(ctx, func(ctx context.Context) (pipeline.Verdict, string, error) {
		res, err := c.Client.Check(ctx, r, size)
		if err != nil {
			return pipeline.Verdict{}, "", err
		}
		if res.Spam {
			return pipeline.Verdict{
				Class: pipeline.ClassSpam,
				Reply: reply.Content.WithText(fmt.Sprintf("Message content rejected: spam (score %.1f)", res.Score)).By(Name),
			}, scanner.ResultSpam, nil
		}
		return pipeline.Verdict{Headers: []pipeline.Header{{Name: "X-Spam-Status", Value: Status(res)}}}, scanner.ResultClean, nil
	})
}

// Status is the X-Spam-Status value SpamAssassin writes:
// "No, score=-0.1 required=5.0 tests=NO_RECEIVED,NO_RELAYS".
func Status(res Result) string {
	yes := "No"
	if res.Spam {
		yes = "Yes"
	}
	tests := strings.Join(res.Symbols, ",")
	if tests == "" {
		tests = "none"
	}
	return fmt.Sprintf("%s, score=%.1f required=%.1f tests=%s", yes, res.Score, res.Threshold, tests)
}
