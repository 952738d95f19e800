package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"mxguard/internal/batv"
	"mxguard/internal/checks/attach"
	"mxguard/internal/checks/dnsbl"
	"mxguard/internal/users"
)

// Default returns what an empty file gives before validation: every
// default of INTERFACE.md §2. Domains and Delivery.Servers have no default
// and Hostname is the machine's name.
func Default() *Config {
	host, _ := os.Hostname() // an unknown name is reported by validation
	return &Config{
		Hostname: host,
		Cluster:  Cluster{Node: host},
		Listen:   Listen{SMTP: "127.0.0.1:2525", Admin: "127.0.0.1:8025"},
		DataDir:  "./var",
		TrustedNetworks: []netip.Prefix{
			netip.MustParsePrefix("127.0.0.0/8"),
			netip.MustParsePrefix("::1/128"),
		},
		IPv6Prefix: 64,
		Delivery:   Delivery{CheckInterval: 5 * time.Second, DownAfter: 3, TLS: "may"},
		Spool:      Spool{Delay: 5 * time.Minute, MaxSize: 10 * GiB, UnspoolRate: 50, AutoUnspool: true},
		Storage:    Storage{Driver: "sqlite", Retention: 90 * 24 * time.Hour},
		Limits: Limits{
			MaxConnections:          2000,
			MaxConnectionsPerSource: 20,
			MaxMessageSize:          50 * MiB,
			MaxRecipients:           100,
		},
		Timeouts: Timeouts{Greeting: 30 * time.Second, Command: 5 * time.Minute, Data: 10 * time.Minute},
		DNSBL:    DNSBL{Threshold: 1},
		Content: Content{
			BlockedAttachments: slices.Clone(attach.Default),
			Timeout:            20 * time.Second,
			MaxConcurrency:     8,
			OnFailure:          "tempfail",
		},
		Recipients: Recipients{CacheTTL: 24 * time.Hour, DuringOutage: "accept"},
		Alerts:     Alerts{MaxPerMinute: 20},
	}
}

// check validates the decoded configuration, normalizes values (lower
// case names, resolved file paths) and fills defaults that depend on other
// keys.
func (l *loader) check(c *Config) {
	l.checkNames(c)
	l.checkListen(c)
	l.checkAdmin(c)
	l.checkDelivery(c)
	l.checkStores(c)
	l.checkLimits(c)
	l.checkContent(c)
	l.checkRecipients(c)
	l.checkFiles(c)
	l.checkAlerts(c)
	l.checkRules(c)
}

// checkNode defaults cluster.node to hostname when the machine's name is
// unknown, and keeps it a short printable token: it is shown in every
// event, the console and the cluster API.
func (l *loader) checkNode(c *Config) {
	if c.Cluster.Node == "" && !l.has("cluster.node") {
		c.Cluster.Node = strings.TrimSuffix(c.Hostname, ".")
	}
	n := c.Cluster.Node
	switch {
	case n == "":
		l.errAt("cluster.node", "a short name of this node, e.g. mx1", "must not be empty")
	case len(n) > 64 || strings.IndexFunc(n, func(r rune) bool { return r <= ' ' || r >= 0x7f }) >= 0:
		l.errAt("cluster.node", "letters, digits, dots and dashes, at most 64 of them, e.g. mx1", "%q is not a usable node name", n)
	}
}

func (l *loader) checkNames(c *Config) {
	switch {
	case c.Hostname == "" && !l.has("hostname"):
		l.errAt("hostname", "the machine's name is unknown; set hostname", "required")
	case c.Hostname == "":
		l.errAt("hostname", "the name this gateway gives in its SMTP greeting", "must not be empty")
	case !validDomain(strings.ToLower(strings.TrimSuffix(c.Hostname, "."))):
		l.errAt("hostname", domainHint(c.Hostname), "%q is not a valid host name", c.Hostname)
	}
	l.checkNode(c)
	if len(c.Domains) == 0 {
		l.errAt("domains", "the recipient domains this gateway accepts mail for, e.g. [example.test]", "required")
	}
	l.domainList("domains", c.Domains)
	l.checkDNSBL(c)
	if c.DNSBL.Resolver != "" {
		l.hostPort("dnsbl.resolver", c.DNSBL.Resolver, dialAddr)
	}
	// End sites get a /48 to /64 (RFC 6177), the granularity of one
	// attacker; below /32 a single event would block whole providers.
	if c.IPv6Prefix < 32 || c.IPv6Prefix > 128 {
		l.errAt("ipv6_prefix", "64 groups one customer site, 48 one organisation", "must be between 32 and 128, got %d", c.IPv6Prefix)
	}
}

