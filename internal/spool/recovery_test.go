package spool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/metrics"
)

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
