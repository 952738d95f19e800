package testutil

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The private content scanners (rspamd, clamd, spamd) follow the verified
// recipes of ../shared/components/content-scanners.md: their own config
// under one temp dir, loopback only, no network look-ups, no downloads.

// GTUBE and EICAR are assembled at run time so that no source file
// carries the test strings (a scanner on the developer's machine would
// quarantine it).
func GTUBE() string {
	return "XJS*C4JDBQADN1.NSBN3*2IDNEN*" + "GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
}

// EICAR is the 68-byte EICAR anti-virus test file.
func EICAR() string {
	return `X5O!P%@AP[4\PZX54(P^)7CC)7}$` + "EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
}

// daemon is a scanner process started in its own process group.
type daemon struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{}
	out    string // file holding stdout and stderr
}

// startDaemon starts argv, waits until ready() succeeds (bounded by
// timeout, failing early if the process exits) and stops the process
// group in t.Cleanup.
func startDaemon(t testing.TB, name, dir string, timeout time.Duration, ready func() error, argv ...string) *daemon {
	t.Helper()
	out := filepath.Join(dir, name+".out")
	f, err := os.Create(out)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start: %v", name, err)
	}
	d := &daemon{name: name, cmd: cmd, exited: make(chan struct{}), out: out}
	go func() {
		_ = cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s output:\n%s", name, tail(d.output(), 40))
		}
		d.stop(t)
	})
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready after %s: %v\n%s", name, timeout, err, tail(d.output(), 30))
		}
		select {
		case <-d.exited:
			t.Fatalf("%s: exited during startup\n%s", name, tail(d.output(), 30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *daemon) output() string {
	b, _ := os.ReadFile(d.out)
	return string(b)
}

// stop sends SIGTERM to the process group and waits until every process of
// it is gone (SIGKILL after 10 s), so ports and sockets are free.
func (d *daemon) stop(t testing.TB) {
	pgid := d.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		t.Logf("%s: no exit after SIGTERM, SIGKILL", d.name)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-d.exited
	}
	if !waitGroupGone(pgid, 5*time.Second) {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		waitGroupGone(pgid, 5*time.Second)
	}
}

func requireScanner(t testing.TB, pkg, bin string) string {
	t.Helper()
	RequireComponent(t, "root", os.Geteuid() == 0, pkg+" is started privately as root")
	path, err := exec.LookPath(bin)
	if err != nil {
		for _, dir := range []string{"/usr/sbin", "/usr/bin"} {
			if _, serr := os.Stat(filepath.Join(dir, bin)); serr == nil {
				path, err = filepath.Join(dir, bin), nil
				break
			}
		}
	}
	RequireComponent(t, pkg, err == nil, "Debian package "+pkg+" provides "+bin)
	return path
}

// ---------------------------------------------------------------- clamd

// ClamdOptions configures StartClamd.
type ClamdOptions struct {
	// Signatures are extra body signatures (name -> bytes to find
	// anywhere), written into a .ndb database; ClamAV reports them as
	// NAME.UNOFFICIAL.
	Signatures map[string][]byte
	// StreamMaxLength is clamd.conf's StreamMaxLength ("1M"); default
	// clamd's own (100M).
	StreamMaxLength string
}

// Clamd is a private clamd listening on a TCP port of 127.0.0.1 and a unix
// socket. Its database always holds an EICAR signature
// ("Eicar-Test-Signature-Local") and the MD5 of clamav-testfiles' clam.exe
// ("Clamav.Test.File-Local"), plus ClamdOptions.Signatures.
type Clamd struct {
	Addr   string // 127.0.0.1:PORT
	Socket string // unix socket path
	Dir    string
}

// StartClamd starts clamd and stops it in t.Cleanup. It needs root and the
// Debian packages clamav-daemon and clamav-testfiles.
func StartClamd(t testing.TB, o ClamdOptions) *Clamd {
	t.Helper()
	bin := requireScanner(t, "clamav-daemon", "clamd")
	const clamExe = "/usr/share/clamav-testfiles/clam.exe"
	exe, err := os.ReadFile(clamExe)
	RequireComponent(t, "clamav-testfiles", err == nil, "provides "+clamExe)

	dir := t.TempDir()
	db := filepath.Join(dir, "db")
	if err := os.Mkdir(db, 0o755); err != nil {
		t.Fatal(err)
	}
	var ndb strings.Builder
	fmt.Fprintf(&ndb, "Eicar-Test-Signature-Local:0:*:%s\n", hex.EncodeToString([]byte(EICAR())))
	for name, body := range o.Signatures {
		fmt.Fprintf(&ndb, "%s:0:*:%s\n", name, hex.EncodeToString(body))
	}
	sum := md5.Sum(exe)
	hdb := fmt.Sprintf("%s:%d:Clamav.Test.File-Local\n", hex.EncodeToString(sum[:]), len(exe))
	for file, content := range map[string]string{"local.ndb": ndb.String(), "local.hdb": hdb} {
		if err := os.WriteFile(filepath.Join(db, file), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := &Clamd{Addr: FreeAddr(t), Socket: filepath.Join(dir, "clamd.sock"), Dir: dir}
	_, port, _ := net.SplitHostPort(c.Addr)
	conf := fmt.Sprintf(`Foreground yes
DatabaseDirectory %[1]s/db
LocalSocket %[2]s
LocalSocketMode 660
FixStaleSocket yes
TCPSocket %[3]s
TCPAddr 127.0.0.1
PidFile %[1]s/clamd.pid
TemporaryDirectory %[1]s
LogFile %[1]s/clamd.log
LogTime yes
Bytecode no
MaxThreads 4
`, dir, c.Socket, port)
	if o.StreamMaxLength != "" {
		conf += "StreamMaxLength " + o.StreamMaxLength + "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, "clamd.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, "clamd", dir, 60*time.Second, func() error { return clamdPing(c.Addr) },
		bin, "-c", filepath.Join(dir, "clamd.conf"))
	return c
}

// Log is clamd's log file.
func (c *Clamd) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "clamd.log"))
	return string(b)
}

