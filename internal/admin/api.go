package admin

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"mxguard/internal/duration"
	"mxguard/internal/events"
	"mxguard/internal/ruletype"
)

// maxBody bounds request bodies; the largest legitimate one is a block.
const maxBody = 64 << 10

// defaultBlockFor applies when POST /api/v1/blocks has no "for".
const defaultBlockFor = time.Hour

func (s *Server) routeAPI() {
	s.api.HandleFunc("GET /api/v1/events", s.apiEvents)
	s.api.HandleFunc("GET /api/v1/events/{id}", s.apiEvent)
	s.api.HandleFunc("GET /api/v1/blocks", s.apiBlocks)
	s.api.HandleFunc("POST /api/v1/blocks", s.apiAddBlock)
	// {source...} takes the rest of the path, so a CIDR works whether the
	// client escaped its slash (10.0.0.0%2F8, as INTERFACE.md §5 asks) or
	// not; ServeMux unescapes the value either way.
	s.api.HandleFunc("DELETE /api/v1/blocks/{source...}", s.apiRemoveBlock)
	s.api.HandleFunc("GET /api/v1/suspensions", s.withSuspensions(s.apiSuspensions))
	s.api.HandleFunc("POST /api/v1/suspensions", s.withSuspensions(s.apiAddSuspension))
	s.api.HandleFunc("DELETE /api/v1/suspensions/{account...}", s.withSuspensions(s.apiRemoveSuspension))
	s.api.HandleFunc("GET /api/v1/rules", s.apiRules)
	s.api.HandleFunc("POST /api/v1/reload", s.apiReload)
	s.api.HandleFunc("GET /api/v1/servers", s.apiServers)
	s.api.HandleFunc("GET /api/v1/cluster", s.apiCluster)
	s.api.HandleFunc("GET /api/v1/spool", s.apiSpool)
	s.api.HandleFunc("POST /api/v1/spool/{action}", s.apiSpoolAction)
	s.api.HandleFunc("GET /api/v1/sessions", s.apiSessions)
}

// userError is a failure caused by the request; its text is shown to the
// client. Every other error is internal: logged, answered with a 500 and a
// generic text.
type userError struct {
	status int
	msg    string
}

func (e *userError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &userError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &userError{http.StatusNotFound, fmt.Sprintf(format, args...)}
}

// fail answers err as JSON with the status it maps to.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := s.classify(r, err)
	writeError(w, status, msg)
}

