package testutil

import (
	"syscall"
	"testing"
)

// SmallTmpfs mounts a tmpfs of the given size ("256k") on a fresh
// temporary directory and returns it; it is unmounted at cleanup. Tests of
// a full disk need a filesystem of their own, which only root may mount.
func SmallTmpfs(t testing.TB, size string) string {
	t.Helper()
	dir := t.TempDir()
	err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size)
	RequireComponent(t, "root", err == nil, "mounting a small tmpfs to fill up")
	t.Cleanup(func() { syscall.Unmount(dir, 0) })
	return dir
}