func clamdPing(addr string) error {
	return pingTCP(addr, "zPING", "zPING\x00", func(b []byte) bool { return string(bytes.TrimRight(b, "\x00\n")) == "PONG" })
}

// pingTCP sends req to a daemon's TCP port and reads the answer to EOF;
// pong says whether it is the daemon's ready answer.
func pingTCP(addr, name, req string, pong func([]byte) bool) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte(req)); err != nil {
		return err
	}
	b, err := io.ReadAll(conn)
	if !pong(b) {
		return fmt.Errorf("%s: %q %v", name, b, err)
	}
	return nil
}

// ---------------------------------------------------------------- spamd

// SpamdOptions configures StartSpamd.
type SpamdOptions struct {
	// LocalCF is added to the private local.cf (custom rules).
	LocalCF string
}

// Spamd is a private SpamAssassin spamd on 127.0.0.1.
type Spamd struct {
	Addr string
	Dir  string
}

// StartSpamd starts spamd (local tests only, no Bayes, no DNS) and stops
// it in t.Cleanup. It needs root and the Debian packages spamassassin and
// spamd.
func StartSpamd(t testing.TB, o SpamdOptions) *Spamd {
	t.Helper()
	bin := requireScanner(t, "spamd", "spamd")
	u, err := user.Lookup("debian-spamd")
	RequireComponent(t, "spamd", err == nil, "the Debian package creates the user debian-spamd")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)

	// Not t.TempDir: its parent is 0700 and spamd's children run as
	// debian-spamd.
	dir, err := os.MkdirTemp("", "mxguard-spamd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	etc := filepath.Join(dir, "etc")
	for _, d := range []string{dir, etc, filepath.Join(dir, "home")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pres, _ := filepath.Glob("/etc/spamassassin/*.pre")
	for _, p := range pres {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(etc, filepath.Base(p)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	local := "use_bayes 0\nbayes_auto_learn 0\nskip_rbl_checks 1\ndns_available no\nuse_razor2 0\nuse_pyzor 0\nreport_safe 0\nrequired_score 5.0\n" + o.LocalCF + "\n"
	if err := os.WriteFile(filepath.Join(etc, "local.cf"), []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Chown(p, uid, gid)
	}); err != nil {
		t.Fatal(err)
	}
	s := &Spamd{Addr: FreeAddr(t), Dir: dir}
	host, port, _ := net.SplitHostPort(s.Addr)
	startDaemon(t, "spamd", dir, 90*time.Second, func() error { return spamdPing(s.Addr) },
		bin, "-L", "-x", "-u", "debian-spamd", "--siteconfigpath="+etc,
		"--listen="+net.JoinHostPort(host, port), "--allowed-ips=127.0.0.1",
		"-m", "2", "--min-children=1", "--min-spare=1", "--max-spare=1",
		"-r", filepath.Join(dir, "spamd.pid"), "-s", "stderr", "-H", filepath.Join(dir, "home"))
	return s
}

func spamdPing(addr string) error {
	return pingTCP(addr, "PING", "PING SPAMC/1.5\r\n\r\n", func(b []byte) bool { return bytes.Contains(b, []byte("PONG")) })
}

// ---------------------------------------------------------------- rspamd

// RspamdProbeRules are rspamd rules (for RspamdOptions.LocalLua) only a
// private rspamd knows, so a verdict naming them proves rspamd judged.
// Scores against the stock actions.conf (reject 15, add_header 6,
// greylist 4): a Subject with probe-reject is rejected, probe-header gets
// "add header", probe-grey "greylist", probe-soft "soft reject";
// MXGUARD_ENVELOPE fires when the envelope arrived in the request
// headers (from alice@example.org, second recipient carol@example.test,
// IP 192.0.2.10, HELO mail.example.org).
const RspamdProbeRules = `
local function subject_has(task, word)
  local s = task:get_subject()
  return s ~= nil and s:find(word, 1, true) ~= nil
end
rspamd_config.MXGUARD_REJECT = { score = 20.0, group = 'mxguard',
  callback = function(task) return subject_has(task, 'probe-reject') end }
rspamd_config.MXGUARD_HEADER = { score = 8.0, group = 'mxguard',
  callback = function(task) return subject_has(task, 'probe-header') end }
rspamd_config.MXGUARD_GREY = { score = 4.5, group = 'mxguard',
  callback = function(task) return subject_has(task, 'probe-grey') end }
rspamd_config.MXGUARD_SOFT = { score = 0.0, group = 'mxguard',
  callback = function(task)
    if subject_has(task, 'probe-soft') then
      task:set_pre_result('soft reject', 'try again later')
      return true
    end
    return false
  end }
-- Fires only when the envelope arrived in rspamd's request headers.
rspamd_config.MXGUARD_ENVELOPE = { score = 0.0, group = 'mxguard',
  callback = function(task)
    local from, rcpts, ip = task:get_from('smtp'), task:get_recipients('smtp'), task:get_ip()
    return from ~= nil and from[1].addr == 'alice@example.org'
      and rcpts ~= nil and #rcpts == 2 and rcpts[2].addr == 'carol@example.test'
      and ip ~= nil and ip:to_string() == '192.0.2.10'
      and task:get_helo() == 'mail.example.org'
  end }
`

// RspamdOptions configures StartRspamd.
type RspamdOptions struct {
	// LocalLua is written to rspamd.local.lua (custom rules).
	LocalLua string
	// Config is appended to the private rspamd.conf (module settings).
	Config string
}

// Rspamd is a private rspamd normal worker on 127.0.0.1.
type Rspamd struct {
	URL string // http://127.0.0.1:PORT
	Dir string
}

// RspamdHyperscanCache is where every private rspamd keeps its compiled
// hyperscan database: outside the per-test temp dirs, because compiling
// it takes 17 s or more (content-scanners.md), and a warm start about 2 s.
// The files are keyed by content hash, so instances share them safely.
func RspamdHyperscanCache() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "mxguard-test", "rspamd-hs")
	return dir, os.MkdirAll(dir, 0o755)
}

