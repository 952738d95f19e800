package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// OpenFilesUnder counts this process's open file descriptors on files in
// or below dir, unlinked ones included: a temporary file that was deleted
// at once but never closed still shows here (Linux /proc/self/fd).
func OpenFilesUnder(t testing.TB, dir string) int {
	t.Helper()
	dir, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("open files: %v", err)
	}
	n := 0
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			n++
		}
	}
	return n
}
