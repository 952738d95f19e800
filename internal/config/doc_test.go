package config

import (
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"mxguard/internal/duration"
)

const configDoc = "../../docs/reference/config.md"

// notBuiltMark starts the "what" cell of a key this build refuses.
const notBuiltMark = "**not in this build**"

// TestConfigReference proves docs/reference/config.md documents every
// key: each leaf key of Config and each not-built key has a row, its
// default cell shows Default()'s value (the machine-dependent host name
// aside), a not-built key is marked so and a built one is not, and the
// document has no row for a key that does not exist.
func TestConfigReference(t *testing.T) {
	b, err := os.ReadFile(configDoc)
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ def, what string }
	rows := map[string]row{}
	for l := range strings.Lines(string(b)) {
		cells := strings.Split(strings.ReplaceAll(l, `\|`, "/"), "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		key := strings.Trim(strings.TrimSpace(cells[1]), "`")
		rows[key] = row{def: strings.TrimSpace(cells[2]), what: strings.TrimSpace(cells[3])}
	}
	keys := docKeys()
	if len(keys) < 60 {
		t.Fatalf("found %d keys; the walk no longer matches Config", len(keys))
	}
	def := reflect.ValueOf(Default()).Elem()
	for _, key := range keys {
		r, ok := rows[key]
		if !ok {
			t.Errorf("%s: key %s has no row", configDoc, key)
			continue
		}
		if nb := notBuiltPath(key); nb != strings.HasPrefix(r.what, notBuiltMark) {
			t.Errorf("%s: %s is built=%v, but its row says %q", configDoc, key, !nb, r.what)
		}
		if key == "hostname" || key == "cluster.node" {
			continue // the machine's host name
		}
		v, ok := valueAt(def, key)
		if !ok || v.IsZero() {
			continue
		}
		if want := "`" + render(v) + "`"; !strings.Contains(r.def, want) {
			t.Errorf("%s: the default of %s is %s, its row says %s", configDoc, key, want, r.def)
		}
	}
	for key := range rows {
		if !slices.Contains(keys, key) {
			t.Errorf("%s documents %s, which is no configuration key", configDoc, key)
		}
	}
}

// docKeys lists the keys the reference documents: the leaf keys of Config
// (a section is documented by its keys) and the not-built keys Config has
// no field for yet.
func docKeys() []string {
	all := keyPaths(reflect.TypeFor[Config](), "")
	var out []string
	for _, k := range all {
		if !slices.ContainsFunc(all, func(o string) bool {
			return strings.HasPrefix(o, k+".") || strings.HasPrefix(o, k+"[].")
		}) {
			out = append(out, k)
		}
	}
	for _, f := range notBuilt {
		for _, k := range f.keys {
			if !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	return out
}

// valueAt follows a dotted key path through v by yaml tags; paths through
// a list ("rules[].name") have no single value.
func valueAt(v reflect.Value, key string) (reflect.Value, bool) {
	for _, name := range strings.Split(key, ".") {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		fields, _ := structFields(v.Type())
		i, ok := fields[name]
		if !ok {
			return reflect.Value{}, false
		}
		v = v.Field(i)
	}
	return v, true
}

// render spells a default the way the reference (and a configuration
// file) writes it.
func render(v reflect.Value) string {
	switch x := v.Interface().(type) {
	case time.Duration:
		return duration.Format(x)
	case Size:
		return x.String()
	case []netip.Prefix:
		s := make([]string, len(x))
		for i, p := range x {
			s[i] = p.String()
		}
		return "[" + strings.Join(s, ", ") + "]"
	case []string:
		return "[" + strings.Join(x, ", ") + "]"
	case bool:
		return strconv.FormatBool(x)
	case int, int64:
		return fmt.Sprint(x)
	case string:
		return x
	}
	return fmt.Sprint(v.Interface())
}