// checkDNSBL validates the zones with the dnsbl check's own parser
// (postscreen syntax) and the threshold.
func (l *loader) checkDNSBL(c *Config) {
	seen := map[string]string{}
	for i, z := range c.DNSBL.Zones {
		p := fmt.Sprintf("dnsbl.zones[%d]", i)
		e, err := dnsbl.ParseEntry(z)
		if err != nil {
			l.errAt(p, "zone, zone*weight or zone=127.0.0.[2..11]*weight (postscreen syntax); a negative weight allowlists", "%v", err)
			continue
		}
		key := strings.ToLower(strings.TrimSpace(z))
		if first, dup := seen[key]; dup {
			l.errAt(p, fmt.Sprintf("first given at line %d", l.line(first)), "%s is listed twice", e.Spec)
			continue
		}
		seen[key] = p
	}
	if c.DNSBL.Threshold < 1 {
		l.errAt("dnsbl.threshold", "the summed weight that refuses a client, e.g. 1; allowlist zones have negative weights", "must be at least 1, got %d", c.DNSBL.Threshold)
	}
}

// domainList lower-cases the names in place and reports invalid and
// repeated ones.
func (l *loader) domainList(path string, names []string) {
	seen := map[string]string{}
	for i, d := range names {
		p := fmt.Sprintf("%s[%d]", path, i)
		d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		names[i] = d
		if !validDomain(d) {
			l.errAt(p, domainHint(d), "%q is not a domain name", d)
			continue
		}
		if first, dup := seen[d]; dup {
			l.errAt(p, fmt.Sprintf("first given at line %d", l.line(first)), "%s is listed twice", d)
			continue
		}
		seen[d] = p
	}
}

// validDomain checks the LDH syntax of RFC 1035 §2.3.1 (with RFC 1123
// §2.1's leading digits); single labels are allowed for test setups.
func validDomain(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
				return false
			}
		}
	}
	return true
}

func domainHint(s string) string {
	for _, r := range s {
		if r > unicode.MaxASCII {
			return "write internationalized names in their xn-- form"
		}
	}
	return "letters, digits and hyphens, labels separated by dots"
}

// addrUse tells hostPort whether an address is listened on (empty host
// and port 0 allowed) or dialled.
type addrUse int

const (
	listenAddr addrUse = iota
	dialAddr
)

// hostPort checks a host:port address and reports whether it is one.
func (l *loader) hostPort(path, s string, use addrUse) bool {
	const hint = "host:port, e.g. 127.0.0.1:2525 or [::1]:2525"
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		l.errAt(path, hint, "%q is not host:port", s)
		return false
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (n == 0 && use == dialAddr) {
		l.errAt(path, "a port number from 1 to 65535", "%q has a bad port", s)
		return false
	}
	if host == "" {
		if use == dialAddr {
			l.errAt(path, hint, "%q has no host", s)
			return false
		}
		return true
	}
	if _, err := netip.ParseAddr(host); err != nil && !validDomain(strings.ToLower(host)) {
		l.errAt(path, hint, "%q is not a host name or IP address", host)
		return false
	}
	return true
}

