package config

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// A key of INTERFACE.md §2 is accepted only when its feature works. The
// keys (and values) of the features this build lacks are listed here, so
// that writing one is an error at check-config and serve ("listen.policy:
// not supported by this build yet"), never a silent no-op. A feature
// becomes available by deleting its line here; Config fields that exist
// for it already are decoded and validated from then on. Rule types and
// actions are flipped in internal/ruletype instead.
var notBuilt = []struct {
	feature string   // the hint: what is missing
	keys    []string // dotted paths, list items as []
}{}

// notBuiltValues are values of built keys whose feature this build lacks;
// what spells the value in the message.
var notBuiltValues = []struct {
	feature, key, what string
	match              func(string) bool
}{}

const notSupported = "not supported by this build yet"

// listIndex matches the list indexes of a path.
var listIndex = regexp.MustCompile(`\[\d+\]`)

// pattern spells a path the way the tables do: list indexes as [].
func pattern(path string) string { return listIndex.ReplaceAllString(path, "[]") }

// notBuiltKey returns the feature a key path belongs to, if this build
// lacks it.
func notBuiltKey(path string) (string, bool) {
	p := pattern(path)
	for _, f := range notBuilt {
		if slices.Contains(f.keys, p) {
			return f.feature, true
		}
	}
	return "", false
}

// notBuiltChildren returns the last element of every not-built key
// directly below path, for "did you mean" hints and for the keys a Config
// struct has no field for yet.
func notBuiltChildren(path string) []string {
	prefix := pattern(path) + "."
	if path == "" {
		prefix = ""
	}
	var out []string
	for _, f := range notBuilt {
		for _, k := range f.keys {
			rest, ok := strings.CutPrefix(k, prefix)
			if !ok {
				continue
			}
			name, _, _ := strings.Cut(rest, ".")
			if !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	return out
}

// refuseKey reports a key this build lacks at its line.
func (l *loader) refuseKey(line int, path, feature string) {
	l.addError(line, feature, "%s: %s", path, notSupported)
	l.failed[path] = true
}

// refuseValue reports whether value at path belongs to a feature this
// build lacks, and if so reports it.
func (l *loader) refuseValue(path, value string) bool {
	if l.pretendBuilt {
		return false
	}
	p := pattern(path)
	for _, v := range notBuiltValues {
		if v.key == p && v.match(value) {
			l.errAt(path, v.feature, "%s is %s", fmt.Sprintf(v.what, value), notSupported)
			return true
		}
	}
	return false
}
