package recipients

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// List is the content of recipients.file: the valid addresses, and the
// domains that accept every address (catch-all). It covers the domains it
// mentions: for those, an address it does not list is unknown, like
// Postfix's relay_recipient_maps; a domain it never mentions is left to
// the downstream's verdicts.
type List struct {
	addrs    map[string]struct{}
	catchAll map[string]struct{}
	domains  map[string]struct{} // every domain the file mentions
}

// LineError is one bad line of a recipients file.
type LineError struct {
	File string
	Line int
	Msg  string
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// FileErrors is every bad line of a file, in order.
type FileErrors []*LineError

func (es FileErrors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// maxLine bounds a line; an address is at most 254 octets (RFC 5321
// §4.5.3.1.3 path of 256 with brackets), plus a Postfix table value.
const maxLine = 4096

// maxFileErrors stops reporting after this many bad lines: a wrong file
// (a binary, another format) should not print a million lines.
const maxFileErrors = 20

// ReadFile reads a recipients file: one address a line, or "@domain" for
// a catch-all; blank lines and lines starting with "#" are ignored, and
// whatever follows the address after white space is ignored too, so a
// Postfix relay_recipients table ("alice@example.test OK") can be used as
// it is. Bad lines are returned as FileErrors with their line numbers.
func ReadFile(name string) (*List, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("recipients: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("recipients: %s is not a regular file", name)
	}
	return Parse(name, f)
}

// Parse reads a recipients file's content from r; name is used in errors.
// Addresses are in the unquoted form of Postfix's tables and are parsed
// by internal/address: the domain strictly (LDH labels or a literal),
// the local part any printable text or UTF-8.
func Parse(name string, r io.Reader) (*List, error) {
	l := &List{addrs: map[string]struct{}{}, catchAll: map[string]struct{}{}, domains: map[string]struct{}{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1024), maxLine)
	var errs FileErrors
	bad := func(n int, format string, a ...any) {
		if len(errs) < maxFileErrors {
			errs = append(errs, &LineError{File: name, Line: n, Msg: fmt.Sprintf(format, a...)})
		}
	}
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		field, _, _ := strings.Cut(strings.ReplaceAll(line, "\t", " "), " ")
		if !strings.Contains(field, "@") {
			bad(n, "%q is not an address (local@domain, or @domain for a catch-all)", clip(field))
			continue
		}
		if d, ok := strings.CutPrefix(field, "@"); ok {
			m, err := parseKey("postmaster@" + d)
			if err != nil {
				bad(n, "%q is not a domain", clip(d))
				continue
			}
			l.catchAll[m.Domain] = struct{}{}
			l.domains[m.Domain] = struct{}{}
			continue
		}
		m, err := parseKey(field)
		if err != nil {
			bad(n, "%q is not an address (local@domain, or @domain for a catch-all)", clip(field))
			continue
		}
		l.addrs[keyOf(m)] = struct{}{}
		l.domains[m.Domain] = struct{}{}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			bad(n+1, "line longer than %d bytes", maxLine)
		} else {
			return nil, fmt.Errorf("recipients: read %s: %w", name, err)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return l, nil
}

// Len returns the number of addresses and catch-all domains listed.
func (l *List) Len() (addrs, catchAll int) { return len(l.addrs), len(l.catchAll) }

// covers reports whether the file speaks for domain.
func (l *List) covers(domain string) bool {
	_, ok := l.domains[domain]
	return ok
}

// lists reports whether the file makes key valid: listed itself, or its
// domain is a catch-all.
func (l *List) lists(key, domain string) bool {
	if _, ok := l.catchAll[domain]; ok {
		return true
	}
	_, ok := l.addrs[key]
	return ok
}

// clip shortens what a bad line quotes back.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
