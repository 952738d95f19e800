package gateway_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"mxguard/internal/testutil"
)

// TestMetricsLint runs `promtool check metrics` (Debian package
// prometheus) on the exposition of a gateway that has relayed a message,
// refused an unknown recipient and one relay attempt, and blocked a
// source: every series the traffic created is linted, not only the primed
// ones. promtool's lint covers names, units, _total suffixes of counters,
// help texts and duplicate series.
func TestMetricsLint(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	testutil.RequireComponent(t, "promtool", err == nil, "apt-get install prometheus")
	e := start(t, "")

	c := e.session("127.0.0.91")
	c.Cmd("RCPT TO:<alice@example.test>", 250)
	c.Data("Subject: hello\r\n\r\nhello\r\n", 250)
	c.Cmd("MAIL FROM:<sender@remote.test>", 250)
	c.Cmd("RCPT TO:<nobody@example.test>", 550)
	c.Cmd("RCPT TO:<victim@elsewhere.test>", 554)
	c.Cmd("QUIT", 221)
	if code, body := e.api("POST", "/api/v1/blocks", `{"source": "192.0.2.1", "for": "1h"}`); code != 201 {
		t.Fatalf("block: %d %s", code, body)
	}

	exposition := e.metrics()
	for _, name := range []string{
		`mxguard_build_info{goversion="go1.`,
		`mxguard_messages_total{direction="inbound",result="relayed"} 1`,
		`mxguard_blocks_active 1`,
		`mxguard_check_duration_seconds_bucket{`,
	} {
		if !strings.Contains(exposition, name) {
			t.Errorf("exposition lacks %s", name)
		}
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out.String())
	}
}
