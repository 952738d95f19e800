package cli

import (
	"fmt"
	"io"
	"net/url"
	"strconv"

	"mxguard/internal/duration"
	"mxguard/internal/events"
)

// holdKind is what tells blocks (of sources) and suspensions (of
// accounts) apart in the CLI; their commands are the same: list, add KEY
// [--for D] [--reason R], remove KEY.
type holdKind struct {
	cmd, path  string // "mxguard blocks", "/api/v1/blocks"
	arg, field string // "SOURCE", "source": the key on the command line and in the JSON
	what       string // "block": the noun in help texts and the listing's JSON key (+"s")
	added      string // "blocked": what add prints
	removed    string // "unblocked": what remove prints
}

// hold is a block or a suspension as the API answers it: a suspension is
// shaped like a block, with an account instead of a source.
type hold struct {
	events.Block
	Account string `json:"account"`
}

func (h hold) key() string { return h.Source + h.Account }

func (k holdKind) synopsis() string {
	return fmt.Sprintf("list [--json]\n       %s add %s [--for D] [--reason R] [--json]\n       %s remove %s", k.cmd, k.arg, k.cmd, k.arg)
}

// runHolds runs "CMD list|add|remove ...".
func runHolds(k holdKind, args []string, stdout, stderr io.Writer) int {
	sub, rest, c, code, ok := subcommand(k.cmd, k.synopsis(), args, stdout, stderr)
	if !ok {
		return code
	}
	switch sub {
	case "list":
		return k.list(newCommand(k.cmd+" list", "[--json]", c.api, stdout, stderr), rest)
	case "add":
		return k.add(newCommand(k.cmd+" add", k.arg+" [--for D] [--reason R] [--json]", c.api, stdout, stderr), rest)
	case "remove":
		return k.remove(newCommand(k.cmd+" remove", k.arg, c.api, stdout, stderr), rest)
	}
	return c.usage("unknown subcommand %q", sub)
}

func (k holdKind) list(c *command, args []string) int {
	c.jsonFlag("print the API's JSON")
	if code, ok := c.noArgs(args); !ok {
		return code
	}
	var res map[string][]hold
	if code, done := c.fetch("GET", k.path, nil, nil, &res); done {
		return code
	}
	hs := res[k.what+"s"]
	t := newTable(c.stdout, k.arg, "EXPIRES", "REASON", "RULE", "EVENT", "CREATED", "MANUAL")
	for _, h := range hs {
		event := ""
		if h.EventID != 0 {
			event = strconv.FormatInt(h.EventID, 10)
		}
		manual := "no"
		if h.Manual {
			manual = "yes"
		}
		expires := formatTime(h.ExpiresAt)
		if h.ExpiresAt.IsZero() {
			expires = "never"
		}
		t.row(h.key(), expires, h.Reason, h.Rule, event, formatTime(h.CreatedAt), manual)
	}
	t.flush()
	fmt.Fprintf(c.stdout, "%d %ss\n", len(hs), k.what)
	return exitOK
}

// add parses "add KEY [--for D] [--reason R] [--json]"; "for" is sent
// only when given, so the server's default applies.
func (k holdKind) add(c *command, args []string) int {
	forD := c.durationFlag("for", k.what+" for `duration` D (30m, 1h, 24h, 7d; default 1h)")
	reason := c.fs.String("reason", "", "`reason` recorded with the "+k.what)
	c.jsonFlag("print the API's JSON")
	key, code, ok := c.oneArg(args, k.arg)
	if !ok {
		return code
	}
	req := map[string]string{k.field: key, "reason": *reason}
	if c.isSet("for") {
		if *forD <= 0 {
			return c.usage("--for must be positive, got %v", *forD)
		}
		req["for"] = duration.Format(*forD)
	}
	var h hold
	if code, done := c.fetch("POST", k.path, nil, req, &h); done {
		return code
	}
	fmt.Fprintf(c.stdout, "%s %s until %s\n", k.added, h.key(), formatTime(h.ExpiresAt))
	return exitOK
}

// remove is "remove KEY": DELETE path/KEY.
func (k holdKind) remove(c *command, args []string) int {
	key, code, ok := c.oneArg(args, k.arg)
	if !ok {
		return code
	}
	// PathEscape turns the slash of a CIDR into %2F, as the API asks.
	if _, err := c.call("DELETE", k.path+"/"+url.PathEscape(key), nil, nil); err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "%s %s\n", k.removed, key)
	return exitOK
}
