package rspamd

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
const Name = "rspamd"

// Check asks rspamd about each message.
type Check struct {
	Client *Client
	Gate   *scanner.Gate
}

// New returns the check for content.rspamd.
func New(c *Client, o scanner.Options) *Check {
	return &Check{Client: c, Gate: scanner.New(Name, o)}
}

// Name is the metric label.
func (*Check) Name() string { return Name }

var _ pipeline.DataCheck = (*Check)(nil)

// CheckData asks rspamd about the message of session s.
func (c *Check) CheckData(ctx context.Context, s *pipeline.Session, m *pipeline.Message) pipeline.Verdict {
	return c.Scan(ctx, s, m.Reader(), m.Size())
}

// Run closes idle connections to rspamd when the chain is replaced.
func (c *Check) Run(ctx context.Context) {
	<-ctx.Done()
	c.Client.Close()
}

// Scan judges the message (size bytes from r) of session s and applies
// rspamd's action (INTERFACE.md §4):
//
//	reject                      554 5.7.1, spam
//	soft reject, greylist       451 4.7.1 (the sender retries)
//	add header, rewrite subject passed, spam, with X-Spam: Yes
//	no action                   passed
//
// A passed message carries X-Spam-Status and the headers rspamd asks for
// (milter.add_headers: Authentication-Results and the like, when rspamd's
// milter_headers module is configured).
func (c *Check) Scan(ctx context.Context, s *pipeline.Session, r io.Reader, size int64) pipeline.Verdict {
	return c.Gate.Run(ctx, func(ctx context.Context) (pipeline.Verdict, string, error) {
		res, err := c.Client.Check(ctx, s, r, size)
		if err != nil {
			return pipeline.Verdict{}, "", err
		}
		return Verdict(res)
	})
}

// Verdict maps rspamd's answer to mxguard's verdict and metric result.
func Verdict(res Result) (pipeline.Verdict, string, error) {
	cause := fmt.Errorf("rspamd: action %q, score %.2f/%.2f, %s", res.Action, res.Score, res.Required, res.SMTPMessage)
	switch res.Action {
	case "reject":
		return pipeline.Verdict{Class: pipeline.ClassSpam, Reply: reply.Content.WithText("Message content rejected: spam").With(cause).By(Name)}, scanner.ResultSpam, nil
	case "soft reject", "greylist":
		return pipeline.Verdict{Reply: reply.ContentDefer.With(cause).By(Name)}, scanner.ResultDefer, nil
	case "add header", "rewrite subject":
		h := append([]pipeline.Header{{Name: "X-Spam", Value: "Yes"}, {Name: "X-Spam-Status", Value: Status(res, true)}}, res.AddHeaders...)
		return pipeline.Verdict{Class: pipeline.ClassSpam, Headers: h}, scanner.ResultSpam, nil
	case "no action":
		h := append([]pipeline.Header{{Name: "X-Spam-Status", Value: Status(res, false)}}, res.AddHeaders...)
		return pipeline.Verdict{Headers: h}, scanner.ResultClean, nil
	}
	return pipeline.Verdict{}, "", fmt.Errorf("unknown action %q", res.Action)
}

// Status is an X-Spam-Status value in SpamAssassin's form, so filters
// that read it work behind rspamd too:
// "No, score=0.50 required=15.00 tests=MID_RHS_NOT_FQDN,RCPT_COUNT_ONE".
func Status(res Result, spam bool) string {
	yes := "No"
	if spam {
		yes = "Yes"
	}
	tests := strings.Join(res.Symbols, ",")
	if tests == "" {
		tests = "none"
	}
	return fmt.Sprintf("%s, score=%.2f required=%.2f tests=%s", yes, res.Score, res.Required, tests)
}
