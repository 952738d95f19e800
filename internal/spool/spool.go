// Package spool is mxguard's outage spool: a durable store of messages
// accepted while every downstream server is down (store.go, format.go), and
// the manager that decides per transaction whether to pass mail through,
// spool it or defer it, and releases the spool when a server is back
// (manager.go, unspool.go, dsn.go). See README.md.
package spool

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"mxguard/internal/metrics"
)

// Clock gives the spool and the manager their notion of now; tests inject a
// fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// ErrFull is returned by Put when the message would take the spool over
// Options.MaxBytes (the front end answers 452 4.3.1).
var ErrFull = errors.New("spool: full")

// ErrNotFound is returned for an id that is not in the spool.
var ErrNotFound = errors.New("spool: no such message")

// Envelope is what the spool keeps about a message besides its bytes.
type Envelope struct {
	ID         string    `json:"id"`
	From       string    `json:"from"` // "" is the null reverse-path of a bounce
	Recipients []string  `json:"recipients"`
	Received   time.Time `json:"received"`
	Source     string    `json:"source,omitempty"` // client address, for logs
	Size       int64     `json:"-"`                // message bytes

	// Delivery state, kept in a sidecar file beside the message so that
	// updating it never rewrites the message (see Defer).
	Attempts    int       `json:"-"`
	NextAttempt time.Time `json:"-"` // zero: due now
	LastError   string    `json:"-"`
	// Done lists the recipients already delivered or bounced; the
	// unspooler hands on only the others.
	Done []string `json:"-"`
	// Redelivery is set when the process stopped while this message was
	// being handed on, so the downstream may already have it: delivering
	// it again can make a duplicate (counted, see README).
	Redelivery bool `json:"-"`

	fileSize int64 // bytes of ID.msg, for the spool's accounting
}

// Pending returns the recipients not yet delivered or bounced.
func (e *Envelope) Pending() []string {
	var p []string
	for _, r := range e.Recipients {
		if !slices.Contains(e.Done, r) {
			p = append(p, r)
		}
	}
	return p
}

// state is the sidecar JSON.
type state struct {
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	Done        []string  `json:"done,omitempty"`
}

// Options configures a Spool.
type Options struct {
	// MaxBytes bounds the bytes on disk (message files, headers included);
	// 0 or less means no limit.
	MaxBytes int64
	Logger   *slog.Logger     // nil: discard
	Metrics  *metrics.Metrics // nil: no gauges
	Clock    Clock            // receive time of Put; nil: system clock

	// open opens a message or state file for reading; nil: os.Open.
	// Tests replace it to fail reads the way a bad disk does, which
	// permission bits cannot do when the tests run as root.
	open func(name string) (file, error)
}

// file is what the spool reads message and state files through.
type file interface {
	io.Reader
	io.ReaderAt
	io.Closer
	Stat() (fs.FileInfo, error)
}

// unreadable is a message file that could not be read for a reason that
// says nothing about its content (EIO, EMFILE, EACCES, a state file that
// cannot be read): it stays where it is, out of the index, and is read
// again after a backoff (retryUnreadable).
type unreadable struct {
	size    int64     // file bytes, counted against MaxBytes meanwhile
	tries   int       // failed reads so far
	next    time.Time // next read
	journal int       // attempts of its journal line, -1 when none
}

// Spool is a directory of message files:
//
//	DIR/ID.msg       header, envelope and message (format.go)
//	DIR/ID.state     delivery state of ID, once it has been deferred
//	DIR/inflight     journal of attempts started (duplicate accounting)
//	DIR/tmp/         files being written; emptied by Open
//	DIR/corrupt/     files whose checksum or layout is wrong, kept for the operator
//	DIR/bounces/     our bounces the downstream would not take (held.go)
//
// A Spool is safe for concurrent use.
type Spool struct {
	dir   string
	o     Options
	log   *slog.Logger
	clock Clock
	open  func(name string) (file, error)
	dirf  *os.File // DIR, kept open to fsync renames and unlinks

	retryMu sync.Mutex // one retryUnreadable at a time

	mu       sync.Mutex
	msgs     map[string]*Envelope
	unread   map[string]*unreadable // message files to read again
	order    []*Envelope            // by Received, then ID
	bytes    int64                  // bytes of committed message files
	reserved int64                  // bytes of Puts in progress
	refused  bool                   // a Put got ErrFull and no message left since
	journal  *os.File
	// held and heldBytes count DIR/bounces/ (held.go).
	held      int
	heldBytes int64
}

