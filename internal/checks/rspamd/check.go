package rspamd

import (
	"context"
	"fmt"

	"mxguard/internal/checks/scanner"
	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// Name is the check's and the scanner's label in metrics and replies.
const Name = "rspamd"

// New returns the data check for content.rspamd. It applies rspamd's
// action (INTERFACE.md §4):
//
//	reject                      554 5.7.1, spam
//	soft reject, greylist       451 4.7.1 (the sender retries)
//	add header, rewrite subject passed, spam, with X-Spam: Yes
//	no action                   passed
//
// A passed message carries X-Spam-Status and the headers rspamd asks for
// (milter.add_headers: Authentication-Results and the like, when rspamd's
// milter_headers module is configured).
func New(c *Client, o scanner.Options) *scanner.Check {
	return scanner.NewCheck(Name, c, o)
}

// Judge asks rspamd about the message of session s.
func (c *Client) Judge(ctx context.Context, s *pipeline.Session, m *pipeline.Message) (pipeline.Verdict, string, error) {
	res, err := c.Check(ctx, s, m.Reader(), m.Size())
	if err != nil {
		return pipeline.Verdict{}, "", err
	}
	return Verdict(res)
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
		h := append([]pipeline.Header{{Name: "X-Spam", Value: "Yes"}, {Name: "X-Spam-Status", Value: scanner.SpamStatus(true, res.Score, res.Required, res.Symbols)}}, res.AddHeaders...)
		return pipeline.Verdict{Class: pipeline.ClassSpam, Headers: h}, scanner.ResultSpam, nil
	case "no action":
		h := append([]pipeline.Header{{Name: "X-Spam-Status", Value: scanner.SpamStatus(false, res.Score, res.Required, res.Symbols)}}, res.AddHeaders...)
		return pipeline.Verdict{Headers: h}, scanner.ResultClean, nil
	}
	return pipeline.Verdict{}, "", fmt.Errorf("unknown action %q", res.Action)
}
