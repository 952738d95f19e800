package testutil

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DovecotOptions configures StartDovecot. The zero value is IMAP and POP3
// with the user alice (password secret) and no auth policy server.
type DovecotOptions struct {
	// Users maps login names to plaintext passwords (passwd-file,
	// {PLAIN} scheme); default alice: secret.
	Users map[string]string
	// PolicyURL is auth_policy_server_url, e.g. "http://127.0.0.1:8026/";
	// empty: no auth policy server.
	PolicyURL string
	// PolicyAPIKey is sent as "X-API-Key: KEY" (auth_policy_server_api_header).
	PolicyAPIKey string
	// PolicyNonce is auth_policy_hash_nonce; default "nonce-abc-123" (the
	// one of the captured samples in ../shared/samples).
	PolicyNonce string
	// RejectOnFail is auth_policy_reject_on_fail: a policy server that
	// fails (down, garbage, timeout) makes logins fail instead of pass.
	RejectOnFail bool
	// AuthListener opens Dovecot's auth service on a loopback TCP port
	// (AuthAddr), for a Postfix with smtpd_sasl_type = dovecot.
	AuthListener bool
}

// Dovecot is a private Dovecot instance (IMAP and POP3 on their own
// loopback ports, a passwd-file user database, everything under one temp
// dir), started by StartDovecot.
type Dovecot struct {
	t                  testing.TB
	dir                string
	conf               string
	imapAddr, pop3Addr string
	authAddr           string // "" unless AuthListener
	nonce              string
	cmd                *exec.Cmd
	exited             chan struct{}
}

// StartDovecot starts a private Dovecot and stops it in t.Cleanup. It needs
// root and the Debian packages dovecot-core, dovecot-imapd and
// dovecot-pop3d; without them the test is skipped or, under
// MXGUARD_REQUIRE_ALL=1, fails (see RequireComponent).
//
// Failed logins are answered at once: auth_failure_delay is 0 and anvil's
// auth penalty (a delay doubling up to 15 s per failing IP) is off, because
// brute-force tests fail on purpose from one address many times; with
// Dovecot's defaults each such test would take a minute.
func StartDovecot(t testing.TB, o DovecotOptions) *Dovecot {
	t.Helper()
	RequireComponent(t, "root", os.Geteuid() == 0, "a private Dovecot instance must be started as root")
	bin, err := dovecotBin()
	RequireComponent(t, "dovecot", err == nil, "Debian packages dovecot-core dovecot-imapd dovecot-pop3d provide /usr/sbin/dovecot")
	for _, p := range []string{"imap", "pop3"} {
		_, err := os.Stat(filepath.Join("/usr/lib/dovecot", p))
		RequireComponent(t, "dovecot-"+p+"d", err == nil, "Debian package dovecot-"+p+"d provides /usr/lib/dovecot/"+p)
	}
	if len(o.Users) == 0 {
		o.Users = map[string]string{"alice": "secret"}
	}
	if o.PolicyNonce == "" {
		o.PolicyNonce = "nonce-abc-123"
	}
	// Not t.TempDir: its parent is 0700, and Dovecot's unprivileged
	// processes (dovenull, dovecot, uid 65534) must traverse into it.
	dir, err := os.MkdirTemp("", "mxguard-dovecot-")
	if err != nil {
		t.Fatalf("dovecot: %v", err)
	}
	d := &Dovecot{t: t, dir: dir, conf: filepath.Join(dir, "dovecot.conf"),
		imapAddr: FreeAddr(t), pop3Addr: FreeAddr(t), nonce: o.PolicyNonce}
	if o.AuthListener {
		d.authAddr = FreeAddr(t)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dovecot log:\n%s", tail(d.Log(), 60))
		}
		d.stop()
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("dovecot: remove %s: %v", dir, err)
		}
	})
	if err := d.setup(o); err != nil {
		t.Fatalf("dovecot: %v", err)
	}
	// doveconf is in /usr/bin, dovecot in /usr/sbin (Debian).
	if out, err := exec.Command("doveconf", "-c", d.conf, "-n").CombinedOutput(); err != nil {
		t.Fatalf("dovecot: doveconf: %v\n%s", err, out)
	}
	d.start(bin)
	return d
}

