package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"mxguard/internal/testutil"
)

var buildOnce struct {
	sync.Once
	bin string
	err error
	out []byte
}

// binary builds cmd/mxguard once per test run.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "mxguard-bin-")
		if err != nil {
			buildOnce.err = err
			return
		}
		buildOnce.bin = filepath.Join(dir, "mxguard")
		buildOnce.out, buildOnce.err = exec.Command("go", "build", "-o", buildOnce.bin, ".").CombinedOutput()
	})
	if buildOnce.err != nil {
		t.Fatalf("build: %v\n%s", buildOnce.err, buildOnce.out)
	}
	return buildOnce.bin
}

// rigToken is the admin token of every rig.
const rigToken = "rig-token-8d41c7e2a9"

// rig is one `mxguard serve` child process with a fixed config file and
// data_dir, in front of sink; it can be started, killed and restarted.
type rig struct {
	t                   testing.TB
	bin, cfg, yaml      string
	smtpAddr, adminAddr string
	cmd                 *exec.Cmd
	logs                *lockedBuffer
}

// newRig writes the config, in front of the downstream server at
// downstream: the base below plus extra top-level YAML.
func newRig(t testing.TB, downstream string, extra string) *rig {
	dir := t.TempDir()
	r := &rig{t: t, bin: binary(t), cfg: filepath.Join(dir, "mxguard.yaml"),
		smtpAddr: testutil.FreeAddr(t), adminAddr: testutil.FreeAddr(t)}
	r.yaml = fmt.Sprintf(`hostname: mx.example.test
domains: [example.test]
listen: {smtp: %s, admin: %s}
admin: {token: %s}
data_dir: %s
trusted_networks: [127.0.0.1/32]
delivery:
  servers: [{address: %s}]
  check_interval: 200ms
  down_after: 1
`, r.smtpAddr, r.adminAddr, rigToken, filepath.Join(dir, "var"), downstream) + extra
	if err := os.WriteFile(r.cfg, []byte(r.yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.kill()
		if t.Failed() {
			t.Logf("mxguard log:\n%s", r.logs.String())
		}
	})
	return r
}

func (r *rig) start() {
	r.t.Helper()
	r.logs = &lockedBuffer{}
	r.cmd = exec.Command(r.bin, "serve", "-c", r.cfg)
	r.cmd.Stderr = r.logs
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	waitListening(r.t, r.smtpAddr)
	waitListening(r.t, r.adminAddr)
}

func (r *rig) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGKILL)
		r.cmd.Wait()
		r.cmd = nil
	}
}

// cli runs a client command of the binary against this instance.
func (r *rig) cli(args ...string) (string, int) {
	cmd := exec.Command(r.bin, args...)
	cmd.Env = append(os.Environ(), "MXGUARD_API=http://"+r.adminAddr, "MXGUARD_TOKEN="+rigToken)
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return string(out), code
}

func (r *rig) spool() (state string, messages int) {
	req, _ := http.NewRequest("GET", "http://"+r.adminAddr+"/api/v1/spool", nil)
	req.Header.Set("Authorization", "Bearer "+rigToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", -1
	}
	defer resp.Body.Close()
	var s struct {
		State    string `json:"state"`
		Messages int    `json:"messages"`
	}
	json.NewDecoder(resp.Body).Decode(&s)
	return s.State, s.Messages
}

func (r *rig) waitSpool(what string, cond func(string, int) bool) {
	r.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, n := r.spool()
		if cond(st, n) {
			return
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("spool never %s (state %q, %d messages)", what, st, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
