package spamd

import (
	"context"
	"fmt"

	"mxguard/internal/checks/scanner"
	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// Name is the check's and the scanner's label in metrics and replies.
const Name = "spamd"

// New returns the data check for content.spamd. spamd's only verdict is
// spam or not, against its required_score: spam is refused with 554
// 5.7.1 (set required_score in spamd's local.cf to the score you refuse
// at); a passed message gets SpamAssassin's own X-Spam-Status line.
func New(c *Client, o scanner.Options) *scanner.Check {
	return scanner.NewCheck(Name, judge{c}, o)
}

type judge struct{ c *Client }

func (j judge) Judge(ctx context.Context, _ *pipeline.Session, m *pipeline.Message) (pipeline.Verdict, string, error) {
	res, err := j.c.Check(ctx, m.Reader(), m.Size())
	if err != nil {
		return pipeline.Verdict{}, "", err
	}
	if res.Spam {
		return pipeline.Verdict{
			Class: pipeline.ClassSpam,
			Reply: reply.Content.WithText(fmt.Sprintf("Message content rejected: spam (score %.1f)", res.Score)).By(Name),
		}, scanner.ResultSpam, nil
	}
	status := scanner.SpamStatus(false, res.Score, res.Threshold, res.Symbols)
	return pipeline.Verdict{Headers: []pipeline.Header{{Name: "X-Spam-Status", Value: status}}}, scanner.ResultClean, nil
}
