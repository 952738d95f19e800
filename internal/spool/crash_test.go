package spool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash tests re-run this test binary as a child that spools or
// unspools, kill it with SIGKILL at a random moment, and check the spool
// the way the next start finds it.

const helperEnv = "MXGUARD_SPOOL_CRASH_HELPER" // MODE:DIR

// TestHelperProcess is the child; it does nothing in a normal run.
func TestHelperProcess(t *testing.T) {
	mode, dir, ok := strings.Cut(os.Getenv(helperEnv), ":")
	if !ok {
		t.Skip("child process of the crash tests")
	}
	var err error
	switch mode {
	case "put":
		err = childPut(dir)
	case "unspool":
		err = childUnspool(dir)
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	fmt.Fprintln(os.Stderr, "child:", err)
	os.Exit(1)
}

// crashMessage is message n of the crash tests; sizes vary from 4 KB to
// about 68 KB so that kills land inside writes of several sizes.
func crashMessage(n int) []byte {
	body := bytes.Repeat(fmt.Appendf(nil, "line of message %08d ........................................\r\n", n), 64*(1+n%17))
	return append(fmt.Appendf(nil, "Subject: crash test %d\r\n\r\n", n), body...)
}

// childPut spools messages from two goroutines until killed and prints
// "ID N" for each, only after Put returned: the moment the front end would
// answer 250.
func childPut(dir string) error {
	s, err := Open(dir, Options{})
	if err != nil {
		return err
	}
	var mu sync.Mutex
	next := 0
	errc := make(chan error, 2)
	for range 2 {
		go func() {
			for {
				mu.Lock()
				n := next
				next++
				mu.Unlock()
				id, err := putBytes(s, context.Background(), Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, crashMessage(n))
				if err != nil {
					errc <- err
					return
				}
				// One write(2) per line: a pipe write this small is atomic.
				os.Stdout.WriteString(id + " " + strconv.Itoa(n) + "\n")
			}
		}()
	}
	return <-errc
}

// lineDeliverer prints the id of each message it delivers before it
// reports success, like a downstream that said 250 just before the crash.
type lineDeliverer struct{ mu sync.Mutex }

func (d *lineDeliverer) Deliver(_ context.Context, env Envelope, msg io.Reader) error {
	if _, err := io.Copy(io.Discard, msg); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	_, err := os.Stdout.WriteString(env.ID + "\n")
	return err
}

func childUnspool(dir string) error {
	s, err := Open(dir, Options{})
	if err != nil {
		return err
	}
	m := NewManager(ManagerOptions{Spool: s, AutoUnspool: true, UnspoolRate: 100000, Deliver: &lineDeliverer{}})
	return m.Run(context.Background())
}

// runChild starts a child in mode on dir, kills it with SIGKILL a random
// 0..maxDelay after its first line of output, and returns the complete
// lines it printed.
func runChild(t *testing.T, mode, dir string, maxDelay time.Duration) []string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), helperEnv+"="+mode+":"+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := make(chan struct{})
	done := make(chan []string)
	go func() {
		var lines []string
		r := bufio.NewReader(out)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				// A fragment without its newline was cut by the kill:
				// its writer had not finished, so it does not count.
				break
			}
			if lines = append(lines, strings.TrimSuffix(line, "\n")); len(lines) == 1 {
				close(first)
			}
		}
		done <- lines
	}()
	select {
	case <-first:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("child printed nothing: %s", stderr.String())
	}
	// A real process at a random moment: this waits for no window.
	time.Sleep(rand.N(maxDelay))
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	lines := <-done
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("child ended with %v, not by SIGKILL: %s", err, stderr.String())
	}
	return lines
}

// checkIntact reopens dir and reads every message to the end (the reader
// verifies the checksum), returning the spool's envelopes by id.
func checkIntact(t *testing.T, dir string) map[string]Envelope {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ents, _ := os.ReadDir(filepath.Join(dir, tmpDir)); len(ents) != 0 {
		t.Errorf("temporary files left after recovery: %d", len(ents))
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, corruptDir)); len(ents) != 0 {
		t.Errorf("recovery found %d corrupt files", len(ents))
	}
	envs := map[string]Envelope{}
	for _, e := range s.List() {
		_, rc, err := s.Open(e.ID)
		if err != nil {
			t.Fatalf("open %s: %v", e.ID, err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Errorf("read %s: %v", e.ID, err)
		}
		rc.Close()
		envs[e.ID] = e
	}
	return envs
}

func TestCrashWhileSpooling(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	dir := t.TempDir()
	acked := map[string]int{}
	for round := range 4 {
		for _, line := range runChild(t, "put", dir, 300*time.Millisecond) {
			id, n, _ := strings.Cut(line, " ")
			acked[id], _ = strconv.Atoi(n)
		}
		envs := checkIntact(t, dir)
		s, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for id, n := range acked {
			if _, ok := envs[id]; !ok {
				t.Fatalf("round %d: message %s (%d) got its 250 and is gone", round, id, n)
			}
			_, rc, err := s.Open(id)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || !bytes.Equal(got, crashMessage(n)) {
				t.Fatalf("round %d: message %s (%d) damaged: %v", round, id, n, err)
			}
		}
		s.Close()
		t.Logf("round %d: %d acknowledged, %d in the spool", round, len(acked), len(envs))
	}
}

func TestCrashWhileUnspooling(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test")
	}
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const total = 300
	all := map[string]bool{}
	for i := range total {
		all[mustPut(t, s, Envelope{From: "a@example.org", Recipients: []string{"b@example.test"}}, testMessage(i))] = true
	}
	s.Close()

	delivered := map[string]int{}
	flagged := map[string]bool{}
	for round := 0; round < 6; round++ {
		for _, id := range runChild(t, "unspool", dir, 60*time.Millisecond) {
			delivered[id]++
		}
		envs := checkIntact(t, dir)
		for id := range all {
			if _, spooled := envs[id]; !spooled && delivered[id] == 0 {
				t.Fatalf("round %d: message %s neither delivered nor spooled", round, id)
			}
		}
		for id, e := range envs {
			if e.Redelivery {
				flagged[id] = true
			}
		}
		t.Logf("round %d: %d delivered so far, %d left", round, len(delivered), len(envs))
		if len(envs) == 0 {
			break
		}
	}
	// Drain what is left in this process.
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rec := &recorder{}
	m := NewManager(ManagerOptions{Spool: s, AutoUnspool: true, UnspoolRate: 100000, Deliver: rec})
	for m.RunOnce(context.Background()) > 0 {
	}
	for _, d := range rec.deliveries() {
		delivered[d.Env.ID]++
	}
	dups := 0
	for id := range all {
		switch n := delivered[id]; {
		case n == 0:
			t.Errorf("message %s never delivered", id)
		case n > 1:
			dups += n - 1
			if !flagged[id] {
				t.Errorf("message %s delivered %d times without being counted as a redelivery", id, n)
			}
		}
	}
	t.Logf("%d messages, %d duplicates, all counted as redeliveries", total, dups)
}
