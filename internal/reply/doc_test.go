package reply

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

const repliesDoc = "../../docs/reference/replies.md"

// TestRepliesDocumented proves docs/reference/replies.md lists every
// reply value of this package, by name and exactly as the client sees it
// (code, enhanced code, text). The values are read from the source, so a
// new or changed reply fails here until the reference says so.
func TestRepliesDocumented(t *testing.T) {
	b, err := os.ReadFile(repliesDoc)
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{} // `Name` -> its table row
	for l := range strings.Lines(string(b)) {
		if cells := strings.Split(l, "|"); len(cells) > 2 {
			rows[strings.TrimSpace(cells[1])] = l
		}
	}
	values := sourceReplies(t)
	if len(values) < 20 {
		t.Fatalf("found %d replies in the source; the parser no longer matches it", len(values))
	}
	for name, r := range values {
		row, ok := rows["`"+name+"`"]
		if !ok {
			t.Errorf("%s: reply.%s (%s) has no row", repliesDoc, name, r.Line())
			continue
		}
		if !strings.Contains(row, "`"+string(r.Line())+"`") {
			t.Errorf("%s: the row of reply.%s does not show `%s`:\n%s", repliesDoc, name, r.Line(), row)
		}
	}
	for name := range rows {
		if n, ok := strings.CutPrefix(name, "`"); ok && strings.HasSuffix(n, "`") && strings.Trim(n, "`") != "" {
			n = strings.Trim(n, "`")
			if _, ok := values[n]; !ok && n[0] >= 'A' && n[0] <= 'Z' {
				t.Errorf("%s documents reply.%s, which the package does not have", repliesDoc, n)
			}
		}
	}
}

// sourceReplies reads every package-level `Name = Reply{...}` of the
// package's non-test files.
func sourceReplies(t *testing.T) map[string]Reply {
	t.Helper()
	files, _ := filepath.Glob("*.go")
	fset := token.NewFileSet()
	out := map[string]Reply{}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, spec := range g.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.CompositeLit)
					if !ok {
						continue
					}
					if id, ok := lit.Type.(*ast.Ident); !ok || id.Name != "Reply" {
						continue
					}
					r, err := literalReply(lit)
					if err != nil {
						t.Fatalf("%s: %s: %v", fset.Position(lit.Pos()), name.Name, err)
					}
					out[name.Name] = r
				}
			}
		}
	}
	return out
}

// literalReply evaluates the Code, Enhanced and Text fields of a Reply
// composite literal.
func literalReply(lit *ast.CompositeLit) (Reply, error) {
	var r Reply
	for _, el := range lit.Elts {
		kv, ok := el.(*ast.KeyValueExpr)
		if !ok {
			return r, fmt.Errorf("positional fields")
		}
		key := kv.Key.(*ast.Ident).Name
		switch key {
		case "Code":
			n, err := intLit(kv.Value)
			if err != nil {
				return r, err
			}
			r.Code = n
		case "Enhanced":
			cl, ok := kv.Value.(*ast.CompositeLit)
			if !ok || len(cl.Elts) != 3 {
				return r, fmt.Errorf("Enhanced is not a [3]int literal")
			}
			for i, e := range cl.Elts {
				n, err := intLit(e)
				if err != nil {
					return r, err
				}
				r.Enhanced[i] = n
			}
		case "Text":
			bl, ok := kv.Value.(*ast.BasicLit)
			if !ok || bl.Kind != token.STRING {
				return r, fmt.Errorf("Text is not a string literal")
			}
			s, err := strconv.Unquote(bl.Value)
			if err != nil {
				return r, err
			}
			r.Text = s
		}
	}
	return r, nil
}

func intLit(e ast.Expr) (int, error) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.INT {
		return 0, fmt.Errorf("not an integer literal")
	}
	return strconv.Atoi(bl.Value)
}

// TestSourceRepliesAreTheValues proves the source reader sees the values
// the package has (it would otherwise check the reference against
// something else).
func TestSourceRepliesAreTheValues(t *testing.T) {
	values := sourceReplies(t)
	for name, want := range map[string]Reply{"Blocked": Blocked, "UnknownUser": UnknownUser, "Backscatter": Backscatter, "NeedSMTPUTF8": NeedSMTPUTF8} {
		if got := values[name]; string(got.Line()) != string(want.Line()) {
			t.Errorf("source reply %s = %s, the package has %s", name, got.Line(), want.Line())
		}
	}
}
