// Package mimewalk walks the MIME structure of a message once, streaming,
// and shows each part to a set of inspectors (the built-in content
// checks): nested multiparts, attached messages, file names encoded per
// RFC 2231 and RFC 2047, bodies decoded from base64 and quoted-printable.
// It reads hostile input: limits bound depth, parts, header size and the
// decoded bytes inspected, and what a mail client would still show is
// never skipped because it is malformed. See README.md.
package mimewalk

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/emersion/go-message/textproto"
)

// Limits bound one walk. Zero fields take the defaults.
type Limits struct {
	// MaxDepth is the deepest nesting of multiparts and attached messages
	// (Postfix refuses mail past its mime_nesting_limit too); default 20.
	MaxDepth int
	// MaxParts is the number of MIME entities; default 1000.
	MaxParts int
	// MaxHeader is the size of one header section; default 256 KiB.
	MaxHeader int
	// MaxDecoded is the number of decoded body bytes shown to inspectors;
	// past it the walk goes on for the structure and the file names but
	// bodies are no longer read. Default 128 MiB.
	MaxDecoded int64
}

// Defaults of Limits.
const (
	DefaultMaxDepth   = 20
	DefaultMaxParts   = 1000
	DefaultMaxHeader  = 256 << 10
	DefaultMaxDecoded = 128 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxParts <= 0 {
		l.MaxParts = DefaultMaxParts
	}
	if l.MaxHeader <= 0 {
		l.MaxHeader = DefaultMaxHeader
	}
	if l.MaxDecoded <= 0 {
		l.MaxDecoded = DefaultMaxDecoded
	}
	return l
}

// LimitError reports a message past a structural limit. Such a message is
// refused: no legitimate mail nests 20 deep or has a thousand parts, and
// a structure the gateway gives up on is one a client may still open.
type LimitError struct {
	What  string // "depth", "parts", "header"
	Limit int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("mime: more than %d %s", e.Limit, map[string]string{"depth": "levels of nesting", "parts": "parts", "header": "bytes in one header"}[e.What])
}

// Part is one leaf entity of the message as an inspector sees it.
type Part struct {
	Depth int // nesting level: 0 for a message that is not multipart
	Index int // 1-based position among the leaves
	// Type is the media type of the (first) Content-Type, lowercased;
	// "text/plain" when there is none (RFC 2045 §5.2).
	Type string
	// Types are the media types of every Content-Type field (a second,
	// conflicting field is an evasion trick).
	Types []string
	// Names are every file name the part gives, decoded: filename of
	// Content-Disposition, name of Content-Type, in each of their
	// RFC 2231 and RFC 2047 forms. A client may show any one of them.
	Names  []string
	Header textproto.Header
}

// Inspector looks at the parts of one message.
type Inspector interface {
	// Part is called for each leaf part before its body. A non-nil error
	// ends the walk and is its result (a finding). A nil Body means the
	// inspector has seen enough of this part.
	Part(p *Part) (Body, error)
}

// Body receives the decoded body of one part, in order.
type Body interface {
	// Write takes the next piece. ErrEnough means this Body needs no
	// more; any other error ends the walk and is its result.
	Write(b []byte) error
	// Close ends the body (not called after Write returned an error);
	// a non-nil error ends the walk and is its result.
	Close() error
}

// ErrEnough is returned by Body.Write when the body is judged.
var ErrEnough = errors.New("mimewalk: enough")

// Stats describe a walk.
type Stats struct {
	Parts    int   // entities, containers included
	Leaves   int   // leaf parts shown to inspectors
	Depth    int   // deepest nesting seen
	Decoded  int64 // body bytes shown to inspectors
	Capped   bool  // MaxDecoded was reached
	Unparsed int   // header sections with malformed lines (kept leniently)
}

// Walker walks messages for a fixed set of inspectors. It is safe for
// concurrent use; its buffers are reused across walks.
type Walker struct {
	l       Limits
	in      []Inspector
	bufs    sync.Pool // *[]byte of bodyBuf bytes
	readers sync.Pool // *bufio.Reader for header sections
}

// bodyBuf is the piece size bodies are handed to inspectors in.
const bodyBuf = 16 << 10

// New returns a Walker.
func New(l Limits, in ...Inspector) *Walker {
	return &Walker{l: l.withDefaults(), in: in}
}

// Walk reads the message from r and shows every leaf part to every
// inspector. It returns the first finding an inspector made, a
// *LimitError, a read error of r, or nil.
func (wk *Walker) Walk(ctx context.Context, r io.Reader) (Stats, error) {
	bp, _ := wk.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, bodyBuf)
		bp = &b
	}
	defer wk.bufs.Put(bp)
	w := &walker{wk: wk, ctx: ctx, buf: *bp}
	err := w.entity(r, 0)
	return w.st, err
}

// Walk is New(l, in...).Walk(ctx, r), for a single walk.
func Walk(ctx context.Context, r io.Reader, l Limits, in ...Inspector) (Stats, error) {
	return New(l, in...).Walk(ctx, r)
}