func (l *loader) checkListen(c *Config) {
	if c.Listen.SMTP == "" {
		l.errAt("listen.smtp", "the inbound MX listener cannot be turned off", "required")
	}
	seen := map[string]string{}
	for _, ln := range []struct{ key, addr string }{
		{"smtp", c.Listen.SMTP},
		{"submission", c.Listen.Submission},
		{"admin", c.Listen.Admin},
		{"policy", c.Listen.Policy},
		{"auth_policy", c.Listen.AuthPolicy},
	} {
		path := "listen." + ln.key
		if ln.addr == "" || !l.hostPort(path, ln.addr, listenAddr) {
			continue
		}
		if strings.HasSuffix(ln.addr, ":0") {
			continue // each gets its own free port
		}
		if other, dup := seen[ln.addr]; dup {
			l.errAt(path, "give each listener its own port", "%s is also %s", ln.addr, other)
			continue
		}
		seen[ln.addr] = path
	}
}

// tokenHint says how to make a good admin token.
const tokenHint = "generate one with: openssl rand -hex 32"

// sampleTokens are placeholders from documentation and examples (compared
// lower case, letters and digits only): a gateway started with one of
// them would be open to anyone who read the same page.
var sampleTokens = []string{
	"changeme", "replaceme", "secret", "token", "password", "admin", "example",
	"mxguard", "yourtoken", "yourtokenhere",
}

func (l *loader) checkAdmin(c *Config) {
	a := &c.Admin
	if a.Token != "" && a.TokenFile != "" {
		l.errAt("admin.token_file", "give either token or token_file", "admin.token is set too")
		return
	}
	if a.TokenFile != "" {
		data, err := l.readLocal("admin.token_file", &a.TokenFile, 64<<10)
		if err != nil {
			return
		}
		a.Token = strings.TrimSpace(string(data))
		if a.Token == "" {
			l.errAt("admin.token_file", tokenHint+" > "+a.TokenFile, "%s is empty", a.TokenFile)
			return
		}
	}
	if a.Token == "" {
		if c.Listen.Admin != "" {
			// INTERFACE.md §2: required, on loopback too (any local user
			// or a browser tricked into a request can reach loopback).
			// Said where the operator will look: the admin section, or
			// the listener that needs it.
			line := l.line("admin.token")
			if !l.has("admin") && l.has("listen.admin") {
				line = l.line("listen.admin")
			}
			l.report(line, "admin.token", tokenHint+`, or turn the console and API off with listen.admin: ""`,
				fmt.Sprintf("required: the console and API on %s need admin.token or admin.token_file", c.Listen.Admin))
		}
		return
	}
	if strings.ContainsFunc(a.Token, unicode.IsSpace) {
		l.errAt(adminTokenKey(a), "it is sent as an HTTP Bearer token", "the token contains white space")
		return
	}
	if msg := weakToken(a.Token); msg != "" {
		l.errAt(adminTokenKey(a), tokenHint, "%s", msg)
	}
}

// weakToken says why token must not guard the admin listener: it is a
// sample from documentation; "" when it will do.
func weakToken(token string) string {
	norm := strings.Map(func(r rune) rune {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			return unicode.ToLower(r)
		}
		return -1
	}, token)
	// "change-me", "CHANGE_ME", "please-change-me". Only placeholders
	// are refused (INTERFACE.md §2): length and randomness are the
	// operator's choice, and login throttling limits online guessing.
	if strings.Contains(norm, "changeme") || strings.Contains(norm, "replaceme") || slices.Contains(sampleTokens, norm) {
		return fmt.Sprintf("%q is a sample token from documentation, not a secret", token)
	}
	return ""
}

func adminTokenKey(a *Admin) string {
	if a.TokenFile != "" {
		return "admin.token_file"
	}
	return "admin.token"
}

