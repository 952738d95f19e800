// Package gtube refuses mail carrying GTUBE, the Generic Test for
// Unsolicited Bulk Email (SpamAssassin's test string), in a text part: an
// operator can prove the spam path end to end without a real spam. It is
// an inspector of the built-in MIME walk (internal/checks/builtin).
package gtube

import (
	"mxguard/internal/mimewalk"
	"mxguard/internal/pipeline"
	"mxguard/internal/reply"
)

// Name labels the reply.
const Name = "gtube"

// The GTUBE string, in two halves so that this source file is not itself
// taken for spam by a scanner.
const pattern = "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

// Inspector finds GTUBE in the decoded text parts of a message, as
// SpamAssassin's and rspamd's GTUBE rules do.
type Inspector struct{}

var _ mimewalk.Inspector = Inspector{}

// Part inspects text parts only.
func (Inspector) Part(p *mimewalk.Part) (mimewalk.Body, error) {
	if len(p.Type) < 5 || p.Type[:5] != "text/" {
		return nil, nil
	}
	return &body{f: mimewalk.NewFinder(pattern)}, nil
}

type body struct{ f *mimewalk.Finder }

func (b *body) Write(p []byte) error {
	if b.f.Write(p) {
		return &pipeline.Finding{Class: pipeline.ClassSpam, Reply: reply.Content.WithText("Message content rejected: spam (GTUBE test message)").By(Name)}
	}
	return nil
}

func (b *body) Close() error { return nil }
