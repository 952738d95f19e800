package spool

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"mxguard/internal/testutil"
)

// fakeClock is the shared settable test clock.
type fakeClock = testutil.FakeClock

func newFakeClock() *fakeClock { return testutil.NewFakeClock() }

var _ Clock = (*fakeClock)(nil)

// delivery is one Deliver call as the recorder saw it.
type delivery struct {
	Env Envelope
	Msg string
}

// recorder is a Deliverer that keeps what it got and answers with
// answer(env) (nil: 250).
type recorder struct {
	mu     sync.Mutex
	got    []delivery
	answer func(env Envelope) error
}

func (r *recorder) Deliver(_ context.Context, env Envelope, msg io.Reader) error {
	b, err := io.ReadAll(msg)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.got = append(r.got, delivery{Env: env, Msg: string(b)})
	answer := r.answer
	r.mu.Unlock()
	if answer != nil {
		return answer(env)
	}
	return nil
}

func (r *recorder) deliveries() []delivery {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivery(nil), r.got...)
}

var _ Deliverer = (*recorder)(nil)

func smtpErr(code int, enh [3]int, text string) error {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode(enh), Message: text}
}

// openSpool opens a spool in a fresh directory, closed at cleanup.
func openSpool(t testing.TB, o Options) (*Spool, string) {
	t.Helper()
	dir := t.TempDir()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

// testMessage is a small message whose Subject names n.
func testMessage(n int) []byte {
	return fmt.Appendf(nil, "From: a@example.org\r\nTo: b@example.test\r\nSubject: message %d\r\nMessage-ID: <%d@example.org>\r\n\r\nbody of message %d\r\n", n, n, n)
}

// putBytes is Put of the concatenated parts.
func putBytes(s *Spool, ctx context.Context, env Envelope, parts ...[]byte) (string, error) {
	b := bytes.Join(parts, nil)
	return s.Put(ctx, env, int64(len(b)), bytes.NewReader(b))
}

func mustPut(t testing.TB, s *Spool, env Envelope, parts ...[]byte) string {
	t.Helper()
	id, err := putBytes(s, context.Background(), env, parts...)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// flakyDisk is an Options.open that fails chosen files the way a bad disk
// or a process out of descriptors does (EIO, EMFILE), until healed.
// Permission bits cannot do this: the tests run as root in CI.
type flakyDisk struct {
	mu       sync.Mutex
	openErr  map[string]error // base name -> error of open
	readErr  map[string]error // base name -> error of every read
	attempts map[string]int   // base name -> opens tried
}

func newFlakyDisk() *flakyDisk {
	return &flakyDisk{openErr: map[string]error{}, readErr: map[string]error{}, attempts: map[string]int{}}
}

func (d *flakyDisk) open(name string) (file, error) {
	base := filepath.Base(name)
	d.mu.Lock()
	d.attempts[base]++
	oerr, rerr := d.openErr[base], d.readErr[base]
	d.mu.Unlock()
	if oerr != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: oerr}
	}
	f, err := os.Open(name)
	if err != nil || rerr == nil {
		return f, err
	}
	return failingFile{f, rerr}, nil
}

func (d *flakyDisk) heal() {
	d.mu.Lock()
	clear(d.openErr)
	clear(d.readErr)
	d.mu.Unlock()
}

func (d *flakyDisk) tries(base string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.attempts[base]
}

// failingFile opens and stats fine, but every read fails.
type failingFile struct {
	*os.File
	err error
}

func (f failingFile) Read([]byte) (int, error)          { return 0, f.err }
func (f failingFile) ReadAt([]byte, int64) (int, error) { return 0, f.err }