func (l *loader) checkDelivery(c *Config) {
	d := &c.Delivery
	if len(d.Servers) == 0 {
		l.errAt("delivery.servers", "e.g. [{address: 127.0.0.1:2526, role: primary}]", "at least one downstream server is required")
	}
	primaries, broken := 0, false
	seen := map[string]string{}
	for i := range d.Servers {
		s := &d.Servers[i]
		p := fmt.Sprintf("delivery.servers[%d]", i)
		if l.failed[p] {
			broken = true // not a mapping; already reported
			continue
		}
		switch {
		case s.Address == "":
			l.errAt(p+".address", "the downstream's host:port", "required")
		case !l.hostPort(p+".address", s.Address, dialAddr):
		default:
			if first, dup := seen[s.Address]; dup {
				l.errAt(p+".address", fmt.Sprintf("first given at line %d", l.line(first)), "%s is listed twice", s.Address)
			}
			seen[s.Address] = p + ".address"
		}
		if !l.has(p + ".role") {
			s.Role = "primary"
		}
		s.Role = strings.ToLower(s.Role)
		switch s.Role {
		case "primary":
			primaries++
		case "failover":
		default:
			l.errAt(p+".role", "primary or failover", "unknown role %q", s.Role)
			broken = true
		}
	}
	if len(d.Servers) > 0 && primaries == 0 && !broken {
		l.errAt("delivery.servers", "mail goes to a failover only while every primary is down; mark one role: primary", "no primary server")
	}
	positive(l, "delivery.check_interval", d.CheckInterval)
	positive(l, "delivery.down_after", d.DownAfter)
	d.TLS = strings.ToLower(d.TLS)
	switch d.TLS {
	case "none", "may", "require":
	default:
		l.errAt("delivery.tls", "none, may or require", "unknown value %q", d.TLS)
	}
}

// positive reports a value that must be greater than zero.
func positive[T int | int64 | time.Duration | Size](l *loader, path string, v T) {
	if v <= 0 {
		l.errAt(path, "", "must be greater than zero, got %v", v)
	}
}

func (l *loader) checkStores(c *Config) {
	if c.DataDir == "" {
		l.errAt("data_dir", "the spool, events database and state live here", "must not be empty")
	}
	if c.Spool.Delay < 0 {
		l.errAt("spool.delay", "0 spools as soon as every server is down", "must not be negative")
	}
	positive(l, "spool.max_size", c.Spool.MaxSize)
	positive(l, "spool.unspool_rate", c.Spool.UnspoolRate)

	s := &c.Storage
	s.Driver = strings.ToLower(s.Driver)
	switch {
	case l.refuseValue("storage.driver", s.Driver):
	case s.Driver == "sqlite":
		if s.DSN != "" {
			l.errAt("storage.dsn", "the sqlite database is a file in data_dir; dsn is for driver: postgres", "not used with driver sqlite")
		}
	case s.Driver == "postgres":
		if s.DSN == "" {
			l.errAt("storage.dsn", "e.g. postgres://mxguard@localhost/mxguard", "required with driver postgres")
		}
	default:
		l.errAt("storage.driver", "sqlite or postgres", "unknown driver %q", s.Driver)
	}
	if s.Retention < 0 {
		l.errAt("storage.retention", "0 keeps every event", "must not be negative")
	}
	if r := c.Cluster.Redis; r != "" {
		u, err := url.Parse(r)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			if err == nil {
				r = u.Redacted() // the password stays out of the error
			}
			l.errAt("cluster.redis", "redis://host:port/db", "%q is not a redis:// URL", r)
		}
	}
}

func (l *loader) checkLimits(c *Config) {
	positive(l, "limits.max_connections", c.Limits.MaxConnections)
	positive(l, "limits.max_connections_per_source", c.Limits.MaxConnectionsPerSource)
	positive(l, "limits.max_message_size", c.Limits.MaxMessageSize)
	positive(l, "limits.max_recipients", c.Limits.MaxRecipients)
	positive(l, "timeouts.greeting", c.Timeouts.Greeting)
	positive(l, "timeouts.command", c.Timeouts.Command)
	positive(l, "timeouts.data", c.Timeouts.Data)
}

