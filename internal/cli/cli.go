// Package cli holds the client commands of INTERFACE.md §1 that talk to a
// running mxguard over its HTTP API (§5): events, blocks, servers, spool,
// plus version. Each command is func(args, stdout, stderr) int returning
// the exit code: 0 success, 1 operational error (one line on stderr), 2
// usage error (usage on stderr).
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"mxguard/internal/duration"
)

// Exit codes of INTERFACE.md §1.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// defaultAPI is listen.admin's default address (INTERFACE.md §2).
const defaultAPI = "http://127.0.0.1:8025"

// requestTimeout bounds one API call; every call is a short read or a
// small write, so a minute means the instance is stuck.
const requestTimeout = time.Minute

// timeLayout prints times in UTC, unambiguous when compared across hosts.
const timeLayout = "2006-01-02T15:04:05Z"

// command is one invocation: its flags, where it writes, and how it reports.
type command struct {
	name     string // "mxguard blocks add", the prefix of every message
	synopsis string // arguments after the name, for the usage text
	fs       *flag.FlagSet
	api      *apiFlags
	stdout   io.Writer
	stderr   io.Writer
	asJSON   *bool // set by jsonFlag
}

// apiFlags are --api and --token, shared by every client command.
type apiFlags struct {
	url, token string
}

// newCommand creates the flag set with --api and --token, unless api is nil
// (a local command). The defaults of those flags are the values api
// already holds, so a command with subcommands accepts them before and
// after the subcommand name.
// durationFlag defines a flag read by duration.Parse, so --for takes
// days ("7d") like the configuration does.
func (c *command) durationFlag(name, usage string) *time.Duration {
	d := new(time.Duration)
	c.fs.Func(name, usage, func(s string) error {
		v, err := duration.Parse(s)
		if err != nil {
			return err
		}
		*d = v
		return nil
	})
	return d
}

func newCommand(name, synopsis string, api *apiFlags, stdout, stderr io.Writer) *command {
	c := &command{name: name, synopsis: synopsis, api: api, stdout: stdout, stderr: stderr}
	c.fs = flag.NewFlagSet(name, flag.ContinueOnError)
	c.fs.SetOutput(stderr)
	c.fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s %s\n\nflags:\n", name, synopsis)
		c.fs.PrintDefaults()
	}
	if api != nil {
		c.fs.StringVar(&api.url, "api", api.url, "admin API `URL` of the running instance (env MXGUARD_API)")
		c.fs.StringVar(&api.token, "token", api.token, "API bearer `token` (env MXGUARD_TOKEN)")
	}
	return c
}

// envAPI reads the environment once per invocation; tests set it with
// t.Setenv.
func envAPI() *apiFlags {
	a := &apiFlags{url: os.Getenv("MXGUARD_API"), token: os.Getenv("MXGUARD_TOKEN")}
	if a.url == "" {
		a.url = defaultAPI
	}
	return a
}

// parse reads flags wherever they stand among args and returns the
// positional arguments: operators type "blocks add 1.2.3.4 --for 1h" as
// often as "blocks add --for 1h 1.2.3.4", and the flag package alone stops
// at the first positional. After "--" everything is positional. ok is
// false when the command must exit with code.
func (c *command) parse(args []string) (positional []string, code int, ok bool) {
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			return nil, exitUsage, false // the flag package printed the error and usage
		}
		rest := c.fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(positional, rest...), 0, true
		}
		if len(rest) == 0 {
			return positional, 0, true
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// usage reports a usage error: the problem, then the usage text.
func (c *command) usage(format string, args ...any) int {
	fmt.Fprintf(c.stderr, "%s: %s\n", c.name, fmt.Sprintf(format, args...))
	c.fs.Usage()
	return exitUsage
}

// fail reports an operational error on one line.
func (c *command) fail(err error) int {
	msg := strings.Join(strings.Fields(err.Error()), " ")
	fmt.Fprintf(c.stderr, "%s: %s\n", c.name, msg)
	return exitError
}

// apiError is an answer of the API with a non-2xx status.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string {
	s := fmt.Sprintf("HTTP %d: %s", e.status, e.msg)
	if e.status == http.StatusUnauthorized {
		s += " (check --token or MXGUARD_TOKEN)"
	}
	return s
}

// call sends one API request and returns the body of a 2xx answer. body,
// when not nil, is sent as JSON.
func (c *command) call(method, path string, query url.Values, body any) ([]byte, error) {
	base := strings.TrimRight(c.api.url, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base // --api 127.0.0.1:8025 is what people type
	}
	u := base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, fmt.Errorf("bad --api %q: %w", c.api.url, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.api.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.api.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // the URL is said once, below
		}
		return nil, fmt.Errorf("cannot reach %s: %w", base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer of %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
			if e.Error == "" {
				e.Error = http.StatusText(resp.StatusCode)
			}
		}
		return nil, &apiError{resp.StatusCode, e.Error}
	}
	return data, nil
}

// fetch calls the API and decodes a 2xx answer into v. done is true when
// the command has nothing left to do: the call failed (code 1, reported)
// or --json was given and the answer printed as received (code 0).
func (c *command) fetch(method, path string, query url.Values, body, v any) (code int, done bool) {
	raw, err := c.call(method, path, query, body)
	if err != nil {
		return c.fail(err), true
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return c.fail(fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)), true
	}
	if c.asJSON != nil && *c.asJSON {
		c.printJSON(raw)
		return exitOK, true
	}
	return exitOK, false
}

// jsonFlag adds --json, which fetch honours.
func (c *command) jsonFlag(usage string) {
	c.asJSON = c.fs.Bool("json", false, usage)
}

// printJSON prints JSON indented; for --json it is the API's own answer.
func (c *command) printJSON(raw []byte) {
	var b bytes.Buffer
	if json.Indent(&b, raw, "", "  ") != nil {
		b.Reset()
		b.Write(raw) // not JSON after all: show it unchanged
	}
	b.WriteByte('\n')
	_, _ = c.stdout.Write(b.Bytes())
}

// table writes aligned columns; cells are cleaned so a tab or newline in
// a reason cannot break the layout.
type table struct{ tw *tabwriter.Writer }

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, s := range cells {
		// Whitespace runs become one space and other control
		// characters '?': a cell is data from the server, which must not
		// steer the terminal.
		if s = strings.Map(printable, strings.Join(strings.Fields(s), " ")); s == "" {
			s = "-"
		}
		if i > 0 {
			_, _ = io.WriteString(t.tw, "\t")
		}
		_, _ = io.WriteString(t.tw, s)
	}
	_, _ = io.WriteString(t.tw, "\n")
}

func (t *table) flush() { _ = t.tw.Flush() }

func printable(r rune) rune {
	if unicode.IsControl(r) || unicode.Is(unicode.Bidi_Control, r) {
		return '?'
	}
	return r
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeLayout)
}