func dovecotBin() (string, error) {
	if p, err := exec.LookPath("dovecot"); err == nil {
		return p, nil
	}
	const p = "/usr/sbin/dovecot"
	_, err := os.Stat(p)
	return p, err
}

func (d *Dovecot) setup(o DovecotOptions) error {
	if err := os.Chmod(d.dir, 0o755); err != nil {
		return err
	}
	for _, sub := range []string{"run", "state", "mail", "home"} {
		if err := os.Mkdir(filepath.Join(d.dir, sub), 0o755); err != nil {
			return err
		}
	}
	if err := os.Chown(filepath.Join(d.dir, "mail"), 65534, 65534); err != nil {
		return err
	}
	var users strings.Builder
	for _, name := range slices.Sorted(maps.Keys(o.Users)) {
		pw := o.Users[name]
		if strings.ContainsAny(name+pw, ":\n") {
			return fmt.Errorf("user %q: no ':' or newline in names and passwords", name)
		}
		home := filepath.Join(d.dir, "home", name)
		if err := os.Mkdir(home, 0o755); err != nil {
			return err
		}
		if err := os.Chown(home, 65534, 65534); err != nil {
			return err
		}
		fmt.Fprintf(&users, "%s:{PLAIN}%s:65534:65534::%s\n", name, pw, home)
	}
	if err := os.WriteFile(filepath.Join(d.dir, "users"), []byte(users.String()), 0o644); err != nil {
		return err
	}
	_, imapPort, _ := net.SplitHostPort(d.imapAddr)
	_, pop3Port, _ := net.SplitHostPort(d.pop3Addr)
	var c strings.Builder
	// Dovecot 2.3 syntax (Debian 12); see ../shared/components/dovecot-and-postfix-policy.md.
	fmt.Fprintf(&c, `base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0
mail_location = maildir:%[1]s/mail/%%u
passdb {
  driver = passwd-file
  args = scheme=PLAIN %[1]s/users
}
userdb {
  driver = passwd-file
  args = %[1]s/users
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = %[2]s
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = %[3]s
  }
  inet_listener pop3s {
    port = 0
  }
}
# No auth penalty: without a socket auth cannot ask anvil for one.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
`, d.dir, imapPort, pop3Port)
	if d.authAddr != "" {
		_, port, _ := net.SplitHostPort(d.authAddr)
		// Postfix's dovecot SASL client speaks Dovecot's auth protocol
		// to this listener (Postfix SASL_README, "Dovecot SASL").
		fmt.Fprintf(&c, "service auth {\n  inet_listener {\n    address = 127.0.0.1\n    port = %s\n  }\n}\n", port)
	}
	if o.PolicyURL != "" {
		fmt.Fprintf(&c, "auth_policy_server_url = %s\n", o.PolicyURL)
		fmt.Fprintf(&c, "auth_policy_hash_nonce = %s\n", o.PolicyNonce)
		fmt.Fprintf(&c, "auth_policy_report_after_auth = yes\n")
		fmt.Fprintf(&c, "auth_policy_reject_on_fail = %s\n", map[bool]string{true: "yes", false: "no"}[o.RejectOnFail])
		if o.PolicyAPIKey != "" {
			fmt.Fprintf(&c, "auth_policy_server_api_header = X-API-Key: %s\n", o.PolicyAPIKey)
		}
	}
	return os.WriteFile(d.conf, []byte(c.String()), 0o644)
}