// classify maps err to a status and a client-safe text, logging internal
// errors (this is where they are handled).
func (s *Server) classify(r *http.Request, err error) (int, string) {
	if ue, ok := errors.AsType[*userError](err); ok {
		return ue.status, ue.msg
	}
	s.log.ErrorContext(r.Context(), "admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	return http.StatusInternalServerError, "internal error, see the server log"
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client went away; nothing left to tell it
}

// writeError answers {"error": msg} with status (INTERFACE.md §5).
func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

// --- shared between API and console ---

// queryEvents flushes pending impact counts, then runs the query described by
// the URL parameters of INTERFACE.md §5.
func (s *Server) queryEvents(ctx context.Context, params url.Values) (events.Query, events.Result, error) {
	q, err := events.ParseQuery(params)
	if err != nil {
		return q, events.Result{}, badRequest("%v", err)
	}
	s.flush(ctx)
	res, err := s.o.Store.Query(ctx, q)
	if errors.Is(err, events.ErrBadQuery) {
		return q, res, badRequest("%v", err)
	}
	if err != nil {
		return q, res, fmt.Errorf("query events: %w", err)
	}
	if res.Events == nil {
		res.Events = []events.Event{}
	}
	for i := range res.Events {
		res.Events[i].FillEmpty()
	}
	return q, res, nil
}

// flush has the engine write what it holds in memory (new events, impact
// counts, the event IDs of new blocks) before a listing.
func (s *Server) flush(ctx context.Context) {
	if err := s.o.Engine.Flush(ctx); err != nil {
		// A stale listing is better than none at all.
		s.log.WarnContext(ctx, "admin: flush before a listing", "err", err)
	}
}

func (s *Server) event(ctx context.Context, idText string) (events.Event, error) {
	id, err := strconv.ParseInt(idText, 10, 64)
	if err != nil || id <= 0 {
		return events.Event{}, badRequest("bad event id %q: want a positive integer", idText)
	}
	e, err := s.o.Store.Get(ctx, id)
	if errors.Is(err, events.ErrNotFound) {
		return e, notFound("no event %d", id)
	}
	if err != nil {
		return e, fmt.Errorf("get event %d: %w", id, err)
	}
	e.FillEmpty()
	return e, nil
}

// blocks lists the engine's blocks, newest first, never nil.
func (s *Server) blocks() []events.Block {
	return newestFirst(s.o.Engine.Blocks(), func(b events.Block) (time.Time, string) { return b.CreatedAt, b.Source })
}

// newestFirst is a sorted copy of the holds (blocks, suspensions) xs, never
// nil: newest first by creation time, then by key ascending.
func newestFirst[T any](xs []T, order func(T) (created time.Time, key string)) []T {
	out := slices.Clone(xs)
	if out == nil {
		out = []T{}
	}
	slices.SortFunc(out, func(a, b T) int {
		ta, ka := order(a)
		tb, kb := order(b)
		return cmp.Or(tb.Compare(ta), strings.Compare(ka, kb))
	})
	return out
}

// addBlock validates the request of an operator and hands it to the engine,
// which canonicalizes the source (IPv6 prefix aggregation).
func (s *Server) addBlock(ctx context.Context, source, forText, reason string) (events.Block, error) {
	source = strings.TrimSpace(source)
	if source == "" {
		return events.Block{}, badRequest("source is required: an IP address or a CIDR")
	}
	if !isIPOrPrefix(source) {
		return events.Block{}, badRequest("bad source %q: want an IP address or a CIDR", source)
	}
	d, err := parseFor(forText, defaultBlockFor)
	if err != nil {
		return events.Block{}, err
	}
	b, err := s.o.Engine.AddBlock(ctx, source, d, strings.TrimSpace(reason))
	if err != nil {
		// Syntax was checked above, so the engine refuses on policy (a
		// trusted or allowlisted network): the operator's request is at
		// fault, not the server.
		return b, badRequest("cannot block %s: %v", source, err)
	}
	return b, nil
}

// parseFor reads the "for" of a block or suspension request; empty is def.
func parseFor(forText string, def time.Duration) (time.Duration, error) {
	forText = strings.TrimSpace(forText)
	if forText == "" {
		return def, nil
	}
	d, err := duration.Parse(forText)
	if err != nil || d <= 0 {
		return 0, badRequest("bad duration %q: want a positive duration such as 30m, 1h or 7d", forText)
	}
	return d, nil
}

func (s *Server) removeBlock(ctx context.Context, source string) error {
	return removed(s.o.Engine.RemoveBlock(ctx, source), "block", source)
}

// removed is the error of removing the block or suspension (what) of
// key: 404 when there was none.
func removed(err error, what, key string) error {
	if errors.Is(err, events.ErrNotFound) {
		return notFound("no %s for %s", what, key)
	}
	if err != nil {
		return fmt.Errorf("remove %s %s: %w", what, key, err)
	}
	return nil
}

// ruleView is the API and console form of a config.Rule: durations as Go
// duration strings without zero units, sizes as byte counts, and what its
// type counts per what (internal/ruletype), so a reader need not know the
// type names.
type ruleView struct {
	Name      string   `json:"name"`
	Type      string   `json:"type"`
	Per       string   `json:"per"`
	Counts    string   `json:"counts"`
	Service   string   `json:"service"`
	Window    string   `json:"window"`
	Threshold int      `json:"threshold"`
	MinSize   int64    `json:"min_size"`
	Actions   []string `json:"actions"`
	BlockFor  string   `json:"block_for"`
	Queue     string   `json:"queue"`
	Mode      string   `json:"mode"` // enforce or shadow
}

func (s *Server) rules() []ruleView {
	rules := s.o.Engine.Rules()
	views := make([]ruleView, 0, len(rules))
	for _, r := range rules {
		v := ruleView{
			Name: r.Name, Type: r.Type, Service: r.Service,
			Window: duration.Format(r.Window), Threshold: r.Threshold,
			MinSize: int64(r.MinSize), Actions: r.Actions,
			BlockFor: duration.Format(r.BlockFor), Queue: r.Queue, Mode: r.Mode,
		}
		if v.Actions == nil {
			v.Actions = []string{}
		}
		if v.Mode == "" {
			v.Mode = events.ModeEnforce
		}
		if t, ok := ruletype.Lookup(r.Type); ok {
			v.Per, v.Counts = string(t.Per), t.Counts
		}
		views = append(views, v)
	}
	return views
}

// --- API handlers ---

func (s *Server) apiEvents(w http.ResponseWriter, r *http.Request) {
	_, res, err := s.queryEvents(r.Context(), r.URL.Query())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) apiEvent(w http.ResponseWriter, r *http.Request) {
	e, err := s.event(r.Context(), r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (s *Server) apiBlocks(w http.ResponseWriter, r *http.Request) {
	s.flush(r.Context())
	writeJSON(w, http.StatusOK, map[string][]events.Block{"blocks": s.blocks()})
}

func (s *Server) apiAddBlock(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Source string `json:"source"`
		For    string `json:"for"`
		Reason string `json:"reason"`
	}
	if err := decodeBody(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := s.addBlock(r.Context(), req.Source, req.For, req.Reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, b)
}

// decodeBody reads one JSON object (the body is limited to maxBody by
// serveAPI): 413 past the limit, 400 for bad JSON or data after it.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return &userError{http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", maxBody)}
		}
		return badRequest("bad JSON body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("bad JSON body: data after the object")
	}
	return nil
}

func (s *Server) apiRemoveBlock(w http.ResponseWriter, r *http.Request) {
	if err := s.removeBlock(r.Context(), r.PathValue("source")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) apiRules(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string][]ruleView{"rules": s.rules()})
}

