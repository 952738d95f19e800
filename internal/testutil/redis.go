package testutil

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Redis is a private redis-server on a loopback port (no persistence,
// everything under one temp dir), started by StartRedis. Stop and Start
// take it down and bring it back on the same port, empty, as a Redis
// without persistence comes back after a crash.
type Redis struct {
	t    testing.TB
	dir  string
	port int
	args []string // more redis-server flags
	cmd  *exec.Cmd
	done chan struct{}
}

// StartRedis starts a private redis-server and stops it in t.Cleanup;
// args are more redis-server flags ("--requirepass", "secret"). It
// needs the Debian package redis-server; without it the test is skipped
// or, under MXGUARD_REQUIRE_ALL=1, fails (see RequireComponent).
func StartRedis(t testing.TB, args ...string) *Redis {
	t.Helper()
	_, err := exec.LookPath("redis-server")
	RequireComponent(t, "redis-server", err == nil, "Debian package redis-server provides /usr/bin/redis-server")
	r := &Redis{t: t, dir: t.TempDir(), port: FreePort(t), args: args}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			t.Logf("redis log:\n%s", tail(string(b), 30))
		}
		r.Stop()
	})
	r.Start()
	return r
}

// URL is the cluster.redis value for this instance.
func (r *Redis) URL() string { return "redis://" + r.Addr() + "/0" }

// Addr is host:port.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// Start runs the server (again) and waits until it answers PING.
func (r *Redis) Start() {
	r.t.Helper()
	if r.cmd != nil {
		return
	}
	cmd := exec.Command("redis-server", append([]string{"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1",
		"--dir", r.dir, "--save", "", "--appendonly", "no", "--logfile", filepath.Join(r.dir, "redis.log")}, r.args...)...)
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("redis-server: %v", err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(r.done)
	}()
	WaitUntil(r.t, "redis-server answers PING", func() bool {
		select {
		case <-r.done:
			b, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
			r.t.Fatalf("redis-server exited:\n%s", tail(string(b), 20))
		default:
		}
		return r.ping()
	})
}

// Stop terminates the server and waits for it to exit.
func (r *Redis) Stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	r.cmd = nil
}

func (r *Redis) ping() bool {
	c, err := net.DialTimeout("tcp", r.Addr(), time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	// -NOAUTH: up, and asking for the password (--requirepass).
	return err == nil && (strings.HasPrefix(line, "+PONG") || strings.HasPrefix(line, "-NOAUTH"))
}
