package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"mxguard/internal/ruletype"
)

// pendingEndpoints are operations of docs/openapi.yaml that other work in
// progress serves (INTERFACE.md §5). While one is listed here and this
// build answers it 404, its cases are skipped with a message; once it is
// served it is validated like any other. Empty this list when they land.
var pendingEndpoints = []string{}

const specFile = "../../docs/openapi.yaml"

// apiCase is one request of the API test and the status it must get.
type apiCase struct {
	op     string // the operation of the spec: "GET /api/v1/events/{id}"
	path   string // the request path and query; "" = op's path
	body   string
	status int
}

// TestOpenAPI serves every operation of docs/openapi.yaml from a running
// gateway (a harvest made an event and a block, an SMTP session is open)
// and validates each answer against the spec: the status is documented
// for the operation, the body has the documented media type and matches
// the schema (types, required properties, enums, no undocumented
// properties). It also proves every /api/ operation answers 401 without a
// token, every operation is exercised with a success status, and every
// API route internal/admin registers is in the spec.
func TestOpenAPI(t *testing.T) {
	spec, err := loadOpenAPI(specFile)
	if err != nil {
		t.Fatal(err)
	}
	e, f := startFromFile(t, `listen: {smtp: 127.0.0.1:0, admin: 127.0.0.1:0}
rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 3, actions: [block], block_for: 1h}
`)
	c := e.session("127.0.0.40")
	for i := 1; i <= 3; i++ {
		c.Cmd(fmt.Sprintf("RCPT TO:<guess%d@example.test>", i), 550)
	}
	open := e.session("127.0.0.41") // an open session for /api/v1/sessions
	defer open.Close()
	l := e.events("type=directory_harvest")
	if len(l.Events) != 1 {
		t.Fatalf("no harvest event: %+v", l)
	}
	id := l.Events[0].ID
	since := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)

	cases := []apiCase{
		{op: "GET /healthz", status: 200},
		{op: "GET /metrics", status: 200},
		{op: "GET /api/v1/events", status: 200},
		{op: "GET /api/v1/events", path: "/api/v1/events?type=directory_harvest&source=127.0.0.40&status=active&min_impact=0&since=" +
			since + "&until=" + until + "&sort=impact&order=asc&limit=10&offset=0", status: 200},
		{op: "GET /api/v1/events", path: "/api/v1/events?limit=abc", status: 400},
		{op: "GET /api/v1/events", path: "/api/v1/events?limit=-1", status: 400},
		{op: "GET /api/v1/events", path: "/api/v1/events?sort=bogus", status: 400},
		{op: "GET /api/v1/events", path: "/api/v1/events?type=no_such_type", status: 400},
		{op: "GET /api/v1/events", path: "/api/v1/events?since=yesterday", status: 400},
		{op: "GET /api/v1/events/{id}", path: fmt.Sprintf("/api/v1/events/%d", id), status: 200},
		{op: "GET /api/v1/events/{id}", path: "/api/v1/events/abc", status: 400},
		{op: "GET /api/v1/events/{id}", path: "/api/v1/events/999999", status: 404},
		{op: "GET /api/v1/blocks", status: 200},
		{op: "POST /api/v1/blocks", body: `{"source": "192.0.2.0/24", "for": "1h", "reason": "openapi test"}`, status: 201},
		{op: "POST /api/v1/blocks", body: `{"source": `, status: 400},
		{op: "POST /api/v1/blocks", body: `{"source": "not an address"}`, status: 400},
		{op: "POST /api/v1/blocks", body: `{"source": "192.0.2.9", "for": "soon"}`, status: 400},
		{op: "POST /api/v1/blocks", body: `{"reason": "` + strings.Repeat("x", 70_000) + `"}`, status: 413},
		{op: "DELETE /api/v1/blocks/{source}", path: "/api/v1/blocks/192.0.2.0%2F24", status: 204},
		{op: "DELETE /api/v1/blocks/{source}", path: "/api/v1/blocks/192.0.2.0%2F24", status: 404},
		{op: "GET /api/v1/suspensions", status: 200},
		{op: "POST /api/v1/suspensions", body: `{"account": "Mallory@example.test", "for": "30m", "reason": "openapi test"}`, status: 201},
		{op: "POST /api/v1/suspensions", body: `[1, 2]`, status: 400},
		{op: "POST /api/v1/suspensions", body: `{"account": "two words"}`, status: 400},
		{op: "DELETE /api/v1/suspensions/{account}", path: "/api/v1/suspensions/mallory@example.test", status: 204},
		{op: "DELETE /api/v1/suspensions/{account}", path: "/api/v1/suspensions/mallory@example.test", status: 404},
		{op: "GET /api/v1/servers", status: 200},
		{op: "GET /api/v1/spool", status: 200},
		{op: "POST /api/v1/spool/suspend", status: 200},
		{op: "POST /api/v1/spool/resume", status: 200},
		{op: "POST /api/v1/spool/unspool", status: 200},
		{op: "GET /api/v1/rules", status: 200},
		{op: "GET /api/v1/sessions", status: 200},
		{op: "GET /api/v1/sessions", path: "/api/v1/sessions?source=127.0.0.41", status: 200},
		{op: "GET /api/v1/sessions", path: "/api/v1/sessions?source=not-an-ip", status: 400},
		{op: "GET /api/v1/cluster", status: 200},
		{op: "POST /api/v1/reload", status: 200},
	}

	ops := map[string]operation{}
	for _, op := range spec.operations() {
		ops[op.String()] = op
	}
	exercised := map[string]bool{}
	for i, tc := range cases {
		t.Run(fmt.Sprintf("%02d %s %d", i, tc.op, tc.status), func(t *testing.T) {
			op, ok := ops[tc.op]
			if !ok {
				t.Fatalf("%s is not in %s", tc.op, specFile)
			}
			path := tc.path
			if path == "" {
				path = op.Path
			}
			status, media, body := e.call(op.Method, path, tc.body, true)
			if slices.Contains(pendingEndpoints, tc.op) && status == http.StatusNotFound {
				t.Skipf("pending: %s is not served by this build yet (pendingEndpoints)", tc.op)
			}
			if status != tc.status {
				t.Fatalf("%s %s: status %d, want %d: %s", op.Method, path, status, tc.status, body)
			}
			checkAnswer(t, spec, op, status, media, body)
			if status/100 == 2 {
				exercised[tc.op] = true
			}
		})
	}

	// A configuration that does not validate: 400 with every error.
	f.write(f.yaml("limits: {max_connections: -1}\n"))
	t.Run("reload refused", func(t *testing.T) {
		op := ops["POST /api/v1/reload"]
		status, media, body := e.call(op.Method, op.Path, "", true)
		if status != http.StatusBadRequest || !strings.Contains(body, "max_connections") {
			t.Fatalf("reload of a bad file: %d %s", status, body)
		}
		checkAnswer(t, spec, op, status, media, body)
	})

	for _, op := range spec.operations() {
		if !strings.HasPrefix(op.Path, "/api/") {
			continue
		}
		t.Run("no token "+op.String(), func(t *testing.T) {
			path := strings.NewReplacer("{id}", fmt.Sprint(id), "{source}", "127.0.0.40", "{account}", "nobody").Replace(op.Path)
			status, media, body := e.call(op.Method, path, "{}", false)
			if status != http.StatusUnauthorized {
				t.Fatalf("%s without a token: %d %s", op, status, body)
			}
			checkAnswer(t, spec, op, status, media, body)
		})
	}

	for _, op := range spec.operations() {
		if !exercised[op.String()] {
			if slices.Contains(pendingEndpoints, op.String()) {
				t.Logf("pending: %s not exercised (pendingEndpoints)", op)
				continue
			}
			t.Errorf("%s of %s is not served with a success status by any case", op, specFile)
		}
	}
}

