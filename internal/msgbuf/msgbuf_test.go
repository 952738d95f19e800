package msgbuf

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/iotest"

	"mxguard/internal/testutil"
)

// message returns n deterministic bytes of CRLF lines, some starting with
// a dot, as mail has.
func message(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, 0, n+80)
	for len(b) < n {
		if r.IntN(10) == 0 {
			b = append(b, '.')
		}
		for i := r.IntN(78); i > 0; i-- {
			b = append(b, byte('!'+r.IntN(94)))
		}
		b = append(b, '\r', '\n')
	}
	return b[:n]
}

// countingFiles is a CreateTemp that counts the spill files made and
// still open.
type countingFiles struct {
	made, open atomic.Int64
}

type countedFile struct {
	File
	c *countingFiles
}

func (f countedFile) Close() error {
	f.c.open.Add(-1)
	return f.File.Close()
}

func (c *countingFiles) create(dir string) (File, error) {
	f, err := createUnlinked(dir)
	if err != nil {
		return nil, err
	}
	c.made.Add(1)
	c.open.Add(1)
	return countedFile{f, c}, nil
}

// readAll checks every way of reading b back against want.
func readAll(t *testing.T, b *Buffer, want []byte) {
	t.Helper()
	if b.Size() != int64(len(want)) {
		t.Fatalf("Size = %d, want %d", b.Size(), len(want))
	}
	got, err := io.ReadAll(b.Reader())
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("ReadAll: %d bytes, err %v; want %d bytes intact", len(got), err, len(want))
	}
	var w bytes.Buffer
	if n, err := io.Copy(&w, b.Reader()); err != nil || n != int64(len(want)) || !bytes.Equal(w.Bytes(), want) {
		t.Fatalf("WriteTo: %d bytes, err %v", n, err)
	}
	if err := iotest.TestReader(b.Reader(), want); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 1000)
	for _, off := range []int64{0, 1, int64(len(want)) / 3, int64(len(want)) - 1, int64(len(want))} {
		if off < 0 || off > int64(len(want)) {
			continue
		}
		n, err := b.ReadAt(p, off)
		end := min(off+int64(len(p)), int64(len(want)))
		if !bytes.Equal(p[:n], want[off:end]) {
			t.Fatalf("ReadAt(%d): %d bytes differ", off, n)
		}
		if n < len(p) && err != io.EOF {
			t.Fatalf("ReadAt(%d) short without io.EOF: %d, %v", off, n, err)
		}
	}
}

// TestSmallStaysInMemory: a message below MemPerMessage never touches the
// disk and gives its memory back on Close.
func TestSmallStaysInMemory(t *testing.T) {
	var files countingFiles
	s, err := New(Options{Dir: t.TempDir(), MemPerMessage: 64 << 10, CreateTemp: files.create})
	if err != nil {
		t.Fatal(err)
	}
	want := message(1, 40<<10)
	b := s.NewBuffer()
	if _, err := b.ReadFrom(bytes.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	readAll(t, b, want)
	if b.Spilled() || files.made.Load() != 0 {
		t.Error("a 40 KiB message went to a file")
	}
	if got := s.InMemory(); got != 48<<10 {
		t.Errorf("InMemory = %d, want three 16 KiB chunks", got)
	}
	b.Close()
	if got := s.InMemory(); got != 0 {
		t.Errorf("InMemory after Close = %d", got)
	}
}

// TestLargeSpills: beyond MemPerMessage the rest goes to an unlinked file,
// read back intact from every offset; nothing is left in the directory,
// and Close closes the file.
func TestLargeSpills(t *testing.T) {
	dir := t.TempDir()
	var files countingFiles
	s, err := New(Options{Dir: dir, MemPerMessage: 64 << 10, CreateTemp: files.create})
	if err != nil {
		t.Fatal(err)
	}
	want := message(2, 1<<20+12345)
	b := s.NewBuffer()
	// Through Write in odd pieces and ReadFrom in the same message.
	if _, err := b.Write(want[:1000]); err != nil {
		t.Fatal(err)
	}
	if _, err := b.ReadFrom(iotest.HalfReader(bytes.NewReader(want[1000:]))); err != nil {
		t.Fatal(err)
	}
	if !b.Spilled() || files.made.Load() != 1 {
		t.Fatalf("spilled %v, %d files, want one", b.Spilled(), files.made.Load())
	}
	if got := s.InMemory(); got != 64<<10 {
		t.Errorf("InMemory = %d, want MemPerMessage (64 KiB)", got)
	}
	readAll(t, b, want)
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("spill directory holds %d entries while the file is open; it should be unlinked", len(ents))
	}
	b.Close()
	if files.open.Load() != 0 || s.InMemory() != 0 {
		t.Errorf("after Close: %d files open, %d bytes in memory", files.open.Load(), s.InMemory())
	}
	if _, err := b.ReadAt(make([]byte, 1), 0); err == nil {
		t.Error("ReadAt after Close succeeded")
	}
}

