package clamd

import (
	"context"

	"mxguard/internal/checks/scanner"
	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// Name is the check's and the scanner's label in metrics and replies.
const Name = "clamd"

// cleanHeaders are the headers of a message clamd found clean, as
// clamav-milter writes them.
func cleanHeaders() []pipeline.Header {
	return []pipeline.Header{
		{Name: "X-Virus-Scanned", Value: "ClamAV using mxguard"},
		{Name: "X-Virus-Status", Value: "Clean"},
	}
}

// New returns the data check for content.clamd: infected is 554 5.7.1
// (INTERFACE.md §4); a failed scan is what content.on_failure says.
func New(c *Client, o scanner.Options) *scanner.Check {
	return scanner.NewCheck(Name, judge{c}, o)
}

type judge struct{ c *Client }

func (j judge) Judge(ctx context.Context, _ *pipeline.Session, m *pipeline.Message) (pipeline.Verdict, string, error) {
	res, err := j.c.Scan(ctx, m.Reader())
	if err != nil {
		return pipeline.Verdict{}, "", err
	}
	if res.Infected {
		return pipeline.Verdict{
			Class: pipeline.ClassVirus,
			Reply: reply.Content.WithText("Message content rejected: virus found (" + res.Signature + ")").By(Name),
		}, scanner.ResultVirus, nil
	}
	return pipeline.Verdict{Headers: cleanHeaders()}, scanner.ResultClean, nil
}
