package users

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestParse(t *testing.T) {
	good, _ := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	data := "# submission users\n\nalice:" + string(good) + "\r\n  Bob:" + string(good) + "  \n"
	db, err := Parse("u", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if db.Len() != 2 {
		t.Fatalf("%d users, want 2", db.Len())
	}
	if _, ok := db.hash("bob"); !ok {
		t.Error("Bob is not found as bob (names are lowercased)")
	}

	bad := strings.Join([]string{
		"alice:" + string(good),
		"no separator",
		"carol:{PLAIN}secret",
		"ALICE:" + string(good),
		"da ve:" + string(good),
		":" + string(good),
	}, "\n")
	_, err = Parse("users.txt", []byte(bad))
	if err == nil {
		t.Fatal("bad file parsed")
	}
	for _, want := range []string{
		"users.txt:2: want name:bcrypt-hash",
		"users.txt:3: carol: not a bcrypt hash",
		"users.txt:4: ALICE is listed twice",
		"users.txt:5: user name contains ' '",
		"users.txt:6: empty user name",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q\nlacks %q", err, want)
		}
	}
}

func TestAddRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	added, err := Add(path, "Alice", "secret", bcrypt.MinCost)
	if err != nil || !added {
		t.Fatalf("Add: %v %v", added, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v, want 0600 (it holds password hashes)", fi.Mode().Perm())
	}
	// Hand edits are kept: a comment and a mode the operator chose.
	b, _ := os.ReadFile(path)
	if err := os.WriteFile(path, append([]byte("# managed by mxguard users\n"), b...), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if added, err := Add(path, "bob", "hunter2", bcrypt.MinCost); err != nil || !added {
		t.Fatalf("Add bob: %v %v", added, err)
	}
	if added, err := Add(path, "ALICE", "newpass", bcrypt.MinCost); err != nil || added {
		t.Fatalf("Add ALICE again: added=%v %v, want an update", added, err)
	}
	b, _ = os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || lines[0] != "# managed by mxguard users" || !strings.HasPrefix(lines[1], "alice:$2a$") || !strings.HasPrefix(lines[2], "bob:$2a$") {
		t.Fatalf("file:\n%s", b)
	}
	if strings.Contains(string(b), "newpass") || strings.Contains(string(b), "hunter2") {
		t.Fatal("a password is in the file")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v after edit, want the operator's 0640", fi.Mode().Perm())
	}
	db, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := db.hash("alice")
	if bcrypt.CompareHashAndPassword(h, []byte("newpass")) != nil {
		t.Error("alice's password was not updated")
	}

	if err := Remove(path, "Bob"); err != nil {
		t.Fatal(err)
	}
	if err := Remove(path, "bob"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove of a removed user: %v, want ErrNotFound", err)
	}
	if err := Remove(filepath.Join(t.TempDir(), "none"), "bob"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Remove from a missing file: %v", err)
	}
	db, _ = Load(path)
	if db.Len() != 1 {
		t.Errorf("%d users after remove, want 1", db.Len())
	}
	// No temporary file is left.
	ents, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range ents {
		if e.Name() != "users" && e.Name() != "users.lock" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestAddRefuses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	for _, tc := range []struct{ name, pw, want string }{
		{"", "x", "empty user name"},
		{"a:b", "x", "':'"},
		{"a b", "x", "' '"},
		{"a\tb", "x", `'\t'`},
		{strings.Repeat("a", MaxName+1), "x", "at most 256"},
		{"alice", "", "empty password"},
		{"alice", strings.Repeat("p", 73), "at most 72"},
		{"alice", "a\nb", "line break"},
	} {
		if _, err := Add(path, tc.name, tc.pw, bcrypt.MinCost); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Add(%.20q, %.20q): %v, want an error with %q", tc.name, tc.pw, err, tc.want)
		}
	}
	// A file that does not parse is not edited.
	if err := os.WriteFile(path, []byte("alice:not-a-hash\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Add(path, "bob", "x", bcrypt.MinCost); err == nil || !strings.Contains(err.Error(), "fix it by hand") {
		t.Errorf("Add to a broken file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "alice:not-a-hash\n" {
		t.Errorf("broken file changed: %q", b)
	}
}

// Two `users add` at once both land.
func TestConcurrentAdds(t *testing.T) {
	path := filepath.Join(t.TempDir(), "users")
	var wg sync.WaitGroup
	names := []string{"a", "b", "c", "d", "e", "f", "g", "h"}
	for _, n := range names {
		wg.Go(func() {
			if _, err := Add(path, n, "pw-"+n, bcrypt.MinCost); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	db, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if db.Len() != len(names) {
		t.Errorf("%d users after %d concurrent adds", db.Len(), len(names))
	}
}
