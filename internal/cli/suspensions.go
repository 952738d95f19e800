package cli

import (
	"fmt"
	"io"
	"strconv"

	"mxguard/internal/events"
)

const suspensionsSynopsis = `list [--json]
       mxguard suspensions add ACCOUNT [--for D] [--reason R] [--json]
       mxguard suspensions remove ACCOUNT`

// Suspensions manages suspended accounts (their next message on the
// submission listener gets 550 5.7.1): mxguard suspensions list|add|remove.
func Suspensions(args []string, stdout, stderr io.Writer) int {
	sub, rest, c, code, ok := subcommand("mxguard suspensions", suspensionsSynopsis, args, stdout, stderr)
	if !ok {
		return code
	}
	switch sub {
	case "list":
		return suspensionsList(newCommand("mxguard suspensions list", "[--json]", c.api, stdout, stderr), rest)
	case "add":
		return suspensionsAdd(newCommand("mxguard suspensions add", "ACCOUNT [--for D] [--reason R] [--json]", c.api, stdout, stderr), rest)
	case "remove":
		return newCommand("mxguard suspensions remove", "ACCOUNT", c.api, stdout, stderr).removeHold(rest, "/api/v1/suspensions/", "ACCOUNT", "lifted the suspension of")
	}
	return c.usage("unknown subcommand %q", sub)
}

func suspensionsList(c *command, args []string) int {
	c.jsonFlag("print the API's JSON")
	if code, ok := c.noArgs(args); !ok {
		return code
	}
	var res struct {
		Suspensions []events.Suspension `json:"suspensions"`
	}
	if code, done := c.fetch("GET", "/api/v1/suspensions", nil, nil, &res); done {
		return code
	}
	t := newTable(c.stdout, "ACCOUNT", "EXPIRES", "REASON", "RULE", "EVENT", "CREATED", "MANUAL")
	for _, s := range res.Suspensions {
		event := ""
		if s.EventID != 0 {
			event = strconv.FormatInt(s.EventID, 10)
		}
		manual := "no"
		if s.Manual {
			manual = "yes"
		}
		t.row(s.Account, formatTime(s.ExpiresAt), s.Reason, s.Rule, event, formatTime(s.CreatedAt), manual)
	}
	t.flush()
	fmt.Fprintf(c.stdout, "%d suspensions\n", len(res.Suspensions))
	return exitOK
}

func suspensionsAdd(c *command, args []string) int {
	req, code, ok := c.holdRequest(args, "suspension", "account", "ACCOUNT")
	if !ok {
		return code
	}
	var s events.Suspension
	if code, done := c.fetch("POST", "/api/v1/suspensions", nil, req, &s); done {
		return code
	}
	fmt.Fprintf(c.stdout, "suspended %s until %s\n", s.Account, formatTime(s.ExpiresAt))
	return exitOK
}
