package mimewalk

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// splitter cuts a multipart body into its parts (RFC 2046 §5.1.1). It is
// written for hostile input and for the way mail clients read mail, not
// for the letter of the RFC, because a part the gateway does not see but
// the recipient's client shows is an attachment let through:
//
//   - lines of any length (a long preamble line does not end the walk);
//   - LF as well as CRLF line ends;
//   - a missing close delimiter ends the last part at the end of input;
//   - nothing is held in memory beyond one buffer.
//
// A delimiter line is "--" boundary, an optional "--" (close), optional
// white space (RFC 2046 §5.1.1 "transport-padding") and the line end. The
// line end before a delimiter belongs to the delimiter, not to the part.
type splitter struct {
	br     *bufio.Reader
	dash   []byte // "--" + boundary
	done   bool   // the close delimiter (or the end of input) was seen
	inPart bool   // the last delimiter opened a part
	// Part reading state.
	pendingEOL []byte // line end held back: it belongs to a delimiter if one follows
	midLine    bool   // the last chunk handed out did not end a line
	partEnd    bool   // a delimiter ended the current part
	chunk      []byte // data not yet returned by Read
	buf        []byte // backing array of chunk
	eolBuf     [2]byte
}

func newSplitter(r io.Reader, boundary string) *splitter {
	return &splitter{br: bufio.NewReaderSize(r, 16<<10), dash: []byte("--" + boundary)}
}

// next advances to the next part and returns a reader of its raw bytes
// (header and body), or io.EOF after the last one.
func (s *splitter) next() (io.Reader, error) {
	if s.inPart {
		// Skip what the caller did not read of the previous part.
		if _, err := io.Copy(io.Discard, partReader{s}); err != nil {
			return nil, err
		}
	}
	for !s.inPart {
		if s.done {
			return nil, io.EOF
		}
		// Preamble (before the first delimiter) or the rest of a part
		// that ended: skip lines until a delimiter.
		line, full, err := s.line()
		if len(line) > 0 && full && !s.midLine {
			s.delimiter(line)
		}
		s.midLine = !full
		if err != nil {
			if errors.Is(err, io.EOF) {
				s.done = true
				return nil, io.EOF
			}
			return nil, err
		}
	}
	s.pendingEOL, s.midLine, s.partEnd, s.chunk = nil, false, false, nil
	return partReader{s}, nil
}

// line reads the next line; full is false when the line did not fit the
// buffer (the rest follows in the next call) or the input ended without a
// line end.
func (s *splitter) line() (line []byte, full bool, err error) {
	line, err = s.br.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		return line, false, nil
	}
	// The last line of the input is whole even without a line end: the
	// close delimiter of a nested multipart comes without one, as the
	// line end before the parent's delimiter belongs to that delimiter.
	return line, err == nil || errors.Is(err, io.EOF), err
}

// delimiter reports whether line (with its line end) is a delimiter line
// and records which kind.
func (s *splitter) delimiter(line []byte) bool {
	if !bytes.HasPrefix(line, s.dash) {
		return false
	}
	rest := line[len(s.dash):]
	closing := bytes.HasPrefix(rest, []byte("--"))
	if closing {
		rest = rest[2:]
	}
	for _, c := range rest {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	if closing {
		s.done, s.inPart = true, false
	} else {
		s.inPart = true
	}
	return true
}

// partReader reads one part of a splitter.
type partReader struct{ s *splitter }

func (p partReader) Read(b []byte) (int, error) {
	s := p.s
	for len(s.chunk) == 0 {
		if s.partEnd || !s.inPart {
			return 0, io.EOF
		}
		line, full, err := s.line()
		if len(line) > 0 {
			if !s.midLine && full && s.delimiter(line) {
				// The held-back line end belongs to the delimiter.
				s.pendingEOL, s.partEnd = nil, true
				if s.done {
					s.inPart = false
				}
				return 0, io.EOF
			}
			// Not a delimiter: hand out the held-back line end, then
			// the line without its own end, which is held back in turn.
			data := line
			var eol []byte
			if full {
				data, eol = splitEOL(line)
			}
			s.buf = append(append(s.buf[:0], s.pendingEOL...), data...)
			s.chunk = s.buf
			s.pendingEOL = append(s.eolBuf[:0], eol...)
			s.midLine = !full
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// No close delimiter: the part ends with the input,
				// its last line end included.
				s.done, s.partEnd, s.inPart = true, true, false
				if len(s.pendingEOL) > 0 && len(line) == 0 {
					s.buf = append(s.buf[:0], s.pendingEOL...)
					s.chunk, s.pendingEOL = s.buf, nil
				}
				if len(s.chunk) > 0 {
					break
				}
				return 0, io.EOF
			}
			return 0, err
		}
	}
	n := copy(b, s.chunk)
	s.chunk = s.chunk[n:]
	return n, nil
}

// splitEOL splits a line into its data and its line end (CRLF or LF).
func splitEOL(line []byte) (data, eol []byte) {
	n := len(line)
	if n > 0 && line[n-1] == '\n' {
		if n > 1 && line[n-2] == '\r' {
			return line[:n-2], line[n-2:]
		}
		return line[:n-1], line[n-1:]
	}
	return line, nil
}
