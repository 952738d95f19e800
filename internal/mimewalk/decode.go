package mimewalk

import (
	"bufio"
	"io"
	"strings"
)

// decoder returns a reader of the body r decoded per its
// Content-Transfer-Encoding (RFC 2045 §6). Both decoders are lenient the
// way mail clients are: what a client decodes and shows, the gateway must
// decode and inspect, or a stray character in the encoding hides an
// attachment. Unknown encodings are read as they are.
func decoder(cte string, r io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		return &base64Reader{r: r}
	case "quoted-printable":
		return &qpReader{br: bufio.NewReaderSize(r, 8<<10)}
	}
	return r
}

// base64Reader decodes base64 (RFC 2045 §6.8), ignoring every character
// outside the alphabet ("Any characters outside of the base64 alphabet
// are to be ignored in base64-encoded data") and padding anywhere, so
// concatenated encodings decode as a mail client decodes them.
type base64Reader struct {
	r    io.Reader
	in   [3 << 10]byte
	out  []byte // decoded, not yet returned
	obuf [3 << 10]byte
	acc  uint32 // bits of the current quantum
	n    int    // sextets in acc
	err  error
}

// sextet is the value of a base64 alphabet character, or -1.
func sextet(c byte) int8 {
	switch {
	case c >= 'A' && c <= 'Z':
		return int8(c - 'A')
	case c >= 'a' && c <= 'z':
		return int8(c-'a') + 26
	case c >= '0' && c <= '9':
		return int8(c-'0') + 52
	case c == '+':
		return 62
	case c == '/':
		return 63
	}
	return -1
}

func (d *base64Reader) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		n, err := d.r.Read(d.in[:])
		out := d.obuf[:0]
		for _, c := range d.in[:n] {
			v := sextet(c)
			if c == '=' {
				// Padding ends a quantum; decoding goes on after it
				// (concatenated encodings).
				out = d.flush(out)
				continue
			}
			if v < 0 {
				continue
			}
			d.acc = d.acc<<6 | uint32(v)
			d.n++
			if d.n == 4 {
				out = append(out, byte(d.acc>>16), byte(d.acc>>8), byte(d.acc))
				d.acc, d.n = 0, 0
			}
		}
		if err != nil {
			out = d.flush(out)
			d.err = err
		}
		d.out = out
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}

// flush ends a partial quantum: two or three sextets still carry one or
// two whole bytes.
func (d *base64Reader) flush(out []byte) []byte {
	switch d.n {
	case 2:
		out = append(out, byte(d.acc>>4))
	case 3:
		out = append(out, byte(d.acc>>10), byte(d.acc>>2))
	}
	d.acc, d.n = 0, 0
	return out
}

// qpReader decodes quoted-printable (RFC 2045 §6.7): "=XX" is a byte, "="
// at the end of a line is a soft line break, trailing white space is
// dropped; anything malformed is kept literally (RFC 2045 §6.7 note 2:
// "a robust implementation might ... include the '=' character and the
// following character in the decoded data").
type qpReader struct {
	br   *bufio.Reader
	out  []byte
	obuf []byte
	err  error
}

func (d *qpReader) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		line, err := d.br.ReadSlice('\n')
		full := err == nil
		if err == bufio.ErrBufferFull {
			err = nil
		}
		d.obuf = qpLine(d.obuf[:0], line, full)
		d.out = d.obuf
		d.err = err
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}

// qpLine decodes one line (or a piece of a long one, full false).
func qpLine(out, line []byte, full bool) []byte {
	body, eol := line, []byte(nil)
	if full {
		body, eol = splitEOL(line)
		// Trailing white space is transport padding (RFC 2045 §6.7 rule 3).
		for len(body) > 0 && (body[len(body)-1] == ' ' || body[len(body)-1] == '\t') {
			body = body[:len(body)-1]
		}
	}
	soft := full && len(body) > 0 && body[len(body)-1] == '='
	if soft {
		body = body[:len(body)-1]
	}
	out = unescape(out, body, '=')
	if !soft {
		out = append(out, eol...)
	}
	return out
}

// unescape appends in to out with every esc followed by two hex digits
// ("=3D" in quoted-printable, "%2E" in RFC 2231) decoded; a malformed
// escape is kept as it is.
func unescape[T ~string | ~[]byte](out []byte, in T, esc byte) []byte {
	for i := 0; i < len(in); i++ {
		c := in[i]
		if c == esc && i+2 < len(in) {
			h, ok1 := unhex(in[i+1])
			l, ok2 := unhex(in[i+2])
			if ok1 && ok2 {
				out = append(out, h<<4|l)
				i += 2
				continue
			}
		}
		out = append(out, c)
	}
	return out
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
