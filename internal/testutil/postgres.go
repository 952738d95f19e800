package testutil

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// postgresBin is where Debian's postgresql package (PostgreSQL 15) puts
// the server binaries; they are not on PATH.
const postgresBin = "/usr/lib/postgresql/15/bin"

// Postgres is a private PostgreSQL cluster for one test package: started
// on first use (initdb takes a second or two, so one cluster serves every
// test of the package run), each test gets a fresh database of its own
// (Database). A package that needs one keeps it for its tests and runs
// them through RunWithPostgres:
//
//	var pg = testutil.NewPostgres()
//
//	func TestMain(m *testing.M) { os.Exit(testutil.RunWithPostgres(m, pg)) }
//
// The server runs in the foreground as a child of the test binary, as the
// postgres user, with the parent-death signal set: if the test binary is
// killed (a timeout, ^C) the server shuts down too instead of lingering.
type Postgres struct {
	once    sync.Once
	err     error  // why the cluster could not start
	missing string // a component that is not there, "" when all are
	why     string

	dir    string
	port   int
	cmd    *exec.Cmd
	exited chan struct{}

	mu  sync.Mutex
	dbs int // databases created, for unique names
}

// NewPostgres returns a cluster that starts when a test first asks for a
// database.
func NewPostgres() *Postgres { return &Postgres{} }

// RunWithPostgres runs the tests (m.Run), then stops pg, and returns the
// exit code: a cluster that would not stop fails the run.
func RunWithPostgres(m *testing.M, pg *Postgres) int {
	code := m.Run()
	if err := pg.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "postgres:", err)
		code = 1
	}
	return code
}

// Database creates a fresh, empty database for t, dropped in t.Cleanup,
// and returns its DSN (postgres://postgres@127.0.0.1:PORT/NAME). Without
// root or the Debian package postgresql the test is skipped or, under
// MXGUARD_REQUIRE_ALL=1, fails (see RequireComponent).
func (p *Postgres) Database(t testing.TB) string {
	t.Helper()
	p.once.Do(p.start)
	if p.missing != "" {
		RequireComponent(t, p.missing, false, p.why)
	}
	if p.err != nil {
		t.Fatalf("postgres: %v", p.err)
	}
	p.mu.Lock()
	p.dbs++
	name := fmt.Sprintf("t%d", p.dbs)
	p.mu.Unlock()
	// FILE_COPY copies template1's few files instead of WAL-logging every
	// block: faster for an empty database, and fsync is off anyway.
	if err := p.admin(fmt.Sprintf("CREATE DATABASE %s STRATEGY FILE_COPY", name)); err != nil {
		t.Fatalf("postgres: %v", err)
	}
	t.Cleanup(func() {
		// FORCE ends the sessions a failed test may have left open.
		if err := p.admin(fmt.Sprintf("DROP DATABASE %s WITH (FORCE)", name)); err != nil {
			t.Errorf("postgres: %v", err)
		}
	})
	return p.DSN(name)
}

// DSN is the URL of database name on this cluster.
func (p *Postgres) DSN(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", p.port, name)
}

// Addr is the cluster's "127.0.0.1:PORT".
func (p *Postgres) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

// admin runs one statement in the postgres database.
func (p *Postgres) admin(stmt string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, p.DSN("postgres"))
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("%s: %w", stmt, err)
	}
	return nil
}

// start runs initdb and the server, recording in p what went wrong.
func (p *Postgres) start() {
	if os.Geteuid() != 0 {
		p.missing, p.why = "root", "a private PostgreSQL cluster is started as root (then runs as the postgres user)"
		return
	}
	pgUser, err := user.Lookup("postgres")
	_, binErr := os.Stat(filepath.Join(postgresBin, "postgres"))
	if err != nil || binErr != nil {
		p.missing, p.why = "postgresql", "Debian package postgresql provides "+postgresBin+" and the postgres user"
		return
	}
	removeStaleClusters()
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	// In /tmp, short: every parent must be traversable by postgres and the
	// socket path (dir/.s.PGSQL.PORT) must stay under 108 bytes.
	if p.dir, err = os.MkdirTemp("", "mxpg-"); err == nil {
		err = os.Chown(p.dir, uid, gid)
	}
	if err != nil {
		p.err = err
		return
	}
	data := filepath.Join(p.dir, "data")
	initdb := exec.Command(filepath.Join(postgresBin, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
		"-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	initdb.Dir = p.dir
	if out, err := initdb.CombinedOutput(); err != nil {
		p.err = fmt.Errorf("initdb: %v\n%s", err, out)
		return
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		p.err = err
		return
	}
	p.port = l.Addr().(*net.TCPAddr).Port
	l.Close()
	logf, err := os.Create(filepath.Join(p.dir, "postgres.log"))
	if err != nil {
		p.err = err
		return
	}
	defer logf.Close()
	// Test-only durability settings: nothing here must survive a crash.
	cmd := exec.Command(filepath.Join(postgresBin, "postgres"), "-D", data, "-p", strconv.Itoa(p.port), "-k", p.dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = p.dir
	// SIGINT is PostgreSQL's fast shutdown.
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGINT, Setpgid: true}
	if err := cmd.Start(); err != nil {
		p.err = fmt.Errorf("postgres: %w", err)
		return
	}
	p.cmd, p.exited = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	// Ready when it answers a query (bounded; the first start after
	// initdb takes well under a second).
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.admin("SELECT 1")
		if err == nil {
			return
		}
		select {
		case <-p.exited:
			p.err = fmt.Errorf("postgres exited during startup\n%s", p.Log())
			return
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.err = fmt.Errorf("not ready after 30s: %v\n%s", err, p.Log())
			return
		}
	}
}

// removeStaleClusters removes the directories of clusters whose test
// binary died without Stop (killed, or a closed output pipe): the server
// went with it (parent-death signal), its files stayed. A directory whose
// postmaster still runs belongs to a live test package and is left alone,
// and so is one without a pid file younger than an hour (an initdb under
// way).
func removeStaleClusters() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "mxpg-*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
		if err != nil {
			if st, err := os.Stat(dir); err == nil && time.Since(st.ModTime()) > time.Hour {
				_ = os.RemoveAll(dir)
			}
			continue
		}
		first, _, _ := strings.Cut(string(b), "\n")
		pid, err := strconv.Atoi(strings.TrimSpace(first))
		if err == nil && pid > 0 && errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			_ = os.RemoveAll(dir)
		}
	}
}

// Log is the server's log.
func (p *Postgres) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "postgres.log"))
	return string(b)
}

// Stop shuts the cluster down (fast shutdown, then a kill after 10 s)
// and removes its directory; the cluster cannot start again.
func (p *Postgres) Stop() error {
	p.once.Do(func() {}) // never started: nothing will start it now
	var err error
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			err = errors.New("postgres did not stop on SIGINT; killed")
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.exited
		}
	}
	if p.dir != "" {
		err = errors.Join(err, os.RemoveAll(p.dir))
	}
	return err
}