const (
	msgExt      = ".msg"
	stateExt    = ".state"
	journalName = "inflight"
	tmpDir      = "tmp"
	corruptDir  = "corrupt"
)

// Open opens (creating it if needed) the spool in dir and recovers it:
// files left in tmp/ by a crash are deleted (their Put never returned, so
// no client got 250 for them), message files are checked and indexed, a
// damaged one (checksum or layout wrong) is moved to corrupt/ and logged,
// one that cannot be read (an I/O error) stays and is read again later,
// and a state file without its message is deleted.
func Open(dir string, o Options) (*Spool, error) {
	s := &Spool{dir: dir, o: o, log: o.Logger, clock: o.Clock, open: o.open,
		msgs: map[string]*Envelope{}, unread: map[string]*unreadable{}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.clock == nil {
		s.clock = systemClock{}
	}
	if s.open == nil {
		s.open = func(name string) (file, error) { return os.Open(name) }
	}
	for _, d := range []string{dir, filepath.Join(dir, tmpDir), filepath.Join(dir, corruptDir), filepath.Join(dir, heldDir)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	var err error
	if s.dirf, err = os.Open(dir); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := s.recover(); err != nil {
		s.dirf.Close()
		return nil, err
	}
	if s.journal, err = os.OpenFile(filepath.Join(dir, journalName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
		s.dirf.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	s.gauges()
	return s, nil
}

func (s *Spool) recover() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tmps, err := os.ReadDir(filepath.Join(s.dir, tmpDir))
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for _, t := range tmps {
		if err := os.Remove(filepath.Join(s.dir, tmpDir, t.Name())); err != nil {
			// Harmless where it is (nothing in tmp/ is ever delivered);
			// the next start tries again.
			s.log.Warn("spool: cannot remove incomplete temporary file", "file", t.Name(), "err", err)
			continue
		}
		s.log.Info("spool: removed incomplete temporary file", "file", t.Name())
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	now := s.clock.Now()
	var states []string
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, msgExt) && validID(strings.TrimSuffix(name, msgExt)):
			id := strings.TrimSuffix(name, msgExt)
			env, size, err := s.read(id)
			var hint int64
			if fi, ierr := e.Info(); ierr == nil {
				hint = fi.Size()
			}
			s.settle(id, env, size, err, hint, now)
		case strings.HasSuffix(name, stateExt):
			states = append(states, name)
		case name == tmpDir || name == corruptDir || name == heldDir || name == journalName:
		default:
			s.log.Warn("spool: ignoring unknown file", "file", name)
		}
	}
	for _, name := range states {
		id := strings.TrimSuffix(name, stateExt)
		if s.msgs[id] != nil || s.unread[id] != nil {
			continue // applied by read, or when the message can be read
		}
		// Remove unlinks the message first; a crash before the state
		// file went leaves it orphaned.
		if err := os.Remove(filepath.Join(s.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("spool: cannot remove orphan state file", "file", name, "err", err)
		}
	}
	if err := s.recoverJournal(); err != nil {
		return err
	}
	if err := s.recoverHeld(); err != nil {
		return err
	}
	if err := s.dirf.Sync(); err != nil {
		return fmt.Errorf("spool: sync directory: %w", err)
	}
	s.log.Info("spool: opened", "dir", s.dir, "messages", len(s.msgs), "unreadable", len(s.unread), "bytes", s.bytes, "bounces_held", s.held)
	return nil
}

// errBadState marks a state file that was read but does not parse.
var errBadState = errors.New("bad state file")

// read loads the header of ID.msg and applies ID.state, if any. Its error
// wraps errCorrupt when the message file is damaged.
func (s *Spool) read(id string) (*Envelope, int64, error) {
	env, size, err := s.load(id)
	if err != nil {
		return nil, 0, err
	}
	switch err := s.loadState(env, id+stateExt); {
	case err == nil, errors.Is(err, fs.ErrNotExist): // never deferred
	case errors.Is(err, errBadState):
		// Losing the retry schedule only means an early retry.
		s.log.Warn("spool: unreadable state file, retrying from scratch", "id", id, "err", err)
	default:
		// Without its state the message would go again to recipients
		// it already reached: wait until the state can be read.
		return nil, 0, fmt.Errorf("state file: %w", err)
	}
	return env, size, nil
}

// settle files the outcome of reading message id (read's results; hint
// is the file size from the directory listing): indexed, quarantined when
// damaged, forgotten when it is gone, or kept for another read after a
// backoff on any other error. It reports whether a file was moved (the
// directory needs an fsync). s.mu is held.
func (s *Spool) settle(id string, env *Envelope, size int64, err error, hint int64, now time.Time) bool {
	u := s.unread[id]
	if u != nil && (err == nil || errors.Is(err, errCorrupt) || errors.Is(err, fs.ErrNotExist)) {
		s.bytes -= u.size
		delete(s.unread, id)
	}
	defer s.gauges()
	switch {
	case err == nil:
		if u != nil {
			if u.journal >= 0 && env.Attempts <= u.journal {
				env.Redelivery = true // see recoverJournal
			}
			s.log.Info("spool: message file readable again", "id", id, "tries", u.tries)
		}
		s.insert(env, size)
	case errors.Is(err, errCorrupt):
		return s.quarantine(id+msgExt, err)
	case errors.Is(err, fs.ErrNotExist):
		// Gone between the directory listing and the read (an
		// operator moved it): nothing left to deliver or keep.
		s.log.Warn("spool: message file vanished", "id", id, "err", err)
	default:
		if u == nil {
			u = &unreadable{size: hint, journal: -1}
			s.unread[id] = u
			s.bytes += u.size
		}
		u.tries++
		wait := unreadBackoff(u.tries)
		u.next = now.Add(wait)
		s.log.Error("spool: cannot read message file, keeping it and trying again", "id", id, "tries", u.tries, "retry_in", wait, "err", err)
	}
	return false
}

// unreadBackoff is the wait before reading an unreadable file again after
// n failed reads: 1s, 2s, 4s, ... up to 5 minutes (a disk that returns
// EIO, or a process out of file descriptors, may recover any time).
func unreadBackoff(n int) time.Duration {
	return min(time.Second<<min(n-1, 9), 5*time.Minute)
}

// retryUnreadable reads again the message files whose read failed and
// whose backoff is over: a readable one joins the index (and is
// delivered like any other), a damaged one is quarantined. The manager
// calls it before every unspool step.
func (s *Spool) retryUnreadable() {
	s.retryMu.Lock()
	defer s.retryMu.Unlock()
	now := s.clock.Now()
	s.mu.Lock()
	var ids []string
	for id, u := range s.unread {
		if !u.next.After(now) {
			ids = append(ids, id)
		}
	}
	s.mu.Unlock()
	slices.Sort(ids)
	moved := false
	for _, id := range ids {
		env, size, err := s.read(id) // no lock held: disk I/O
		s.mu.Lock()
		moved = s.settle(id, env, size, err, 0, now) || moved
		s.mu.Unlock()
	}
	if moved {
		if err := s.dirf.Sync(); err != nil {
			s.log.Error("spool: sync directory", "err", err)
		}
	}
}

// nextUnreadable returns when the next unreadable file is due for a read;
// false when there is none.
func (s *Spool) nextUnreadable() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next time.Time
	for _, u := range s.unread {
		if next.IsZero() || u.next.Before(next) {
			next = u.next
		}
	}
	return next, len(s.unread) > 0
}

// load reads and checks the header of ID.msg.
func (s *Spool) load(id string) (*Envelope, int64, error) {
	f, err := s.open(filepath.Join(s.dir, id+msgExt))
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	fh, err := decodeHeader(bufio.NewReader(f), fi.Size())
	if err != nil {
		return nil, 0, err
	}
	if fh.env.ID != id {
		return nil, 0, fmt.Errorf("%w: envelope id %q in file %s", errCorrupt, fh.env.ID, id)
	}
	return &fh.env, fi.Size(), nil
}

// maxState bounds a state file read; a real one is a few hundred bytes.
const maxState = 1 << 20

func (s *Spool) loadState(env *Envelope, name string) error {
	f, err := s.open(filepath.Join(s.dir, name))
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxState))
	if err != nil {
		return err
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("%w: %v", errBadState, err)
	}
	env.Attempts, env.NextAttempt, env.LastError, env.Done = st.Attempts, st.NextAttempt, st.LastError, st.Done
	return nil
}

