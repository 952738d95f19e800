package cli

import (
	"fmt"
	"io"
	"net/url"
	"strconv"
	"time"

	"mxguard/internal/admin"
	"mxguard/internal/duration"
)

// sourcesShown is how many of the busiest sources the table shows; --json
// has them all (up to the API's 500).
const sourcesShown = 10

// Sessions lists the open SMTP sessions of a running instance, the
// busiest sources first: mxguard sessions [--source S] [--json].
func Sessions(args []string, stdout, stderr io.Writer) int {
	c := newCommand("mxguard sessions", "[--source S] [--json]", envAPI(), stdout, stderr)
	source := c.fs.String("source", "", "only sessions from `S`: an IP address or CIDR")
	c.jsonFlag("print the API's JSON")
	if code, ok := c.noArgs(args); !ok {
		return code
	}
	q := url.Values{}
	if *source != "" {
		q.Set("source", *source)
	}
	var res admin.SessionList
	if code, done := c.fetch("GET", "/api/v1/sessions", q, nil, &res); done {
		return code
	}
	st := newTable(stdout, "SOURCE", "SESSIONS")
	for _, s := range res.BySource[:min(len(res.BySource), sourcesShown)] {
		st.row(s.Source, strconv.Itoa(s.Count))
	}
	st.flush()
	if n := len(res.BySource) - sourcesShown; n > 0 {
		fmt.Fprintf(stdout, "(%d more sources; --json lists them)\n", n)
	}
	fmt.Fprintln(stdout)
	t := newTable(stdout, "ID", "SOURCE", "LISTENER", "STATE", "STARTED", "IDLE", "HELO", "TLS", "BYTES IN")
	for _, s := range res.Sessions {
		tls := "no"
		if s.TLS {
			tls = "yes"
		}
		t.row(strconv.FormatUint(s.ID, 10), s.Source, s.Listener, s.State, formatTime(s.StartedAt),
			duration.Format(time.Duration(s.IdleFor)*time.Second), s.Helo, tls, strconv.FormatInt(s.BytesIn, 10))
	}
	t.flush()
	fmt.Fprintf(stdout, "%d of %d sessions\n", len(res.Sessions), res.Total)
	return exitOK
}
