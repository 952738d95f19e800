package queuemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// Command is a "command:ARGV" queue: the command is run (no shell; ARGV
// split at spaces) at every poll and its output read as either
//   - Postfix's `postqueue -j`: one JSON object per message and line, with
//     "sender" (postqueue(1), Postfix ≥ 3.1), or
//   - a single non-negative integer: the number of queued messages.
type Command struct {
	Argv []string
	// Timeout bounds one run (default 10 s, within the 15 s poll).
	Timeout time.Duration
}

var _ Source = (*Command)(nil)

const (
	defaultCommandTimeout = 10 * time.Second
	// maxLine bounds one postqueue -j line (a message with thousands of
	// recipients is a long line); a longer one counts without a sender.
	maxLine = 1 << 20
)

// Snapshot runs the command and parses what it prints.
func (c *Command) Snapshot(ctx context.Context) (Snapshot, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = defaultCommandTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.Argv[0], c.Argv[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &limitedWriter{w: &stderr, n: 4096}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return Snapshot{}, fmt.Errorf("queuemon: %s: %w", c.Argv[0], err)
	}
	if err := cmd.Start(); err != nil {
		return Snapshot{}, fmt.Errorf("queuemon: %w", err)
	}
	snap, perr := ParseOutput(out)
	// Drain what is left so the command is not killed by a full pipe.
	_, _ = io.Copy(io.Discard, out)
	werr := cmd.Wait()
	if ctx.Err() != nil {
		return Snapshot{}, fmt.Errorf("queuemon: %s: no answer within %v", strings.Join(c.Argv, " "), timeout)
	}
	if werr != nil {
		return Snapshot{}, fmt.Errorf("queuemon: %s: %w: %s", strings.Join(c.Argv, " "), werr, strings.TrimSpace(stderr.String()))
	}
	if perr != nil {
		return Snapshot{}, fmt.Errorf("queuemon: %s: %w", strings.Join(c.Argv, " "), perr)
	}
	return snap, nil
}

type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.n > 0 {
		k := min(len(p), l.n)
		_, _ = l.w.Write(p[:k])
		l.n -= k
	}
	return len(p), nil
}

// postqueueEntry is the part of a postqueue -j object that is used.
type postqueueEntry struct {
	Sender *string `json:"sender"`
}

// postqueueNull is how postqueue -j spells the null sender of a bounce.
const postqueueNull = "MAILER-DAEMON"

// ErrOutput is returned for output that is neither postqueue -j nor a
// number.
var ErrOutput = errors.New("output is neither postqueue -j JSON lines nor a number")

// maxTrailing is how much white space may follow a count.
const maxTrailing = 4096

// ParseOutput reads a queue command's output (see Command).
func ParseOutput(r io.Reader) (Snapshot, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	t := newTally()
	var snap Snapshot
	first := true
	for {
		line, long, err := readLine(br)
		if err != nil && !errors.Is(err, io.EOF) {
			return Snapshot{}, err
		}
		if s := bytes.TrimSpace(line); len(s) > 0 || long {
			switch {
			case first && !long && s[0] != '{':
				// A count: the whole output is one number.
				n, perr := strconv.Atoi(string(s))
				// Only white space may follow, and not much of it.
				rest, _ := io.ReadAll(io.LimitReader(br, maxTrailing+1))
				if perr != nil || n < 0 || len(rest) > maxTrailing || len(bytes.TrimSpace(rest)) > 0 {
					return Snapshot{}, ErrOutput
				}
				return Snapshot{Messages: n}, nil
			case long:
				// Still one message; its sender is not read.
				snap.Messages++
			default:
				var e postqueueEntry
				if json.Unmarshal(s, &e) != nil {
					return Snapshot{}, fmt.Errorf("%w: line %d is not a JSON object", ErrOutput, snap.Messages+1)
				}
				snap.Messages++
				if e.Sender != nil {
					sender := *e.Sender
					if sender == postqueueNull {
						sender = ""
					}
					t.add(sender)
				}
			}
			first = false
		}
		if errors.Is(err, io.EOF) {
			break
		}
	}
	snap.Senders = t.top()
	if t.counted < snap.Messages {
		snap.Sampled = t.counted
	}
	return snap, nil
}

// readLine returns the next line; long is set (and the line dropped) when
// it is over maxLine.
func readLine(br *bufio.Reader) (line []byte, long bool, err error) {
	var buf []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if !long && len(buf)+len(chunk) > maxLine {
			long, buf = true, nil
		}
		if !long {
			buf = append(buf, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if long {
			return nil, true, err
		}
		return buf, false, err
	}
}