// takeOut removes message id from the index while the spool runs, for
// cause: a damaged message (cause wraps errCorrupt) is moved to corrupt/,
// as Open does at start; one whose file vanished (an operator moved it)
// is only forgotten, nothing is left to deliver.
func (s *Spool) takeOut(id string, cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.msgs[id]
	if e == nil {
		return
	}
	s.bytes -= e.fileSize
	moved := false
	if errors.Is(cause, errCorrupt) {
		moved = s.quarantine(id+msgExt, cause)
	} else {
		s.log.Error("spool: message file vanished, dropping it from the spool", "id", id, "err", cause)
	}
	os.Remove(filepath.Join(s.dir, id+stateExt))
	s.drop(e)
	if !moved {
		return
	}
	if err := s.dirf.Sync(); err != nil {
		s.log.Error("spool: sync directory", "err", err)
	}
}

// drop removes e from the index; s.mu is held.
func (s *Spool) drop(e *Envelope) {
	delete(s.msgs, e.ID)
	s.refused = false
	if i, ok := slices.BinarySearchFunc(s.order, e, compareEnv); ok {
		s.order = slices.Delete(s.order, i, i+1)
	}
	s.gauges()
}

// quarantine moves a damaged message file out of the way: it is never
// delivered (a truncated message must not reach anyone half), and never
// silently deleted either, since it may be all that is left of a message.
// It reports whether the file was moved.
func (s *Spool) quarantine(name string, cause error) bool {
	s.log.Error("spool: damaged message file moved to corrupt/", "file", name, "err", cause)
	if err := os.Rename(filepath.Join(s.dir, name), filepath.Join(s.dir, corruptDir, name)); err != nil {
		s.log.Error("spool: cannot move corrupt file", "file", name, "err", err)
		return false
	}
	if s.o.Metrics != nil {
		s.o.Metrics.SpoolQuarantined.Inc()
	}
	return true
}

