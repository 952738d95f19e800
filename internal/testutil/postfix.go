package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PostfixOptions configures StartPostfix. The zero value is a final
// destination for example.test with the mailboxes alice and bob.
type PostfixOptions struct {
	// Hostname is myhostname (the greeting); default "postfix.example.test".
	Hostname string
	// Domains are the virtual mailbox domains (final destination mode) or
	// the relay domains (relay mode); default the domains of Mailboxes, or
	// example.test.
	Domains []string
	// Mailboxes are the full addresses that exist (final destination mode);
	// default alice@example.test and bob@example.test. Any other address in
	// Domains gets "550 5.1.1 ... User unknown in virtual mailbox table".
	Mailboxes []string
	// RelayTo ("host:port") switches to relay mode: Postfix accepts mail
	// from 127.0.0.0/8 for any domain and relays it to RelayTo. Retries are
	// made fast (queue_run_delay and backoff of 1s to 5s instead of 300s to
	// 4000s) so an outage test sees the queue drain soon after recovery.
	RelayTo string
	// Policy ("host:port") makes Postfix ask a policy server the way
	// docs/postfix-policy.md recommends: check_policy_service at the end
	// of smtpd_recipient_restrictions (after permit_mynetworks and
	// reject_unauth_destination) and in smtpd_end_of_data_restrictions,
	// with smtpd_policy_service_timeout 10s (the default 100s would stall
	// a failing test). Main can still override each of these.
	Policy string
	// PolicyDefaultAction is smtpd_policy_service_default_action, what
	// Postfix answers when the policy server fails; "" keeps Postfix's
	// default ("451 4.3.5 Server configuration problem"), so a broken
	// policy server shows as 451 instead of passing mail unseen.
	PolicyDefaultAction string
	// Main sets or overrides main.cf parameters, e.g.
	// {"mynetworks": "127.0.0.1/32"}.
	Main map[string]string
}

// Postfix is a private Postfix instance: its own config, queue, data and
// maildir directories under one temp dir, its own port on 127.0.0.1, no
// chroot and no syslog (maillog_file), so it needs no system setup beyond
// the Debian package and leaves the system Postfix alone.
type Postfix struct {
	t         testing.TB
	dir       string
	addr      string
	domains   []string
	mailboxes map[string]string // address -> maildir relative to the mail base
	cmd       *exec.Cmd         // "postfix start-fg", nil while stopped
	exited    chan struct{}     // closed when cmd was reaped
	masterPID int
}

// StartPostfix starts a private Postfix and stops it in t.Cleanup. It needs
// root and the Debian package postfix; without them the test is skipped or,
// under MXGUARD_REQUIRE_ALL=1, fails (see RequireComponent).
func StartPostfix(t testing.TB, o PostfixOptions) *Postfix {
	t.Helper()
	RequireComponent(t, "root", os.Geteuid() == 0, "a private Postfix instance must be started as root")
	_, err := postfixBin("postfix")
	RequireComponent(t, "postfix", err == nil, "Debian package postfix provides /usr/sbin/postfix")

	if o.Hostname == "" {
		o.Hostname = "postfix.example.test"
	}
	if len(o.Mailboxes) == 0 && o.RelayTo == "" {
		o.Mailboxes = []string{"alice@example.test", "bob@example.test"}
	}
	if len(o.Domains) == 0 {
		for _, m := range o.Mailboxes {
			if _, d, ok := strings.Cut(strings.ToLower(m), "@"); ok && !slices.Contains(o.Domains, d) {
				o.Domains = append(o.Domains, d)
			}
		}
	}
	if len(o.Domains) == 0 {
		o.Domains = []string{"example.test"}
	}

	// Not t.TempDir: its parent is 0700, and Postfix's unprivileged
	// processes (user postfix, and the virtual agent as uid 65534) must
	// traverse into the queue and mail directories.
	dir, err := os.MkdirTemp("", "mxguard-postfix-")
	if err != nil {
		t.Fatalf("postfix: %v", err)
	}
	p := &Postfix{
		t:         t,
		dir:       dir,
		addr:      FreeAddr(t),
		domains:   o.Domains,
		mailboxes: make(map[string]string),
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("postfix maillog (%s):\n%s", p.addr, tail(p.Log(), 200))
		}
		p.stop()
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("postfix: remove %s: %v", dir, err)
		}
	})
	if err := p.setup(o); err != nil {
		t.Fatalf("postfix: %v", err)
	}
	p.Start()
	return p
}