// TestBudget: when the memory budget is used up, a new message goes to its
// file from its first byte, and memory comes back when a message closes.
func TestBudget(t *testing.T) {
	s, err := New(Options{Dir: t.TempDir(), MemPerMessage: 32 << 10, MemBudget: 48 << 10})
	if err != nil {
		t.Fatal(err)
	}
	big := message(3, 100<<10)
	a := s.NewBuffer()
	a.Write(big)
	b := s.NewBuffer()
	b.Write(big) // gets the one chunk left, then spills
	c := s.NewBuffer()
	c.Write(big[:10]) // nothing left: to the file at once
	if got := s.InMemory(); got != 48<<10 {
		t.Errorf("InMemory = %d, want the budget (48 KiB)", got)
	}
	if !c.Spilled() || c.memLen != 0 {
		t.Errorf("over budget: %d bytes in memory, spilled %v", c.memLen, c.Spilled())
	}
	readAll(t, a, big)
	readAll(t, b, big)
	readAll(t, c, big[:10])
	a.Close()
	d := s.NewBuffer()
	d.Write(big[:100])
	if d.Spilled() {
		t.Error("memory freed by Close was not reused")
	}
	for _, x := range []*Buffer{b, c, d} {
		x.Close()
	}
	if got := s.InMemory(); got != 0 {
		t.Errorf("InMemory at the end = %d", got)
	}
}