// recoverJournal flags messages whose delivery was in progress when the
// process stopped. A journal line is "ID ATTEMPTS", appended before each
// attempt with the attempt count it started from; if the state file shows a
// higher count, that attempt ended in a deferral and reached no one.
func (s *Spool) recoverJournal() error {
	path := filepath.Join(s.dir, journalName)
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("spool: %w", err)
	}
	var keep []byte
	for line := range strings.Lines(string(b)) {
		id, n, ok := strings.Cut(strings.TrimSpace(line), " ")
		attempts, err := strconv.Atoi(n)
		if !ok || err != nil {
			continue
		}
		if u := s.unread[id]; u != nil {
			// Decided when the file can be read (settle).
			u.journal = max(u.journal, attempts)
			keep = fmt.Appendf(keep, "%s %d\n", id, attempts)
			continue
		}
		env := s.msgs[id]
		if env == nil {
			continue
		}
		if env.Attempts <= attempts && !env.Redelivery {
			env.Redelivery = true
			keep = fmt.Appendf(keep, "%s %d\n", id, env.Attempts)
		}
	}
	// Rewrite the journal with the flags still relevant, so that they
	// survive another crash before the redelivery.
	return s.writeAtomic(journalName, keep)
}

func (s *Spool) insert(env *Envelope, size int64) {
	env.fileSize = size
	s.msgs[env.ID] = env
	i, _ := slices.BinarySearchFunc(s.order, env, compareEnv)
	s.order = slices.Insert(s.order, i, env)
	s.bytes += size
}

