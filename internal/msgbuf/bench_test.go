package msgbuf

import (
	"bytes"
	"fmt"
	"io"
	"testing"
)

// BenchmarkBuffer receives a message into a Buffer (ReadFrom, as DATA
// does), reads it back once (WriteTo, as the relay does) and closes it,
// for message sizes around the in-memory limits worth considering: what a
// spill costs is the price of a smaller limit.
//
// go test -run '^$' -bench Buffer ./internal/msgbuf/
func BenchmarkBuffer(b *testing.B) {
	for _, mem := range []int{64 << 10, 128 << 10, 256 << 10} {
		s, err := New(Options{Dir: b.TempDir(), MemPerMessage: mem})
		if err != nil {
			b.Fatal(err)
		}
		for _, size := range []int{4 << 10, 100 << 10, 200 << 10, 1 << 20} {
			msg := message(1, size)
			b.Run(fmt.Sprintf("mem=%dK/size=%dK", mem>>10, size>>10), func(b *testing.B) {
				b.SetBytes(int64(size))
				for b.Loop() {
					buf := s.NewBuffer()
					if _, err := buf.ReadFrom(bytes.NewReader(msg)); err != nil {
						b.Fatal(err)
					}
					if _, err := io.Copy(io.Discard, buf.Reader()); err != nil {
						b.Fatal(err)
					}
					buf.Close()
				}
			})
		}
	}
}
