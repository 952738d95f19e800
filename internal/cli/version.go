package cli

import (
	"encoding/json"
	"fmt"
	"io"

	"mxguard/internal/buildinfo"
)

// VersionString is the one-word version shown in the console footer and
// logs (buildinfo.Info.Short).
func VersionString() string { return buildinfo.Read().Short() }

// Version prints version and build info: mxguard version [--json].
func Version(args []string, stdout, stderr io.Writer) int {
	c := newCommand("mxguard version", "[--json]", nil, stdout, stderr)
	c.jsonFlag("print as JSON")
	if code, ok := c.noArgs(args); !ok {
		return code
	}
	b := buildinfo.Read()
	if *c.asJSON {
		raw, err := json.Marshal(b)
		if err != nil {
			return c.fail(err)
		}
		c.printJSON(raw)
		return exitOK
	}
	fmt.Fprintf(stdout, "mxguard %s\n", b.Short())
	t := newTable(stdout, "module", b.Module)
	if b.Revision != "" {
		rev := b.Revision
		if b.Modified {
			rev += " (modified)"
		}
		t.row("revision", rev)
	}
	if b.Time != "" {
		t.row("committed", b.Time)
	}
	t.row("go", b.Go)
	t.row("platform", b.Platform)
	t.flush()
	return exitOK
}