func (d *Dovecot) start(bin string) {
	d.t.Helper()
	out, err := os.OpenFile(filepath.Join(d.dir, "dovecot.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatalf("dovecot: %v", err)
	}
	defer out.Close()
	// -F keeps master in the foreground, a child of this process that is
	// reaped here (a daemonized master would be reparented to PID 1).
	cmd := exec.Command(bin, "-F", "-c", d.conf)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("dovecot: start: %v", err)
	}
	d.exited = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(d.exited)
	}()
	d.cmd = cmd
	// The only readiness signal is the greeting on each port; poll it
	// (bounded) instead of sleeping.
	deadline := time.Now().Add(30 * time.Second)
	for _, g := range []struct{ addr, prefix string }{{d.imapAddr, "* OK"}, {d.pop3Addr, "+OK"}} {
		for {
			err := greetsWith(g.addr, g.prefix)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				d.t.Fatalf("dovecot %s: no greeting after 30s: %v\n%s", g.addr, err, tail(d.Log(), 30))
			}
			select {
			case <-d.exited:
				b, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.out"))
				d.t.Fatalf("dovecot exited during startup\n%s\n%s", b, tail(d.Log(), 30))
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

func (d *Dovecot) stop() {
	if d.cmd == nil {
		return
	}
	// master kills its children on SIGTERM and exits after them.
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.t.Logf("dovecot: master did not exit on SIGTERM, killing its group")
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		<-d.exited
	}
	if !waitGroupGone(d.cmd.Process.Pid, 5*time.Second) {
		_ = syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
		waitGroupGone(d.cmd.Process.Pid, 5*time.Second)
	}
	d.cmd = nil
}

// greetsWith reports whether addr's first line starts with prefix.
func greetsWith(addr, prefix string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, prefix) {
		return fmt.Errorf("greeting %q", line)
	}
	return nil
}

// IMAPAddr and POP3Addr are the "127.0.0.1:PORT" of the listeners.
func (d *Dovecot) IMAPAddr() string { return d.imapAddr }

// POP3Addr is the POP3 listener's address.
func (d *Dovecot) POP3Addr() string { return d.pop3Addr }

// AuthAddr is the auth service's TCP address ("" unless AuthListener).
func (d *Dovecot) AuthAddr() string { return d.authAddr }

// Log returns Dovecot's log file.
func (d *Dovecot) Log() string {
	b, err := os.ReadFile(filepath.Join(d.dir, "dovecot.log"))
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(b)
}

// PWHash is what Dovecot sends as pwhash for login and password, with this
// instance's nonce and the default auth_policy_hash_mech (sha256) and
// auth_policy_hash_truncate (12 bits): the first 12 bits of
// sha256(nonce || login || 0x00 || password), right-aligned in 2 bytes, in
// hex (verified against the captures in ../shared/samples).
func (d *Dovecot) PWHash(login, password string) string {
	h := sha256.New()
	h.Write([]byte(d.nonce + login + "\x00" + password))
	sum := h.Sum(nil)
	v := (uint16(sum[0])<<8 | uint16(sum[1])) >> 4
	return hex.EncodeToString([]byte{byte(v >> 8), byte(v)})
}

// IMAPLogin connects from localIP (e.g. "127.0.0.21"), sends LOGIN and
// returns Dovecot's tagged answer ("a1 OK ..." or "a1 NO ..."), logged like
// a transcript.
func (d *Dovecot) IMAPLogin(t testing.TB, localIP, user, password string) string {
	t.Helper()
	return d.login(t, d.imapAddr, localIP, "imap", []string{fmt.Sprintf("a1 LOGIN %q %q", user, password)}, "a1 ")
}

// POP3Login connects from localIP, sends USER and PASS and returns the
// answer to PASS ("+OK Logged in." or "-ERR ...").
func (d *Dovecot) POP3Login(t testing.TB, localIP, user, password string) string {
	t.Helper()
	return d.login(t, d.pop3Addr, localIP, "pop3", []string{"USER " + user, "PASS " + password}, "")
}

func (d *Dovecot) login(t testing.TB, addr, localIP, proto string, cmds []string, tag string) string {
	t.Helper()
	dl := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}}
	c, err := dl.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("%s: dial %s from %s: %v", proto, addr, localIP, err)
	}
	defer c.Close()
	// Dovecot answers a policy rejection or a failure after up to ~2 s
	// (auth_policy's own delay); anything past 20 s is a hang.
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	readLine := func() string {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s %s: read: %v", proto, localIP, err)
		}
		line = strings.TrimRight(line, "\r\n")
		t.Logf("%s %s <- %s", proto, localIP, line)
		return line
	}
	readLine() // greeting
	var last string
	for _, cmd := range cmds {
		t.Logf("%s %s -> %s", proto, localIP, cmd)
		if _, err := fmt.Fprintf(c, "%s\r\n", cmd); err != nil {
			t.Fatalf("%s %s: write: %v", proto, localIP, err)
		}
		for last = readLine(); tag != "" && !strings.HasPrefix(last, tag); last = readLine() {
		}
	}
	return last
}