func compareEnv(a, b *Envelope) int {
	if c := a.Received.Compare(b.Received); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// validID guards file names built from ids (Open(id) may be called with an
// id that came from outside): 24 lowercase hex digits.
func validID(id string) bool {
	if len(id) != 24 {
		return false
	}
	for _, c := range []byte(id) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// newID returns 16 hex digits of the receive time in nanoseconds, so ids
// sort by time, and 8 random ones against collisions within a nanosecond.
func newID(t time.Time) string {
	return fmt.Sprintf("%016x%08x", uint64(t.UnixNano()), rand.Uint32())
}

// Put streams a message of size bytes from msg (typically our Received
// header, then the message as received) into the spool and returns its id
// once it is durable: the file is written under tmp/, fsynced, renamed
// into DIR and DIR is fsynced. Only then may the front end answer 250
// (INTERFACE.md §4). Put returns ErrFull when MaxBytes would be exceeded,
// and a wrapped error on any disk failure or when msg does not yield
// exactly size bytes; in every error case nothing was spooled.
func (s *Spool) Put(ctx context.Context, env Envelope, size int64, msg io.Reader) (string, error) {
	return s.put(ctx, env, true, size, msg)
}

func (s *Spool) put(ctx context.Context, env Envelope, limit bool, size int64, msg io.Reader) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if env.Received.IsZero() {
		env.Received = s.clock.Now()
	}
	env.Attempts, env.NextAttempt, env.LastError, env.Done, env.Redelivery = 0, time.Time{}, "", nil, false
	env.Size = size

	s.mu.Lock()
	env.ID = newID(env.Received)
	for s.msgs[env.ID] != nil || s.unread[env.ID] != nil {
		env.ID = newID(env.Received)
	}
	// The message CRC is filled in once the message has streamed past.
	hdr, err := encodeHeader(&env, size, 0)
	if err != nil {
		s.mu.Unlock()
		return "", fmt.Errorf("spool: encode envelope: %w", err)
	}
	fileSize := int64(len(hdr)) + size
	if limit && s.o.MaxBytes > 0 && s.bytes+s.reserved+fileSize > s.o.MaxBytes {
		s.refused = true
		s.mu.Unlock()
		return "", ErrFull
	}
	s.reserved += fileSize
	s.mu.Unlock()

	err = s.write(env.ID, hdr, size, msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reserved -= fileSize
	if err != nil {
		return "", err
	}
	s.insert(&env, fileSize)
	s.gauges()
	return env.ID, nil
}

// write makes DIR/ID.msg durable: header, the message streamed behind it,
// then the header again with the message's CRC, all before the fsync.
func (s *Spool) write(id string, hdr []byte, size int64, msg io.Reader) error {
	tmp := filepath.Join(s.dir, tmpDir, id+msgExt)
	err := writeSynced(tmp, func(f *os.File) error {
		if _, err := f.Write(hdr); err != nil {
			return err
		}
		cw := &crcWriter{w: f}
		// One byte past size tells a longer message from an exact one.
		if _, err := io.Copy(cw, io.LimitReader(msg, size+1)); err != nil {
			return err
		}
		if cw.n != size {
			return fmt.Errorf("message is %d bytes, announced %d", cw.n, size)
		}
		setMessageCRC(hdr, cw.crc)
		_, err := f.WriteAt(hdr[:headerSize], 0)
		return err
	})
	if err != nil {
		return fmt.Errorf("spool: write %s: %w", id, err)
	}
	final := filepath.Join(s.dir, id+msgExt)
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool: rename %s: %w", id, err)
	}
	if err := s.dirf.Sync(); err != nil {
		// The rename may or may not survive a power loss; the client
		// will be told 4xx and send again, so take the file back rather
		// than risk delivering it twice.
		os.Remove(final)
		return fmt.Errorf("spool: sync directory after %s: %w", id, err)
	}
	return nil
}

// crcWriter passes writes on, keeping their CRC-32C and count.
type crcWriter struct {
	w   io.Writer
	crc uint32
	n   int64
}

func (c *crcWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.crc = crc32.Update(c.crc, castagnoli, p[:n])
	c.n += int64(n)
	return n, err
}

// writeSynced creates path, lets fill write it and fsyncs it; on error the
// file is removed.
func writeSynced(path string, fill func(f *os.File) error) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = fill(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// writeBytes is a writeSynced fill that writes b.
func writeBytes(b []byte) func(f *os.File) error {
	return func(f *os.File) error {
		_, err := f.Write(b)
		return err
	}
}

// writeAtomic replaces DIR/name with b: tmp file, fsync, rename, fsync DIR.
func (s *Spool) writeAtomic(name string, b []byte) error {
	tmp := filepath.Join(s.dir, tmpDir, name)
	if err := writeSynced(tmp, writeBytes(b)); err != nil {
		return fmt.Errorf("spool: write %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(s.dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("spool: rename %s: %w", name, err)
	}
	if err := s.dirf.Sync(); err != nil {
		return fmt.Errorf("spool: sync directory after %s: %w", name, err)
	}
	return nil
}

// Stats returns the number of messages and the bytes of their files,
// counting the files that could not be read yet (Unreadable).
func (s *Spool) Stats() (messages int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.msgs) + len(s.unread), s.bytes
}

// Unreadable returns the number of message files the spool could not read
// (an I/O error, not damage) and reads again after a backoff; they are
// not listed nor delivered until a read succeeds.
func (s *Spool) Unreadable() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.unread)
}

