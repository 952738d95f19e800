package spool

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/metrics"
	mxtest "mxguard/internal/testutil"
)

func TestPutOpenRoundTrip(t *testing.T) {
	clock := newFakeClock()
	m := metrics.New()
	s, _ := openSpool(t, Options{Clock: clock, Metrics: m})
	received := []byte("Received: from client by mx.example.test\r\n")
	msg := testMessage(1)
	id := mustPut(t, s, Envelope{From: "a@example.org", Recipients: []string{"b@example.test", "c@example.test"}, Source: "192.0.2.1"}, received, msg)
	if !validID(id) {
		t.Fatalf("id %q is not valid", id)
	}
	env, rc, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(slices.Clone(received), msg...); !bytes.Equal(got, want) {
		t.Errorf("message = %q, want %q", got, want)
	}
	if env.ID != id || env.From != "a@example.org" || !slices.Equal(env.Recipients, []string{"b@example.test", "c@example.test"}) ||
		env.Source != "192.0.2.1" || !env.Received.Equal(clock.Now()) || env.Size != int64(len(received)+len(msg)) {
		t.Errorf("envelope = %+v", env)
	}
	n, b := s.Stats()
	if n != 1 || b <= env.Size {
		t.Errorf("Stats = %d, %d", n, b)
	}
	if g := testutil.ToFloat64(m.SpoolMessages); g != 1 {
		t.Errorf("spool_messages = %v", g)
	}
	if g := testutil.ToFloat64(m.SpoolBytes); g != float64(b) {
		t.Errorf("spool_bytes = %v, want %d", g, b)
	}
	if err := s.Remove(id); err != nil {
		t.Fatal(err)
	}
	if n, b := s.Stats(); n != 0 || b != 0 {
		t.Errorf("Stats after Remove = %d, %d", n, b)
	}
	if g := testutil.ToFloat64(m.SpoolMessages); g != 0 {
		t.Errorf("spool_messages after Remove = %v", g)
	}
	if _, _, err := s.Open(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open after Remove: %v", err)
	}
	if err := s.Remove(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: %v", err)
	}
}

