package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// buildInfo is what "mxguard version" reports, from the build metadata Go
// embeds in every binary (no -ldflags needed).
type buildInfo struct {
	Version  string `json:"version"`
	Module   string `json:"module"`
	Revision string `json:"revision,omitempty"`
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

func readBuildInfo() buildInfo {
	b := buildInfo{Version: "devel", Module: "mxguard", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if info.Main.Path != "" {
		b.Module = info.Main.Path
	}
	// "(devel)" is what go build and go run report without a module version.
	if v := info.Main.Version; v != "" && v != "(devel)" {
		b.Version = v
	}
	b.Go = info.GoVersion
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Revision = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// VersionString is the one-word version shown in the console footer and
// logs: the module version, or "devel" with the short VCS revision.
func VersionString() string {
	b := readBuildInfo()
	if b.Version == "devel" && b.Revision != "" {
		rev := b.Revision[:min(len(b.Revision), 12)]
		if b.Modified {
			rev += "-dirty"
		}
		return "devel-" + rev
	}
	return b.Version
}

// Version prints version and build info: mxguard version [--json].
func Version(args []string, stdout, stderr io.Writer) int {
	c := newCommand("mxguard version", "[--json]", nil, stdout, stderr)
	c.jsonFlag("print as JSON")
	if code, ok := c.noArgs(args); !ok {
		return code
	}
	b := readBuildInfo()
	if *c.asJSON {
		raw, err := json.Marshal(b)
		if err != nil {
			return c.fail(err)
		}
		c.printJSON(raw)
		return exitOK
	}
	fmt.Fprintf(stdout, "mxguard %s\n", VersionString())
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