// MaxBytes returns the size limit in force.
func (s *Spool) MaxBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.o.MaxBytes
}

// SetMaxBytes changes the size limit (spool.max_size on reload); 0 or less
// means none. Messages already spooled stay.
func (s *Spool) SetMaxBytes(n int64) {
	s.mu.Lock()
	s.o.MaxBytes = n
	s.refused = false
	s.mu.Unlock()
}

// Full reports whether the spool holds MaxBytes or more, or refused a
// message for lack of room since a message last left. The second half
// matters because Put never exceeds MaxBytes: without it a spool short by
// less than one message would look fine while refusing every one of them
// after their DATA.
func (s *Spool) Full() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.o.MaxBytes > 0 && (s.bytes >= s.o.MaxBytes || s.refused)
}

// List returns copies of every envelope, oldest first (received time, then
// id).
func (s *Spool) List() []Envelope {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Envelope, len(s.order))
	for i, e := range s.order {
		out[i] = e.clone()
	}
	return out
}

// due returns up to n envelopes whose next attempt is not after now,
// oldest first, and whether more are due.
func (s *Spool) due(now time.Time, n int) ([]Envelope, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Envelope
	for _, e := range s.order {
		if e.NextAttempt.After(now) {
			continue
		}
		if len(out) == n {
			return out, true
		}
		out = append(out, e.clone())
	}
	return out, false
}

// nextAttempt returns the earliest next attempt time; false when the spool
// is empty.
func (s *Spool) nextAttempt() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next time.Time
	for i, e := range s.order {
		if i == 0 || e.NextAttempt.Before(next) {
			next = e.NextAttempt
		}
	}
	return next, len(s.order) > 0
}

func (e *Envelope) clone() Envelope {
	c := *e
	c.Recipients = slices.Clone(e.Recipients)
	c.Done = slices.Clone(e.Done)
	return c
}

