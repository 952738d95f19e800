package cli

import (
	"fmt"
	"io"
	"strconv"
)

// Servers lists the delivery servers and their state: mxguard servers.
func Servers(args []string, stdout, stderr io.Writer) int {
	c := newCommand("mxguard servers", "[--json]", envAPI(), stdout, stderr)
	c.jsonFlag("print the API's JSON")
	if code, ok := c.noArgs(args); !ok {
		return code
	}
	// since is kept as the server wrote it: shown, never computed with.
	var res struct {
		Servers []struct {
			Address   string `json:"address"`
			Role      string `json:"role"`
			State     string `json:"state"`
			Since     string `json:"since"`
			LastError string `json:"last_error"`
		} `json:"servers"`
	}
	if code, done := c.fetch("GET", "/api/v1/servers", nil, nil, &res); done {
		return code
	}
	t := newTable(stdout, "ADDRESS", "ROLE", "STATE", "SINCE", "LAST ERROR")
	for _, s := range res.Servers {
		t.row(s.Address, s.Role, s.State, s.Since, s.LastError)
	}
	t.flush()
	return exitOK
}

const spoolSynopsis = "status|suspend|resume|unspool [--json]"

// Spool shows and controls the spool manager:
// mxguard spool status|suspend|resume|unspool.
func Spool(args []string, stdout, stderr io.Writer) int {
	sub, rest, top, code, ok := subcommand("mxguard spool", spoolSynopsis, args, stdout, stderr)
	if !ok {
		return code
	}
	method, path := "POST", "/api/v1/spool/"+sub
	switch sub {
	case "status":
		method, path = "GET", "/api/v1/spool"
	case "suspend", "resume", "unspool":
	default:
		return top.usage("unknown subcommand %q", sub)
	}
	c := newCommand("mxguard spool "+sub, "[--json]", top.api, stdout, stderr)
	c.jsonFlag("print the API's JSON")
	if code, ok := c.noArgs(rest); !ok {
		return code
	}
	// Every spool call answers with the spool status (INTERFACE.md §5).
	var st struct {
		State    string `json:"state"`
		Messages int64  `json:"messages"`
		Bytes    int64  `json:"bytes"`
		MaxBytes int64  `json:"max_bytes"`
	}
	if code, done := c.fetch(method, path, nil, nil, &st); done {
		return code
	}
	t := newTable(stdout, "STATE", "MESSAGES", "SIZE", "MAX SIZE")
	t.row(st.State, strconv.FormatInt(st.Messages, 10), humanBytes(st.Bytes), humanBytes(st.MaxBytes))
	t.flush()
	return exitOK
}

// humanBytes writes n in binary units, the way spool.max_size is usually
// configured (10GiB).
func humanBytes(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	v, unit := float64(n), 0
	for v >= 1024 && unit < 4 {
		v /= 1024
		unit++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGT"[unit-1])
}
