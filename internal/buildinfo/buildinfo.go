// Package buildinfo reads what Go embeds in every binary about its build
// (runtime/debug.ReadBuildInfo: module version, VCS revision, Go version;
// no -ldflags needed), for `mxguard version`, the console footer and the
// mxguard_build_info metric.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Info is the build of the running binary.
type Info struct {
	Version  string `json:"version"` // module version, or "devel"
	Module   string `json:"module"`
	Revision string `json:"revision,omitempty"` // VCS revision, when stamped
	Time     string `json:"time,omitempty"`
	Modified bool   `json:"modified,omitempty"`
	Go       string `json:"go"`
	Platform string `json:"platform"`
}

// Read returns the running binary's build.
func Read() Info {
	b := Info{Version: "devel", Module: "mxguard", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
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

// Short is the one-word version for logs, the console footer and the
// metric: the module version, or "devel" with the short VCS revision
// ("devel-0123456789ab", "-dirty" when modified).
func (b Info) Short() string {
	if b.Version == "devel" && b.Revision != "" {
		rev := b.Revision[:min(len(b.Revision), 12)]
		if b.Modified {
			rev += "-dirty"
		}
		return "devel-" + rev
	}
	return b.Version
}
