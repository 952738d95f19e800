package config

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// Load reads and validates the configuration file at path. Any problem,
// including an unreadable file, is returned as Errors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is already at the start of the line
		}
		return nil, Errors{{File: path, Msg: "cannot read config: " + err.Error()}}
	}
	return Parse(path, data)
}

// Parse is Load for a file already in memory; name is the path used in
// error messages and as the base for relative file names such as
// admin.token_file.
func Parse(name string, data []byte) (*Config, error) {
	return newLoader(name).parse(data)
}

func (l *loader) parse(data []byte) (*Config, error) {
	name := l.file
	cfg := Default()
	cfg.File = name
	if root := l.parseRoot(data); root != nil {
		l.collectAnchors(root)
		l.decodeValue(root, reflect.ValueOf(cfg).Elem(), "")
	}
	if !l.syntaxBroken {
		// After a syntax error nothing was decoded; "domains: required"
		// and the like would only bury the one real problem.
		l.check(cfg)
	}
	if len(l.errs) > 0 {
		// Stable, so problems on one line keep the order they were found in;
		// the configuration's own lines come before those of the files it
		// names (recipients.file).
		other := func(e Error) int {
			if e.File == name {
				return 0
			}
			return 1
		}
		slices.SortStableFunc(l.errs, func(a, b Error) int {
			return cmp.Or(cmp.Compare(other(a), other(b)), cmp.Compare(a.Line, b.Line))
		})
		return nil, l.errs
	}
	return cfg, nil
}

// loader carries the state of one Parse: the errors so far and where each
// key was written, by its dotted path ("delivery.servers[1].role").
type loader struct {
	file    string
	dir     string // relative file names in the config are resolved here
	errs    Errors
	lines   map[string]int  // path -> line of its key (or list item)
	failed  map[string]bool // paths that already have an error: no follow-up errors
	anchors map[string]ast.Node

	aliasUses int

	syntaxBroken bool

	// pretendBuilt accepts the keys, values, rule types and actions of
	// features this build lacks, so tests keep their validation, which
	// applies once the feature is built, working.
	pretendBuilt bool
}

func newLoader(name string) *loader {
	return &loader{
		file:    name,
		dir:     filepath.Dir(name),
		lines:   map[string]int{},
		failed:  map[string]bool{},
		anchors: map[string]ast.Node{},
	}
}

// parseRoot parses the YAML and returns the single document's body, or
// nil for an empty file or after an error.
func (l *loader) parseRoot(data []byte) ast.Node {
	// Duplicate keys are reported by decodeStruct, together with every other
	// problem; goccy would stop at the first one.
	f, err := parser.ParseBytes(data, 0, parser.AllowDuplicateMapKey())
	if err != nil {
		l.syntaxBroken = true
		var yerr interface {
			GetToken() *token.Token
			GetMessage() string
		}
		line, msg := 1, err.Error()
		if errors.As(err, &yerr) {
			msg = yerr.GetMessage()
			if tk := yerr.GetToken(); tk != nil && tk.Position != nil {
				line = tk.Position.Line
			}
		}
		l.addError(line, "", "YAML syntax: %s", msg)
		return nil
	}
	var root ast.Node
	for _, doc := range f.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if root != nil {
			l.addError(lineOf(doc.Body), "put the whole configuration in one document", "a second YAML document")
			continue
		}
		root = doc.Body
	}
	if root == nil {
		return nil
	}
	if _, isNull := root.(*ast.NullNode); isNull {
		return nil
	}
	return root
}

// addError records a problem at a line.
func (l *loader) addError(line int, hint, format string, args ...any) {
	l.errs = append(l.errs, Error{File: l.file, Line: max(line, 1), Msg: fmt.Sprintf(format, args...), Hint: hint})
}

// errNode records a problem with the value at path, at the line of node n.
func (l *loader) errNode(n ast.Node, path, hint, format string, args ...any) {
	line := lineOf(n)
	if line == 0 {
		line = l.line(path)
	}
	l.report(line, path, hint, fmt.Sprintf(format, args...))
}

// errAt records a problem with the value at path, found after decoding.
func (l *loader) errAt(path, hint, format string, args ...any) {
	l.report(l.line(path), path, hint, fmt.Sprintf(format, args...))
}

func (l *loader) report(line int, path, hint, msg string) {
	if l.failed[path] {
		return // the decoder already said what is wrong here
	}
	if path != "" {
		msg = path + ": " + msg
		l.failed[path] = true
	}
	l.addError(line, hint, "%s", msg)
}

// has tells whether the file gives path.
func (l *loader) has(path string) bool {
	_, ok := l.lines[path]
	return ok
}

// line is where path is written or, for a key the file leaves out, where
// its nearest written parent is; a missing top-level key is reported at
// line 1.
func (l *loader) line(path string) int {
	for path != "" {
		if n, ok := l.lines[path]; ok {
			return n
		}
		path = path[:max(strings.LastIndexAny(path, ".["), 0)]
	}
	return 1
}