func TestOpenRejectsForeignIDs(t *testing.T) {
	s, _ := openSpool(t, Options{})
	for _, id := range []string{"", "../etc/passwd", "0123456789abcdef01234567/../x"} {
		if _, _, err := s.Open(id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Open(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

func TestReopenKeepsOrderAndState(t *testing.T) {
	clock := newFakeClock()
	s, dir := openSpool(t, Options{Clock: clock})
	var ids []string
	for i := range 5 {
		// Received times out of insertion order: List sorts by them.
		env := Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}, Received: clock.Now().Add(time.Duration(5-i) * time.Minute)}
		ids = append(ids, mustPut(t, s, env, testMessage(i)))
	}
	next := clock.Now().Add(time.Hour).Truncate(time.Second)
	if err := s.Defer(ids[2], next, "451 4.3.0 try later", "b@example.test"); err != nil {
		t.Fatal(err)
	}
	n, b := s.Stats()
	s.Close()

	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if n2, b2 := s2.Stats(); n2 != n || b2 != b {
		t.Errorf("Stats after reopen = %d, %d, want %d, %d", n2, b2, n, b)
	}
	var got []string
	for _, e := range s2.List() {
		got = append(got, e.ID)
		if e.ID == ids[2] {
			if e.Attempts != 1 || !e.NextAttempt.Equal(next) || e.LastError != "451 4.3.0 try later" || !slices.Equal(e.Done, []string{"b@example.test"}) {
				t.Errorf("deferred envelope after reopen = %+v", e)
			}
			if len(e.Pending()) != 0 {
				t.Errorf("Pending = %v", e.Pending())
			}
		}
	}
	want := slices.Clone(ids)
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Errorf("List order = %v, want %v", got, want)
	}
}

func TestRecoveryScan(t *testing.T) {
	s, dir := openSpool(t, Options{})
	good := mustPut(t, s, Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, testMessage(1))
	truncated := mustPut(t, s, Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, testMessage(2))
	deleted := mustPut(t, s, Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, testMessage(3))
	if err := s.Defer(deleted, time.Now(), "x"); err != nil {
		t.Fatal(err)
	}
	s.Close()

	path := func(p ...string) string { return filepath.Join(append([]string{dir}, p...)...) }
	// A crash mid-Put leaves a temp file; one on a filesystem that lost
	// data leaves a short file; one mid-Remove leaves an orphan state.
	if err := os.WriteFile(path(tmpDir, "0000000000000000deadbeef.msg"), []byte("MXGSPOOL partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path(truncated + msgExt))
	if err := os.Truncate(path(truncated+msgExt), fi.Size()-3); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path(deleted + msgExt)); err != nil {
		t.Fatal(err)
	}
	garbage := "00000000000000000badf00d"
	if err := os.WriteFile(path(garbage+msgExt), []byte("not a spool file at all, long enough to have a header......"), 0o600); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if l := s2.List(); len(l) != 1 || l[0].ID != good {
		t.Errorf("List = %v, want only %s", l, good)
	}
	if ents, _ := os.ReadDir(path(tmpDir)); len(ents) != 0 {
		t.Errorf("tmp/ not emptied: %v", ents)
	}
	for _, id := range []string{truncated, garbage} {
		if _, err := os.Stat(path(corruptDir, id+msgExt)); err != nil {
			t.Errorf("%s not moved to corrupt/: %v", id, err)
		}
	}
	if _, err := os.Stat(path(deleted + stateExt)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("orphan state file kept: %v", err)
	}
	_, b := s2.Stats()
	fi, _ = os.Stat(path(good + msgExt))
	if b != fi.Size() {
		t.Errorf("bytes = %d, want %d", b, fi.Size())
	}
}

// A damaged body passes the header checks but fails the read at its end,
// before a Deliverer that reads to the end can commit it.
func TestDamagedBodyFailsRead(t *testing.T) {
	s, dir := openSpool(t, Options{})
	id := mustPut(t, s, Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, testMessage(1))
	p := filepath.Join(dir, id+msgExt)
	b, _ := os.ReadFile(p)
	b[len(b)-4] ^= 0x20
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, rc, err := s.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadAll(rc); !errors.Is(err, errCorrupt) {
		t.Errorf("ReadAll of damaged message: %v, want errCorrupt", err)
	}
}

func TestFull(t *testing.T) {
	s, dir := openSpool(t, Options{MaxBytes: 600})
	mustPut(t, s, Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, testMessage(1))
	n, b := s.Stats()
	_, err := putBytes(s, context.Background(), Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, bytes.Repeat([]byte("x"), 600))
	if !errors.Is(err, ErrFull) {
		t.Fatalf("Put over max: %v, want ErrFull", err)
	}
	if n2, b2 := s.Stats(); n2 != n || b2 != b {
		t.Errorf("Stats changed by a refused Put: %d, %d", n2, b2)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, tmpDir)); len(ents) != 0 {
		t.Errorf("temp files left: %v", ents)
	}
}

// Root ignores permission bits, so a read-only directory cannot make a
// write fail in this test; a file where tmp/ should be can.
func TestDiskErrorNeverSucceeds(t *testing.T) {
	s, dir := openSpool(t, Options{})
	if err := os.Remove(filepath.Join(dir, tmpDir)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, tmpDir), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	id, err := putBytes(s, context.Background(), Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, testMessage(1))
	if err == nil || errors.Is(err, ErrFull) {
		t.Fatalf("Put with a broken spool = %q, %v; want a disk error", id, err)
	}
	if n, b := s.Stats(); n != 0 || b != 0 {
		t.Errorf("Stats after a failed Put = %d, %d", n, b)
	}
	// And a spool that cannot be opened says so.
	if _, err := Open(filepath.Join(dir, tmpDir, "sub"), Options{}); err == nil {
		t.Error("Open below a file succeeded")
	}
}

func TestPutHonoursContext(t *testing.T) {
	s, _ := openSpool(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := putBytes(s, ctx, Envelope{}, testMessage(1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a cancelled context: %v", err)
	}
}

func FuzzDecodeHeader(f *testing.F) {
	env := Envelope{ID: "0123456789abcdef01234567", From: "a@example.org", Recipients: []string{"b@example.test"}}
	hdr, _ := encodeHeader(&env, 4, 0)
	f.Add(append(hdr, "body"...))
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, b []byte) {
		fh, err := decodeHeader(bytes.NewReader(b), int64(len(b)))
		if err == nil && fh.offset+fh.msgLen != int64(len(b)) {
			t.Errorf("accepted a header whose lengths do not match the file: %+v", fh)
		}
	})
}

// A full disk fails the Put that does not fit, loses none of the messages
// already spooled, and leaves no temporary file. It needs a small
// filesystem of its own: a 256 KiB tmpfs, which only root may mount.
func TestDiskFull(t *testing.T) {
	dir := mxtest.SmallTmpfs(t, "256k")
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := bytes.Repeat([]byte("0123456789abcdef"), 20<<10/16)
	var ids []string
	for {
		id, err := putBytes(s, context.Background(), Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, msg)
		if err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("Put on a full disk: %v, want ENOSPC", err)
			}
			break
		}
		if ids = append(ids, id); len(ids) > 100 {
			t.Fatal("a 256 KiB filesystem never filled up")
		}
	}
	if n, _ := s.Stats(); n != len(ids) {
		t.Errorf("Stats = %d messages, %d Puts succeeded", n, len(ids))
	}
	envs := checkIntact(t, dir)
	for _, id := range ids {
		if _, ok := envs[id]; !ok {
			t.Errorf("message %s lost", id)
		}
	}
	if err := s.Remove(ids[0]); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, msg)
}