func (s *Server) apiReload(w http.ResponseWriter, r *http.Request) {
	if s.o.Reload == nil {
		writeError(w, http.StatusServiceUnavailable, "reload is not available")
		return
	}
	if err := s.o.Reload(r.Context()); err != nil {
		lines := errorLines(err)
		s.log.WarnContext(r.Context(), "admin: reload refused", "errors", len(lines))
		writeJSON(w, http.StatusBadRequest, map[string]any{
			"error":  "configuration refused, the running one stays",
			"errors": lines,
		})
		return
	}
	s.log.InfoContext(r.Context(), "admin: configuration reloaded")
	writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
}

// errorLines splits a config.Errors text into its FILE:LINE: msg lines.
func errorLines(err error) []string {
	lines := []string{}
	for l := range strings.Lines(err.Error()) {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

func (s *Server) apiServers(w http.ResponseWriter, _ *http.Request) {
	if s.o.Servers == nil {
		writeError(w, http.StatusServiceUnavailable, "this instance reports no delivery servers")
		return
	}
	servers := s.o.Servers()
	if servers == nil {
		servers = []ServerView{}
	}
	writeJSON(w, http.StatusOK, map[string][]ServerView{"servers": servers})
}

// apiCluster answers GET /api/v1/cluster (INTERFACE.md §5): this node,
// the state of Redis and the nodes that announced themselves.
func (s *Server) apiCluster(w http.ResponseWriter, _ *http.Request) {
	if s.o.Cluster == nil {
		writeError(w, http.StatusServiceUnavailable, "this instance reports no cluster state")
		return
	}
	writeJSON(w, http.StatusOK, s.o.Cluster())
}

func (s *Server) apiSpool(w http.ResponseWriter, _ *http.Request) {
	if s.o.Spool == nil {
		writeError(w, http.StatusServiceUnavailable, "this instance has no spool")
		return
	}
	writeJSON(w, http.StatusOK, s.o.Spool.View())
}

// apiSpoolAction runs POST /api/v1/spool/{suspend,resume,unspool} and
// answers the new spool status.
func (s *Server) apiSpoolAction(w http.ResponseWriter, r *http.Request) {
	if s.o.Spool == nil {
		writeError(w, http.StatusServiceUnavailable, "this instance has no spool")
		return
	}
	action := r.PathValue("action")
	if !s.spoolRequest(r.Context(), action, "api") {
		s.fail(w, r, notFound("no spool action %q (suspend, resume or unspool)", action))
		return
	}
	writeJSON(w, http.StatusOK, s.o.Spool.View())
}
