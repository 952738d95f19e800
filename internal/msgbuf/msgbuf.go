// Package msgbuf holds message data while a transaction is in flight: the
// first part of a message stays in memory, the rest spills to an unlinked
// temporary file, and one budget bounds the memory held by all messages
// together, so thousands of sessions sending 50 MiB each cannot exhaust RAM
// (DESIGN.md "Message data"). A Buffer is written once, then read as often
// as needed — by content checks, by the relay and by the spool — at any
// offset. See README.md.
package msgbuf

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// ErrStorage marks a failure of the temporary file (disk full, permission,
// I/O error): the message could not be kept, which is our fault, never the
// client's. The SMTP front end answers 451 4.3.0.
var ErrStorage = errors.New("msgbuf: temporary storage failed")

// File is a spill file: written once from the start, then read at
// offsets, possibly by several readers at once.
type File interface {
	io.Writer
	io.ReaderAt
	io.Closer
}

// Options configures a Store.
type Options struct {
	// Dir holds the spill files (data_dir/tmp). New creates it and deletes
	// every file it finds there: they belong to an earlier process.
	Dir string
	// MemPerMessage is how much of each message stays in memory before
	// the rest goes to a file; rounded up to whole chunks of 16 KiB.
	// Default 256 KiB (docs/benchmarks.md, "Message data").
	MemPerMessage int
	// MemBudget bounds the message bytes held in memory by all Buffers
	// together; once it is used up, new data of every message goes to
	// its file at once. Default 64 MiB.
	MemBudget int64
	// MinFree is the free space spilling leaves on Dir's filesystem: a
	// message that would take it lower fails (ErrNoSpace), so messages in
	// flight — up to max_connections × max_message_size of them — never
	// fill the disk the spool and the events database share. Default 5 %
	// of the filesystem, at most 1 GiB.
	MinFree int64
	// CreateTemp makes a spill file in dir; nil: an unlinked file from
	// os.CreateTemp. Tests inject failing files.
	CreateTemp func(dir string) (File, error)
}

// ErrNoSpace is the storage error of a message that would have taken the
// spill filesystem below MinFree.
var ErrNoSpace = errors.New("msgbuf: spill filesystem down to its free-space reserve")

const (
	// DefaultMemPerMessage keeps typical mail, small attachments
	// included, off the disk: a spill costs about a millisecond (file
	// create, write, read back), a message in memory microseconds.
	DefaultMemPerMessage = 256 << 10
	// DefaultMemBudget is 256 messages' worth of DefaultMemPerMessage.
	DefaultMemBudget = 64 << 20
	// chunkSize is the unit of memory: buffers grow by pooled chunks, so
	// a small message takes one and nothing is copied as it grows.
	chunkSize = 16 << 10
	// spillPrefix names spill files, so New deletes only its own.
	spillPrefix = "msg-"
	// freeCheckEvery is how often, in bytes written to a spill file, the
	// free space is looked at again (one statfs per MiB).
	freeCheckEvery = 1 << 20
)

// Store makes Buffers and keeps the memory budget. It is safe for
// concurrent use.
type Store struct {
	o      Options
	chunk  int // chunkSize; smaller in tests to reach the file with small inputs
	inMem  atomic.Int64
	chunks sync.Pool // of *[]byte, len == chunk
}

// New returns a Store spilling into o.Dir, after deleting the spill files
// an earlier process left there (a crash between creating and unlinking
// one).
func New(o Options) (*Store, error) {
	return newStore(o, chunkSize)
}

func newStore(o Options, chunk int) (*Store, error) {
	if o.MemPerMessage <= 0 {
		o.MemPerMessage = DefaultMemPerMessage
	}
	o.MemPerMessage = (o.MemPerMessage + chunk - 1) / chunk * chunk
	if o.MemBudget <= 0 {
		o.MemBudget = DefaultMemBudget
	}
	if o.CreateTemp == nil {
		o.CreateTemp = createUnlinked
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("msgbuf: %w", err)
	}
	if err := removeStale(o.Dir); err != nil {
		return nil, fmt.Errorf("msgbuf: %w", err)
	}
	if o.MinFree <= 0 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(o.Dir, &st); err != nil {
			return nil, fmt.Errorf("msgbuf: %w", err)
		}
		o.MinFree = min(int64(st.Blocks)*st.Bsize/20, 1<<30)
	}
	s := &Store{o: o, chunk: chunk}
	s.chunks.New = func() any {
		b := make([]byte, chunk)
		return &b
	}
	return s, nil
}