func (p *Postfix) setup(o PostfixOptions) error {
	if err := os.Chmod(p.dir, 0o755); err != nil {
		return err
	}
	for _, d := range []string{"etc", "spool"} {
		if err := os.Mkdir(filepath.Join(p.dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := makeQueueDirs(p.dir); err != nil {
		return err
	}
	// The virtual(8) agent delivers as static:65534 and creates the
	// maildirs itself, so the base must be writable by that uid.
	if err := os.Mkdir(filepath.Join(p.dir, "mail"), 0o755); err != nil {
		return err
	}
	if err := os.Chown(filepath.Join(p.dir, "mail"), 65534, 65534); err != nil {
		return err
	}

	daemonDir := "/usr/lib/postfix/sbin"
	if postconf, err := postfixBin("postconf"); err == nil {
		if out, err := exec.Command(postconf, "-dh", "daemon_directory").Output(); err == nil {
			daemonDir = strings.TrimSpace(string(out))
		}
	}
	_, port, _ := net.SplitHostPort(p.addr)

	main := map[string]string{
		"compatibility_level":  "3.6",
		"queue_directory":      filepath.Join(p.dir, "spool"),
		"data_directory":       filepath.Join(p.dir, "data"),
		"command_directory":    "/usr/sbin",
		"daemon_directory":     daemonDir,
		"mail_owner":           "postfix",
		"setgid_group":         "postdrop",
		"myhostname":           o.Hostname,
		"myorigin":             "$myhostname",
		"inet_interfaces":      "127.0.0.1",
		"inet_protocols":       "ipv4",
		"mydestination":        "",
		"local_recipient_maps": "",
		"local_transport":      "error:5.1.1 local delivery disabled",
		"alias_maps":           "",
		"alias_database":       "",
		"biff":                 "no",
		"mynetworks":           "127.0.0.0/8",
		// smtpd_reject_unlisted_recipient (default yes) still rejects
		// unknown virtual users from mynetworks, which is what makes the
		// downstream's 550 5.1.1 appear at RCPT time.
		"smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
		// Loopback-only machines have no reachable resolver: a reverse
		// lookup of each client or MX lookups would stall on DNS timeouts.
		"smtpd_peername_lookup":  "no",
		"smtp_dns_support_level": "disabled",
		// No syslog in containers; maillog_file goes through postlogd.
		"maillog_file":          filepath.Join(p.dir, "maillog"),
		"maillog_file_prefixes": p.dir,
	}
	if o.RelayTo == "" {
		var entries []string
		for _, m := range o.Mailboxes {
			local, domain, ok := strings.Cut(strings.ToLower(m), "@")
			if !ok || local == "" || strings.ContainsAny(m, " ,={}/") {
				return fmt.Errorf("bad mailbox %q (want local@domain)", m)
			}
			md := domain + "/" + local + "/" // trailing slash: maildir format
			p.mailboxes[local+"@"+domain] = md
			// inline: maps must not have spaces around "=".
			entries = append(entries, local+"@"+domain+"="+md)
		}
		main["virtual_mailbox_domains"] = strings.Join(o.Domains, ", ")
		main["virtual_mailbox_base"] = filepath.Join(p.dir, "mail")
		main["virtual_mailbox_maps"] = "inline:{" + strings.Join(entries, ", ") + "}"
		main["virtual_uid_maps"] = "static:65534"
		main["virtual_gid_maps"] = "static:65534"
	} else {
		h, pt, err := net.SplitHostPort(o.RelayTo)
		if err != nil {
			return fmt.Errorf("RelayTo: %w", err)
		}
		next := "[" + h + "]:" + pt // brackets: no MX lookup
		var entries []string
		for _, d := range o.Domains {
			entries = append(entries, d+"=smtp:"+next)
		}
		main["relay_domains"] = strings.Join(o.Domains, ", ")
		main["relayhost"] = next
		main["transport_maps"] = "inline:{" + strings.Join(entries, ", ") + "}"
		main["queue_run_delay"] = "1s"
		main["minimal_backoff_time"] = "1s"
		main["maximal_backoff_time"] = "5s"
	}
	if o.Policy != "" {
		check := "check_policy_service inet:" + o.Policy
		main["smtpd_recipient_restrictions"] = "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination, " + check
		main["smtpd_end_of_data_restrictions"] = check
		main["smtpd_policy_service_timeout"] = "10s"
		if o.PolicyDefaultAction != "" {
			main["smtpd_policy_service_default_action"] = o.PolicyDefaultAction
		}
	}
	for k, v := range o.Main {
		main[k] = v
	}
	var cf bytes.Buffer
	for _, k := range slices.Sorted(maps.Keys(main)) {
		fmt.Fprintf(&cf, "%s = %s\n", k, main[k])
	}
	if err := os.WriteFile(filepath.Join(p.dir, "etc", "main.cf"), cf.Bytes(), 0o644); err != nil {
		return err
	}
	// Debian's master.cf services, but chroot=n (a chroot would need a copy
	// of /etc files inside the queue dir) and smtpd on our own port.
	master := "127.0.0.1:" + port + " inet n - n - - smtpd\n" + `pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
local      unix  - n n -     - local
virtual    unix  - n n -     - virtual
lmtp       unix  - - n -     - lmtp
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
tlsmgr     unix  - - n 1000? 1 tlsmgr
postlog    unix-dgram n - n - 1 postlogd
`
	return os.WriteFile(filepath.Join(p.dir, "etc", "master.cf"), []byte(master), 0o644)
}

// Start starts Postfix (again, after Stop) on the same port and waits until
// it greets with 220.
func (p *Postfix) Start() {
	p.t.Helper()
	if p.cmd != nil {
		p.t.Fatalf("postfix %s: already running", p.addr)
	}
	bin, err := postfixBin("postfix")
	if err != nil {
		p.t.Fatalf("postfix: %v", err)
	}
	out, err := os.OpenFile(filepath.Join(p.dir, "postfix.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatalf("postfix: %v", err)
	}
	defer out.Close()
	// start-fg keeps master a descendant of this process, so it is reaped
	// here; a daemonized master would be reparented to PID 1, which in a
	// container may never reap it.
	cmd := exec.Command(bin, "-c", filepath.Join(p.dir, "etc"), "start-fg")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("postfix: start: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	p.cmd, p.exited = cmd, exited

	// Postfix starts asynchronously in another process tree; the only
	// readiness signal it offers is its port answering, so poll for the
	// 220 greeting (bounded) instead of sleeping a fixed time.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := greets(p.addr); err == nil {
			break
		} else if time.Now().After(deadline) {
			p.t.Fatalf("postfix %s: no 220 greeting after 30s: %v\n%s\n%s", p.addr, err, p.output(), tail(p.Log(), 30))
		}
		select {
		case <-exited:
			p.t.Fatalf("postfix %s: exited during startup\n%s\n%s", p.addr, p.output(), tail(p.Log(), 30))
		case <-time.After(20 * time.Millisecond):
		}
	}
	pid, err := os.ReadFile(filepath.Join(p.dir, "spool", "pid", "master.pid"))
	if err != nil {
		p.t.Fatalf("postfix: %v", err)
	}
	p.masterPID, err = strconv.Atoi(strings.TrimSpace(string(pid)))
	if err != nil {
		p.t.Fatalf("postfix: master.pid: %v", err)
	}
}

// Stop stops Postfix and waits until every process of it is gone, so the
// port is free and a later Start can bind it again. Mail in the queue stays
// and is delivered after Start.
func (p *Postfix) Stop() {
	p.t.Helper()
	p.stop()
}

func (p *Postfix) stop() {
	if p.cmd == nil {
		return
	}
	// master(8) on SIGTERM signals its whole process group and exits.
	if p.masterPID > 0 {
		_ = syscall.Kill(p.masterPID, syscall.SIGTERM)
	} else {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.t.Logf("postfix %s: master did not exit on SIGTERM, killing", p.addr)
	}
	// Children (smtpd, qmgr, ...) may outlive master briefly and still hold
	// the listening socket; master is their group leader (it calls setsid).
	for _, g := range []int{p.masterPID, p.cmd.Process.Pid} {
		if g > 0 && !waitGroupGone(g, 5*time.Second) {
			p.t.Logf("postfix %s: process group %d still alive, SIGKILL", p.addr, g)
			_ = syscall.Kill(-g, syscall.SIGKILL)
			waitGroupGone(g, 5*time.Second)
		}
	}
	<-p.exited
	p.cmd, p.exited, p.masterPID = nil, nil, 0
	// Like "postfix quick-stop": the next start skips the integrity checks
	// again (see makeQueueDirs).
	_ = touch(filepath.Join(p.dir, "spool", "quick-start"))
}

// Addr is "127.0.0.1:PORT" of the smtpd listener; it stays the same across
// Stop and Start.
func (p *Postfix) Addr() string { return p.addr }

// Dir is the instance's temp dir (etc/, spool/, mail/, maillog).
func (p *Postfix) Dir() string { return p.dir }

// Maildir lists the delivered message files of a mailbox (full address, or
// a local part of the first domain), from both new/ and cur/, sorted.
func (p *Postfix) Maildir(user string) []string {
	p.t.Helper()
	addr := strings.ToLower(user)
	if !strings.Contains(addr, "@") {
		addr += "@" + p.domains[0]
	}
	md, ok := p.mailboxes[addr]
	if !ok {
		p.t.Fatalf("postfix: %s is not a mailbox of this instance", user)
	}
	var files []string
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(p.dir, "mail", md, sub))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			p.t.Fatalf("postfix: %v", err)
		}
		for _, e := range ents {
			files = append(files, filepath.Join(p.dir, "mail", md, sub, e.Name()))
		}
	}
	slices.Sort(files)
	return files
}

