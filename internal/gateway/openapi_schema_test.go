package gateway_test

import (
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
)

// openAPI is the part of an OpenAPI 3.1 document the API test reads:
// paths, operations, their responses and the component schemas. Its
// schema validator covers the JSON Schema subset docs/openapi.yaml uses
// (type, including a list of types with "null"; properties, required,
// items, enum, minimum, maximum, additionalProperties, format date-time,
// $ref to #/components/...), so no OpenAPI library is needed.
type openAPI struct {
	doc map[string]any
}

func loadOpenAPI(path string) (*openAPI, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if v, _ := doc["openapi"].(string); !strings.HasPrefix(v, "3.") {
		return nil, fmt.Errorf("%s: openapi version %q, want 3.x", path, v)
	}
	return &openAPI{doc: doc}, nil
}

// operation is one method of one path of the document.
type operation struct {
	Method, Path string // "GET", "/api/v1/events/{id}"
	spec         map[string]any
}

func (o operation) String() string { return o.Method + " " + o.Path }

// operations lists every operation, in no particular order.
func (a *openAPI) operations() []operation {
	var out []operation
	paths, _ := a.doc["paths"].(map[string]any)
	for p, item := range paths {
		m, _ := item.(map[string]any)
		for method, op := range m {
			if spec, ok := op.(map[string]any); ok && slices.Contains([]string{"get", "post", "put", "patch", "delete"}, method) {
				out = append(out, operation{Method: strings.ToUpper(method), Path: p, spec: spec})
			}
		}
	}
	slices.SortFunc(out, func(x, y operation) int { return strings.Compare(x.String(), y.String()) })
	return out
}

// deref follows a "$ref" to #/components/... until a value without one.
func (a *openAPI) deref(v any) (map[string]any, error) {
	for range 10 {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("not an object: %v", v)
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return m, nil
		}
		cur := any(a.doc)
		for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			cm, _ := cur.(map[string]any)
			if cur = cm[part]; cur == nil {
				return nil, fmt.Errorf("unresolved $ref %s", ref)
			}
		}
		v = cur
	}
	return nil, fmt.Errorf("$ref loop")
}

// response returns the response object documented for status.
func (a *openAPI) response(op operation, status int) (map[string]any, error) {
	rs, _ := op.spec["responses"].(map[string]any)
	r, ok := rs[fmt.Sprint(status)]
	if !ok {
		return nil, fmt.Errorf("%s: status %d is not documented", op, status)
	}
	return a.deref(r)
}

// responseSchema returns the schema of the response for status and media
// type (nil when the response has no content of that type).
func (a *openAPI) responseSchema(op operation, status int, media string) (map[string]any, error) {
	r, err := a.response(op, status)
	if err != nil {
		return nil, err
	}
	content, _ := r["content"].(map[string]any)
	mt, ok := content[media].(map[string]any)
	if !ok {
		if len(content) > 0 {
			return nil, fmt.Errorf("%s %d: answered %s, documented %v", op, status, media, keys(content))
		}
		return nil, nil
	}
	return a.deref(mt["schema"])
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// validate checks the decoded JSON value v against schema; every
// violation is listed, each with its JSON path.
func (a *openAPI) validate(schema map[string]any, v any, path string) []string {
	s, err := a.deref(schema)
	if err != nil {
		return []string{path + ": " + err.Error()}
	}
	if oneOf, ok := s["oneOf"].([]any); ok {
		n := 0
		for _, alt := range oneOf {
			am, _ := alt.(map[string]any)
			if len(a.validate(am, v, path)) == 0 {
				n++
			}
		}
		if n != 1 {
			return []string{fmt.Sprintf("%s: matches %d of the oneOf schemas, want 1", path, n)}
		}
		return nil
	}
	if t, ok := s["type"]; ok {
		var types []string
		switch t := t.(type) {
		case string:
			types = []string{t}
		case []any:
			for _, x := range t {
				types = append(types, fmt.Sprint(x))
			}
		}
		if nullable, _ := s["nullable"].(bool); nullable { // OpenAPI 3.0 spelling
			types = append(types, "null")
		}
		if !slices.ContainsFunc(types, func(t string) bool { return jsonType(v, t) }) {
			return []string{fmt.Sprintf("%s: %s, want %s", path, describeJSON(v), strings.Join(types, " or "))}
		}
	}
	var errs []string
	if enum, ok := s["enum"].([]any); ok && !slices.ContainsFunc(enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
		errs = append(errs, fmt.Sprintf("%s: %v is not one of %v", path, v, enum))
	}
	if n, ok := v.(float64); ok {
		if min, ok := number(s["minimum"]); ok && n < min {
			errs = append(errs, fmt.Sprintf("%s: %v < minimum %v", path, n, min))
		}
		if max, ok := number(s["maximum"]); ok && n > max {
			errs = append(errs, fmt.Sprintf("%s: %v > maximum %v", path, n, max))
		}
	}
	if str, ok := v.(string); ok && s["format"] == "date-time" {
		if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %q is no RFC 3339 date-time", path, str))
		}
	}
	switch v := v.(type) {
	case map[string]any:
		props, _ := s["properties"].(map[string]any)
		for _, r := range asStrings(s["required"]) {
			if _, ok := v[r]; !ok {
				errs = append(errs, fmt.Sprintf("%s: required property %q missing", path, r))
			}
		}
		for k, val := range v {
			if ps, ok := props[k].(map[string]any); ok {
				errs = append(errs, a.validate(ps, val, path+"."+k)...)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					errs = append(errs, fmt.Sprintf("%s: property %q is not documented", path, k))
				}
			case map[string]any:
				errs = append(errs, a.validate(ap, val, path+"."+k)...)
			case nil:
				// Undocumented properties: JSON Schema allows them by
				// default, but the API test wants every field documented.
				if props != nil {
					errs = append(errs, fmt.Sprintf("%s: property %q is not documented", path, k))
				}
			}
		}
	case []any:
		if items, ok := s["items"].(map[string]any); ok {
			for i, x := range v {
				errs = append(errs, a.validate(items, x, fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	}
	return errs
}

func asStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case uint64:
		return float64(n), true
	case int64:
		return float64(n), true
	case float64:
		return n, true
	case int:
		return float64(n), true
	}
	return 0, false
}

// jsonType reports whether v (as decoded by encoding/json into any) is of
// JSON Schema type t.
func jsonType(v any, t string) bool {
	switch t {
	case "null":
		return v == nil
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		n, ok := v.(float64)
		return ok && n == math.Trunc(n)
	case "array":
		_, ok := v.([]any)
		return ok
	case "object":
		_, ok := v.(map[string]any)
		return ok
	}
	return false
}

func describeJSON(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case string:
		return fmt.Sprintf("string %q", v)
	case float64:
		return fmt.Sprintf("number %v", v)
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