// Only a file whose content is provably wrong goes to corrupt/, and each
// one is counted: a truncated file, a flipped bit in the envelope, garbage.
// An intact file beside them is kept.
func TestRecoveryQuarantinesDamaged(t *testing.T) {
	s, dir := openSpool(t, Options{})
	env := Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}
	good := mustPut(t, s, env, testMessage(1))
	truncated := mustPut(t, s, env, testMessage(2))
	flipped := mustPut(t, s, env, testMessage(3))
	s.Close()

	path := func(id string) string { return filepath.Join(dir, id+msgExt) }
	fi, _ := os.Stat(path(truncated))
	if err := os.Truncate(path(truncated), fi.Size()-1); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path(flipped))
	b[headerSize+3] ^= 0x01 // inside the envelope JSON: the header checksum fails
	if err := os.WriteFile(path(flipped), b, 0o600); err != nil {
		t.Fatal(err)
	}
	garbage := "00000000000000000badf00d"
	if err := os.WriteFile(path(garbage), []byte("MXGS"), 0o600); err != nil {
		t.Fatal(err)
	}

	m := metrics.New()
	s2, err := Open(dir, Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if l := s2.List(); len(l) != 1 || l[0].ID != good {
		t.Errorf("List = %v, want only %s", l, good)
	}
	for _, id := range []string{truncated, flipped, garbage} {
		if _, err := os.Stat(filepath.Join(dir, corruptDir, id+msgExt)); err != nil {
			t.Errorf("%s not in corrupt/: %v", id, err)
		}
	}
	if got := testutil.ToFloat64(m.SpoolQuarantined); got != 3 {
		t.Errorf("mxguard_spool_quarantined_total = %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.SpoolUnreadable); got != 0 || s2.Unreadable() != 0 {
		t.Errorf("unreadable = %v / %d, want 0", got, s2.Unreadable())
	}
}

// A file that cannot be read for a reason that says nothing about its
// content (EIO on open, EIO while reading the header, EMFILE on its state
// file) stays where it is, is not quarantined, is read again with backoff,
// and once readable is delivered exactly once, with its state (recipients
// already done, a delivery the crash interrupted) intact.
func TestRecoveryRetriesUnreadable(t *testing.T) {
	clock := newFakeClock()
	s, dir := openSpool(t, Options{Clock: clock})
	put := func(n int, rcpts ...string) string {
		return mustPut(t, s, Envelope{From: "a@example.org", Recipients: rcpts}, testMessage(n))
	}
	openFails := put(1, "b@example.test")
	readFails := put(2, "b@example.test")
	stateFails := put(3, "b@example.test", "c@example.test")
	if err := s.Defer(stateFails, clock.Now(), "451 4.3.0 later", "b@example.test"); err != nil {
		t.Fatal(err)
	}
	// The process died while openFails was being handed on: the journal
	// says so, and that must survive the unreadable spell.
	env := s.List()[0]
	s.startAttempt(&env)
	s.Close()

	disk := newFlakyDisk()
	disk.openErr[openFails+msgExt] = syscall.EIO
	disk.readErr[readFails+msgExt] = syscall.EIO
	disk.openErr[stateFails+stateExt] = syscall.EMFILE
	m := metrics.New()
	s2, err := Open(dir, Options{Clock: clock, Metrics: m, open: disk.open})
	if err != nil {
		t.Fatalf("Open with unreadable files: %v", err)
	}
	defer s2.Close()

	if l := s2.List(); len(l) != 0 {
		t.Errorf("List = %v, want nothing readable yet", l)
	}
	if n, _ := s2.Stats(); n != 3 || s2.Unreadable() != 3 {
		t.Errorf("Stats messages = %d, Unreadable = %d, want 3 and 3", n, s2.Unreadable())
	}
	if got := testutil.ToFloat64(m.SpoolUnreadable); got != 3 {
		t.Errorf("mxguard_spool_unreadable_files = %v, want 3", got)
	}
	if got := testutil.ToFloat64(m.SpoolQuarantined); got != 0 {
		t.Errorf("mxguard_spool_quarantined_total = %v, want 0", got)
	}
	for _, name := range []string{openFails + msgExt, readFails + msgExt, stateFails + msgExt, stateFails + stateExt} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s left its place: %v", name, err)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, corruptDir)); len(ents) != 0 {
		t.Errorf("corrupt/ holds %d files", len(ents))
	}

	rec := &recorder{}
	mgr := NewManager(ManagerOptions{Spool: s2, Clock: clock, Deliver: rec, AutoUnspool: true})
	ctx := context.Background()

	// Still failing after the first backoff: tried again, kept.
	clock.Advance(time.Second)
	mgr.RunOnce(ctx)
	if got := disk.tries(openFails + msgExt); got != 2 {
		t.Errorf("%d opens of the EIO file, want 2 (start, one retry)", got)
	}
	if s2.Unreadable() != 3 || len(rec.deliveries()) != 0 {
		t.Fatalf("after a failed retry: unreadable %d, %d deliveries", s2.Unreadable(), len(rec.deliveries()))
	}

	// Healed, but the backoff (now 2s) is not over: not read yet.
	disk.heal()
	mgr.RunOnce(ctx)
	if got := disk.tries(openFails + msgExt); got != 2 {
		t.Errorf("read again before its backoff: %d opens", got)
	}
	clock.Advance(2 * time.Second)
	mgr.RunOnce(ctx)

	got := map[string][]string{}
	for _, d := range rec.deliveries() {
		if _, dup := got[d.Env.ID]; dup {
			t.Errorf("%s delivered twice", d.Env.ID)
		}
		got[d.Env.ID] = d.Env.Recipients
	}
	for id, want := range map[string][]string{
		openFails: {"b@example.test"}, readFails: {"b@example.test"},
		stateFails: {"c@example.test"}, // b@ was done before the restart
	} {
		if !slices.Equal(got[id], want) {
			t.Errorf("%s delivered to %v, want %v", id, got[id], want)
		}
	}
	if n, b := s2.Stats(); n != 0 || b != 0 || s2.Unreadable() != 0 {
		t.Errorf("after delivery: Stats %d, %d, unreadable %d", n, b, s2.Unreadable())
	}
	if got := testutil.ToFloat64(m.SpoolUnreadable); got != 0 {
		t.Errorf("mxguard_spool_unreadable_files = %v after recovery", got)
	}
	if got := testutil.ToFloat64(m.SpoolQuarantined); got != 0 {
		t.Errorf("mxguard_spool_quarantined_total = %v, want 0", got)
	}
	mgr.RunOnce(ctx)
	if n := len(rec.deliveries()); n != 3 {
		t.Errorf("%d deliveries in all, want 3", n)
	}
}

