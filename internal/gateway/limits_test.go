package gateway

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// The check counts three descriptors per session (client, downstream,
// message file) plus the pooled connections per server and a reserve,
// warns exactly below that, and says the numbers.
func TestCheckFileLimit(t *testing.T) {
	for _, tc := range []struct {
		limit          uint64
		conns, servers int
		warn           string // "" = no warning
	}{
		// Debian's default soft limit and the default max_connections:
		// 2000*3 + 2*65 + 64.
		{1024, 2000, 2, "rlimit_nofile=1024 needed=6194 max_connections=2000"},
		{6194, 2000, 2, ""},
		{6193, 2000, 2, "rlimit_nofile=6193 needed=6194"},
		// systemd's default hard limit, which Go raises the soft one to.
		{524288, 2000, 2, ""},
		{1024, 100, 1, ""},
		{1024, 400, 1, "needed=1329 max_connections=400"},
	} {
		var buf bytes.Buffer
		warned := checkFileLimit(slog.New(slog.NewTextHandler(&buf, nil)), tc.limit, tc.conns, tc.servers)
		out := buf.String()
		if warned != (tc.warn != "") || !strings.Contains(out, tc.warn) || warned != strings.Contains(out, "level=WARN") {
			t.Errorf("limit %d, max_connections %d, %d servers: warned %v: %q, want %q", tc.limit, tc.conns, tc.servers, warned, out, tc.warn)
		}
	}
}
