package pipeline

import (
	"bytes"
	"io"
	"slices"
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

// maxStripHeader bounds the header section WithoutFields rewrites; a
// longer one (no legitimate mail has 256 KiB of header fields) is passed
// as it is.
const maxStripHeader = 256 << 10

// WithoutFields returns a reader of m without the header fields whose
// names are in names (case-insensitive), and its length: the fields a
// content check is about to add, so a sender cannot pass a forged
// "X-Spam-Status: No" or "X-Virus-Status: Clean" on to the mailbox
// (as amavis and rspamd's milter_headers remove them; RFC 8601 §5 for
// Authentication-Results). Only the header section is rewritten, the body
// streams from m unchanged; with no names, or a header section past 256
// KiB, m is returned as it is.
func WithoutFields(m *Message, names []string) (io.Reader, int64, error) {
	if len(names) == 0 {
		return m.Reader(), m.Size(), nil
	}
	hdr, complete, err := m.Header(maxStripHeader)
	if err != nil {
		return nil, 0, err
	}
	if !complete {
		return m.Reader(), m.Size(), nil
	}
	var parts []io.Reader
	kept, dropped := 0, int64(0)
	for i := 0; i < len(hdr); {
		// One field: its first line and the continuation lines after it
		// (lines starting with white space, RFC 5322 §2.2.3).
		end := i
		for {
			j := bytes.IndexByte(hdr[end:], '\n')
			if j < 0 {
				end = len(hdr)
				break
			}
			end += j + 1
			if end >= len(hdr) || (hdr[end] != ' ' && hdr[end] != '\t') {
				break
			}
		}
		name, _, ok := bytes.Cut(hdr[i:end], []byte(":"))
		if ok && slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(strings.TrimSpace(string(name)), n) }) {
			if i > kept {
				parts = append(parts, io.NewSectionReader(m.Content, int64(kept), int64(i-kept)))
			}
			dropped += int64(end - i)
			kept = end
		}
		i = end
	}
	if dropped == 0 {
		return m.Reader(), m.Size(), nil
	}
	parts = append(parts, io.NewSectionReader(m.Content, int64(kept), m.Size()-int64(kept)))
	return io.MultiReader(parts...), m.Size() - dropped, nil
}

// Names returns the distinct header names of hs.
func Names(hs []Header) []string {
	var out []string
	for _, h := range hs {
		if !slices.ContainsFunc(out, func(n string) bool { return strings.EqualFold(n, h.Name) }) {
			out = append(out, h.Name)
		}
	}
	return out
}