// The journal line of a message that was unreadable at start still flags
// it as a possible redelivery once it can be read.
func TestUnreadableKeepsRedeliveryFlag(t *testing.T) {
	clock := newFakeClock()
	s, dir := openSpool(t, Options{Clock: clock})
	id := mustPut(t, s, Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, testMessage(1))
	env := s.List()[0]
	s.startAttempt(&env)
	s.Close()

	disk := newFlakyDisk()
	disk.openErr[id+msgExt] = syscall.EIO
	s2, err := Open(dir, Options{Clock: clock, open: disk.open})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	disk.heal()
	clock.Advance(time.Second)
	s2.retryUnreadable()
	l := s2.List()
	if len(l) != 1 || l[0].ID != id || !l[0].Redelivery {
		t.Fatalf("List = %+v, want %s flagged as a redelivery", l, id)
	}
}

// A file that was unreadable and turns out damaged once it can be read is
// quarantined then, and counted.
func TestUnreadableThenDamaged(t *testing.T) {
	clock := newFakeClock()
	s, dir := openSpool(t, Options{Clock: clock})
	id := mustPut(t, s, Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, testMessage(1))
	s.Close()
	disk := newFlakyDisk()
	disk.readErr[id+msgExt] = syscall.EIO
	m := metrics.New()
	s2, err := Open(dir, Options{Clock: clock, Metrics: m, open: disk.open})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	p := filepath.Join(dir, id+msgExt)
	fi, _ := os.Stat(p)
	if err := os.Truncate(p, fi.Size()-1); err != nil {
		t.Fatal(err)
	}
	disk.heal()
	clock.Advance(time.Second)
	s2.retryUnreadable()
	if _, err := os.Stat(filepath.Join(dir, corruptDir, id+msgExt)); err != nil {
		t.Errorf("not quarantined: %v", err)
	}
	if n, b := s2.Stats(); n != 0 || b != 0 {
		t.Errorf("Stats = %d, %d", n, b)
	}
	if got := testutil.ToFloat64(m.SpoolQuarantined); got != 1 {
		t.Errorf("mxguard_spool_quarantined_total = %v, want 1", got)
	}
}

