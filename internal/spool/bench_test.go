package spool

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// The spool is bound by the disk's fsync rate: BenchmarkPut against
// BenchmarkFsync (same disk, same run) shows how much of it our code costs.
//
//	go test -run '^$' -bench . ./internal/spool/

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

func BenchmarkPut(b *testing.B) {
	for _, size := range []int{4 << 10, 100 << 10} {
		msg := bytes.Repeat([]byte("x"), size)
		env := Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}, Source: "192.0.2.1"}
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			s, _ := openSpool(b, Options{})
			b.SetBytes(int64(size))
			for b.Loop() {
				if _, err := putBytes(s, context.Background(), env, msg); err != nil {
					b.Fatal(err)
				}
			}
			reportRate(b)
		})
		// Concurrent sessions: their fsyncs share journal commits.
		b.Run(fmt.Sprintf("%dKB-parallel", size>>10), func(b *testing.B) {
			s, _ := openSpool(b, Options{})
			b.SetBytes(int64(size))
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := putBytes(s, context.Background(), env, msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b)
		})
	}
}

// BenchmarkFsync measures the disk without the spool: rewriting one 4 KB
// block with fsync (the floor), creating a 4 KB file with fsync, and the
// full protocol of Put (create, fsync, rename, fsync directory).
func BenchmarkFsync(b *testing.B) {
	block := bytes.Repeat([]byte("x"), 4<<10)
	b.Run("overwrite+fsync", func(b *testing.B) {
		f, err := os.Create(filepath.Join(b.TempDir(), "f"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		for b.Loop() {
			if _, err := f.WriteAt(block, 0); err != nil {
				b.Fatal(err)
			}
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
	b.Run("create+fsync", func(b *testing.B) {
		dir := b.TempDir()
		i := 0
		for b.Loop() {
			i++
			if err := writeSynced(filepath.Join(dir, fmt.Sprint(i)), writeBytes(block)); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
	b.Run("create+fsync+rename+dirfsync", func(b *testing.B) {
		dir := b.TempDir()
		if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o700); err != nil {
			b.Fatal(err)
		}
		d, err := os.Open(dir)
		if err != nil {
			b.Fatal(err)
		}
		defer d.Close()
		i := 0
		for b.Loop() {
			i++
			name := fmt.Sprint(i)
			if err := writeSynced(filepath.Join(dir, "tmp", name), writeBytes(block)); err != nil {
				b.Fatal(err)
			}
			if err := os.Rename(filepath.Join(dir, "tmp", name), filepath.Join(dir, name)); err != nil {
				b.Fatal(err)
			}
			if err := d.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b)
	})
}

type nopDeliverer struct{}

func (nopDeliverer) Deliver(_ context.Context, _ Envelope, msg io.Reader) error {
	_, err := io.Copy(io.Discard, msg)
	return err
}

// BenchmarkUnspool releases 4 KB messages to a Deliverer that reads and
// accepts them, with no rate limit: each costs an open, a read, an unlink
// and a directory fsync.
func BenchmarkUnspool(b *testing.B) {
	s, _ := openSpool(b, Options{})
	msg := bytes.Repeat([]byte("x"), 4<<10)
	for range b.N {
		if _, err := putBytes(s, context.Background(), Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, msg); err != nil {
			b.Fatal(err)
		}
	}
	m := NewManager(ManagerOptions{Spool: s, AutoUnspool: true, UnspoolRate: 1 << 30, Deliver: nopDeliverer{}})
	b.ResetTimer()
	for m.RunOnce(context.Background()) > 0 {
	}
	b.StopTimer()
	if n, _ := s.Stats(); n != 0 {
		b.Fatalf("%d left", n)
	}
	reportRate(b)
}
