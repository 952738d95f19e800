// Package users is the submission listener's own user database
// (auth.users_file): one "name:bcrypt-hash" line per account, edited by
// `mxguard users add|remove` and checked by a Checker that bounds the
// bcrypt work in flight, so a flood of logins cannot take the CPU that
// mail needs. See README.md.
package users

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/bcrypt"
)

// Limits of names and passwords. A name is a login as a client types it
// (often a mail address: RFC 5321 §4.5.3.1.3 bounds a path at 256 octets);
// bcrypt reads at most 72 bytes of a password, and a longer one would be
// silently cut, so it is refused instead.
const (
	MaxName     = 256
	MaxPassword = 72
)

// ErrNotFound is returned by Remove for a name that has no line.
var ErrNotFound = errors.New("no such user")

// DB is a parsed users file: lowercased name -> bcrypt hash.
type DB struct {
	hashes map[string][]byte
}

// Len returns the number of users.
func (d *DB) Len() int { return len(d.hashes) }

// hash returns the bcrypt hash of name (already normalized).
func (d *DB) hash(name string) ([]byte, bool) {
	h, ok := d.hashes[name]
	return h, ok
}

// Normalize returns the account a login name stands for (INTERFACE.md §3:
// the login name as given, lowercased).
func Normalize(name string) string { return strings.ToLower(name) }

// ValidName checks a name for the file: not empty, at most MaxName bytes of
// UTF-8 without ':' (the separator), spaces or control characters.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty user name")
	case len(name) > MaxName:
		return fmt.Errorf("user name is %d bytes long, at most %d", len(name), MaxName)
	case !utf8.ValidString(name):
		return errors.New("user name is not UTF-8")
	case strings.ContainsRune(name, ':'):
		return errors.New("user name contains ':'")
	}
	for _, r := range name {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("user name contains %q", r)
		}
	}
	return nil
}

// ValidPassword checks a password before it is hashed.
func ValidPassword(pw string) error {
	switch {
	case pw == "":
		return errors.New("empty password")
	case len(pw) > MaxPassword:
		return fmt.Errorf("password is %d bytes long; bcrypt uses at most %d", len(pw), MaxPassword)
	case strings.ContainsAny(pw, "\r\n\x00"):
		return errors.New("password contains a line break or NUL")
	}
	return nil
}

// Parse reads a users file: "name:hash" lines, '#' comments and blank
// lines. Every bad line is reported, as "FILE:LINE: message".
func Parse(path string, data []byte) (*DB, error) {
	d := &DB{hashes: make(map[string][]byte)}
	var errs []error
	for i, line := range bytes.Split(data, []byte("\n")) {
		n := i + 1
		line = bytes.TrimRight(line, "\r")
		s := strings.TrimSpace(string(line))
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		name, hash, ok := strings.Cut(s, ":")
		if !ok {
			errs = append(errs, fmt.Errorf("%s:%d: want name:bcrypt-hash", path, n))
			continue
		}
		if err := ValidName(name); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %v", path, n, err))
			continue
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			errs = append(errs, fmt.Errorf("%s:%d: %s: not a bcrypt hash (mxguard users add %s -f %s writes one)", path, n, name, name, path))
			continue
		}
		key := Normalize(name)
		if _, dup := d.hashes[key]; dup {
			errs = append(errs, fmt.Errorf("%s:%d: %s is listed twice", path, n, name))
			continue
		}
		d.hashes[key] = []byte(hash)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return d, nil
}

// Load reads and parses path.
func Load(path string) (*DB, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("users: %w", err)
	}
	return Parse(path, data)
}

// Add sets name's password in path, creating the file (mode 0600) if
// needed, and reports whether the name is new. Other lines, comments
// included, are kept as they are.
func Add(path, name, password string, cost int) (added bool, err error) {
	if err := ValidName(name); err != nil {
		return false, err
	}
	if err := ValidPassword(password); err != nil {
		return false, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return false, fmt.Errorf("users: bcrypt: %w", err)
	}
	key := Normalize(name)
	added = true
	err = edit(path, true, func(lines []string) ([]string, error) {
		out := lines[:0:0]
		for _, l := range lines {
			if n, ok := lineName(l); ok && n == key {
				if added {
					out = append(out, key+":"+string(hash))
					added = false
				}
				continue // a duplicate line goes too
			}
			out = append(out, l)
		}
		if added {
			out = append(out, key+":"+string(hash))
		}
		return out, nil
	})
	return added, err
}

// Remove deletes name's line from path; ErrNotFound if there is none.
func Remove(path, name string) error {
	key := Normalize(name)
	return edit(path, false, func(lines []string) ([]string, error) {
		out := lines[:0:0]
		for _, l := range lines {
			if n, ok := lineName(l); ok && n == key {
				continue
			}
			out = append(out, l)
		}
		if len(out) == len(lines) {
			return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
		}
		return out, nil
	})
}

// lineName returns the normalized name of a "name:hash" line.
func lineName(l string) (string, bool) {
	s := strings.TrimSpace(l)
	if s == "" || strings.HasPrefix(s, "#") {
		return "", false
	}
	name, _, ok := strings.Cut(s, ":")
	return Normalize(name), ok
}

// edit rewrites path under an exclusive lock (PATH.lock, so two
// `users add` at once cannot lose one another's line): read, change,
// write a temporary file, fsync, rename over path, fsync the directory.
// A reader (the running gateway) sees the old file or the new one, never
// half of one.
func edit(path string, create bool, change func([]string) ([]string, error)) error {
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("users: lock %s: %w", lock.Name(), err)
	}
	mode, uid, gid := os.FileMode(0o600), -1, -1
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if fi, err := os.Stat(path); err == nil {
			mode = fi.Mode().Perm()
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				uid, gid = int(st.Uid), int(st.Gid)
			}
		}
		// The edit must not turn a file the gateway cannot parse into
		// one it parses differently: refuse to touch a broken file.
		if _, err := Parse(path, data); err != nil {
			return fmt.Errorf("users: %w (fix it by hand first)", err)
		}
	case errors.Is(err, os.ErrNotExist) && create:
	default:
		return fmt.Errorf("users: %w", err)
	}
	var lines []string
	if len(data) > 0 {
		lines = strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	}
	lines, err = change(lines)
	if err != nil {
		return err
	}
	var out []byte
	for _, l := range lines {
		out = append(out, l...)
		out = append(out, '\n')
	}
	return writeAtomic(path, out, mode, uid, gid)
}

func writeAtomic(path string, data []byte, mode os.FileMode, uid, gid int) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("users: %w", err)
	}
	if uid >= 0 && os.Geteuid() == 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			tmp.Close()
			return fmt.Errorf("users: %w", err)
		}
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("users: write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("users: fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("users: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("users: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("users: fsync %s: %w", dir, err)
	}
	return nil
}