// StartRspamd starts rspamd with the stock metrics, actions and regexp
// rules but no Lua plugins (no RBL, fuzzy, DKIM, maps: nothing leaves the
// machine; DNS goes to 127.0.0.1:1 and fails fast), and stops it in
// t.Cleanup. It needs root and the Debian package rspamd. The first start
// on a machine compiles the hyperscan cache (tens of seconds).
func StartRspamd(t testing.TB, o RspamdOptions) *Rspamd {
	t.Helper()
	bin := requireScanner(t, "rspamd", "rspamd")
	hs, err := RspamdHyperscanCache()
	if err != nil {
		t.Fatalf("rspamd: %v", err)
	}
	dir := t.TempDir()
	for _, d := range []string{"db", "run", "local"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := &Rspamd{Dir: dir}
	addr := FreeAddr(t)
	r.URL = "http://" + addr
	conf := `lua = "$RULESDIR/rspamd.lua"
.include "$CONFDIR/metrics.conf"
.include "$CONFDIR/actions.conf"
.include "$CONFDIR/groups.conf"
.include "$CONFDIR/composites.conf"
modules { path = "${PLUGINSDIR}"; }
options {
  pidfile = "$RUNDIR/rspamd.pid";
  filters = "chartable,regexp";
  cache_file = "$DBDIR/symbols.cache";
  hs_cache_dir = "$HSCACHE/";
  control_socket = "$RUNDIR/rspamd.sock mode=0600";
  tempdir = "$DBDIR";
  url_tld = "${SHAREDIR}/effective_tld_names.dat";
  local_addrs = [];
  task_timeout = 8s;
  dns { nameserver = ["127.0.0.1:1"]; timeout = 0.1s; retransmits = 1; }
}
logging { type = "console"; level = "notice"; }
worker "normal" { bind_socket = "` + addr + `"; count = 1; task_timeout = 8s; }
` + o.Config
	if err := os.WriteFile(filepath.Join(dir, "rspamd.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "local", "rspamd.local.lua"), []byte(o.LocalLua), 0o644); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, "rspamd", dir, 5*time.Minute, func() error { return rspamdPing(r.URL) },
		bin, "-f", "-i", "-u", "root", "-g", "root", "-c", filepath.Join(dir, "rspamd.conf"),
		"--var=DBDIR="+filepath.Join(dir, "db"), "--var=RUNDIR="+filepath.Join(dir, "run"),
		"--var=HSCACHE="+hs, "--var=LOCAL_CONFDIR="+filepath.Join(dir, "local"))
	return r
}

func rspamdPing(url string) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url + "/ping")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !bytes.HasPrefix(b, []byte("pong")) {
		return fmt.Errorf("ping: %d %q", resp.StatusCode, b)
	}
	return nil
}