// call makes one request to the admin listener; media is the answer's
// media type without parameters.
func (e *env) call(method, path, body string, withToken bool) (status int, media, text string) {
	e.t.Helper()
	req, err := http.NewRequest(method, "http://"+e.gw.AdminAddr()+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if withToken {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	media, _, _ = strings.Cut(resp.Header.Get("Content-Type"), ";")
	return resp.StatusCode, strings.TrimSpace(media), string(b)
}

// checkAnswer validates one answer against the operation's documented
// response for its status.
func checkAnswer(t *testing.T, spec *openAPI, op operation, status int, media, body string) {
	t.Helper()
	if body == "" && status == http.StatusNoContent {
		if _, err := spec.response(op, status); err != nil {
			t.Fatal(err)
		}
		return
	}
	schema, err := spec.responseSchema(op, status, media)
	if err != nil {
		t.Fatalf("%v (body %.200s)", err, body)
	}
	if schema == nil {
		t.Fatalf("%s %d: answered a %s body, the spec documents none", op, status, media)
	}
	var v any = body
	if media == "application/json" {
		if err := json.Unmarshal([]byte(body), &v); err != nil {
			t.Fatalf("%s %d: no JSON: %v: %.200s", op, status, err, body)
		}
	}
	if errs := spec.validate(schema, v, "$"); len(errs) > 0 {
		t.Errorf("%s %d: the answer does not match the spec:\n  %s\nbody: %.500s", op, status, strings.Join(errs, "\n  "), body)
	}
}

// TestOpenAPICoversRoutes proves that every API route internal/admin
// registers is an operation of docs/openapi.yaml, and that the spec's
// event types are those of internal/ruletype.
func TestOpenAPICoversRoutes(t *testing.T) {
	spec, err := loadOpenAPI(specFile)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("../admin/*.go")
	route := regexp.MustCompile(`HandleFunc\("(GET|POST|PUT|PATCH|DELETE) (/api/[^"]*)"`)
	found := 0
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range route.FindAllStringSubmatch(string(src), -1) {
			found++
			method, pattern := m[1], m[2]
			// {name} and {name...} match one or more path segments.
			re := regexp.MustCompile("^" + regexp.MustCompile(`\\\{[a-z_]+(\\\.\\\.\\\.)?\\\}`).ReplaceAllString(regexp.QuoteMeta(pattern), `[^ ]+`) + "$")
			if !slices.ContainsFunc(spec.operations(), func(op operation) bool { return op.Method == method && re.MatchString(op.Path) }) {
				t.Errorf("internal/admin serves %s %s; %s does not document it", method, pattern, specFile)
			}
		}
	}
	if found < 10 {
		t.Fatalf("found %d API routes in internal/admin; the pattern no longer matches the code", found)
	}
	schemas := spec.doc["components"].(map[string]any)["schemas"].(map[string]any)
	enum := asStrings(schemas["EventType"].(map[string]any)["enum"])
	if !slices.Equal(enum, ruletype.Names()) {
		t.Errorf("EventType enum of %s = %v, internal/ruletype has %v", specFile, enum, ruletype.Names())
	}
}
