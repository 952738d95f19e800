// Package queuemon watches outbound mail queues (INTERFACE.md §3
// outbound_queue): mxguard's own spool, a directory of queue files
// (dir:/path), or a command that lists a queue (command:postqueue -j). It
// polls each every 15 s and starts an event when a queue holds at least
// the rule's threshold of messages; the event names the top senders in
// the queue, so the compromised account stands out. See README.md.
package queuemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Snapshot is what a queue holds at one poll.
type Snapshot struct {
	Messages int
	// Senders are the envelope senders with most messages, most first,
	// at most TopSenders; "<>" is the null sender (bounces).
	Senders []SenderCount
	// Sampled is how many messages the senders were counted over when
	// that is fewer than Messages (a directory too large to read whole).
	Sampled int
}

// SenderCount is one sender and its number of queued messages.
type SenderCount struct {
	Sender   string `json:"sender"`
	Messages int    `json:"messages"`
}

// Source is one queue.
type Source interface {
	// Snapshot counts the queue now.
	Snapshot(ctx context.Context) (Snapshot, error)
}

// TopSenders is how many senders a snapshot names.
const TopSenders = 5

// maxDistinctSenders bounds the tally of one snapshot: a queue of a
// million messages from a million forged senders costs no more memory
// than this many entries; the rest are counted under "(other)".
const maxDistinctSenders = 100_000

const otherSenders = "(other)"

// tally counts messages per sender within a bound.
type tally struct {
	n       map[string]int
	counted int
}

func newTally() *tally { return &tally{n: make(map[string]int)} }

func (t *tally) add(sender string) {
	sender = cleanSender(sender)
	t.counted++
	if _, ok := t.n[sender]; !ok && len(t.n) >= maxDistinctSenders {
		sender = otherSenders
	}
	t.n[sender]++
}

// cleanSender makes a sender printable and bounded for an event record.
func cleanSender(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
	if s == "" {
		return "<>"
	}
	if len(s) > 256 {
		s = s[:256]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			return '?'
		}
		return r
	}, strings.ToValidUTF8(s, "?"))
}

// top returns the senders with most messages, ties by name.
func (t *tally) top() []SenderCount {
	out := make([]SenderCount, 0, len(t.n))
	for s, n := range t.n {
		out = append(out, SenderCount{s, n})
	}
	slices.SortFunc(out, func(a, b SenderCount) int {
		if c := cmp.Compare(b.Messages, a.Messages); c != 0 {
			return c
		}
		return strings.Compare(a.Sender, b.Sender)
	})
	if len(out) > TopSenders {
		out = out[:TopSenders]
	}
	return out
}

// SpoolFunc lists the envelope senders of the messages in mxguard's own
// spool ("" for a bounce).
type SpoolFunc func() []string

// Spool is the "spool" queue: mxguard's own outage spool.
type Spool struct{ List SpoolFunc }

var _ Source = Spool{}

// Snapshot counts the spool's messages and senders (it is in memory).
func (s Spool) Snapshot(context.Context) (Snapshot, error) {
	t := newTally()
	for _, from := range s.List() {
		t.add(from)
	}
	return Snapshot{Messages: t.counted, Senders: t.top()}, nil
}

// ErrNoSpool is returned by Parse for "spool" when there is no spool.
var ErrNoSpool = errors.New("queuemon: no spool to watch")

// Parse returns the Source a rule's queue value names: "spool",
// "dir:/path" or "command:ARGV" (split at spaces, run without a shell).
// Config validation has already checked the form and made dir: absolute.
func Parse(queue string, spool SpoolFunc) (Source, error) {
	switch {
	case queue == "spool":
		if spool == nil {
			return nil, ErrNoSpool
		}
		return Spool{List: spool}, nil
	case strings.HasPrefix(queue, "dir:"):
		return &Dir{Path: strings.TrimPrefix(queue, "dir:")}, nil
	case strings.HasPrefix(queue, "command:"):
		argv := strings.Fields(strings.TrimPrefix(queue, "command:"))
		if len(argv) == 0 {
			return nil, fmt.Errorf("queuemon: %q: empty command", queue)
		}
		return &Command{Argv: argv}, nil
	}
	return nil, fmt.Errorf("queuemon: %q is not a queue (spool, dir:/path or command:...)", queue)
}
