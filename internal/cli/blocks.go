package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"

	"mxguard/internal/duration"
	"mxguard/internal/events"
)

const blocksSynopsis = `list [--json]
       mxguard blocks add SOURCE [--for D] [--reason R] [--json]
       mxguard blocks remove SOURCE`

// Blocks manages blocked sources: mxguard blocks list|add|remove.
func Blocks(args []string, stdout, stderr io.Writer) int {
	sub, rest, c, code, ok := subcommand("mxguard blocks", blocksSynopsis, args, stdout, stderr)
	if !ok {
		return code
	}
	switch sub {
	case "list":
		return blocksList(newCommand("mxguard blocks list", "[--json]", c.api, stdout, stderr), rest)
	case "add":
		return blocksAdd(newCommand("mxguard blocks add", "SOURCE [--for D] [--reason R] [--json]", c.api, stdout, stderr), rest)
	case "remove":
		return blocksRemove(newCommand("mxguard blocks remove", "SOURCE", c.api, stdout, stderr), rest)
	}
	return c.usage("unknown subcommand %q", sub)
}

// subcommand reads the common flags that may precede a subcommand name
// ("mxguard blocks --api URL list") and returns that name, the arguments
// after it, and the top-level command for usage errors.
func subcommand(name, synopsis string, args []string, stdout, stderr io.Writer) (sub string, rest []string, c *command, code int, ok bool) {
	c = newCommand(name, synopsis, envAPI(), stdout, stderr)
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", nil, c, exitOK, false
		}
		return "", nil, c, exitUsage, false
	}
	if c.fs.NArg() == 0 {
		return "", nil, c, c.usage("missing subcommand"), false
	}
	return c.fs.Arg(0), c.fs.Args()[1:], c, 0, true
}

func blocksList(c *command, args []string) int {
	c.jsonFlag("print the API's JSON")
	if code, ok := c.noArgs(args); !ok {
		return code
	}
	var res struct {
		Blocks []events.Block `json:"blocks"`
	}
	if code, done := c.fetch("GET", "/api/v1/blocks", nil, nil, &res); done {
		return code
	}
	t := newTable(c.stdout, "SOURCE", "EXPIRES", "REASON", "RULE", "EVENT", "CREATED", "MANUAL")
	for _, b := range res.Blocks {
		event := ""
		if b.EventID != 0 {
			event = strconv.FormatInt(b.EventID, 10)
		}
		manual := "no"
		if b.Manual {
			manual = "yes"
		}
		expires := formatTime(b.ExpiresAt)
		if b.ExpiresAt.IsZero() {
			expires = "never"
		}
		t.row(b.Source, expires, b.Reason, b.Rule, event, formatTime(b.CreatedAt), manual)
	}
	t.flush()
	fmt.Fprintf(c.stdout, "%d blocks\n", len(res.Blocks))
	return exitOK
}

func blocksAdd(c *command, args []string) int {
	req, code, ok := c.holdRequest(args, "block", "source", "SOURCE")
	if !ok {
		return code
	}
	var b events.Block
	if code, done := c.fetch("POST", "/api/v1/blocks", nil, req, &b); done {
		return code
	}
	fmt.Fprintf(c.stdout, "blocked %s until %s\n", b.Source, formatTime(b.ExpiresAt))
	return exitOK
}

// holdRequest parses "add KEY [--for D] [--reason R] [--json]" of blocks
// and suspensions into the POST body; "for" is sent only when given, so
// the server's default applies.
func (c *command) holdRequest(args []string, what, field, arg string) (req map[string]string, code int, ok bool) {
	forD := c.durationFlag("for", what+" for `duration` D (30m, 1h, 24h, 7d; default 1h)")
	reason := c.fs.String("reason", "", "`reason` recorded with the "+what)
	c.jsonFlag("print the API's JSON")
	key, code, ok := c.oneArg(args, arg)
	if !ok {
		return nil, code, false
	}
	req = map[string]string{field: key, "reason": *reason}
	if c.isSet("for") {
		if *forD <= 0 {
			return nil, c.usage("--for must be positive, got %v", *forD), false
		}
		req["for"] = duration.Format(*forD)
	}
	return req, 0, true
}

func blocksRemove(c *command, args []string) int {
	return c.removeHold(args, "/api/v1/blocks/", "SOURCE", "unblocked")
}

// removeHold is "remove KEY" of blocks and suspensions: DELETE path+KEY.
func (c *command) removeHold(args []string, path, arg, done string) int {
	key, code, ok := c.oneArg(args, arg)
	if !ok {
		return code
	}
	// PathEscape turns the slash of a CIDR into %2F, as the API asks.
	if _, err := c.call("DELETE", path+url.PathEscape(key), nil, nil); err != nil {
		return c.fail(err)
	}
	fmt.Fprintf(c.stdout, "%s %s\n", done, key)
	return exitOK
}

func (c *command) isSet(name string) bool {
	set := false
	c.fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// noArgs parses args for a command that takes flags only.
func (c *command) noArgs(args []string) (code int, ok bool) {
	pos, code, ok := c.parse(args)
	if !ok {
		return code, false
	}
	if len(pos) > 0 {
		return c.usage("unexpected argument %q", pos[0]), false
	}
	return 0, true
}

// oneArg parses args for a command that takes exactly one positional.
func (c *command) oneArg(args []string, what string) (arg string, code int, ok bool) {
	pos, code, ok := c.parse(args)
	switch {
	case !ok:
		return "", code, false
	case len(pos) == 0:
		return "", c.usage("missing %s", what), false
	case len(pos) > 1:
		return "", c.usage("unexpected argument %q", pos[1]), false
	}
	return pos[0], 0, true
}
