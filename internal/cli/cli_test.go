package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

const token = "tok"

// request is what the fake API saw.
type request struct {
	method, path, query, body string
}

// fakeAPI answers like the admin API of INTERFACE.md §5 with canned data
// and records the requests, so tests check both sides of the contract.
type fakeAPI struct {
	url  string
	mu   sync.Mutex
	reqs []request
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{}
	mux := http.NewServeMux()
	reply := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			io.WriteString(w, body)
		}
	}
	mux.Handle("GET /api/v1/events", reply(200, `{"total": 137, "events": [
		{"id": 42, "type": "directory_harvest", "rule": "harvest", "status": "active", "started_at": "2026-11-25T10:00:00Z",
		 "ended_at": null, "source": "203.0.113.7", "service": "smtp", "impact": 137, "actions": ["block"], "detail": {}},
		{"id": 41, "type": "dos", "rule": "dos", "status": "ended", "started_at": "2026-11-25T08:00:00Z",
		 "ended_at": "2026-11-25T09:00:00Z", "source": "198.51.100.1", "service": "", "impact": 5000, "actions": [], "detail": {}}]}`))
	mux.HandleFunc("GET /api/v1/events/{id}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("id") == "43" {
			reply(200, `{"id": 43, "type": "dos", "rule": "try-dos", "mode": "shadow", "status": "active", "started_at": "2026-11-25T10:00:00Z",
			 "ended_at": null, "source": "203.0.113.8", "service": "smtp", "impact": 12, "actions": ["block"],
			 "detail": {"threshold": 30, "window": "1m", "count": 30,
			  "evidence": [{"at": "2026-11-25T09:59:58.120Z", "what": "connect", "text": "connection opened \u001b[2J"}]}}`)(w, r)
			return
		}
		if r.PathValue("id") != "42" {
			reply(404, `{"error": "no event `+r.PathValue("id")+`"}`)(w, r)
			return
		}
		reply(200, `{"id": 42, "type": "directory_harvest", "rule": "harvest", "status": "active", "started_at": "2026-11-25T10:00:00Z",
		 "ended_at": null, "source": "203.0.113.7", "service": "smtp", "impact": 137, "actions": ["block"],
		 "detail": {"threshold": 20, "window": "10m", "count": 20, "top": ["a", "b"],
		  "evidence": [{"at": "2026-11-25T09:59:58.120Z", "what": "rcpt_unknown", "text": "RCPT TO:<guess17@example.test>: 550 5.1.1 unknown"}]}}`)(w, r)
	})
	mux.Handle("GET /api/v1/blocks", reply(200, `{"blocks": [
		{"source": "10.0.0.0/8", "reason": "abuse\tdesk", "rule": "", "event_id": 0, "created_at": "2026-11-25T10:00:00Z", "expires_at": "2026-11-25T11:00:00Z", "manual": true},
		{"source": "203.0.113.7", "reason": "harvest", "rule": "harvest", "event_id": 42, "created_at": "2026-11-25T10:00:00Z", "expires_at": "2026-11-25T11:00:00Z", "manual": false}]}`))
	mux.HandleFunc("POST /api/v1/blocks", func(w http.ResponseWriter, r *http.Request) {
		var req map[string]string
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req["source"] == "bad" {
			reply(400, `{"error": "bad source \"bad\": want an IP address or a CIDR"}`)(w, r)
			return
		}
		reply(201, `{"source": "`+req["source"]+`", "reason": "`+req["reason"]+`", "created_at": "2026-11-25T10:00:00Z", "expires_at": "2026-11-25T11:00:00Z", "manual": true}`)(w, r)
	})
	mux.HandleFunc("DELETE /api/v1/blocks/{source...}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("source") != "10.0.0.0/8" {
			reply(404, `{"error": "no block for `+r.PathValue("source")+`"}`)(w, r)
			return
		}
		w.WriteHeader(204)
	})
	mux.Handle("GET /api/v1/suspensions", reply(200, `{"suspensions": [
		{"account": "alice@example.test", "reason": "internal_spammer: 500 messages in 1h", "rule": "internal_spammer", "event_id": 7, "created_at": "2026-11-25T10:00:00Z", "expires_at": "2026-11-25T11:00:00Z", "manual": false}]}`))
	mux.HandleFunc("POST /api/v1/suspensions", func(w http.ResponseWriter, r *http.Request) {
		var req map[string]string
		_ = json.NewDecoder(r.Body).Decode(&req)
		reply(201, `{"account": "`+strings.ToLower(req["account"])+`", "reason": "`+req["reason"]+`", "created_at": "2026-11-25T10:00:00Z", "expires_at": "2026-11-25T12:00:00Z", "manual": true}`)(w, r)
	})
	mux.HandleFunc("DELETE /api/v1/suspensions/{account...}", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("account") != "alice@example.test" {
			reply(404, `{"error": "no suspension for `+r.PathValue("account")+`"}`)(w, r)
			return
		}
		w.WriteHeader(204)
	})
	mux.Handle("GET /api/v1/servers", reply(200, `{"servers": [
		{"address": "127.0.0.1:2526", "role": "primary", "state": "up", "since": "2026-11-25T09:00:00Z", "last_error": ""},
		{"address": "127.0.0.1:2527", "role": "failover", "state": "down", "since": "2026-11-25T09:30:00Z", "last_error": "dial tcp: connection refused"}]}`))
	mux.HandleFunc("GET /api/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
		if src := r.URL.Query().Get("source"); src == "bad" {
			reply(400, `{"error": "source \"bad\" is not an IP address or CIDR"}`)(w, r)
			return
		}
		reply(200, `{"total": 3, "sessions": [
		{"id": 12, "source": "192.0.2.7", "listener": "smtp", "state": "greeting", "started_at": "2026-11-25T10:00:00Z", "idle_for": 95, "helo": "", "tls": false, "bytes_in": 0},
		{"id": 14, "source": "192.0.2.7", "listener": "smtp", "state": "rcpt", "started_at": "2026-11-25T10:01:00Z", "idle_for": 2, "helo": "bot.example", "tls": true, "bytes_in": 4711},
		{"id": 9, "source": "2001:db8:1:2::/64", "listener": "submission", "state": "data", "started_at": "2026-11-25T09:58:00Z", "idle_for": 0, "helo": "laptop", "tls": true, "bytes_in": 123456}],
		"by_source": [{"source": "192.0.2.7", "count": 2}, {"source": "2001:db8:1:2::/64", "count": 1}]}`)(w, r)
	})
	mux.Handle("GET /api/v1/cluster", reply(200, `{"node": "mx1", "redis": "up", "nodes": [
		{"node": "mx1", "last_seen": "2026-11-25T10:00:00.5Z"}, {"node": "mx2", "last_seen": "2026-11-25T10:00:00.1Z"}]}`))
	mux.Handle("GET /api/v1/spool", reply(200, `{"state": "spooling", "messages": 12, "bytes": 3456789, "max_bytes": 10737418240}`))
	mux.Handle("POST /api/v1/spool/suspend", reply(200, `{"state": "suspended", "messages": 12, "bytes": 3456789, "max_bytes": 10737418240}`))
	mux.Handle("POST /api/v1/spool/unspool", reply(500, "internal error\nsee the log\n"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		f.mu.Lock()
		f.reqs = append(f.reqs, request{r.Method, r.URL.EscapedPath(), r.URL.RawQuery, string(body)})
		f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+token {
			reply(401, `{"error": "missing or invalid bearer token"}`)(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *fakeAPI) last() request {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		return request{}
	}
	return f.reqs[len(f.reqs)-1]
}

func TestCommands(t *testing.T) {
	api := newFakeAPI(t)
	conn := []string{"--api", api.url, "--token", token}
	type cmdFunc func([]string, io.Writer, io.Writer) int
	for _, tc := range []struct {
		name   string
		cmd    cmdFunc
		args   []string
		code   int
		stdout []string // substrings, in order
		stderr string   // substring; "" means stderr must be empty
		req    request  // the last request, when the command sent one
	}{
		{name: "events table", cmd: Events, args: conn, code: 0,
			stdout: []string{"ID  ", "TYPE", "STATUS", "SOURCE", "SERVICE", "STARTED", "ENDED", "IMPACT", "ACTIONS\n",
				"42  directory_harvest  active  203.0.113.7   smtp", "2026-11-25T10:00:00Z  -  ", "137     block\n",
				"41  dos", "2026-11-25T09:00:00Z", "5000", "2 of 137 events\n"},
			req: request{method: "GET", path: "/api/v1/events"}},
		{name: "events filters", cmd: Events, code: 0,
			args:   append([]string{"--type", "dos", "--source=198.51.100.1", "-min-impact", "10", "--status", "ended", "--since", "24h", "--sort", "impact", "--order", "asc", "--limit", "500", "--offset", "5"}, conn...),
			stdout: []string{"2 of 137 events"},
			req:    request{method: "GET", path: "/api/v1/events", query: "limit=500&min_impact=10&offset=5&order=asc&since=24h&sort=impact&source=198.51.100.1&status=ended&type=dos"}},
		{name: "events json", cmd: Events, args: append([]string{"--json"}, conn...), code: 0,
			stdout: []string{"{\n", `"total": 137`, `"ended_at": null`}},
		{name: "events positional", cmd: Events, args: append([]string{"dos"}, conn...), code: 2, stderr: `unexpected argument "dos"`},
		{name: "events bad number", cmd: Events, args: append([]string{"--limit", "many"}, conn...), code: 2, stderr: "usage: mxguard events"},
		{name: "events bad order", cmd: Events, args: append([]string{"--order", "up"}, conn...), code: 2, stderr: `unknown order "up"`},
		{name: "events bad sort", cmd: Events, args: append([]string{"--sort", "colour"}, conn...), code: 2, stderr: "usage: mxguard events"},
		{name: "events unknown flag", cmd: Events, args: []string{"--colour"}, code: 2, stderr: "flag provided but not defined: -colour"},
		{name: "events help", cmd: Events, args: []string{"-h"}, code: 0, stderr: "usage: mxguard events"},
		{name: "events show", cmd: Events, args: append([]string{"show", "42"}, conn...), code: 0,
			stdout: []string{"event      42\n", "type       directory_harvest\n", "rule       harvest\n", "mode       enforce\n", "status     active\n",
				"source     203.0.113.7\n", "service    smtp\n", "started    2026-11-25T10:00:00Z\n", "ended      -\n",
				"impact     137\n", "actions    block\n", "threshold  20\n", "window     10m\n", "count      20\n", `top        ["a","b"]`,
				"\nblocked because 20 unknown recipients in 10m (threshold 20)\nevidence (1 of the 20 in the window, oldest first):\n",
				"AT", "WHAT", "TEXT\n", "2026-11-25T09:59:58.120Z  rcpt_unknown  RCPT TO:<guess17@example.test>: 550 5.1.1 unknown\n"},
			req: request{method: "GET", path: "/api/v1/events/42"}},
		{name: "events show shadow", cmd: Events, args: append([]string{"show", "43"}, conn...), code: 0,
			stdout: []string{"mode       shadow\n", "\nwould have blocked (shadow rule: nothing done) because 30 connections in 1m (threshold 30)\n",
				"connect  connection opened ?[2J\n"}},
		{name: "events show flags first json", cmd: Events, args: append([]string{"show", "--json"}, append(conn, "42")...), code: 0,
			stdout: []string{`"id": 42`, `"evidence": [`}},
		{name: "events show missing", cmd: Events, args: append([]string{"show", "7"}, conn...), code: 1,
			stderr: "mxguard events show: HTTP 404: no event 7\n"},
		{name: "events show no id", cmd: Events, args: append([]string{"show"}, conn...), code: 2, stderr: "missing ID"},
		{name: "events show bad id", cmd: Events, args: append([]string{"show", "x/../1"}, conn...), code: 2, stderr: `bad ID "x/../1"`},
		{name: "events show two ids", cmd: Events, args: append([]string{"show", "1", "2"}, conn...), code: 2, stderr: `unexpected argument "2"`},
		{name: "events wrong token", cmd: Events, args: []string{"--api", api.url, "--token", "nope"}, code: 1,
			stderr: "mxguard events: HTTP 401: missing or invalid bearer token (check --token or MXGUARD_TOKEN)\n"},

		{name: "blocks list", cmd: Blocks, args: append([]string{"list"}, conn...), code: 0,
			stdout: []string{"SOURCE", "EXPIRES", "REASON", "RULE", "EVENT", "CREATED", "MANUAL\n",
				"10.0.0.0/8", "2026-11-25T11:00:00Z", "abuse desk", "yes\n", "203.0.113.7", "harvest", "42", "no\n", "2 blocks\n"}},
		{name: "blocks flags first", cmd: Blocks, args: append(append([]string{}, conn...), "list", "--json"), code: 0,
			stdout: []string{`"blocks": [`}},
		{name: "blocks add flags after", cmd: Blocks, args: append([]string{"add", "192.0.2.1", "--for", "2h", "--reason", "manual test"}, conn...), code: 0,
			stdout: []string{"blocked 192.0.2.1 until 2026-11-25T11:00:00Z\n"},
			req:    request{method: "POST", path: "/api/v1/blocks", body: `{"for":"2h","reason":"manual test","source":"192.0.2.1"}`}},
		{name: "blocks add flags before", cmd: Blocks, args: append([]string{"add", "--for", "30m", "10.0.0.0/8"}, conn...), code: 0,
			stdout: []string{"blocked 10.0.0.0/8"},
			req:    request{method: "POST", path: "/api/v1/blocks", body: `{"for":"30m","reason":"","source":"10.0.0.0/8"}`}},
		{name: "blocks add default for", cmd: Blocks, args: append([]string{"add", "192.0.2.2"}, conn...), code: 0,
			req: request{method: "POST", path: "/api/v1/blocks", body: `{"reason":"","source":"192.0.2.2"}`}},
		{name: "blocks add after --", cmd: Blocks, args: append(append([]string{"add"}, conn...), "--", "192.0.2.3"), code: 0,
			stdout: []string{"blocked 192.0.2.3"}},
		{name: "blocks add refused", cmd: Blocks, args: append([]string{"add", "bad"}, conn...), code: 1,
			stderr: "mxguard blocks add: HTTP 400: bad source \"bad\": want an IP address or a CIDR\n"},
		{name: "blocks add no source", cmd: Blocks, args: append([]string{"add", "--for", "1h"}, conn...), code: 2, stderr: "missing SOURCE"},
		{name: "blocks add two sources", cmd: Blocks, args: append([]string{"add", "1.2.3.4", "5.6.7.8"}, conn...), code: 2, stderr: `unexpected argument "5.6.7.8"`},
		{name: "blocks add bad for", cmd: Blocks, args: append([]string{"add", "1.2.3.4", "--for", "soon"}, conn...), code: 2, stderr: "invalid value"},
		{name: "blocks add zero for", cmd: Blocks, args: append([]string{"add", "1.2.3.4", "--for", "0s"}, conn...), code: 2, stderr: "--for must be positive"},
		{name: "blocks remove cidr", cmd: Blocks, args: append([]string{"remove", "10.0.0.0/8"}, conn...), code: 0,
			stdout: []string{"unblocked 10.0.0.0/8\n"}, req: request{method: "DELETE", path: "/api/v1/blocks/10.0.0.0%2F8"}},
		{name: "blocks remove missing", cmd: Blocks, args: append([]string{"remove", "192.0.2.9"}, conn...), code: 1,
			stderr: "mxguard blocks remove: HTTP 404: no block for 192.0.2.9\n"},
		{name: "blocks no subcommand", cmd: Blocks, args: conn, code: 2, stderr: "missing subcommand"},
		{name: "blocks unknown subcommand", cmd: Blocks, args: []string{"purge"}, code: 2, stderr: `unknown subcommand "purge"`},

		{name: "suspensions list", cmd: Suspensions, args: append([]string{"list"}, conn...), code: 0,
			stdout: []string{"ACCOUNT", "EXPIRES", "REASON", "RULE", "EVENT", "CREATED", "MANUAL\n",
				"alice@example.test", "2026-11-25T11:00:00Z", "internal_spammer: 500 messages in 1h", "7", "no\n", "1 suspensions\n"},
			req: request{method: "GET", path: "/api/v1/suspensions"}},
		{name: "suspensions add", cmd: Suspensions, args: append([]string{"add", "Bob@Example.test", "--for", "2h", "--reason", "phished"}, conn...), code: 0,
			stdout: []string{"suspended bob@example.test until 2026-11-25T12:00:00Z\n"},
			req:    request{method: "POST", path: "/api/v1/suspensions", body: `{"account":"Bob@Example.test","for":"2h","reason":"phished"}`}},
		{name: "suspensions add default for", cmd: Suspensions, args: append([]string{"add", "carol"}, conn...), code: 0,
			req: request{method: "POST", path: "/api/v1/suspensions", body: `{"account":"carol","reason":""}`}},
		{name: "suspensions add no account", cmd: Suspensions, args: append([]string{"add"}, conn...), code: 2, stderr: "missing ACCOUNT"},
		{name: "suspensions remove", cmd: Suspensions, args: append([]string{"remove", "alice@example.test"}, conn...), code: 0,
			stdout: []string{"lifted the suspension of alice@example.test\n"}, req: request{method: "DELETE", path: "/api/v1/suspensions/alice@example.test"}},
		{name: "suspensions remove missing", cmd: Suspensions, args: append([]string{"remove", "dave"}, conn...), code: 1,
			stderr: "mxguard suspensions remove: HTTP 404: no suspension for dave\n"},
		{name: "suspensions unknown", cmd: Suspensions, args: []string{"purge"}, code: 2, stderr: `unknown subcommand "purge"`},

		{name: "servers", cmd: Servers, args: conn, code: 0,
			stdout: []string{"ADDRESS", "ROLE", "STATE", "SINCE", "LAST ERROR\n", "127.0.0.1:2526  primary   up", "127.0.0.1:2527  failover  down",
				"dial tcp: connection refused\n"}},
		{name: "servers json", cmd: Servers, args: append([]string{"--json"}, conn...), code: 0,
			stdout: []string{`"servers": [`, `"last_error": "dial tcp: connection refused"`}},
		{name: "suspensions list json", cmd: Suspensions, args: append([]string{"list", "--json"}, conn...), code: 0,
			stdout: []string{`"suspensions": [`, `"account": "alice@example.test"`}},
		{name: "spool status json", cmd: Spool, args: append([]string{"status", "--json"}, conn...), code: 0,
			stdout: []string{`"state": "spooling"`, `"max_bytes": 10737418240`}},

		{name: "sessions", cmd: Sessions, args: conn, code: 0,
			stdout: []string{"SOURCE             SESSIONS\n", "192.0.2.7          2\n", "2001:db8:1:2::/64  1\n", "\n",
				"ID  SOURCE             LISTENER    STATE     STARTED               IDLE   HELO         TLS  BYTES IN\n",
				"12  192.0.2.7          smtp        greeting  2026-11-25T10:00:00Z  1m35s  -            no   0\n",
				"14  192.0.2.7          smtp        rcpt      2026-11-25T10:01:00Z  2s     bot.example  yes  4711\n",
				"9   2001:db8:1:2::/64  submission  data      2026-11-25T09:58:00Z  0s     laptop       yes  123456\n",
				"3 of 3 sessions\n"},
			req: request{method: "GET", path: "/api/v1/sessions"}},
		{name: "sessions source", cmd: Sessions, args: append([]string{"--source", "2001:db8:1:2::/64"}, conn...), code: 0,
			req: request{method: "GET", path: "/api/v1/sessions", query: "source=2001%3Adb8%3A1%3A2%3A%3A%2F64"}},
		{name: "sessions json", cmd: Sessions, args: append([]string{"--json"}, conn...), code: 0,
			stdout: []string{`"total": 3`, `"state": "greeting"`, `"by_source": [`}},
		{name: "sessions bad source", cmd: Sessions, args: append([]string{"--source", "bad"}, conn...), code: 1,
			stderr: "mxguard sessions: HTTP 400: source \"bad\" is not an IP address or CIDR\n"},
		{name: "sessions positional", cmd: Sessions, args: append([]string{"192.0.2.7"}, conn...), code: 2, stderr: `unexpected argument "192.0.2.7"`},

		{name: "cluster", cmd: Cluster, args: conn, code: 0,
			stdout: []string{"NODE", "REDIS\n", "mx1   up\n", "NODE SEEN", "LAST SEEN\n", "mx2", "2026-11-25T10:00:00.1Z\n"},
			req:    request{method: "GET", path: "/api/v1/cluster"}},
		{name: "spool status", cmd: Spool, args: append([]string{"status"}, conn...), code: 0,
			stdout: []string{"STATE", "MESSAGES", "SIZE", "MAX SIZE\n", "spooling", "12", "3.3 MiB", "10.0 GiB\n"},
			req:    request{method: "GET", path: "/api/v1/spool"}},
		{name: "spool suspend", cmd: Spool, args: append([]string{"suspend", "--json"}, conn...), code: 0,
			stdout: []string{`"state": "suspended"`}, req: request{method: "POST", path: "/api/v1/spool/suspend"}},
		{name: "spool server error is one line", cmd: Spool, args: append([]string{"unspool"}, conn...), code: 1,
			stderr: "mxguard spool unspool: HTTP 500: internal error see the log\n"},
		{name: "spool not mounted yet", cmd: Spool, args: append([]string{"resume"}, conn...), code: 1,
			stderr: "mxguard spool resume: HTTP 404: 404 page not found\n"},
		{name: "spool unknown", cmd: Spool, args: []string{"drain"}, code: 2, stderr: `unknown subcommand "drain"`},

		{name: "unreachable", cmd: Servers, args: []string{"--api", "127.0.0.1:1"}, code: 1,
			stderr: "mxguard servers: cannot reach http://127.0.0.1:1: dial tcp 127.0.0.1:1: connect: connection refused\n"},
		{name: "version", cmd: Version, args: nil, code: 0, stdout: []string{"mxguard ", "module", "go  ", "go1.", "platform"}},
		{name: "version json", cmd: Version, args: []string{"--json"}, code: 0, stdout: []string{`"module": "mxguard"`, `"go": "go1.`}},
		{name: "version takes no api", cmd: Version, args: []string{"--api", "x"}, code: 2, stderr: "not defined: -api"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := api.last()
			var stdout, stderr bytes.Buffer
			code := tc.cmd(tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout.String(), stderr.String())
			}
			out := stdout.String()
			for _, want := range tc.stdout {
				i := strings.Index(out, want)
				if i < 0 {
					t.Errorf("stdout lacks %q (in order):\n%s", want, stdout.String())
					break
				}
				out = out[i+len(want):]
			}
			if tc.stderr == "" && stderr.Len() > 0 {
				t.Errorf("unexpected stderr: %s", stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr %q lacks %q", stderr.String(), tc.stderr)
			}
			if tc.code == 1 && strings.Count(stderr.String(), "\n") != 1 {
				t.Errorf("operational error is not one line: %q", stderr.String())
			}
			if tc.req != (request{}) {
				got := api.last()
				if got == before {
					t.Fatal("no request sent")
				}
				if got != tc.req {
					t.Errorf("request %+v, want %+v", got, tc.req)
				}
			}
		})
	}
}

func TestEnvironment(t *testing.T) {
	api := newFakeAPI(t)
	t.Setenv("MXGUARD_API", api.url+"/")
	t.Setenv("MXGUARD_TOKEN", token)
	var stdout, stderr bytes.Buffer
	if code := Events(nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	// A flag overrides the environment.
	stdout.Reset()
	if code := Events([]string{"--token", "other"}, &stdout, &stderr); code != 1 {
		t.Errorf("--token did not override MXGUARD_TOKEN: exit %d", code)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 10 << 30: "10.0 GiB", 3 << 40: "3.0 TiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}
