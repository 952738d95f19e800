package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"

	"mxguard/internal/duration"
)

// The decoder walks the goccy/go-yaml AST instead of unmarshalling so that
// every key and value keeps its line number, decoding goes on after an error,
// and key presence is known: defaults are pre-filled into the Config and only
// keys present in the file overwrite them, which keeps an explicit
// "trusted_networks: []" or "auto_unspool: false" apart from an absent key.

var (
	durationType = reflect.TypeFor[time.Duration]()
	sizeType     = reflect.TypeFor[Size]()
	prefixType   = reflect.TypeFor[netip.Prefix]()
	blockType    = reflect.TypeFor[BlockEntry]()
)

// maxAliasDepth bounds alias and merge-key chains; YAML allows an anchor to
// merge into itself, which would otherwise recurse forever. maxAliases
// bounds the total number of alias uses: anchors that merge or list each
// other several times grow exponentially ("billion laughs").
const (
	maxAliasDepth = 16
	maxAliases    = 10000
)

// decodeValue stores node n into v. A null value leaves a scalar or
// mapping at its default and makes a list empty ("rules:" with nothing
// after it means no rules, like "rules: []").
func (l *loader) decodeValue(n ast.Node, v reflect.Value, path string) {
	n = l.resolve(n, path, 0)
	if n == nil {
		return
	}
	if _, ok := n.(*ast.NullNode); ok {
		if v.Kind() == reflect.Slice {
			v.Set(reflect.MakeSlice(v.Type(), 0, 0))
		}
		return
	}
	if tt, ok := textTypeOf(v.Type()); ok {
		l.decodeText(n, v, path, tt)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		l.decodeStruct(n, v, path)
	case reflect.Slice:
		l.decodeSlice(n, v, path)
	case reflect.String:
		if s, ok := l.scalarString(n, path); ok {
			v.SetString(s)
		}
	case reflect.Int, reflect.Int64:
		l.decodeInt(n, v, path)
	case reflect.Bool:
		b, ok := n.(*ast.BoolNode)
		if !ok {
			l.typeError(n, path, "true or false")
			return
		}
		v.SetBool(b.Value)
	default:
		panic("config: no decoder for " + v.Type().String()) // a Config field of a new kind
	}
}

// resolve looks through tags, anchors and aliases to the node that holds
// the value.
func (l *loader) resolve(n ast.Node, path string, depth int) ast.Node {
	for ; depth <= maxAliasDepth; depth++ {
		switch t := n.(type) {
		case *ast.TagNode:
			n = t.Value
		case *ast.AnchorNode:
			n = t.Value
		case *ast.AliasNode:
			name := ""
			if t.Value != nil {
				name = t.Value.GetToken().Value
			}
			if l.aliasUses++; l.aliasUses > maxAliases {
				if l.aliasUses == maxAliases+1 {
					l.errNode(t, path, "", "more than %d alias uses", maxAliases)
				}
				return nil
			}
			target, ok := l.anchors[name]
			if !ok {
				l.errNode(t, path, "", "alias *%s refers to no anchor", name)
				return nil
			}
			n = target
		default:
			return n
		}
	}
	l.errNode(n, path, "", "aliases nested too deeply")
	return nil
}

// collectAnchors records every &anchor before decoding, so an alias inside
// a part of the file that fails to decode still finds its anchor.
func (l *loader) collectAnchors(n ast.Node) {
	switch t := n.(type) {
	case *ast.AnchorNode:
		name := ""
		if t.Name != nil {
			name = t.Name.GetToken().Value
		}
		if _, dup := l.anchors[name]; dup {
			l.errNode(t, "", "give each anchor its own name", "anchor &%s is defined twice", name)
		}
		l.anchors[name] = t.Value
		l.collectAnchors(t.Value)
	case *ast.TagNode:
		l.collectAnchors(t.Value)
	case *ast.MappingNode:
		for _, mv := range t.Values {
			l.collectAnchors(mv)
		}
	case *ast.MappingValueNode:
		l.collectAnchors(t.Key)
		l.collectAnchors(t.Value)
	case *ast.SequenceNode:
		for _, v := range t.Values {
			l.collectAnchors(v)
		}
	}
}

