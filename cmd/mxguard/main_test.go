package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"mxguard/internal/mailsink"
	"mxguard/internal/testutil"
)

func TestUsageExitCodes(t *testing.T) {
	tests := []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"frobnicate"}, 2},
		{[]string{"serve"}, 2},
		{[]string{"check-config"}, 2},
		{[]string{"check-config", "-c", "/nonexistent.yaml"}, 1},
		{[]string{"help"}, 0},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		if got := run(tt.args, &out, &errb); got != tt.code {
			t.Errorf("mxguard %v: exit %d, want %d (stderr %q)", tt.args, got, tt.code, errb.String())
		}
	}
}

func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(filepath.Join(dir, "token"), []byte("0f4e1c9a7b2d5e8f3a6c1b4d7e0f2a5c\n"), 0o600)
	os.WriteFile(good, []byte("domains: [example.test]\nadmin: {token_file: token}\ndelivery:\n  servers: [{address: 127.0.0.1:2526}]\n"), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("domains: [example.test]\nlisten:\n  smtpp: 1.2.3.4:25\ntimeouts: {greeting: 30 seconds}\n"), 0o600)

	var out, errb bytes.Buffer
	if code := run([]string{"check-config", "-c", good}, &out, &errb); code != 0 {
		t.Fatalf("valid config: exit %d: %s", code, errb.String())
	}
	if errb.Len() != 0 {
		t.Errorf("valid config: stderr %q", errb.String())
	}
	// An alert action without a channel is valid, with a warning.
	alerting := filepath.Join(dir, "alerting.yaml")
	os.WriteFile(alerting, []byte("domains: [example.test]\nadmin: {token_file: token}\ndelivery:\n  servers: [{address: 127.0.0.1:2526}]\n"+
		"rules: [{name: harvest, type: directory_harvest, threshold: 20, actions: [block, alert]}]\n"), 0o600)
	out.Reset()
	errb.Reset()
	if code := run([]string{"check-config", "-c", alerting}, &out, &errb); code != 0 || !strings.Contains(out.String(), ": ok") ||
		!strings.Contains(errb.String(), "warning: rules harvest have the alert action but no alert channel is configured") {
		t.Errorf("alert without a channel: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"check-config", "-c", bad}, &out, &errb); code != 1 {
		t.Fatalf("invalid config: exit %d", code)
	}
	// Every problem at once, each as FILE:LINE: message.
	for _, want := range []string{bad + ":3: ", bad + ":4: ", "delivery.servers"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("check-config output lacks %q:\n%s", want, errb.String())
		}
	}
}

// TestSampleTokenRefused: check-config and serve refuse the sample token of
// the documentation (and an absent one) at its line, with a hint on how to
// make a real one; serve never starts listening.
func TestSampleTokenRefused(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, admin, want string }{
		{"sample", "admin: {token: \"change-me\"}\n", `:2: admin.token: "change-me" is a sample token from documentation, not a secret (generate one with: openssl rand -hex 32)`},
		{"absent", "listen: {admin: 127.0.0.1:8025}\n", `:2: admin.token: required: the console and API on 127.0.0.1:8025 need admin.token or admin.token_file (generate one with: openssl rand -hex 32`},
	} {
		file := filepath.Join(dir, tc.name+".yaml")
		os.WriteFile(file, []byte("domains: [example.test]\n"+tc.admin+"delivery:\n  servers: [{address: 127.0.0.1:2526}]\n"), 0o600)
		for _, cmd := range []string{"check-config", "serve"} {
			var out, errb bytes.Buffer
			if code := run([]string{cmd, "-c", file}, &out, &errb); code != 1 {
				t.Errorf("%s %s: exit %d, want 1: %s", cmd, tc.name, code, errb.String())
			}
			if !strings.Contains(errb.String(), file+tc.want) {
				t.Errorf("%s %s: stderr %q lacks %q", cmd, tc.name, errb.String(), file+tc.want)
			}
		}
	}
}

// TestServeEndToEnd builds the binary, runs `mxguard serve`, attacks it,
// lists the event with `mxguard events`, reloads (a bad config is refused,
// the process keeps serving) and stops it with SIGTERM.
func TestServeEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	sink, err := mailsink.Start(t.Context(), mailsink.Options{Mailboxes: []string{"alice@example.test"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	r := newRig(t, sink.Addr(), `rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 3, actions: [block], block_for: 1h}
`)
	r.start()
	smtpAddr, cli := r.smtpAddr, r.cli

	c := testutil.Dial(t, smtpAddr, testutil.DialOptions{LocalIP: "127.0.0.90"})
	c.Expect(220)
	c.Cmd("EHLO attacker.test", 250)
	c.Cmd("MAIL FROM:<a@attacker.test>", 250)
	for i := 0; i < 3; i++ {
		c.Cmd(fmt.Sprintf("RCPT TO:<guess%d@example.test>", i), 550)
	}
	c.Cmd("RCPT TO:<alice@example.test>", 421)

	out, code := cli("events", "--type", "directory_harvest", "--json")
	if code != 0 {
		t.Fatalf("mxguard events: exit %d", code)
	}
	var res struct {
		Total  int `json:"total"`
		Events []struct {
			Source string `json:"source"`
			Status string `json:"status"`
		} `json:"events"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Total != 1 || res.Events[0].Source != "127.0.0.90" {
		t.Fatalf("mxguard events --json: %v %s", err, out)
	}
	if out, _ := cli("blocks", "list"); !strings.Contains(out, "127.0.0.90") {
		t.Errorf("mxguard blocks list lacks the blocked source:\n%s", out)
	}

	if out, code := cli("servers"); code != 0 || !strings.Contains(out, sink.Addr()) || !strings.Contains(out, "up") {
		t.Errorf("mxguard servers: exit %d\n%s", code, out)
	}
	for _, step := range []struct{ args, want string }{
		{"spool status", "off"},
		{"spool suspend", "suspended"},
		{"spool resume", "off"},
		{"spool unspool", "off"},
	} {
		out, code := cli(strings.Fields(step.args)...)
		if code != 0 || !strings.Contains(out, step.want) {
			t.Errorf("mxguard %s: exit %d, want %q in\n%s", step.args, code, step.want, out)
		}
	}

	// A broken config on SIGHUP is refused; the old one keeps serving.
	os.WriteFile(r.cfg, []byte(r.yaml+"bogus_key: 1\n"), 0o600)
	r.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, r.logs, "reload refused")
	testutil.Dial(t, smtpAddr, testutil.DialOptions{LocalIP: "127.0.0.91"}).Expect(220)

	cmd := r.cmd
	r.cmd = nil // stopped here, not by the rig's cleanup
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("mxguard did not stop on SIGTERM")
	}
}

func waitListening(t testing.TB, addr string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listening on %s", addr)
}

type lockedBuffer = testutil.LockedBuffer

func waitLog(t *testing.T, logs *lockedBuffer, want string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			if strings.Contains(sc.Text(), want) {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("log never said %q", want)
}