// removeStale deletes the spill files left in dir.
func removeStale(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), spillPrefix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// createUnlinked makes a spill file and unlinks it at once: it lives until
// it is closed, and a crash leaves nothing behind.
func createUnlinked(dir string) (File, error) {
	f, err := os.CreateTemp(dir, spillPrefix+"*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// InMemory returns the message bytes held in memory now, across all
// Buffers (whole chunks).
func (s *Store) InMemory() int64 { return s.inMem.Load() }

// reserve takes n bytes of the budget, or reports that it is used up.
func (s *Store) reserve(n int64) bool {
	for {
		cur := s.inMem.Load()
		if cur+n > s.o.MemBudget {
			return false
		}
		if s.inMem.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

func (s *Store) getChunk() *[]byte  { return s.chunks.Get().(*[]byte) }
func (s *Store) putChunk(c *[]byte) { s.chunks.Put(c) }

// Buffer is one message: written once (Write, ReadFrom), then read (ReadAt,
// Reader, Header) any number of times, concurrently if need be, and
// finally closed. Writing and reading must not overlap.
type Buffer struct {
	s      *Store
	chunks []*[]byte // in memory: the first memLen bytes, chunk after chunk
	memLen int64
	f      File // the bytes after memLen; nil until needed
	size   int64
	err    error // sticky storage error
	closed bool
}

// NewBuffer returns an empty Buffer. Close it when the message is done.
func (s *Store) NewBuffer() *Buffer { return &Buffer{s: s} }

// Size is the number of bytes written.
func (b *Buffer) Size() int64 { return b.size }

// Spilled reports whether part of the message is in a file.
func (b *Buffer) Spilled() bool { return b.f != nil }

// memRoom returns the free part of the last in-memory chunk, taking a new
// chunk (within the per-message limit and the budget) when it is full; nil
// means the data goes to the file from now on. Once a message has spilled
// it stays spilled: the file holds everything after memLen.
func (b *Buffer) memRoom() []byte {
	if b.f != nil {
		return nil
	}
	if held := int64(len(b.chunks) * b.s.chunk); b.memLen < held {
		last := *b.chunks[len(b.chunks)-1]
		return last[b.memLen-held+int64(b.s.chunk):]
	}
	if len(b.chunks)*b.s.chunk >= b.s.o.MemPerMessage || !b.s.reserve(int64(b.s.chunk)) {
		return nil
	}
	ch := b.s.getChunk()
	b.chunks = append(b.chunks, ch)
	return *ch
}

// spill makes sure the file exists.
func (b *Buffer) spill() error {
	if b.err != nil {
		return b.err
	}
	if b.f == nil {
		if err := b.s.checkFree(); err != nil {
			b.err = err
			return err
		}
		f, err := b.s.o.CreateTemp(b.s.o.Dir)
		if err != nil {
			b.err = fmt.Errorf("%w: create: %w", ErrStorage, err)
			return b.err
		}
		b.f = f
	}
	return nil
}

// Write appends p. An error wraps ErrStorage; the Buffer is then unusable.
func (b *Buffer) Write(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n := 0
	for len(p) > 0 {
		room := b.memRoom()
		if room == nil {
			break
		}
		k := copy(room, p)
		b.memLen += int64(k)
		b.size += int64(k)
		n += k
		p = p[k:]
	}
	if len(p) == 0 {
		return n, nil
	}
	if err := b.spill(); err != nil {
		return n, err
	}
	before := b.size
	k, err := b.f.Write(p)
	b.size += int64(k)
	n += k
	if err != nil {
		b.err = fmt.Errorf("%w: write: %w", ErrStorage, err)
		return n, b.err
	}
	if before/freeCheckEvery != b.size/freeCheckEvery {
		if err := b.s.checkFree(); err != nil {
			b.err = err
			return n, err
		}
	}
	return n, nil
}

// checkFree fails once Dir's filesystem is down to MinFree.
func (s *Store) checkFree() error {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.o.Dir, &st); err != nil {
		return fmt.Errorf("%w: statfs: %w", ErrStorage, err)
	}
	if free := int64(st.Bavail) * st.Bsize; free < s.o.MinFree {
		return fmt.Errorf("%w: %w (%d bytes free, %d kept)", ErrStorage, ErrNoSpace, free, s.o.MinFree)
	}
	return nil
}

// ReadFrom appends everything r yields up to io.EOF. An error of r is
// returned unchanged (the client's: too large, reset, connection lost);
// a failure of the file wraps ErrStorage. Reading stops at the first
// error of either kind.
func (b *Buffer) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if b.err != nil {
			return total, b.err
		}
		// In memory, read straight into the chunk.
		if room := b.memRoom(); room != nil {
			n, err := r.Read(room)
			b.memLen += int64(n)
			b.size += int64(n)
			total += int64(n)
			if err == io.EOF {
				return total, nil
			}
			if err != nil {
				return total, err
			}
			continue
		}
		n, err := b.readToFile(r)
		total += n
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// readToFile copies from r to the file through a pooled chunk until EOF or
// an error. The chunk is outside the budget: one per message being
// received (README "Memory").
func (b *Buffer) readToFile(r io.Reader) (int64, error) {
	if err := b.spill(); err != nil {
		return 0, err
	}
	ch := b.s.getChunk()
	defer b.s.putChunk(ch)
	var total int64
	for {
		n, rerr := r.Read(*ch)
		if n > 0 {
			k, werr := b.Write((*ch)[:n])
			total += int64(k)
			if werr != nil {
				return total, werr
			}
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// ReadAt reads len(p) bytes at off (io.ReaderAt); safe for concurrent
// readers once writing is done.
func (b *Buffer) ReadAt(p []byte, off int64) (int, error) {
	if b.closed {
		return 0, errors.New("msgbuf: read after Close")
	}
	if off < 0 {
		return 0, errors.New("msgbuf: negative offset")
	}
	if off >= b.size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := b.size - off; int64(want) > rest {
		p = p[:rest]
	}
	n := 0
	c := int64(b.s.chunk)
	for n < len(p) && off < b.memLen {
		ch := *b.chunks[off/c]
		end := min(c, b.memLen-off/c*c)
		k := copy(p[n:], ch[off%c:end])
		n += k
		off += int64(k)
	}
	if n < len(p) {
		k, err := b.f.ReadAt(p[n:], off-b.memLen)
		n += k
		if n < len(p) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF // the file is shorter than what was written
			}
			return n, fmt.Errorf("%w: read: %w", ErrStorage, err)
		}
	}
	if n < want {
		return n, io.EOF
	}
	return n, nil
}

// Reader returns a new reader of the whole message from its start.
func (b *Buffer) Reader() io.Reader { return &reader{b: b} }

// reader reads a Buffer sequentially; WriteTo hands the in-memory chunks
// to the writer without copying them (io.Copy uses it).
type reader struct {
	b   *Buffer
	off int64
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.b.ReadAt(p, r.off)
	r.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (r *reader) WriteTo(w io.Writer) (int64, error) {
	b := r.b
	if b.closed {
		return 0, errors.New("msgbuf: read after Close")
	}
	var total int64
	c := int64(b.s.chunk)
	for r.off < b.memLen {
		ch := *b.chunks[r.off/c]
		end := min(c, b.memLen-r.off/c*c)
		n, err := w.Write(ch[r.off%c : end])
		r.off += int64(n)
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	if r.off >= b.size {
		return total, nil
	}
	ch := b.s.getChunk()
	defer b.s.putChunk(ch)
	for r.off < b.size {
		n, err := b.ReadAt(*ch, r.off)
		if n > 0 {
			k, werr := w.Write((*ch)[:n])
			r.off += int64(k)
			total += int64(k)
			if werr != nil {
				return total, werr
			}
		}
		if err != nil && err != io.EOF {
			return total, err
		}
	}
	return total, nil
}

// Close releases the memory and the file. The Buffer must not be used
// afterwards; Close twice is harmless.
func (b *Buffer) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	for _, ch := range b.chunks {
		b.s.putChunk(ch)
	}
	b.s.inMem.Add(-int64(len(b.chunks) * b.s.chunk))
	b.chunks = nil
	var err error
	if b.f != nil {
		err = b.f.Close()
		b.f = nil
	}
	return err
}
