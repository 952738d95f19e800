package ruletype

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"mxguard/internal/duration"
)

const eventsDoc = "../../docs/reference/events.md"

// TestEventTypesDocumented proves docs/reference/events.md has a section
// for every type of the table, and that each says what the table says:
// per what, what is counted, the built-in default rule as this build runs
// it (the actions it can take), the type's own keys and its actions.
func TestEventTypesDocumented(t *testing.T) {
	b, err := os.ReadFile(eventsDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	sections := map[string]string{}
	heading := regexp.MustCompile("(?m)^### `([a-z_]+)`\n")
	locs := heading.FindAllStringSubmatchIndex(doc, -1)
	for i, l := range locs {
		end := len(doc)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		if next := strings.Index(doc[l[1]:end], "\n## "); next >= 0 {
			end = l[1] + next
		}
		sections[doc[l[2]:l[3]]] = doc[l[1]:end]
	}
	for _, typ := range All() {
		s, ok := sections[typ.Name]
		if !ok {
			t.Errorf("%s: no section ### `%s`", eventsDoc, typ.Name)
			continue
		}
		want := []string{
			"- counted per: " + string(typ.Per) + "\n",
			"- counts: " + typ.Counts + "\n",
		}
		if typ.Rule {
			want = append(want, "- default rule: "+defaultLine(typ))
			var as []string
			for _, a := range typ.Actions {
				as = append(as, "`"+a+"`")
			}
			want = append(want, "- actions: "+strings.Join(as, ", ")+"\n")
			for _, k := range typ.Keys {
				want = append(want, "- keys: `"+k+"`")
			}
		}
		for _, w := range want {
			if !strings.Contains(s, w) {
				t.Errorf("%s, section `%s`: want the line %q", eventsDoc, typ.Name, strings.TrimSpace(w))
			}
		}
	}
	for name := range sections {
		if _, ok := Lookup(name); !ok {
			t.Errorf("%s documents type %s, which the table does not have", eventsDoc, name)
		}
	}
}

// defaultLine renders a type's built-in rule as the reference writes it.
func defaultLine(t Type) string {
	d := t.Default
	if d == nil {
		return "none"
	}
	s := fmt.Sprintf("window `%s`, threshold `%d`, actions ", duration.Format(d.Window), d.Threshold)
	built := BuiltActions(d.Actions)
	if len(built) == 0 {
		return s + "none"
	}
	var as []string
	for _, a := range built {
		as = append(as, "`"+a+"`")
	}
	s += strings.Join(as, ", ")
	if slices.Contains(built, ActionBlock) || slices.Contains(built, ActionSuspend) {
		s += fmt.Sprintf(", block_for `%s`", duration.Format(d.BlockFor))
	}
	if d.MinSize > 0 {
		s += fmt.Sprintf(", min_size `%d`", d.MinSize)
	}
	return s
}
