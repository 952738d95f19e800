package testutil

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// A cluster directory whose postmaster is gone is removed; one whose
// postmaster runs, or one being set up, stays.
func TestRemoveStaleClusters(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	mk := func(name string, pid string, age time.Duration) string {
		dir := filepath.Join(tmp, name)
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
			t.Fatal(err)
		}
		if pid != "" {
			if err := os.WriteFile(filepath.Join(dir, "data", "postmaster.pid"), []byte(pid+"\n/tmp/x\n"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		old := time.Now().Add(-age)
		if err := os.Chtimes(dir, old, old); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dead := mk("mxpg-dead", "2147483646", 0) // beyond pid_max: no such process
	live := mk("mxpg-live", strconv.Itoa(os.Getpid()), 0)
	settingUp := mk("mxpg-new", "", time.Minute)
	abandoned := mk("mxpg-old", "", 2*time.Hour)
	other := mk("other-dir", "2147483646", 0)
	removeStaleClusters()
	for dir, want := range map[string]bool{dead: false, live: true, settingUp: true, abandoned: false, other: true} {
		if _, err := os.Stat(dir); (err == nil) != want {
			t.Errorf("%s: exists %v, want %v", filepath.Base(dir), err == nil, want)
		}
	}
}