// Open returns the envelope of id and a reader of its message. The reader
// fails at the end, instead of returning io.EOF, if the bytes do not match
// the checksum written by Put: read the whole message before committing it
// downstream.
func (s *Spool) Open(id string) (Envelope, io.ReadCloser, error) {
	s.mu.Lock()
	e := s.msgs[id]
	var env Envelope
	if e != nil {
		env = e.clone()
	}
	s.mu.Unlock()
	if e == nil {
		return env, nil, ErrNotFound
	}
	f, err := s.open(filepath.Join(s.dir, id+msgExt))
	if err != nil {
		return env, nil, fmt.Errorf("spool: open %s: %w", id, err)
	}
	fi, err := f.Stat()
	if err == nil {
		var fh fileHeader
		if fh, err = decodeHeader(bufio.NewReaderSize(f, 4096), fi.Size()); err == nil {
			sr := io.NewSectionReader(f, fh.offset, fh.msgLen)
			return env, &checkedReader{r: sr, want: fh.msgCRC, c: f}, nil
		}
	}
	f.Close()
	return env, nil, fmt.Errorf("spool: open %s: %w", id, err)
}

// Remove deletes a message: unlink, then fsync DIR so it stays deleted.
func (s *Spool) Remove(id string) error {
	if err := s.unlink(id); err != nil {
		return err
	}
	if err := s.dirf.Sync(); err != nil {
		return fmt.Errorf("spool: sync directory after removing %s: %w", id, err)
	}
	return nil
}

func (s *Spool) unlink(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.msgs[id]
	if e == nil {
		return ErrNotFound
	}
	fi, err := os.Stat(filepath.Join(s.dir, id+msgExt))
	if err != nil {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	// The message goes first: a state file left by a crash here is
	// orphaned and deleted by Open, never the other way round.
	if err := os.Remove(filepath.Join(s.dir, id+msgExt)); err != nil {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	if err := os.Remove(filepath.Join(s.dir, id+stateExt)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("spool: cannot remove state file", "id", id, "err", err)
	}
	s.bytes -= fi.Size()
	s.drop(e)
	if len(s.msgs) == 0 && len(s.unread) == 0 {
		// Every journal line is obsolete once the spool is empty.
		if err := s.journal.Truncate(0); err != nil {
			s.log.Warn("spool: cannot truncate journal", "err", err)
		}
	}
	return nil
}

// Defer records a failed attempt: one more attempt, the time of the next
// one and the error, plus recipients now done (delivered or bounced) that
// must not get the message again. The state file is replaced atomically
// (tmp, fsync, rename, fsync DIR); the message file is never rewritten.
// Defer and Remove of one id must not run concurrently (the unspooler
// handles each message in one goroutine).
func (s *Spool) Defer(id string, next time.Time, lastErr string, done ...string) error {
	s.mu.Lock()
	e := s.msgs[id]
	var st state
	if e != nil {
		st = state{Attempts: e.Attempts + 1, NextAttempt: next, LastError: lastErr, Done: slices.Clone(e.Done)}
	}
	s.mu.Unlock()
	if e == nil {
		return ErrNotFound
	}
	for _, r := range done {
		if !slices.Contains(st.Done, r) {
			st.Done = append(st.Done, r)
		}
	}
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("spool: defer %s: %w", id, err)
	}
	if err := s.writeAtomic(id+stateExt, b); err != nil {
		return err
	}
	s.mu.Lock()
	e.Attempts, e.NextAttempt, e.LastError, e.Done = st.Attempts, st.NextAttempt, st.LastError, st.Done
	e.Redelivery = false // the interrupted attempt has been made again
	s.mu.Unlock()
	return nil
}

// startAttempt appends "ID ATTEMPTS" to the journal before a delivery
// attempt. It is not fsynced: it survives a crash of the process (the
// write is in the page cache), which is what duplicate accounting is for;
// after a power loss the count may be low, never the mail lost.
func (s *Spool) startAttempt(env *Envelope) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := fmt.Fprintf(s.journal, "%s %d\n", env.ID, env.Attempts); err != nil {
		s.log.Warn("spool: cannot append to journal", "err", err)
	}
}

func (s *Spool) gauges() {
	if s.o.Metrics == nil {
		return
	}
	s.o.Metrics.SpoolMessages.Set(float64(len(s.msgs) + len(s.unread)))
	s.o.Metrics.SpoolBytes.Set(float64(s.bytes))
	s.o.Metrics.SpoolUnreadable.Set(float64(len(s.unread)))
}

// Close releases the spool's file handles. Messages stay on disk.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.journal.Close(), s.dirf.Close())
}