// WaitDelivered waits until user's maildir holds at least n messages.
// Postfix delivers asynchronously (queue manager, then the virtual agent in
// another process) and offers no notification, so this polls the maildir
// every 20 ms, bounded by timeout; on timeout it fails with the maillog.
func (p *Postfix) WaitDelivered(t testing.TB, user string, n int, timeout time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		files := p.Maildir(user)
		if len(files) >= n {
			return files
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfix: %s has %d messages after %v, want %d\n%s", user, len(files), timeout, n, tail(p.Log(), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log returns the instance's maillog.
func (p *Postfix) Log() string {
	b, err := os.ReadFile(filepath.Join(p.dir, "maillog"))
	if err != nil {
		return fmt.Sprintf("(no maillog: %v)", err)
	}
	return string(b)
}

func (p *Postfix) output() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "postfix.out"))
	return string(b)
}

// postfixBin finds a Postfix program; /usr/sbin is often not in a
// non-root PATH.
func postfixBin(name string) (string, error) {
	if path, err := exec.LookPath(name); err == nil {
		return path, nil
	}
	path := filepath.Join("/usr/sbin", name)
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%s not found: %w", name, err)
	}
	return path, nil
}

// makeQueueDirs creates what "post-install create-missing" would (owners
// and modes from Postfix's postfix-files) plus data_directory, and marks the
// queue for a quick start. postfix-script's start-up checks spend 3-4 s
// running postconf and find, on every test; the directories are all it
// would create here.
func makeQueueDirs(dir string) error {
	pf, err := user.Lookup("postfix")
	if err != nil {
		return fmt.Errorf("%w (is postfix installed?)", err)
	}
	postdrop, err := user.LookupGroup("postdrop")
	if err != nil {
		return fmt.Errorf("%w (is postfix installed?)", err)
	}
	uid, err1 := strconv.Atoi(pf.Uid)
	gid, err2 := strconv.Atoi(postdrop.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return err
	}
	dirs := []struct {
		name     string
		uid, gid int
		mode     os.FileMode
	}{
		{"spool/pid", 0, 0, 0o755},
		{"spool/maildrop", uid, gid, 0o730},
		{"spool/public", uid, gid, 0o710},
		// data_directory must be owned by mail_owner, or master refuses to start.
		{"data", uid, 0, 0o700},
	}
	for _, q := range []string{"active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved", "trace"} {
		dirs = append(dirs, struct {
			name     string
			uid, gid int
			mode     os.FileMode
		}{"spool/" + q, uid, 0, 0o700})
	}
	for _, d := range dirs {
		path := filepath.Join(dir, d.name)
		if err := os.Mkdir(path, d.mode); err != nil {
			return err
		}
		// Chmod after Mkdir: the umask would drop group bits of 0730/0710.
		if err := os.Chmod(path, d.mode); err != nil {
			return err
		}
		if err := os.Chown(path, d.uid, d.gid); err != nil {
			return err
		}
	}
	return touch(filepath.Join(dir, "spool", "quick-start"))
}

func touch(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// greets reports whether addr answers with a 220 greeting.
func greets(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(buf[:n], []byte("220")) {
		return fmt.Errorf("greeting %q", buf[:n])
	}
	_, _ = c.Write([]byte("QUIT\r\n"))
	return nil
}

// waitGroupGone waits until no live (non-zombie) process is left in process
// group pgid. Zombies are ignored: they hold no sockets, and in a container
// PID 1 may never reap them.
func waitGroupGone(pgid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for groupAlive(pgid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func groupAlive(pgid int) bool {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may contain
		// spaces and parentheses, so split after the last ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) >= 3 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