func (l *loader) checkContent(c *Config) {
	ct := &c.Content
	if ct.Rspamd != "" {
		l.httpURL("content.rspamd", ct.Rspamd)
	}
	if ct.Spamd != "" {
		l.hostPort("content.spamd", ct.Spamd, dialAddr)
	}
	if ct.Clamd != "" {
		const hint = "tcp://127.0.0.1:3310 or unix:/run/clamav/clamd.ctl"
		if hp, ok := strings.CutPrefix(ct.Clamd, "tcp://"); ok {
			if _, _, err := net.SplitHostPort(hp); err != nil {
				l.errAt("content.clamd", hint, "%q is not tcp://host:port", ct.Clamd)
			} else {
				l.hostPort("content.clamd", hp, dialAddr)
			}
		} else if p, ok := strings.CutPrefix(ct.Clamd, "unix:"); !ok {
			l.errAt("content.clamd", hint, "%q is neither tcp:// nor unix:", ct.Clamd)
		} else if p = strings.TrimPrefix(p, "//"); !strings.HasPrefix(p, "/") || strings.TrimLeft(p, "/") == "" {
			// The socket is clamd's, not a file of ours: an absolute
			// path, as internal/checks/clamd requires.
			l.errAt("content.clamd", hint, "%q: the socket path must be absolute", ct.Clamd)
		}
	}
	// Extensions are compared with a file name's suffix, so ".EXE" and
	// "exe" must be the same entry; an entry with a slash is a MIME type.
	out := ct.BlockedAttachments[:0]
	seen := map[string]bool{}
	for i, ext := range ct.BlockedAttachments {
		ext = strings.ToLower(strings.TrimPrefix(strings.TrimSpace(ext), "."))
		typ, sub, isType := strings.Cut(ext, "/")
		if isType && (!mimeToken(typ) || !mimeToken(sub)) || !isType && (ext == "" || strings.ContainsAny(ext, ".\\ \t")) {
			l.errAt(fmt.Sprintf("content.blocked_attachments[%d]", i), "a file extension such as exe, or a MIME type such as application/x-msdownload", "%q is not a file extension or MIME type", ext)
			continue
		}
		if !seen[ext] {
			seen[ext] = true
			out = append(out, ext)
		}
	}
	ct.BlockedAttachments = out
	if ct.Timeout <= 0 {
		l.errAt("content.timeout", "per scanner call, e.g. 20s", "must be positive")
	}
	if ct.MaxConcurrency < 1 || ct.MaxConcurrency > 10000 {
		l.errAt("content.max_concurrency", "scans in flight per scanner, e.g. 8", "must be between 1 and 10000, got %d", ct.MaxConcurrency)
	}
	switch ct.OnFailure {
	case "tempfail", "accept":
	default:
		l.errAt("content.on_failure", "tempfail (451 4.3.0) or accept (pass with X-Mxguard-Scan: failed)", "%q is neither tempfail nor accept", ct.OnFailure)
	}
}