// entries returns the key/value pairs written in a mapping and, apart,
// those it pulls in with "<<" merge keys.
func (l *loader) entries(n ast.Node, path string, depth int) (own, merged []*ast.MappingValueNode, ok bool) {
	var values []*ast.MappingValueNode
	switch t := n.(type) {
	case *ast.MappingNode:
		values = t.Values
	case *ast.MappingValueNode:
		values = []*ast.MappingValueNode{t}
	default:
		return nil, nil, false
	}
	for _, mv := range values {
		if _, isMerge := mv.Key.(*ast.MergeKeyNode); !isMerge {
			own = append(own, mv)
			continue
		}
		if depth >= maxAliasDepth {
			l.errNode(mv, path, "", "merge keys nested too deeply")
			continue
		}
		src := l.resolve(mv.Value, path, depth+1)
		srcs := []ast.Node{src}
		if seq, isSeq := src.(*ast.SequenceNode); isSeq {
			srcs = seq.Values
		}
		for _, s := range srcs {
			s = l.resolve(s, path, depth+1)
			if s == nil {
				continue // resolve has reported why
			}
			o, m, isMap := l.entries(s, path, depth+1)
			if !isMap {
				l.errNode(mv, path, "", "<< must merge a mapping or a list of mappings")
				continue
			}
			merged = append(append(merged, o...), m...)
		}
	}
	return own, merged, true
}

// decodeStruct decodes a mapping into a struct by its yaml tags, reporting
// unknown and duplicate keys at the key's line.
func (l *loader) decodeStruct(n ast.Node, v reflect.Value, path string) {
	own, merged, ok := l.entries(n, path, 0)
	if !ok {
		l.typeError(n, path, "a mapping")
		return
	}
	fields, names := structFields(v.Type())
	seen := map[string]int{}
	for i, mv := range append(own, merged...) {
		key, ok := l.keyName(mv.Key, path)
		if !ok {
			continue
		}
		line := lineOf(mv.Key)
		child := key
		if path != "" {
			child = path + "." + key
		}
		if first, dup := seen[key]; dup {
			// A merged key that the mapping also writes is an override
			// (YAML merge semantics), not a mistake.
			if i < len(own) {
				l.addError(line, fmt.Sprintf("first given at line %d", first), "duplicate key %s", child)
				l.failed[child] = true
			}
			continue
		}
		seen[key] = line
		if feature, ok := notBuiltKey(child); ok && !l.pretendBuilt {
			// Refused whatever its value: the feature would not use it.
			l.refuseKey(line, child, feature)
			continue
		}
		idx, known := fields[key]
		if !known {
			l.addError(line, suggest(key, withNotBuilt(names, path)), "unknown key %s", child)
			continue
		}
		l.lines[child] = line
		l.decodeValue(mv.Value, v.Field(idx), child)
	}
}

