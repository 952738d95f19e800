package clamd

import (
	"context"
	"io"

	"mxguard/internal/checks/scanner"
	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// Name is the check's and the scanner's label in metrics and replies.
const Name = "clamd"

// Headers of a message clamd found clean, as clamav-milter writes them.
var cleanHeaders = []pipeline.Header{
	{Name: "X-Virus-Scanned", Value: "ClamAV using mxguard"},
	{Name: "X-Virus-Status", Value: "Clean"},
}

// Check scans each message with clamd.
type Check struct {
	Client *Client
	Gate   *scanner.Gate
}

// New returns the check for content.clamd.
func New(c *Client, o scanner.Options) *Check {
	return &Check{Client: c, Gate: scanner.New(Name, o)}
}

// Name is the metric label.
func (*Check) Name() string { return Name }

var _ pipeline.DataCheck = (*Check)(nil)

// CheckData scans the message.
func (c *Check) CheckData(ctx context.Context, _ *pipeline.Session, m *pipeline.Message) pipeline.Verdict {
	return c.Scan(ctx, m.Reader())
}

// Scan judges the message read from r: infected is 554 5.7.1 (INTERFACE.md
// §4); a failed scan is what content.on_failure says.
func (c *Check) Scan(ctx context.Context, r io.Reader) pipeline.Verdict {
	return c.Gate.Run(ctx, func(ctx context.Context) (pipeline.Verdict, string, error) {
		res, err := c.Client.Scan(ctx, r)
		if err != nil {
			return pipeline.Verdict{}, "", err
		}
		if res.Infected {
			return pipeline.Verdict{
				Class: pipeline.ClassVirus,
				Reply: reply.Content.WithText("Message content rejected: virus found (" + res.Signature + ")").By(Name),
			}, scanner.ResultVirus, nil
		}
		return pipeline.Verdict{Headers: cleanHeaders}, scanner.ResultClean, nil
	})
}