// mimeToken checks a MIME type or subtype (RFC 2045 §5.1 token).
func mimeToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c <= ' ' || c >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?=`, c) {
			return false
		}
	}
	return true
}

// httpURL checks an http or https URL with a host.
func (l *loader) httpURL(path, s string) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		l.errAt(path, "e.g. http://127.0.0.1:11333", "%q is not an http(s) URL", s)
	}
}

// checkFiles resolves the file names of the auth, batv and tls sections
// and checks that they can be read, so a typo shows in check-config rather
// than at the first login.
func (l *loader) checkFiles(c *Config) {
	if c.Auth.UsersFile != "" {
		// The file is parsed here, so a bad line shows in check-config
		// (and a reload with it is refused) rather than at the first login.
		if data, err := l.readLocal("auth.users_file", &c.Auth.UsersFile, 16<<20); err == nil {
			if _, err := users.Parse(c.Auth.UsersFile, data); err != nil {
				l.errAt("auth.users_file", "fix the lines named, or rewrite them with mxguard users add", "%s", strings.ReplaceAll(err.Error(), "\n", "; "))
			}
		}
	}
	switch {
	case c.Listen.Submission != "" && c.Auth.UsersFile == "" && !c.Auth.Downstream:
		l.errAt("listen.submission", "set auth.users_file or auth.downstream: true", "submission requires AUTH but no way to check it is configured")
	case c.Auth.UsersFile != "" && c.Auth.Downstream:
		l.errAt("auth.downstream", "logins are checked against auth.users_file or by the delivery servers, not both", "cannot be used with auth.users_file")
	case c.Listen.Submission == "" && (c.Auth.UsersFile != "" || c.Auth.Downstream):
		path := "auth.users_file"
		if c.Auth.Downstream {
			path = "auth.downstream"
		}
		l.errAt(path, "set listen.submission, the listener whose logins it checks", "has no effect without listen.submission")
	}
	if c.BATV.KeyFile != "" {
		if data, err := l.readLocal("batv.key_file", &c.BATV.KeyFile, 1<<20); err == nil {
			if n := len(bytes.TrimSpace(data)); n < batv.MinKey {
				l.errAt("batv.key_file", "openssl rand -hex 32 > "+c.BATV.KeyFile, "the key is %d bytes, at least %d", n, batv.MinKey)
			}
		}
	}
	t := &c.TLS
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		l.errAt("tls.key_file", "give both cert_file and key_file, or neither for a self-signed certificate", "required with tls.cert_file")
	case t.CertFile == "" && t.KeyFile != "":
		l.errAt("tls.cert_file", "give both cert_file and key_file, or neither for a self-signed certificate", "required with tls.key_file")
	case t.CertFile != "":
		l.checkLocal("tls.cert_file", &t.CertFile)
		l.checkLocal("tls.key_file", &t.KeyFile)
	}
}

// checkLocal resolves a file name in place and checks it can be opened.
func (l *loader) checkLocal(path string, name *string) {
	_, _ = l.readLocal(path, name, 0)
}

// readLocal resolves *name against the config file's directory, stores
// the result back, and reads at most limit bytes of it. Only regular
// files are opened: a FIFO or device given by mistake must not hang or
// flood check-config.
func (l *loader) readLocal(path string, name *string, limit int64) ([]byte, error) {
	const hint = "relative names start at the config file's directory"
	if !filepath.IsAbs(*name) {
		*name = filepath.Join(l.dir, *name)
	}
	fi, err := os.Stat(*name)
	if err == nil && !fi.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	var data []byte
	if err == nil {
		var f *os.File
		if f, err = os.Open(*name); err == nil {
			data, err = io.ReadAll(io.LimitReader(f, limit))
			f.Close()
		}
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		l.errAt(path, hint, "cannot read %s: %v", *name, err)
	}
	return data, err
}

func (l *loader) checkAlerts(c *Config) {
	e := &c.Alerts.Email
	for i, to := range e.To {
		if _, err := mail.ParseAddress(to); err != nil {
			l.errAt(fmt.Sprintf("alerts.email.to[%d]", i), "e.g. postmaster@example.test", "%q is not a mail address", to)
		}
	}
	if e.From != "" {
		if _, err := mail.ParseAddress(e.From); err != nil {
			l.errAt("alerts.email.from", "e.g. mxguard@example.test", "%q is not a mail address", e.From)
		}
	}
	if len(e.To) > 0 {
		if e.From == "" && c.Hostname != "" {
			e.From = "mxguard@" + strings.TrimSuffix(c.Hostname, ".")
		}
		if e.Server == "" {
			l.errAt("alerts.email.server", "the host:port of an SMTP server that relays the alerts", "required when alerts.email.to is set")
		} else {
			l.hostPort("alerts.email.server", e.Server, dialAddr)
		}
	}
	if len(e.To) == 0 {
		// Configured but unused: the operator expects mail that never comes.
		for _, k := range []string{"alerts.email.from", "alerts.email.server"} {
			if l.has(k) {
				l.errAt(k, "add alerts.email.to, or remove it", "has no effect without alerts.email.to")
			}
		}
	}
	if c.Alerts.Webhook.URL != "" {
		l.httpURL("alerts.webhook.url", c.Alerts.Webhook.URL)
	} else if l.has("alerts.webhook.secret") {
		l.errAt("alerts.webhook.secret", "add alerts.webhook.url, or remove it", "has no effect without alerts.webhook.url")
	}
	if c.Alerts.MinImpact < 0 {
		l.errAt("alerts.min_impact", "0 alerts on every event", "must not be negative")
	}
	positive(l, "alerts.max_per_minute", c.Alerts.MaxPerMinute)
}