// TestStaleFilesRemoved: New deletes the spill files of an earlier
// process, and only those.
func TestStaleFilesRemoved(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, spillPrefix+"123")
	other := filepath.Join(dir, "keep.txt")
	for _, p := range []string{stale, other} {
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := New(Options{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale spill file kept: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("a file that is not ours was removed: %v", err)
	}
}

// failingFile fails its write once `room` bytes were written, as a full
// disk does, or every read.
type failingFile struct {
	File
	room     int
	readFail bool
}

func (f *failingFile) Write(p []byte) (int, error) {
	if len(p) > f.room {
		n, _ := f.File.Write(p[:f.room])
		f.room = 0
		return n, syscall.ENOSPC
	}
	f.room -= len(p)
	return f.File.Write(p)
}

func (f *failingFile) ReadAt(p []byte, off int64) (int, error) {
	if f.readFail {
		return 0, syscall.EIO
	}
	return f.File.ReadAt(p, off)
}

// TestStorageErrors: a spill file that cannot be created, a disk that
// fills up and a read that fails all surface as ErrStorage with their
// cause; the client's own errors pass unchanged.
func TestStorageErrors(t *testing.T) {
	msg := message(4, 200<<10)
	cases := []struct {
		name   string
		create func(string) (File, error)
		cause  error
	}{
		{"create refused", func(string) (File, error) { return nil, os.ErrPermission }, os.ErrPermission},
		{"disk full", func(dir string) (File, error) {
			f, err := createUnlinked(dir)
			return &failingFile{File: f, room: 50 << 10}, err
		}, syscall.ENOSPC},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Options{Dir: t.TempDir(), MemPerMessage: 16 << 10, CreateTemp: tc.create})
			if err != nil {
				t.Fatal(err)
			}
			b := s.NewBuffer()
			_, err = b.ReadFrom(bytes.NewReader(msg))
			if !errors.Is(err, ErrStorage) || !errors.Is(err, tc.cause) {
				t.Fatalf("ReadFrom: %v, want ErrStorage wrapping %v", err, tc.cause)
			}
			if _, err := b.Write([]byte("more")); !errors.Is(err, ErrStorage) {
				t.Errorf("Write after a storage error: %v", err)
			}
			b.Close()
			if s.InMemory() != 0 {
				t.Errorf("InMemory after Close = %d", s.InMemory())
			}
		})
	}
	t.Run("read fails", func(t *testing.T) {
		s, _ := New(Options{Dir: t.TempDir(), MemPerMessage: 16 << 10, CreateTemp: func(dir string) (File, error) {
			f, err := createUnlinked(dir)
			return &failingFile{File: f, room: 1 << 30, readFail: true}, err
		}})
		b := s.NewBuffer()
		defer b.Close()
		if _, err := b.ReadFrom(bytes.NewReader(msg)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, b.Reader()); !errors.Is(err, ErrStorage) || !errors.Is(err, syscall.EIO) {
			t.Errorf("reading a failing file: %v", err)
		}
	})
	t.Run("client error passes", func(t *testing.T) {
		s, _ := New(Options{Dir: t.TempDir()})
		b := s.NewBuffer()
		defer b.Close()
		lost := errors.New("connection reset")
		_, err := b.ReadFrom(io.MultiReader(bytes.NewReader(msg), iotest.ErrReader(lost)))
		if err != lost {
			t.Errorf("ReadFrom: %v, want the reader's own error", err)
		}
	})
	t.Run("directory gone", func(t *testing.T) {
		// A plain file where the directory was: the real ENOTDIR (root
		// ignores permission bits, so a read-only directory would not
		// fail).
		dir := filepath.Join(t.TempDir(), "tmp")
		s, err := New(Options{Dir: dir, MemPerMessage: 16 << 10})
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(dir)
		os.WriteFile(dir, nil, 0o600)
		b := s.NewBuffer()
		defer b.Close()
		if _, err := b.ReadFrom(bytes.NewReader(msg)); !errors.Is(err, ErrStorage) || !errors.Is(err, syscall.ENOTDIR) {
			t.Errorf("ReadFrom: %v, want ErrStorage (ENOTDIR)", err)
		}
		if _, err := New(Options{Dir: dir}); err == nil {
			t.Error("New on a file succeeded")
		}
	})
}

// TestDiskFull fills a real 256 KiB filesystem: the message that does not
// fit fails with ENOSPC, and closing it gives the space back.
func TestDiskFull(t *testing.T) {
	dir := testutil.SmallTmpfs(t, "256k")
	s, err := New(Options{Dir: dir, MemPerMessage: 16 << 10})
	if err != nil {
		t.Fatal(err)
	}
	b := s.NewBuffer()
	if _, err := b.ReadFrom(bytes.NewReader(message(5, 1<<20))); !errors.Is(err, ErrStorage) || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("1 MiB into 256 KiB: %v, want ENOSPC", err)
	}
	b.Close()
	want := message(6, 100<<10)
	b = s.NewBuffer()
	defer b.Close()
	if _, err := b.ReadFrom(bytes.NewReader(want)); err != nil {
		t.Fatalf("after the failed message was closed: %v", err)
	}
	readAll(t, b, want)
}

