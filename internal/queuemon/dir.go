package queuemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// Dir is a "dir:/path" queue: every regular file below Path (recursively,
// symbolic links not followed) is one queued message, as in Postfix's
// queue directories (maildrop, incoming, active, deferred, hold) or any
// MTA's spool directory.
//
// Senders are read from the first SampleFiles files met: a Postfix queue
// file's sender record, or a Return-Path header of a file that is a
// message; other files count without a sender.
type Dir struct {
	Path string
	// SampleFiles bounds how many files are opened per poll (default
	// 1000): a directory of a million files is counted, not read whole.
	SampleFiles int
}

var _ Source = (*Dir)(nil)

const (
	defaultSampleFiles = 1000
	// headBytes is how much of a file is read for its sender: Postfix
	// writes the sender record before the message, and a Return-Path
	// header is the first line of a delivered message.
	headBytes = 8 << 10
)

// Snapshot walks the directory.
func (d *Dir) Snapshot(ctx context.Context) (Snapshot, error) {
	sample := d.SampleFiles
	if sample <= 0 {
		sample = defaultSampleFiles
	}
	if fi, err := os.Stat(d.Path); err != nil {
		return Snapshot{}, fmt.Errorf("queuemon: %w", err)
	} else if !fi.IsDir() {
		return Snapshot{}, fmt.Errorf("queuemon: %s is not a directory", d.Path)
	}
	t := newTally()
	var snap Snapshot
	buf := make([]byte, headBytes)
	err := filepath.WalkDir(d.Path, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if path == d.Path {
				return err
			}
			// A subdirectory we may not read (Postfix's are 0700) is
			// skipped, not fatal: the rest still counts.
			if e != nil && e.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		snap.Messages++
		if t.counted < sample {
			if s, ok := fileSender(path, buf); ok {
				t.add(s)
			} else {
				t.counted++ // read, but no sender in it
			}
		}
		return nil
	})
	if err != nil {
		return Snapshot{}, fmt.Errorf("queuemon: %s: %w", d.Path, err)
	}
	snap.Senders = t.top()
	if t.counted < snap.Messages {
		snap.Sampled = t.counted
	}
	return snap, nil
}

// fileSender reads the sender of one queue file.
func fileSender(path string, buf []byte) (string, bool) {
	f, err := os.Open(path)
	if err != nil {
		return "", false // vanished (delivered) or unreadable: counted only
	}
	defer f.Close()
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", false
	}
	return Sender(buf[:n])
}

// Sender finds the envelope sender in the head of a queue file: a Postfix
// queue file's 'S' record, or else a Return-Path header in the header
// block of a message.
func Sender(head []byte) (string, bool) {
	if s, ok := postfixSender(head); ok {
		return s, true
	}
	return returnPath(head)
}

// Postfix queue file records (src/global/record.c, rec_type.h): a type
// byte, the length in 7-bit groups, low group first, high bit set on all
// but the last, then the data. The sender is REC_TYPE_FROM 'S'; it comes
// before the message content (REC_TYPE_MESG 'M').
const (
	recFrom    = 'S'
	recMesg    = 'M'
	recEnd     = 'E'
	maxRecords = 64
)

// envelopeRecords are the types that may precede the sender in a queue
// file written by cleanup(8) or postdrop(1); any other byte means the file
// is not a Postfix queue file.
var envelopeRecords = [256]bool{
	'C': true, 'T': true, 'c': true, 'F': true, 'I': true, 'L': true,
	'S': true, 'D': true, 'R': true, 'O': true, '/': true, 'W': true,
	'A': true, 'K': true, '>': true, 'f': true, 'd': true, 'V': true,
	'<': true, 'i': true, 'o': true, 'n': true, 'm': true, 'P': true,
	'p': true, 'r': true, 'e': true,
}

func postfixSender(b []byte) (string, bool) {
	for range maxRecords {
		if len(b) == 0 {
			return "", false
		}
		typ := b[0]
		b = b[1:]
		if typ == recMesg || typ == recEnd || !envelopeRecords[typ] {
			return "", false
		}
		var n, shift int
		for {
			if len(b) == 0 || shift > 21 { // records over 2 MiB are not envelope records
				return "", false
			}
			c := b[0]
			b = b[1:]
			n |= int(c&0x7f) << shift
			if c&0x80 == 0 {
				break
			}
			shift += 7
		}
		if n > len(b) {
			return "", false
		}
		if typ == recFrom {
			return string(b[:n]), true
		}
		b = b[n:]
	}
	return "", false
}

// returnPath finds "Return-Path: <addr>" among the header fields of a
// message (RFC 5322 §2.2, RFC 5321 §4.4), before the first empty line.
func returnPath(b []byte) (string, bool) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		line = bytes.TrimRight(line, "\r")
		if len(line) == 0 {
			return "", false
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || bytes.ContainsAny(name, " \t") {
			if line[0] == ' ' || line[0] == '\t' {
				continue // a folded continuation
			}
			return "", false // not a header block: not a message
		}
		if bytes.EqualFold(name, []byte("Return-Path")) {
			v := bytes.TrimSpace(value)
			if i := bytes.IndexByte(v, '<'); i >= 0 {
				if j := bytes.IndexByte(v[i:], '>'); j >= 0 {
					return string(v[i+1 : i+j]), true
				}
			}
			return "", false
		}
	}
	return "", false
}