// An I/O error while unspooling defers the message (it is retried after
// the backoff and then delivered); it never goes to corrupt/.
func TestUnspoolReadErrorRetried(t *testing.T) {
	clock := newFakeClock()
	disk := newFlakyDisk()
	s, dir := openSpool(t, Options{Clock: clock, open: disk.open})
	id := mustPut(t, s, Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, testMessage(1))
	rec := &recorder{}
	m := NewManager(ManagerOptions{Spool: s, Clock: clock, Deliver: rec, AutoUnspool: true})
	disk.readErr[id+msgExt] = syscall.EIO
	m.RunOnce(context.Background())
	if l := s.List(); len(l) != 1 || l[0].Attempts != 1 {
		t.Fatalf("after a read error: %+v, want the message deferred once", l)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, corruptDir)); len(ents) != 0 {
		t.Errorf("corrupt/ holds %d files", len(ents))
	}
	disk.heal()
	clock.Advance(DefaultBackoff(1))
	m.RunOnce(context.Background())
	if d := rec.deliveries(); len(d) != 1 || d[0].Env.ID != id {
		t.Fatalf("deliveries after healing: %+v", d)
	}
}

// A message file that vanished while indexed (an operator moved it) is
// dropped from the spool, not retried forever.
func TestVanishedMessageForgotten(t *testing.T) {
	f := newFixture(t, ManagerOptions{AutoUnspool: true}, Options{})
	id := f.put(t, 1)
	if err := os.Rename(filepath.Join(f.dir, id+msgExt), filepath.Join(t.TempDir(), "moved")); err != nil {
		t.Fatal(err)
	}
	f.m.RunOnce(context.Background())
	if n, b := f.spool.Stats(); n != 0 || b != 0 {
		t.Errorf("Stats = %d, %d after the file vanished", n, b)
	}
	if _, _, err := f.spool.Open(id); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open of the vanished message: %v", err)
	}
}

// TestPutStreams: a message larger than any buffer is streamed from its
// reader into the file, and reads back intact (checksum included) after a
// reopen.
func TestPutStreams(t *testing.T) {
	s, dir := openSpool(t, Options{})
	msg := bytes.Repeat([]byte("a line of a large message, streamed from its reader\r\n.dotted\r\n"), 6<<20/63)
	env := Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}
	id, err := s.Put(context.Background(), env, int64(len(msg)), iotest.HalfReader(bytes.NewReader(msg)))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	envs := checkIntact(t, dir)
	if e, ok := envs[id]; !ok || e.Size != int64(len(msg)) {
		t.Fatalf("after reopen: %+v", envs)
	}
	s2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	_, rc, err := s2.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, msg) {
		t.Errorf("read back %d bytes (%v), want %d intact", len(got), err, len(msg))
	}
}

// TestPutWrongLength: a reader that yields fewer or more bytes than
// announced, or fails, spools nothing and leaves no temporary file.
func TestPutWrongLength(t *testing.T) {
	s, dir := openSpool(t, Options{})
	msg := testMessage(1)
	broken := errors.New("client went away")
	for _, tc := range []struct {
		name string
		size int64
		r    io.Reader
	}{
		{"short", int64(len(msg)) + 1, bytes.NewReader(msg)},
		{"long", int64(len(msg)) - 1, bytes.NewReader(msg)},
		{"failing", int64(len(msg)), io.MultiReader(bytes.NewReader(msg[:10]), iotest.ErrReader(broken))},
	} {
		if _, err := s.Put(context.Background(), Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, tc.size, tc.r); err == nil {
			t.Errorf("%s: Put succeeded", tc.name)
		}
	}
	if n, b := s.Stats(); n != 0 || b != 0 {
		t.Errorf("Stats = %d messages, %d bytes after failed Puts", n, b)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, tmpDir)); len(ents) != 0 {
		t.Errorf("%d temporary files left", len(ents))
	}
}