// TestFreeSpaceReserve: spilling stops at MinFree, checked before a file
// is made and as it grows, so messages in flight leave the filesystem its
// reserve instead of filling it; a message that stays in memory is not
// concerned.
func TestFreeSpaceReserve(t *testing.T) {
	t.Run("at creation", func(t *testing.T) {
		s, err := New(Options{Dir: t.TempDir(), MemPerMessage: 16 << 10, MinFree: 1 << 62})
		if err != nil {
			t.Fatal(err)
		}
		b := s.NewBuffer()
		defer b.Close()
		if _, err := b.ReadFrom(bytes.NewReader(message(7, 100<<10))); !errors.Is(err, ErrStorage) || !errors.Is(err, ErrNoSpace) {
			t.Errorf("spill with no room for the reserve: %v, want ErrNoSpace", err)
		}
		small := s.NewBuffer()
		defer small.Close()
		if _, err := small.ReadFrom(bytes.NewReader(message(8, 10<<10))); err != nil {
			t.Errorf("a message in memory: %v", err)
		}
	})
	t.Run("while growing", func(t *testing.T) {
		dir := testutil.SmallTmpfs(t, "4m")
		s, err := New(Options{Dir: dir, MemPerMessage: 16 << 10, MinFree: 2 << 20})
		if err != nil {
			t.Fatal(err)
		}
		b := s.NewBuffer()
		defer b.Close()
		_, err = b.ReadFrom(bytes.NewReader(message(9, 3<<20+1<<19)))
		if !errors.Is(err, ErrNoSpace) {
			t.Fatalf("3.5 MiB into 4 MiB keeping 2 MiB: %v, want ErrNoSpace before the disk is full", err)
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		// Checked once per MiB written: at most that much of the
		// reserve is used.
		if free := int64(st.Bavail) * st.Bsize; free < 1<<20-64<<10 {
			t.Errorf("%d bytes left free after the reserve check, want about 1 MiB or more", free)
		}
	})
}

// TestConcurrent: many messages written and read at once (run with
// -race) stay intact, memory never passes the budget and returns to zero.
func TestConcurrent(t *testing.T) {
	const budget = 256 << 10
	s, err := New(Options{Dir: t.TempDir(), MemPerMessage: 64 << 10, MemBudget: budget})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var over atomic.Int64
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				want := message(uint64(g*100+i), rand.IntN(300<<10))
				b := s.NewBuffer()
				if _, err := b.ReadFrom(bytes.NewReader(want)); err != nil {
					t.Error(err)
					return
				}
				if m := s.InMemory(); m > budget {
					over.Store(m)
				}
				// Several readers of one message at once.
				var rg sync.WaitGroup
				for r := 0; r < 3; r++ {
					rg.Add(1)
					go func() {
						defer rg.Done()
						got, err := io.ReadAll(b.Reader())
						if err != nil || !bytes.Equal(got, want) {
							t.Errorf("message %d/%d read back wrong (%v)", g, i, err)
						}
					}()
				}
				rg.Wait()
				b.Close()
			}
		}()
	}
	wg.Wait()
	if m := over.Load(); m != 0 {
		t.Errorf("memory reached %d, over the budget %d", m, budget)
	}
	if m := s.InMemory(); m != 0 {
		t.Errorf("InMemory at the end = %d", m)
	}
}

// FuzzBuffer: whatever is written, in whatever pieces, with whatever
// memory limits, is what is read back. Tiny chunks make small inputs
// reach the file.
func FuzzBuffer(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\n.dot\r\nbody\r\n"), uint8(3), uint8(2), uint8(1))
	f.Add(bytes.Repeat([]byte("0123456789"), 50), uint8(7), uint8(1), uint8(0))
	f.Add([]byte{}, uint8(0), uint8(0), uint8(0))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, piece, memChunks, budgetChunks uint8) {
		s, err := newStore(Options{Dir: dir, MemPerMessage: int(memChunks) * 8, MemBudget: int64(budgetChunks)*8 + 1}, 8)
		if err != nil {
			t.Fatal(err)
		}
		b := s.NewBuffer()
		defer b.Close()
		step := int(piece) + 1
		for i := 0; i < len(data); i += step {
			p := data[i:min(i+step, len(data))]
			if i/step%2 == 0 {
				_, err = b.Write(p)
			} else {
				_, err = b.ReadFrom(iotest.OneByteReader(bytes.NewReader(p)))
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if s.InMemory() > int64(budgetChunks)*8+1 {
			t.Errorf("InMemory %d over the budget", s.InMemory())
		}
		readAll(t, b, data)
	})
}
