package samepass

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"
)

func key(rule uint32, counter byte, pw uint64) Key {
	k := Key{Rule: rule, Password: pw}
	k.Counter[0] = counter
	return k
}

func TestRepeat(t *testing.T) {
	s := New(Options{})
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	const w = 10 * time.Minute
	steps := []struct {
		at     time.Duration
		k      Key
		repeat bool
		why    string
	}{
		{0, key(1, 1, 42), false, "first attempt counts"},
		{time.Second, key(1, 1, 42), true, "same password again"},
		{9 * time.Minute, key(1, 1, 42), true, "still within the window"},
		{time.Second, key(1, 1, 43), false, "another password"},
		{time.Second, key(1, 2, 42), false, "same password, another source"},
		{time.Second, key(2, 1, 42), false, "same password, another rule"},
		{w, key(1, 1, 42), false, "a window after it was counted: counts again (repeats did not extend it)"},
		{w + time.Second, key(1, 1, 42), true, "and is a repeat again after that"},
		{-time.Hour, key(1, 1, 42), false, "the clock went back: counted, never silently dropped"},
	}
	for i, st := range steps {
		if got := s.Repeat(st.k, t0.Add(st.at), w); got != st.repeat {
			t.Errorf("step %d (%s): Repeat = %v, want %v", i, st.why, got, st.repeat)
		}
	}
}

// A flood of distinct passwords (a guesser, or many guessers) never grows
// the set past its bound, and what stays is the newest.
func TestBounded(t *testing.T) {
	const max = 64 * 16
	s := New(Options{MaxEntries: max})
	t0 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i := range 100_000 {
		s.Repeat(key(1, byte(i), uint64(i)), t0.Add(time.Duration(i)*time.Millisecond), time.Hour)
	}
	if n := s.Len(); n > max {
		t.Fatalf("%d entries, bound %d", n, max)
	}
	// The last attempt is still remembered.
	last := 100_000 - 1
	if !s.Repeat(key(1, byte(last), uint64(last)), t0.Add(time.Duration(last)*time.Millisecond), time.Hour) {
		t.Error("the newest entry was evicted")
	}
	// Sweep drops everything past the window.
	s.Sweep(t0.Add(3*time.Hour), time.Hour, 1<<20)
	if n := s.Len(); n != 0 {
		t.Errorf("%d entries after a sweep past the window", n)
	}
}

func TestHasher(t *testing.T) {
	h1, h2 := NewHasher(), NewHasher()
	first := h1.Password("alice", "secret")
	if again := h1.Password("alice", "secret"); again != first {
		t.Fatal("not deterministic")
	}
	distinct := map[uint64]string{}
	for name, fp := range map[string]uint64{
		"alice/secret":         h1.Password("alice", "secret"),
		"alice/secret2":        h1.Password("alice", "secret2"),
		"bob/secret":           h1.Password("bob", "secret"),
		"alic/esecret":         h1.Password("alic", "esecret"), // the separator binds login and password
		"other key":            h2.Password("alice", "secret"),
		"dovecot alice/0fff":   h1.Dovecot("alice", "0fff"),
		"dovecot alice/093a":   h1.Dovecot("alice", "093a"),
		"smtp alice/0fff text": h1.Password("alice", "0fff"), // a password spelled like a pwhash is not one
	} {
		if other, ok := distinct[fp]; ok {
			t.Errorf("%s and %s share a fingerprint", name, other)
		}
		distinct[fp] = name
	}
}

// The key is never kept in the fingerprint: 64 of 256 HMAC bits.
func TestFingerprintIsNotThePassword(t *testing.T) {
	h := NewHasher()
	fp := h.Password("alice", "secretpw")
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], fp)
	if string(b[:]) == "secretpw" {
		t.Fatal("fingerprint is the password")
	}
}

func BenchmarkRepeat(b *testing.B) {
	s := New(Options{})
	h := NewHasher()
	t0 := time.Now()
	fp := h.Password("alice", "secret")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		s.Repeat(key(1, byte(i), fp+uint64(i%1024)), t0, time.Hour)
	}
}

// BenchmarkFlood reports the memory one remembered fingerprint costs when
// the set is full.
func BenchmarkFlood(b *testing.B) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s := New(Options{})
	t0 := time.Now()
	for i := range defaultMaxEntries * 2 {
		s.Repeat(key(1, byte(i), uint64(i)), t0, time.Hour)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perEntry, n := float64(after.HeapAlloc-before.HeapAlloc)/float64(s.Len()), s.Len()
	for b.Loop() {
		s.Repeat(key(1, 0, 7), t0, time.Hour)
	}
	b.ReportMetric(perEntry, "bytes/entry")
	b.ReportMetric(float64(n), "entries")
}
