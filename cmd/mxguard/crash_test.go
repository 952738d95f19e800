package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"mxguard/internal/mailsink"
	"mxguard/internal/testutil"
)

var buildOnce struct {
	sync.Once
	bin string
	err error
	out []byte
}

// binary builds cmd/mxguard once per test run.
func binary(t *testing.T) string {
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

// crashRig is one mxguard child process with a fixed data_dir, restartable.
type crashRig struct {
	t                   *testing.T
	bin, cfg            string
	smtpAddr, adminAddr string
	cmd                 *exec.Cmd
	logs                *lockedBuffer
}

func newCrashRig(t *testing.T, sink *mailsink.Server) *crashRig {
	dir := t.TempDir()
	r := &crashRig{t: t, bin: binary(t), cfg: filepath.Join(dir, "mxguard.yaml"),
		smtpAddr: testutil.FreeAddr(t), adminAddr: testutil.FreeAddr(t)}
	cfg := fmt.Sprintf(`hostname: mx.example.test
domains: [example.test]
listen: {smtp: %s, admin: %s}
admin: {token: crash-token}
data_dir: %s
trusted_networks: [127.0.0.1/32]
limits: {max_connections_per_source: 100}
delivery:
  servers: [{address: %s}]
  check_interval: 200ms
  down_after: 1
spool: {delay: 100ms, unspool_rate: 200}
rules: []
`, r.smtpAddr, r.adminAddr, filepath.Join(dir, "var"), sink.Addr())
	if err := os.WriteFile(r.cfg, []byte(cfg), 0o600); err != nil {
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

func (r *crashRig) start() {
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

func (r *crashRig) kill() {
	if r.cmd != nil && r.cmd.Process != nil {
		r.cmd.Process.Signal(syscall.SIGKILL)
		r.cmd.Wait()
		r.cmd = nil
	}
}

func (r *crashRig) spool() (state string, messages int) {
	req, _ := http.NewRequest("GET", "http://"+r.adminAddr+"/api/v1/spool", nil)
	req.Header.Set("Authorization", "Bearer crash-token")
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

func (r *crashRig) waitSpool(what string, cond func(string, int) bool) {
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

// load sends messages from several clients until stop is closed and
// returns the Message-IDs that got 250.
func (r *crashRig) load(stop <-chan struct{}, clients int) []string {
	var mu sync.Mutex
	var accepted []string
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("c%d-%d-%d@crash.test", c, i, time.Now().UnixNano())
				if sendOne(r.smtpAddr, id) {
					mu.Lock()
					accepted = append(accepted, id)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return accepted
}

var msgIDRe = regexp.MustCompile(`Message-ID: <([^>]+)>`)

// delivered counts, per Message-ID, how often the sink received it.
func delivered(sink *mailsink.Server) map[string]int {
	got := map[string]int{}
	for _, m := range sink.Messages() {
		if sm := msgIDRe.FindSubmatch(m.Data); sm != nil {
			got[string(sm[1])]++
		}
	}
	return got
}

// TestKill9NoLoss kills mxguard with SIGKILL while it spools, and again
// while it unspools, with different timings: after a restart every message
// that got 250 reaches the downstream (duplicates allowed, counted).
func TestKill9NoLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	for round, killAfter := range []time.Duration{300 * time.Millisecond, 900 * time.Millisecond, 1700 * time.Millisecond} {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			sink, err := mailsink.Start(context.Background(), mailsink.Options{Mailboxes: []string{"alice@example.test"}})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			r := newCrashRig(t, sink)

			// 1. Killed while spooling.
			sink.SetDown(true)
			r.start()
			r.waitSpool("spooling", func(st string, _ int) bool { return st == "spooling" })
			stop := make(chan struct{})
			var accepted []string
			done := make(chan struct{})
			go func() { accepted = r.load(stop, 4); close(done) }()
			time.Sleep(killAfter)
			r.kill()
			close(stop)
			<-done
			if len(accepted) == 0 {
				t.Fatal("no message was spooled before the kill")
			}

			// 2. Restart with the server back, kill again while unspooling
			// (rate 200/s: a backlog of hundreds takes seconds to drain).
			sink.SetDown(false)
			r.start()
			time.Sleep(killAfter / 3)
			r.kill()

			// 3. Restart and let it drain.
			r.start()
			r.waitSpool("drained", func(_ string, n int) bool { return n == 0 })
			got := delivered(sink)
			dups := 0
			for _, id := range accepted {
				switch n := got[id]; {
				case n == 0:
					t.Errorf("message %s got 250 and was lost", id)
				case n > 1:
					dups += n - 1
				}
			}
			t.Logf("kill after %s: %d messages accepted, all delivered, %d duplicates", killAfter, len(accepted), dups)
		})
	}
}

// sendOne sends one message and reports whether it got 250.
func sendOne(addr, msgID string) bool {
	c, err := dialSMTP(addr)
	if err != nil {
		return false
	}
	defer c.Close()
	return c.SendMail("sender@remote.test", []string{"alice@example.test"},
		fmt.Sprintf("Subject: crash\r\nMessage-ID: <%s>\r\n\r\nbody\r\n", msgID)) == nil
}
