package cli

import (
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"

	"mxguard/internal/events"
)

// Events lists events of a running instance: mxguard events [flags].
func Events(args []string, stdout, stderr io.Writer) int {
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
	pos, code, ok := c.parse(args)
	if !ok {
		return code
	}
	if len(pos) > 0 {
		return c.usage("unexpected argument %q", pos[0])
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
