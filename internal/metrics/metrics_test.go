package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/buildinfo"
)

func TestBuildInfo(t *testing.T) {
	g := buildInfoGauge(buildinfo.Info{Version: "devel", Revision: "0123456789abcdef", Modified: true, Go: "go1.26.8"})
	want := `# HELP mxguard_build_info Always 1; the labels name the running build (version as mxguard version prints it, Go version, VCS revision).
# TYPE mxguard_build_info gauge
mxguard_build_info{goversion="go1.26.8",revision="0123456789abcdef",version="devel-0123456789ab-dirty"} 1
`
	if err := testutil.CollectAndCompare(g, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
