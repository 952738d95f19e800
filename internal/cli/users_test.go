package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"

	"mxguard/internal/testutil"
	"mxguard/internal/users"
)

func runUsers(stdin *os.File, args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	if stdin == nil {
		stdin, _ = os.Open(os.DevNull)
		defer stdin.Close()
	}
	code = Users(args, stdin, &o, &e)
	return code, o.String(), e.String()
}

// pipeWith returns a reader that yields s (a script piping a password).
func pipeWith(t *testing.T, s string) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	go func() { _, _ = w.WriteString(s); w.Close() }()
	return r
}

func hashOf(t *testing.T, path, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if n, h, ok := strings.Cut(l, ":"); ok && n == name {
			return []byte(h)
		}
	}
	return nil
}

func TestUsersFromStdin(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	code, out, errOut := runUsers(pipeWith(t, "s3cret\n"), "add", "Alice", "-f", path)
	if code != 0 || !strings.Contains(out, "added alice") {
		t.Fatalf("add: %d %q %q", code, out, errOut)
	}
	if bcrypt.CompareHashAndPassword(hashOf(t, path, "alice"), []byte("s3cret")) != nil {
		t.Fatal("stored hash does not match the password")
	}
	if cost, _ := bcrypt.Cost(hashOf(t, path, "alice")); cost != bcrypt.DefaultCost {
		t.Errorf("cost %d, want %d", cost, bcrypt.DefaultCost)
	}
	// No trailing newline, CRLF: the line is the password.
	if code, out, errOut := runUsers(pipeWith(t, "n3w\r\n"), "add", "-f", path, "alice"); code != 0 || !strings.Contains(out, "updated") {
		t.Fatalf("update: %d %q %q", code, out, errOut)
	}
	if bcrypt.CompareHashAndPassword(hashOf(t, path, "alice"), []byte("n3w")) != nil {
		t.Fatal("password not updated")
	}
	if code, _, _ := runUsers(pipeWith(t, "last"), "add", "bob", "-f", path); code != 0 {
		t.Fatal("password without newline refused")
	}
	if code, out, _ := runUsers(nil, "remove", "BOB", "-f", path); code != 0 || !strings.Contains(out, "removed bob") {
		t.Fatalf("remove: %d %q", code, out)
	}
	for _, tc := range []struct {
		stdin *os.File
		args  []string
		code  int
		want  string
	}{
		{nil, nil, 2, "missing subcommand"},
		{nil, []string{"list"}, 2, "unknown subcommand"},
		{nil, []string{"add", "alice"}, 2, "-f USERS_FILE is required"},
		{nil, []string{"add", "-f", path}, 2, "want one NAME"},
		{nil, []string{"add", "a:b", "-f", path}, 2, "':'"},
		{nil, []string{"add", "carol", "-f", path}, 1, "no password on stdin"},
		{pipeWith(t, "\n"), []string{"add", "carol", "-f", path}, 1, "empty password"},
		{pipeWith(t, strings.Repeat("x", 73)+"\n"), []string{"add", "carol", "-f", path}, 1, "at most 72"},
		{nil, []string{"remove", "carol", "-f", path}, 1, "no such user"},
		{nil, []string{"remove", "carol", "-f", filepath.Join(t.TempDir(), "none")}, 1, "no such file"},
	} {
		code, _, errOut := runUsers(tc.stdin, tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("users %v: exit %d, stderr %q; want %d with %q", tc.args, code, errOut, tc.code, tc.want)
		}
		if code == 1 && strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("users %v: operational error on more than one line: %q", tc.args, errOut)
		}
	}
	db, err := users.Load(path)
	if err != nil || db.Len() != 1 {
		t.Errorf("file after the failures: %v users, %v", db, err)
	}
}

// openPTY returns the controller and the terminal side of a new
// pseudo-terminal (posix_openpt, unlockpt, ptsname by hand).
func openPTY(t *testing.T) (ptm, pts *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("SKIP: no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// On a terminal the password is asked twice and never echoed, and the
// terminal is left as it was.
func TestUsersOnTerminal(t *testing.T) {
	ptm, pts := openPTY(t)
	before, err := unix.IoctlGetTermios(int(pts.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	if before.Lflag&unix.ECHO == 0 {
		t.Fatal("a new terminal has echo off")
	}
	// Everything the terminal shows (its echo) is collected from the
	// controller side.
	var shown testutil.LockedBuffer
	go func() {
		buf := make([]byte, 256)
		for {
			n, err := ptm.Read(buf)
			if err != nil {
				return
			}
			shown.Write(buf[:n])
		}
	}()
	for _, tc := range []struct {
		name, first, second string
		code                int
	}{
		{"match", "c0rrect-horse", "c0rrect-horse", 0},
		{"mismatch", "one", "two", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "users")
			var out, errOut testutil.LockedBuffer
			done := make(chan int, 1)
			go func() { done <- Users([]string{"add", "alice", "-f", path}, pts, &out, &errOut) }()
			waitFor(t, func() bool { return strings.Contains(errOut.String(), "Password: ") }, "first prompt")
			typeLine(t, ptm, tc.first)
			waitFor(t, func() bool { return strings.Contains(errOut.String(), "Password again: ") }, "second prompt")
			typeLine(t, ptm, tc.second)
			var code int
			select {
			case code = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("users add did not return")
			}
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tc.code, out.String(), errOut.String())
			}
			if tc.code == 0 && bcrypt.CompareHashAndPassword(hashOf(t, path, "alice"), []byte(tc.first)) != nil {
				t.Error("stored hash does not match what was typed")
			}
			if tc.code == 1 {
				if !strings.Contains(errOut.String(), "do not match") {
					t.Errorf("stderr %q", errOut.String())
				}
				if _, err := os.Stat(path); err == nil {
					t.Error("a file was written although the passwords differ")
				}
			}
			if s := shown.String(); strings.Contains(s, tc.first) || strings.Contains(s, tc.second) {
				t.Errorf("the terminal echoed the password: %q", s)
			}
			after, err := unix.IoctlGetTermios(int(pts.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if after.Lflag != before.Lflag {
				t.Errorf("terminal modes not restored: lflag %#x, was %#x", after.Lflag, before.Lflag)
			}
		})
	}
}

func typeLine(t *testing.T, ptm *os.File, s string) {
	t.Helper()
	if _, err := ptm.WriteString(s + "\n"); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