// withNotBuilt adds to a struct's key names the keys below path that
// this build lacks (some have no field yet), so a typo of one still gets
// its "did you mean".
func withNotBuilt(names []string, path string) []string {
	out := slices.Clone(names)
	for _, n := range notBuiltChildren(path) {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// structFields maps yaml key names to field indexes, and lists the names
// for hints.
func structFields(t reflect.Type) (map[string]int, []string) {
	fields := map[string]int{}
	var names []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = i
		names = append(names, name)
	}
	return fields, names
}

func (l *loader) keyName(k ast.MapKeyNode, path string) (string, bool) {
	switch t := l.resolve(k, path, 0).(type) {
	case *ast.StringNode:
		return t.Value, true
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.NullNode:
		return t.GetToken().Value, true
	case nil:
		return "", false
	}
	l.errNode(k, path, "", "keys must be plain words")
	return "", false
}

func (l *loader) decodeSlice(n ast.Node, v reflect.Value, path string) {
	seq, ok := n.(*ast.SequenceNode)
	if !ok {
		l.typeError(n, path, "a list")
		return
	}
	out := reflect.MakeSlice(v.Type(), 0, len(seq.Values))
	for i, item := range seq.Values {
		child := path + "[" + strconv.Itoa(i) + "]"
		l.lines[child] = lineOf(item)
		elem := reflect.New(v.Type().Elem()).Elem()
		l.decodeValue(item, elem, child)
		out = reflect.Append(out, elem)
	}
	v.Set(out)
}

// scalarString accepts strings and also the text of numbers, because YAML
// turns unquoted tokens like 123456 or 1.10 into numbers the writer meant
// as text. Booleans are refused: "yes" becoming
// true is never what was meant.
func (l *loader) scalarString(n ast.Node, path string) (string, bool) {
	switch t := n.(type) {
	case *ast.StringNode:
		return t.Value, true
	case *ast.LiteralNode:
		if t.Value != nil {
			return t.Value.Value, true
		}
		return "", true
	case *ast.IntegerNode, *ast.FloatNode:
		return t.GetToken().Value, true
	}
	l.typeError(n, path, "a string")
	return "", false
}

func (l *loader) decodeInt(n ast.Node, v reflect.Value, path string) {
	in, ok := n.(*ast.IntegerNode)
	if !ok {
		l.typeError(n, path, "a whole number")
		return
	}
	var i int64
	switch x := in.Value.(type) {
	case int64:
		i = x
	case uint64:
		if x > 1<<63-1 {
			ok = false
		}
		i = int64(x)
	default:
		ok = false
	}
	if !ok || v.OverflowInt(i) {
		l.errNode(n, path, "", "%s is too large", in.GetToken().Value)
		return
	}
	v.SetInt(i)
}

// textType is a Go type written in YAML as text, with the parser for it
// and the hint shown when the text does not parse.
type textType struct {
	parse func(string) (any, error)
	hint  string
}

func textTypeOf(t reflect.Type) (textType, bool) {
	switch t {
	case durationType:
		return textType{parseDuration, "30s, 10m, 1h30m, 7d"}, true
	case sizeType:
		return textType{func(s string) (any, error) { return ParseSize(s) }, "e.g. 500KB, 10MiB, 2GB or a number of bytes"}, true
	case prefixType:
		return textType{parsePrefix, "an address such as 192.0.2.1 or a network such as 192.0.2.0/24; quote IPv6 like \"::1\""}, true
	case blockType:
		return textType{parseBlockEntry, "an address, a network such as 192.0.2.0/24, or a host name: mail.example.net, or .example.net for its subdomains"}, true
	}
	return textType{}, false
}

func (l *loader) decodeText(n ast.Node, v reflect.Value, path string, tt textType) {
	s, ok := l.scalarString(n, path)
	if !ok {
		return
	}
	x, err := tt.parse(s)
	if err != nil {
		if l.refuseValue(path, s) {
			return
		}
		l.errNode(n, path, tt.hint, "%v", err)
		return
	}
	v.Set(reflect.ValueOf(x))
}

func parseDuration(s string) (any, error) {
	if s == "0" {
		return time.Duration(0), nil
	}
	d, err := duration.Parse(s)
	if err != nil {
		if strings.Trim(s, "0123456789") == "" {
			return nil, fmt.Errorf("%s has no unit", s)
		}
		return nil, fmt.Errorf("%q is not a duration", s)
	}
	return d, nil
}

// parseBlockEntry reads a blocklist item: an address or network, else a
// host name. A name must end in a label that is not all digits (no TLD
// is), so a mistyped address (10.0.0.256) is an error, not a name.
func parseBlockEntry(s string) (any, error) {
	p, err := parsePrefix(s)
	if err == nil {
		return BlockEntry{Prefix: p.(netip.Prefix)}, nil
	}
	h := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
	name := strings.TrimPrefix(h, ".")
	last := name[strings.LastIndexByte(name, '.')+1:]
	if !validDomain(name) || strings.Trim(last, "0123456789") == "" || strings.Contains(s, "/") {
		return nil, fmt.Errorf("%q is not an IP address, CIDR or host name", s)
	}
	return BlockEntry{Host: h}, nil
}

// parsePrefix reads an address (a single host, stored as /32 or /128) or
// a CIDR, masked so 10.1.2.3/8 and 10.0.0.0/8 compare equal.
func parsePrefix(s string) (any, error) {
	s = strings.TrimSpace(s)
	var p netip.Prefix
	var err error
	if strings.Contains(s, "/") {
		p, err = netip.ParsePrefix(s)
	} else {
		var a netip.Addr
		// A zone (fe80::1%eth0) names an interface, not a source.
		if a, err = netip.ParseAddr(s); err == nil && a.Zone() == "" {
			p = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil || !p.IsValid() {
		return nil, fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	return p.Masked(), nil
}

func (l *loader) typeError(n ast.Node, path, want string) {
	l.errNode(n, path, "", "expected %s, got %s", want, describe(n))
}

func describe(n ast.Node) string {
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.StringNode, *ast.LiteralNode:
		return fmt.Sprintf("the string %q", n.GetToken().Value)
	case *ast.BoolNode:
		return "a boolean"
	}
	if tk := n.GetToken(); tk != nil {
		return tk.Value
	}
	return n.Type().String()
}

// lineOf is the line a node starts on. A block mapping has no token of its
// own, so its first key stands for it.
func lineOf(n ast.Node) int {
	switch t := n.(type) {
	case nil:
		return 0
	case *ast.MappingNode:
		if len(t.Values) > 0 {
			return lineOf(t.Values[0])
		}
	case *ast.MappingValueNode:
		return lineOf(t.Key)
	}
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		return tk.Position.Line
	}
	return 0
}
