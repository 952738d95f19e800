package mimewalk

import "bytes"

// Finder looks for a fixed string in a body that arrives in pieces,
// including across the boundary of two pieces, keeping only the last
// len(pattern)-1 bytes between them.
type Finder struct {
	pat   []byte
	tail  []byte // last len(pat)-1 bytes seen
	join  []byte // scratch for tail + head of the next piece
	Found bool
}

// NewFinder returns a Finder for pattern (not empty).
func NewFinder(pattern string) *Finder {
	n := len(pattern) - 1
	return &Finder{pat: []byte(pattern), tail: make([]byte, 0, n), join: make([]byte, 0, 2*n)}
}

// Reset prepares the Finder for a new body.
func (f *Finder) Reset() { f.tail, f.Found = f.tail[:0], false }

// Write looks at the next piece; it returns true once the pattern was
// seen.
func (f *Finder) Write(b []byte) bool {
	if f.Found {
		return true
	}
	n := len(f.pat) - 1
	if len(f.tail) > 0 {
		f.join = append(append(f.join[:0], f.tail...), b[:min(len(b), n)]...)
		if bytes.Contains(f.join, f.pat) {
			f.Found = true
			return true
		}
	}
	if bytes.Contains(b, f.pat) {
		f.Found = true
		return true
	}
	if len(b) >= n {
		f.tail = append(f.tail[:0], b[len(b)-n:]...)
	} else {
		f.tail = append(f.tail, b...)
		if len(f.tail) > n {
			f.tail = append(f.tail[:0], f.tail[len(f.tail)-n:]...)
		}
	}
	return false
}
