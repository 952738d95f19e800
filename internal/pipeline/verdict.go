package pipeline

import (
	"strings"

	"mxguard/internal/reply"
)

// Class is what a content check found in a message, for the detection
// rules: spam counts toward spam_attack, a virus or a blocked attachment
// toward virus_outbreak (INTERFACE.md §3).
type Class uint8

// Classes of a content verdict.
const (
	ClassNone  Class = iota // nothing found (or the scan failed)
	ClassSpam               // judged spam, refused or passed with a header
	ClassVirus              // a virus or a blocked attachment
)

func (c Class) String() string {
	switch c {
	case ClassSpam:
		return "spam"
	case ClassVirus:
		return "virus"
	}
	return "none"
}

// Header is one header field a content check adds to a passed message
// (X-Spam-Status, Authentication-Results, X-Mxguard-Scan, ...).
type Header struct {
	Name, Value string
}

// Verdict is a content check's judgement of one message.
type Verdict struct {
	// Reply refuses (554 5.7.1) or defers (451 4.7.1, 451 4.3.0) the
	// message; nil passes it.
	Reply *reply.Reply
	// Class is what was found, whether or not the message is refused
	// (rspamd's "add header" passes spam).
	Class Class
	// Headers are added to the message when it passes.
	Headers []Header
}

// Finding is a refusal found deep inside a walk of the message (the
// built-in inspectors of internal/checks/builtin): an error that ends the
// walk and carries its verdict.
type Finding struct {
	Class Class
	Reply *reply.Reply
}

func (f *Finding) Error() string { return f.Reply.Error() }

// Verdict is the finding as a verdict.
func (f *Finding) Verdict() Verdict { return Verdict{Reply: f.Reply, Class: f.Class} }

// AppendHeaders writes header fields as message header lines, folded
// (RFC 5322 §2.2.3) so that lines stay within 78 characters where a
// break is possible: before a space (the value unfolds unchanged) or,
// inside a long comma-separated list, after a comma with a tab, as
// SpamAssassin folds its tests=. Checks hand only single-line values.
func AppendHeaders(b []byte, hs []Header) []byte {
	for _, h := range hs {
		b = append(append(b, h.Name...), ':')
		line := len(h.Name) + 1
		start := line
		for _, word := range strings.Split(h.Value, " ") {
			sep := " "
			for _, piece := range strings.SplitAfter(word, ",") {
				if piece == "" {
					continue
				}
				if line+len(sep)+len(piece) > 78 && line > start {
					b = append(b, "\r\n"...)
					if sep == "" {
						sep = "\t"
					}
					line = 0
				}
				b = append(append(b, sep...), piece...)
				line += len(sep) + len(piece)
				sep = ""
			}
			if word == "" {
				b = append(b, ' ')
				line++
			}
		}
		b = append(b, "\r\n"...)
	}
	return b
}
