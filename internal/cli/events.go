package cli

import (
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"mxguard/internal/events"
)

// Events lists events of a running instance: mxguard events [flags], or
// shows one: mxguard events show ID.
func Events(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "show" {
		return eventShow(args[1:], stdout, stderr)
	}
	c := newCommand("mxguard events", "[--type T] [--source S] [--status active|ended] [--min-impact N] "+
		"[--since T] [--until T] [--sort F] [--order asc|desc] [--limit N] [--offset N] [--json]",
		envAPI(), stdout, stderr)
	c.fs.String("type", "", "only events of this `type`: "+strings.Join(events.Types, ", "))
	c.fs.String("source", "", "only events of this `source` (IP, IPv6 prefix, account, server)")
	c.fs.String("status", "", "only events with this `status`: active or ended")
	c.fs.Int64("min-impact", 0, "only events that blocked at least `N` things")
	c.fs.String("since", "", "only events started at or after `T` (RFC 3339, or a duration like 24h)")
	c.fs.String("until", "", "only events started before `T` (RFC 3339, or a duration like 1h)")
	c.fs.String("sort", "", "sort by `field`: started_at (default), type, source, impact")
	c.fs.String("order", "", "sort `direction`: desc (default) or asc")
	c.fs.Int("limit", 0, "at most `N` events (default 100, at most 500)")
	c.fs.Int("offset", 0, "skip the first `N` events")
	c.jsonFlag("print the API's JSON")
	if code, ok := c.noArgs(args); !ok {
		return code
	}
	// Each filter flag is its query parameter of GET /api/v1/events with
	// "-" for "_". Only flags the operator set are sent, so the server's
	// defaults and validation apply to the rest.
	q := url.Values{}
	c.fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "api", "token", "json":
		default:
			q.Set(strings.ReplaceAll(f.Name, "-", "_"), f.Value.String())
		}
	})

	// Bad values (an unknown --sort or --order, a negative --limit) are a
	// usage error (exit 2), caught with the server's own rules.
	if _, err := events.ParseQuery(q); err != nil {
		return c.usage("%v", err)
	}
	var res events.Result
	if code, done := c.fetch("GET", "/api/v1/events", q, nil, &res); done {
		return code
	}
	t := newTable(stdout, "ID", "TYPE", "STATUS", "SOURCE", "SERVICE", "STARTED", "ENDED", "IMPACT", "ACTIONS")
	for _, e := range res.Events {
		ended := ""
		if e.EndedAt != nil {
			ended = formatTime(*e.EndedAt)
		}
		t.row(strconv.FormatInt(e.ID, 10), e.Type, e.Status, e.Source, e.Service,
			formatTime(e.StartedAt), ended, strconv.FormatInt(e.Impact, 10), strings.Join(e.Actions, ","))
	}
	t.flush()
	fmt.Fprintf(stdout, "%d of %d events\n", len(res.Events), res.Total)
	return exitOK
}

// eventShow prints one event with its detail: mxguard events show ID.
// The detail keys of INTERFACE.md §3 (threshold, window, count) come
// first, then any other the event has, then the evidence observations.
func eventShow(args []string, stdout, stderr io.Writer) int {
	c := newCommand("mxguard events show", "ID [--json]", envAPI(), stdout, stderr)
	c.jsonFlag("print the API's JSON")
	arg, code, ok := c.oneArg(args, "ID")
	if !ok {
		return code
	}
	id, err := strconv.ParseInt(arg, 10, 64)
	if err != nil || id < 1 {
		return c.usage("bad ID %q: want a positive event number", arg)
	}
	var e events.Event
	if code, done := c.fetch("GET", "/api/v1/events/"+strconv.FormatInt(id, 10), nil, nil, &e); done {
		return code
	}
	ended := "-"
	if e.EndedAt != nil {
		ended = formatTime(*e.EndedAt)
	}
	t := newTable(stdout, "event", strconv.FormatInt(e.ID, 10))
	t.row("type", e.Type)
	t.row("rule", e.Rule)
	mode := e.Mode
	if mode == "" {
		mode = events.ModeEnforce
	}
	t.row("mode", mode)
	t.row("status", e.Status)
	t.row("source", e.Source)
	t.row("service", e.Service)
	t.row("started", formatTime(e.StartedAt))
	t.row("ended", ended)
	t.row("impact", strconv.FormatInt(e.Impact, 10))
	t.row("actions", strings.Join(e.Actions, ","))
	keys := []string{"threshold", "window", "count"}
	for _, k := range slices.Sorted(maps.Keys(e.Detail)) {
		if !slices.Contains(keys, k) && k != "evidence" {
			keys = append(keys, k)
		}
	}
	for _, k := range keys {
		if v, ok := e.Detail[k]; ok {
			t.row(k, events.DetailText(v))
		}
	}
	t.flush()
	ev, _ := e.Detail["evidence"].([]any)
	fmt.Fprintf(stdout, "\n%s\n", events.Why(e))
	if count, ok := e.Detail["count"]; ok {
		fmt.Fprintf(stdout, "evidence (%d of the %s in the window, oldest first):\n", len(ev), events.DetailText(count))
	} else {
		fmt.Fprintf(stdout, "evidence (%d):\n", len(ev))
	}
	et := newTable(stdout, "AT", "WHAT", "TEXT")
	for _, o := range ev {
		m, _ := o.(map[string]any)
		et.row(events.DetailText(m["at"]), events.DetailText(m["what"]), events.DetailText(m["text"]))
	}
	et.flush()
	return exitOK
}