type walker struct {
	wk     *Walker // limits and inspectors
	ctx    context.Context
	st     Stats
	buf    []byte
	bodies []Body
}

func (w *walker) entity(r io.Reader, depth int) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	w.st.Parts++
	if w.st.Parts > w.wk.l.MaxParts {
		return &LimitError{"parts", w.wk.l.MaxParts}
	}
	if depth > w.wk.l.MaxDepth {
		return &LimitError{"depth", w.wk.l.MaxDepth}
	}
	w.st.Depth = max(w.st.Depth, depth)
	lr := &limitReader{r: r, n: int64(w.wk.l.MaxHeader)}
	br, _ := w.wk.readers.Get().(*bufio.Reader)
	if br == nil {
		br = bufio.NewReaderSize(lr, 4096)
	} else {
		br.Reset(lr)
	}
	defer func() {
		br.Reset(nil)
		w.wk.readers.Put(br)
	}()
	h, err := w.header(br, lr)
	if err != nil {
		return err
	}
	lr.n = -1

	var types []string
	var params [][]param // of each Content-Type field
	for f := h.FieldsByKey("Content-Type"); f.Next(); {
		t, p := parseValue(f.Value())
		types = append(types, t)
		params = append(params, p)
	}
	typ := "text/plain"
	if len(types) > 0 && types[0] != "" {
		typ = types[0]
	}
	cte := h.Get("Content-Transfer-Encoding")

	if strings.HasPrefix(typ, "multipart/") {
		if boundary := get(params[0], "boundary"); boundary != "" {
			sp := newSplitter(br, boundary)
			for {
				part, err := sp.next()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				if err := w.entity(part, depth+1); err != nil {
					return err
				}
			}
		}
		// No boundary: not readable as multipart; a client shows the body
		// as text, so it is inspected as a leaf.
	}
	if typ == "message/rfc822" || typ == "message/global" {
		// An attached message is walked like the message itself; its
		// encoding should be 7bit or 8bit (RFC 2046 §5.2.1) but base64
		// is seen in the wild and decoded.
		return w.entity(decoder(cte, br), depth+1)
	}
	return w.leaf(h, typ, types, params, decoder(cte, br), depth)
}

// header reads a header section with go-message's parser, leniently: a
// malformed line ends textproto.ReadHeader, so reading goes on after it
// until the empty line, as mail clients do, instead of taking the rest of
// the header for body.
func (w *walker) header(br *bufio.Reader, lr *limitReader) (textproto.Header, error) {
	h, err := textproto.ReadHeader(br)
	for err != nil && lr.err == nil {
		w.st.Unparsed++
		var more textproto.Header
		more, err = textproto.ReadHeader(br)
		for f := more.Fields(); f.Next(); {
			h.Add(f.Key(), f.Value())
		}
	}
	if errors.Is(lr.err, errHeaderTooBig) {
		return h, &LimitError{"header", w.wk.l.MaxHeader}
	}
	if lr.err != nil && !errors.Is(lr.err, io.EOF) {
		return h, lr.err
	}
	return h, nil
}

func (w *walker) leaf(h textproto.Header, typ string, types []string, params [][]param, body io.Reader, depth int) error {
	w.st.Leaves++
	p := &Part{Depth: depth, Index: w.st.Leaves, Type: typ, Types: types, Header: h}
	for f := h.FieldsByKey("Content-Disposition"); f.Next(); {
		_, dp := parseValue(f.Value())
		p.Names = append(p.Names, names(dp, "filename")...)
	}
	for _, cp := range params {
		p.Names = append(p.Names, names(cp, "name")...)
	}
	w.bodies = w.bodies[:0]
	for _, in := range w.wk.in {
		b, err := in.Part(p)
		if err != nil {
			return err
		}
		if b != nil {
			w.bodies = append(w.bodies, b)
		}
	}
	for len(w.bodies) > 0 && !w.st.Capped {
		room := w.wk.l.MaxDecoded - w.st.Decoded
		if room <= 0 {
			w.st.Capped = true
			break
		}
		n, err := body.Read(w.buf[:min(int64(len(w.buf)), room)])
		if n > 0 {
			w.st.Decoded += int64(n)
			active := w.bodies[:0]
			for _, b := range w.bodies {
				switch werr := b.Write(w.buf[:n]); {
				case werr == nil:
					active = append(active, b)
				case errors.Is(werr, ErrEnough):
				default:
					return werr
				}
			}
			w.bodies = active
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	for _, b := range w.bodies {
		if err := b.Close(); err != nil {
			return err
		}
	}
	return nil
}

var errHeaderTooBig = errors.New("mimewalk: header too big")

// limitReader reads at most n bytes (n < 0: no limit) and remembers the
// error it returned, so the header loop can tell a malformed line (go on)
// from the end of input or the limit (stop).
type limitReader struct {
	r   io.Reader
	n   int64
	err error
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if l.n == 0 {
		l.err = errHeaderTooBig
		return 0, l.err
	}
	if l.n > 0 && int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	if l.n > 0 {
		l.n -= int64(n)
	}
	if err != nil {
		l.err = err
	}
	return n, err
}
