package config

import (
	"encoding/json"
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"mxguard/internal/ruletype"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// minimal is the smallest valid file: the two keys without a default and
// the admin token (required while listen.admin is on, as it is by default).
const minimal = `domains: [example.test]
admin: {token: ` + testToken + `}
delivery: {servers: [{address: 127.0.0.1:2526}]}
`

const testToken = "config-test-4c1f9a2e7b"

// withToken ends yaml with an admin token unless it has an admin section
// of its own: the tables below are about other keys, and appending keeps
// their line numbers.
func withToken(yaml string) string {
	if strings.HasPrefix(yaml, "admin:") || strings.Contains(yaml, "\nadmin:") {
		return yaml
	}
	return yaml + "\nadmin: {token: " + testToken + "}\n"
}

func mustParse(t *testing.T, yaml string) *Config {
	t.Helper()
	c, err := Parse("t.yaml", []byte(withToken(yaml)))
	if err != nil {
		t.Fatalf("Parse:\n%v", err)
	}
	return c
}

// errorLines parses yaml and returns its errors as check-config prints them.
func errorLines(t *testing.T, yaml string) []string {
	t.Helper()
	c, err := Parse("t.yaml", []byte(withToken(yaml)))
	if err == nil {
		t.Fatalf("Parse accepted:\n%s", yaml)
	}
	if c != nil {
		t.Errorf("Parse returned a config with an error")
	}
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("error is %T, want Errors", err)
	}
	return strings.Split(es.Error(), "\n")
}

func TestDefaults(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name on this machine")
	}
	got := mustParse(t, minimal)
	want := &Config{
		Hostname:        host,
		Domains:         []string{"example.test"},
		Listen:          Listen{SMTP: "127.0.0.1:2525", Admin: "127.0.0.1:8025"},
		Admin:           Admin{Token: testToken},
		DataDir:         "./var",
		TrustedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		IPv6Prefix:      64,
		Delivery: Delivery{
			Servers:       []Server{{Address: "127.0.0.1:2526", Role: "primary"}},
			CheckInterval: 5 * time.Second,
			DownAfter:     3,
			TLS:           "may",
		},
		Spool:    Spool{Delay: 5 * time.Minute, MaxSize: 10 << 30, UnspoolRate: 50, AutoUnspool: true},
		Storage:  Storage{Driver: "sqlite", Retention: 90 * 24 * time.Hour},
		Cluster:  Cluster{Node: host},
		Limits:   Limits{MaxConnections: 2000, MaxConnectionsPerSource: 20, MaxMessageSize: 50 << 20, MaxRecipients: 100},
		Timeouts: Timeouts{Greeting: 30 * time.Second, Command: 5 * time.Minute, Data: 10 * time.Minute},
		DNSBL:    DNSBL{Threshold: 1},
		Content: Content{BlockedAttachments: []string{"exe", "scr", "pif", "com", "bat", "cmd", "vbs", "js", "jar", "msi"},
			Timeout: 20 * time.Second, MaxConcurrency: 8, OnFailure: "tempfail"},
		Recipients: Recipients{CacheTTL: 24 * time.Hour, DuringOutage: "accept"},
		Alerts:     Alerts{MaxPerMinute: 20},
		File:       "t.yaml",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}
	if got.Rules != nil {
		t.Errorf("Rules = %v, want nil when the key is absent", got.Rules)
	}
}

// TestClusterNode: cluster.node names the node in events; hostname when
// absent, a short printable token when given.
func TestClusterNode(t *testing.T) {
	if c := mustParse(t, minimal+"hostname: mx7.example.test\n"); c.Cluster.Node == "" {
		t.Errorf("cluster.node default is empty")
	}
	if c := mustParse(t, minimal+"cluster: {node: mx1}\n"); c.Cluster.Node != "mx1" {
		t.Errorf("cluster.node = %q, want mx1", c.Cluster.Node)
	}
	for _, bad := range []string{`""`, `"mx 1"`, `"` + strings.Repeat("n", 65) + `"`} {
		got := errorLines(t, minimal+"cluster: {node: "+bad+"}\n")
		if len(got) != 1 || !strings.Contains(got[0], "t.yaml:4: cluster.node:") {
			t.Errorf("node %s: errors %q", bad, got)
		}
	}
}

// TestExplicitEmpty checks that a key given as [] or false is kept and not
// replaced by its default.
func TestExplicitEmpty(t *testing.T) {
	c := mustParse(t, minimal+`trusted_networks: []
spool: {auto_unspool: false, delay: 0}
listen: {admin: ""}
rules: []
`)
	if c.TrustedNetworks == nil || len(c.TrustedNetworks) != 0 {
		t.Errorf("TrustedNetworks = %#v, want empty", c.TrustedNetworks)
	}
	if c.Spool.AutoUnspool || c.Spool.Delay != 0 {
		t.Errorf("Spool = %+v, want auto_unspool false and delay 0", c.Spool)
	}
	if c.Listen.Admin != "" {
		t.Errorf("Listen.Admin = %q, want off", c.Listen.Admin)
	}
	if c.Rules == nil || len(c.Rules) != 0 || len(c.EffectiveRules()) != 0 {
		t.Errorf("rules: [] gave Rules %#v, EffectiveRules %v; want none", c.Rules, c.EffectiveRules())
	}
}

func TestNormalization(t *testing.T) {
	c := mustParse(t, `hostname: MX.Example.TEST
domains: [Example.TEST., example.org]
trusted_networks: [10.1.2.3/8, 192.0.2.7, "2001:DB8::1", "2001:db8:1:2:3::/64"]
delivery:
  servers:
    - {address: "[::1]:2526", role: PRIMARY}
    - address: 127.0.0.1:2527
      role: failover
`)
	if want := []string{"example.test", "example.org"}; !slices.Equal(c.Domains, want) {
		t.Errorf("Domains = %v, want %v", c.Domains, want)
	}
	wantNets := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::1/128"),
		netip.MustParsePrefix("2001:db8:1:2::/64"),
	}
	if !slices.Equal(c.TrustedNetworks, wantNets) {
		t.Errorf("TrustedNetworks = %v, want %v", c.TrustedNetworks, wantNets)
	}
	if c.Delivery.Servers[0].Role != "primary" || c.Delivery.Servers[1].Role != "failover" {
		t.Errorf("Servers = %+v", c.Delivery.Servers)
	}
}

// TestErrors checks each kind of error with the exact line check-config
// prints. Every case is a whole file so line numbers read directly.
func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"required keys missing", `hostname: mx.example.test
`, []string{
			`t.yaml:1: domains: required (the recipient domains this gateway accepts mail for, e.g. [example.test])`,
			`t.yaml:1: delivery.servers: at least one downstream server is required (e.g. [{address: 127.0.0.1:2526, role: primary}])`,
		}},
		{"empty file", ``, []string{
			`t.yaml:1: domains: required (the recipient domains this gateway accepts mail for, e.g. [example.test])`,
			`t.yaml:1: delivery.servers: at least one downstream server is required (e.g. [{address: 127.0.0.1:2526, role: primary}])`,
		}},
		{"missing servers reported at the delivery key", minimal[:strings.Index(minimal, "delivery")] + `delivery:
  check_interval: 5s
`, []string{
			`t.yaml:3: delivery.servers: at least one downstream server is required (e.g. [{address: 127.0.0.1:2526, role: primary}])`,
		}},
		{"unknown top-level key with a close match", minimal + `domain: [example.org]
`, []string{
			`t.yaml:4: unknown key domain (did you mean "domains"?)`,
		}},
		{"unknown nested keys at their own lines", minimal + `limits:
  max_connections: 10
  max_mesage_size: 1MB
content:
  antivirus: clamd
dnsbl: {treshold: 2}
`, []string{
			`t.yaml:6: unknown key limits.max_mesage_size (did you mean "max_message_size"?)`,
			`t.yaml:8: unknown key content.antivirus (valid: rspamd, spamd, clamd, blocked_attachments, timeout, max_concurrency, on_failure)`,
			`t.yaml:9: unknown key dnsbl.treshold (did you mean "threshold"?)`,
		}},
		{"unknown key in a list item", `domains: [example.test]
delivery:
  servers:
    - address: 127.0.0.1:2526
      weight: 10
`, []string{
			`t.yaml:5: unknown key delivery.servers[0].weight (valid: address, role)`,
		}},
		{"delivery.tls not a known policy", `domains: [example.test]
admin: {token: ` + testToken + `}
delivery:
  servers: [{address: 127.0.0.1:2526}]
  tls: encrypt
`, []string{
			`t.yaml:5: delivery.tls: unknown value "encrypt" (none, may or require)`,
		}},
		{"duplicate key", minimal + `ipv6_prefix: 48
ipv6_prefix: 56
`, []string{
			`t.yaml:5: duplicate key ipv6_prefix (first given at line 4)`,
		}},
		{"wrong types", minimal + `ipv6_prefix: "64"
spool: {auto_unspool: yes please}
domains2: 1
listen: [127.0.0.1:2525]
`, []string{
			`t.yaml:4: ipv6_prefix: expected a whole number, got the string "64"`,
			`t.yaml:5: spool.auto_unspool: expected true or false, got the string "yes please"`,
			`t.yaml:6: unknown key domains2 (did you mean "domains"?)`,
			`t.yaml:7: listen: expected a mapping, got a list`,
		}},
		{"list given as a scalar", `domains: example.test
delivery: {servers: [{address: 127.0.0.1:2526}]}
`, []string{
			`t.yaml:1: domains: expected a list, got the string "example.test"`,
		}},
		{"bad durations", minimal + `timeouts:
  greeting: 30
  command: 5 minutes
  data: -1s
`, []string{
			`t.yaml:5: timeouts.greeting: 30 has no unit (30s, 10m, 1h30m, 7d)`,
			`t.yaml:6: timeouts.command: "5 minutes" is not a duration (30s, 10m, 1h30m, 7d)`,
			`t.yaml:7: timeouts.data: must be greater than zero, got -1s`,
		}},
		{"bad sizes", minimal + `limits: {max_message_size: 10 MB, max_recipients: 0}
spool:
  max_size: 2 GiB
rules:
  - {name: big, type: mailbomb, threshold: 5, min_size: 0.1B}
`, []string{
			`t.yaml:4: limits.max_recipients: must be greater than zero, got 0`,
			`t.yaml:8: rules[0].min_size: "0.1B" is not a whole number of bytes (e.g. 500KB, 10MiB, 2GB or a number of bytes)`,
		}},
		{"unknown size unit", minimal + `spool: {max_size: 10M}
`, []string{
			`t.yaml:4: spool.max_size: "10M" has an unknown unit "M" (e.g. 500KB, 10MiB, 2GB or a number of bytes)`,
		}},
		{"bad addresses and networks", minimal + `trusted_networks: [10.0.0.0/33, "fe80::1%eth0", 300.1.1.1]
blocklist: [example.test, 10.0.0.256, "10.0.0.0/33", bad_name.example, ".", 192.0.2.1]
proxy_protocol: [1]
`, []string{
			`t.yaml:4: trusted_networks[0]: "10.0.0.0/33" is not an IP address or CIDR (an address such as 192.0.2.1 or a network such as 192.0.2.0/24; quote IPv6 like "::1")`,
			`t.yaml:4: trusted_networks[1]: "fe80::1%eth0" is not an IP address or CIDR (an address such as 192.0.2.1 or a network such as 192.0.2.0/24; quote IPv6 like "::1")`,
			`t.yaml:4: trusted_networks[2]: "300.1.1.1" is not an IP address or CIDR (an address such as 192.0.2.1 or a network such as 192.0.2.0/24; quote IPv6 like "::1")`,
			`t.yaml:5: blocklist[1]: "10.0.0.256" is not an IP address, CIDR or host name (an address, a network such as 192.0.2.0/24, or a host name: mail.example.net, or .example.net for its subdomains)`,
			`t.yaml:5: blocklist[2]: "10.0.0.0/33" is not an IP address, CIDR or host name (an address, a network such as 192.0.2.0/24, or a host name: mail.example.net, or .example.net for its subdomains)`,
			`t.yaml:5: blocklist[3]: "bad_name.example" is not an IP address, CIDR or host name (an address, a network such as 192.0.2.0/24, or a host name: mail.example.net, or .example.net for its subdomains)`,
			`t.yaml:5: blocklist[4]: "." is not an IP address, CIDR or host name (an address, a network such as 192.0.2.0/24, or a host name: mail.example.net, or .example.net for its subdomains)`,
			`t.yaml:6: proxy_protocol[0]: "1" is not an IP address or CIDR (an address such as 192.0.2.1 or a network such as 192.0.2.0/24; quote IPv6 like "::1")`,
		}},
		{"servers", `domains: [example.test]
delivery:
  servers:
    - {address: mx1.example.test:25, role: failover}
    - {address: "mx1.example.test:25", role: failover}
    - {role: backup}
    - {address: ":25"}
  down_after: 0
`, []string{
			`t.yaml:5: delivery.servers[1].address: mx1.example.test:25 is listed twice (first given at line 4)`,
			`t.yaml:6: delivery.servers[2].address: required (the downstream's host:port)`,
			`t.yaml:6: delivery.servers[2].role: unknown role "backup" (primary or failover)`,
			`t.yaml:7: delivery.servers[3].address: ":25" has no host (host:port, e.g. 127.0.0.1:2525 or [::1]:2525)`,
			`t.yaml:8: delivery.down_after: must be greater than zero, got 0`,
		}},
		{"list items that are not mappings", `domains: [example.test]
delivery:
  servers: [127.0.0.1:2526]
rules: [dos]
`, []string{
			`t.yaml:3: delivery.servers[0]: expected a mapping, got the string "127.0.0.1:2526"`,
			`t.yaml:4: rules[0]: expected a mapping, got the string "dos"`,
		}},
		{"no primary", `domains: [example.test]
delivery:
  servers: [{address: 127.0.0.1:2526, role: failover}]
`, []string{
			`t.yaml:3: delivery.servers: no primary server (mail goes to a failover only while every primary is down; mark one role: primary)`,
		}},
		{"names", `hostname: ""
domains: [example.test, -bad.test, "bücher.test", example.test]
ipv6_prefix: 129
delivery: {servers: [{address: 127.0.0.1:2526}]}
`, []string{
			`t.yaml:1: hostname: must not be empty (the name this gateway gives in its SMTP greeting)`,
			`t.yaml:2: domains[1]: "-bad.test" is not a domain name (letters, digits and hyphens, labels separated by dots)`,
			`t.yaml:2: domains[2]: "bücher.test" is not a domain name (write internationalized names in their xn-- form)`,
			`t.yaml:2: domains[3]: example.test is listed twice (first given at line 2)`,
			`t.yaml:3: ipv6_prefix: must be between 32 and 128, got 129 (64 groups one customer site, 48 one organisation)`,
		}},
		{"tls needs both files", minimal + `tls: {cert_file: cert.pem}
`, []string{
			`t.yaml:4: tls.key_file: required with tls.cert_file (give both cert_file and key_file, or neither for a self-signed certificate)`,
		}},
		{"syntax error stops at the one real problem", minimal + `listen:
  smtp: [127.0.0.1:2525
`, []string{
			`t.yaml:5: YAML syntax: sequence end token ']' not found`,
		}},
		{"two documents", minimal + `---
domains: [example.org]
`, []string{
			`t.yaml:5: a second YAML document (put the whole configuration in one document)`,
		}},
		{"alias to nothing", minimal + `ipv6_prefix: *nothing
`, []string{
			`t.yaml:4: ipv6_prefix: alias *nothing refers to no anchor`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := errorLines(t, tt.yaml)
			if !slices.Equal(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestNotBuiltValidation keeps the validation of the keys whose feature
// this build lacks working (Parse refuses these keys outright, see
// TestNotBuilt): it applies as soon as the feature's line goes from
// notBuilt.
func TestNotBuiltValidation(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"listeners", minimal + `listen:
  smtp: ""
  submission: 2587
  policy: 127.0.0.1:99999
  auth_policy: 127.0.0.1:8025
auth: {downstream: true}
`, []string{
			`t.yaml:5: listen.smtp: required (the inbound MX listener cannot be turned off)`,
			`t.yaml:6: listen.submission: "2587" is not host:port (host:port, e.g. 127.0.0.1:2525 or [::1]:2525)`,
			`t.yaml:7: listen.policy: "127.0.0.1:99999" has a bad port (a port number from 1 to 65535)`,
			`t.yaml:8: listen.auth_policy: 127.0.0.1:8025 is also listen.admin (give each listener its own port)`,
		}},
		{"submission needs a way to check AUTH", minimal + `listen: {submission: 127.0.0.1:2587}
`, []string{
			`t.yaml:4: listen.submission: submission requires AUTH but no way to check it is configured (set auth.users_file or auth.downstream: true)`,
		}},
		{"stores and services", minimal + `storage: {driver: postgres}
cluster: {redis: "localhost:6379"}
content: {clamd: "tcp://localhost", rspamd: "127.0.0.1:11333", spamd: "localhost:0"}
spool: {delay: -1m, unspool_rate: 0}
data_dir: ""
`, []string{
			`t.yaml:4: storage.dsn: required with driver postgres (e.g. postgres://mxguard@localhost/mxguard)`,
			`t.yaml:5: cluster.redis: "localhost:6379" is not a redis:// URL (redis://host:port/db)`,
			`t.yaml:6: content.rspamd: "127.0.0.1:11333" is not an http(s) URL (e.g. http://127.0.0.1:11333)`,
			`t.yaml:6: content.spamd: "localhost:0" has a bad port (a port number from 1 to 65535)`,
			`t.yaml:6: content.clamd: "tcp://localhost" is not tcp://host:port (tcp://127.0.0.1:3310 or unix:/run/clamav/clamd.ctl)`,
			`t.yaml:7: spool.delay: must not be negative (0 spools as soon as every server is down)`,
			`t.yaml:7: spool.unspool_rate: must be greater than zero, got 0`,
			`t.yaml:8: data_dir: must not be empty (the spool, events database and state live here)`,
		}},
		{"redis URL password not echoed", minimal + `cluster: {redis: "http://mxguard:s3cret@redis.example.org:6379/0"}
`, []string{
			`t.yaml:4: cluster.redis: "http://mxguard:xxxxx@redis.example.org:6379/0" is not a redis:// URL (redis://host:port/db)`,
		}},
		{"clamd socket not absolute", minimal + `content: {clamd: "unix:clamd.ctl"}
`, []string{
			`t.yaml:4: content.clamd: "unix:clamd.ctl": the socket path must be absolute (tcp://127.0.0.1:3310 or unix:/run/clamav/clamd.ctl)`,
		}},
		{"dsn with sqlite", minimal + `storage: {dsn: "host=db"}
`, []string{
			`t.yaml:4: storage.dsn: not used with driver sqlite (the sqlite database is a file in data_dir; dsn is for driver: postgres)`,
		}},
		{"alerts", minimal + `alerts:
  email:
    to: [postmaster@example.test, "not an address"]
  webhook: {url: "hooks.example.test/x"}
  min_impact: -1
`, []string{
			`t.yaml:5: alerts.email.server: required when alerts.email.to is set (the host:port of an SMTP server that relays the alerts)`,
			`t.yaml:6: alerts.email.to[1]: "not an address" is not a mail address (e.g. postmaster@example.test)`,
			`t.yaml:7: alerts.webhook.url: "hooks.example.test/x" is not an http(s) URL (e.g. http://127.0.0.1:11333)`,
			`t.yaml:8: alerts.min_impact: must not be negative (0 alerts on every event)`,
		}},
		{"alerts without a channel", minimal + `alerts:
  email: {from: mxguard@example.test, server: 127.0.0.1:25}
  webhook: {secret: s3cret}
  max_per_minute: 0
`, []string{
			`t.yaml:5: alerts.email.from: has no effect without alerts.email.to (add alerts.email.to, or remove it)`,
			`t.yaml:5: alerts.email.server: has no effect without alerts.email.to (add alerts.email.to, or remove it)`,
			`t.yaml:6: alerts.webhook.secret: has no effect without alerts.webhook.url (add alerts.webhook.url, or remove it)`,
			`t.yaml:7: alerts.max_per_minute: must be greater than zero, got 0`,
		}},
		{"missing files", minimal + `auth: {users_file: /nonexistent/users}
batv: {key_file: /nonexistent/batv.key}
`, []string{
			`t.yaml:4: auth.users_file: cannot read /nonexistent/users: no such file or directory (relative names start at the config file's directory)`,
			`t.yaml:5: batv.key_file: cannot read /nonexistent/batv.key: no such file or directory (relative names start at the config file's directory)`,
		}},
		{"dnsbl", minimal + `dnsbl: {zones: [zen..example], resolver: localhost}
`, []string{
			`t.yaml:4: dnsbl.zones[0]: "zen..example" is not a DNS domain (zone, zone*weight or zone=127.0.0.[2..11]*weight (postscreen syntax); a negative weight allowlists)`,
			`t.yaml:4: dnsbl.resolver: "localhost" is not host:port (host:port, e.g. 127.0.0.1:2525 or [::1]:2525)`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLoader("t.yaml")
			l.pretendBuilt = true
			_, err := l.parse([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.yaml)
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestBlockedAttachments: extensions are normalized (".EXE" and "exe"
// are one entry), MIME types kept, anything else refused.
func TestBlockedAttachments(t *testing.T) {
	l := newLoader("t.yaml")
	c, err := l.parse([]byte(minimal + "content: {blocked_attachments: [.EXE, exe, Js, Application/X-Custom]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"exe", "js", "application/x-custom"}; !slices.Equal(c.Content.BlockedAttachments, want) {
		t.Errorf("BlockedAttachments = %v, want %v", c.Content.BlockedAttachments, want)
	}
	_, err = newLoader("t.yaml").parse([]byte(minimal + "content: {blocked_attachments: [a.b, \"x y\", text/, /x, ok]}\n"))
	if err == nil || strings.Count(err.Error(), "is not a file extension or MIME type") != 4 {
		t.Errorf("bad entries: %v", err)
	}
}

// golden loads file, which must fail, and compares what check-config
// prints for it with the golden file (go test -update rewrites it).
func golden(t *testing.T, file, golden string) string {
	t.Helper()
	_, err := Load(file)
	if err == nil {
		t.Fatal(file + " loaded without error")
	}
	return matchGolden(t, err.Error()+"\n", golden)
}

// matchGolden compares check-config output with the golden file (which
// go test -update rewrites) and returns it.
func matchGolden(t *testing.T, got, golden string) string {
	t.Helper()
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("check-config output differs from %s (go test -update rewrites it):\n%s", golden, got)
	}
	return got
}

// notBuiltOutput is golden for unsupported.yaml, which loads cleanly
// (empty output) once every feature of the contract is built.
func notBuiltOutput(t *testing.T, file, golden string) string {
	t.Helper()
	got := ""
	if _, err := Load(file); err != nil {
		got = err.Error() + "\n"
	}
	return matchGolden(t, got, golden)
}

// TestNotBuiltRefuses keeps the mechanism of notbuilt.go working while
// its tables are empty: a key or value listed there is refused at its
// line, with the feature as the hint.
func TestNotBuiltRefuses(t *testing.T) {
	keys, values := notBuilt, notBuiltValues
	t.Cleanup(func() { notBuilt, notBuiltValues = keys, values })
	notBuilt = append(notBuilt[:0:0], struct {
		feature string
		keys    []string
	}{"test feature", []string{"cluster.redis", "rules[].mode"}})
	notBuiltValues = append(notBuiltValues[:0:0], struct {
		feature, key, what string
		match              func(string) bool
	}{"test value", "storage.driver", "%s", func(s string) bool { return s == "postgres" }})
	got := errorLines(t, minimal+`cluster: {redis: "redis://127.0.0.1:6379/0"}
storage: {driver: postgres, dsn: "postgres://db/x"}
rules:
  - {name: h, type: directory_harvest, threshold: 20, actions: [block], mode: shadow}
`)
	want := []string{
		`t.yaml:4: cluster.redis: not supported by this build yet (test feature)`,
		`t.yaml:5: storage.driver: postgres is not supported by this build yet (test value)`,
		`t.yaml:7: rules[0].mode: not supported by this build yet (test feature)`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestGolden checks the whole check-config output for a file with many
// mistakes: every problem is reported at once, in line order.
func TestGolden(t *testing.T) {
	got := golden(t, "testdata/errors.yaml", "testdata/errors.golden")
	// Every line marked "!" in the file has at least one error.
	src, _ := os.ReadFile("testdata/errors.yaml")
	for i, line := range strings.Split(string(src), "\n") {
		if strings.Contains(line, "# !") && !strings.Contains(got, "testdata/errors.yaml:"+strconv.Itoa(i+1)+":") {
			t.Errorf("line %d is marked wrong but has no error: %s", i+1, line)
		}
	}
}

func TestFull(t *testing.T) {
	c, err := Load("testdata/full.yaml")
	if err != nil {
		t.Fatalf("full.yaml:\n%v", err)
	}
	if c.Listen.Admin != "127.0.0.1:8025" || len(c.Allowlist) != 1 || len(c.Blocklist) != 3 || len(c.ProxyProtocol) != 1 {
		t.Errorf("keys not loaded: %+v %v %v %v", c.Listen, c.Allowlist, c.Blocklist, c.ProxyProtocol)
	}
	if p, h := c.BlockedPrefixes(), c.BlockedHosts(); len(p) != 1 || p[0].String() != "2001:db8:bad::/48" || !slices.Equal(h, []string{"mail.bad.example", ".spam.example"}) {
		t.Errorf("blocklist split: %v %v", p, h)
	}
	if len(c.DNSBL.Zones) != 3 || c.DNSBL.Threshold != 3 || c.Content.OnFailure != "tempfail" || c.Content.MaxConcurrency != 8 ||
		!slices.Contains(c.Content.BlockedAttachments, "application/x-msdownload") {
		t.Errorf("dnsbl/content not loaded: %+v %+v", c.DNSBL, c.Content)
	}
	if c.TLS.KeyFile != filepath.Join("testdata", "tls", "example-key.pem") {
		t.Errorf("file names not resolved against the config directory: %q", c.TLS.KeyFile)
	}
	if len(c.Rules) != 15 || !reflect.DeepEqual(c.Rules[:11], DefaultRules()) {
		t.Errorf("rules = %+v, want the built-in defaults and one more", c.Rules)
	}
	if r := c.Rules[13]; !slices.Equal(r.Actions, []string{"alert"}) || r.BlockFor != 0 || r.Mode != "enforce" {
		t.Errorf("a rule without actions = %+v, want its default [alert], no block_for, mode enforce", r)
	}
	if r := c.Rules[14]; r.Mode != "shadow" || !slices.Equal(r.Actions, []string{"block"}) {
		t.Errorf("the shadow rule = %+v, want mode shadow with the block it would take", r)
	}
	if !c.Alerts.Enabled() || c.Alerts.Webhook.Secret == "" || c.Alerts.MaxPerMinute != 20 || !reflect.DeepEqual(c.EffectiveRules(), c.Rules) {
		t.Errorf("alerts not loaded, or rules in force differ from the file's: %+v", c.Alerts)
	}
}

// TestFullHasEveryKey keeps testdata/full.yaml, the documented example,
// complete: a new Config field fails here until the example shows it or
// its feature is listed as not built (and unsupported.yaml shows it).
func TestFullHasEveryKey(t *testing.T) {
	data, err := os.ReadFile("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l := newLoader("testdata/full.yaml")
	root := l.parseRoot(data)
	l.decodeValue(root, reflect.ValueOf(Default()).Elem(), "")
	given := map[string]bool{}
	for p := range l.lines {
		given[pattern(p)] = true
	}
	// token and token_file exclude each other; the example uses token_file.
	given["admin.token"] = true
	// dsn is for driver postgres only; the example uses sqlite.
	given["storage.dsn"] = true
	for _, key := range keyPaths(reflect.TypeFor[Config](), "") {
		if !given[key] && !notBuiltPath(key) {
			t.Errorf("testdata/full.yaml does not show %s", key)
		}
	}
}

// notBuiltPath reports whether key (or, for a section, every key below
// it) belongs to a feature this build lacks.
func notBuiltPath(key string) bool {
	if _, ok := notBuiltKey(key); ok {
		return true
	}
	if k, ok := strings.CutPrefix(key, "rules[]."); ok {
		users := ruletype.KeyUsers(k)
		return len(users) > 0 && !slices.ContainsFunc(users, func(u ruletype.Type) bool { return u.Built })
	}
	if len(notBuiltChildren(key)) == 0 {
		return false
	}
	for _, sub := range keyPaths(reflect.TypeFor[Config](), "") {
		if rest, ok := strings.CutPrefix(sub, key+"."); ok && !strings.Contains(rest, ".") && !notBuiltPath(sub) {
			return false
		}
	}
	return true
}

// keyPaths lists every YAML key of a struct type, list items as "[]".
func keyPaths(t reflect.Type, prefix string) []string {
	var out []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		p := prefix + name
		out = append(out, p)
		ft := t.Field(i).Type
		switch {
		case ft.Kind() == reflect.Struct && ft != prefixType:
			out = append(out, keyPaths(ft, p+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct && ft.Elem() != prefixType:
			out = append(out, keyPaths(ft.Elem(), p+"[].")...)
		}
	}
	return out
}

func TestLoadUnreadable(t *testing.T) {
	_, err := Load("testdata/does-not-exist.yaml")
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 {
		t.Fatalf("err = %v, want one Error", err)
	}
	if want := "testdata/does-not-exist.yaml: cannot read config: no such file or directory"; es.Error() != want {
		t.Errorf("got %q, want %q", es.Error(), want)
	}
}

func TestErrorFormat(t *testing.T) {
	for _, tt := range []struct {
		e    Error
		want string
	}{
		{Error{File: "a.yaml", Line: 3, Msg: "bad"}, "a.yaml:3: bad"},
		{Error{File: "a.yaml", Line: 3, Msg: "bad", Hint: "fix it"}, "a.yaml:3: bad (fix it)"},
		{Error{File: "a.yaml", Msg: "unreadable"}, "a.yaml: unreadable"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
	es := Errors{{File: "a", Line: 1, Msg: "x"}, {File: "a", Line: 2, Msg: "y"}}
	if got := es.Error(); got != "a:1: x\na:2: y" {
		t.Errorf("Errors.Error() = %q", got)
	}
}

func TestAdminToken(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"token":  "  " + testToken + "\n",
		"empty":  "\n",
		"sample": "change-me\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfgPath := filepath.Join(dir, "mxguard.yaml")
	// Two lines without admin: what each case adds starts at line 3.
	const base = "domains: [example.test]\ndelivery: {servers: [{address: 127.0.0.1:2526}]}\n"
	parse := func(extra string) (*Config, error) {
		return Parse(cfgPath, []byte(base+extra))
	}

	c, err := parse("listen: {admin: 0.0.0.0:8025}\nadmin: {token_file: token}\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Token != testToken || c.Admin.TokenFile != filepath.Join(dir, "token") {
		t.Errorf("Admin = %+v, want the trimmed token read next to the config", c.Admin)
	}
	// With the console and API off, no token is needed.
	if _, err := parse("listen: {admin: \"\"}\n"); err != nil {
		t.Errorf("admin off without a token: %v", err)
	}
	for _, tok := range []string{"9f86d081884c7d659a2feaa0c55ad015", "Correct-Horse-Battery-Staple", "token-4c1f9a2e7b13d5e8"} {
		if _, err := parse("admin: {token: " + tok + "}\n"); err != nil {
			t.Errorf("token %q refused: %v", tok, err)
		}
	}

	const hint = " (generate one with: openssl rand -hex 32)"
	required := ` need admin.token or admin.token_file (generate one with: openssl rand -hex 32, or turn the console and API off with listen.admin: "")`
	for _, tt := range []struct{ extra, want string }{
		// Required always, loopback included (INTERFACE.md §2); reported
		// at the listener when there is no admin section.
		{"", `:1: admin.token: required: the console and API on 127.0.0.1:8025` + required},
		{"listen: {admin: \"127.0.0.1:8025\"}\n", `:3: admin.token: required: the console and API on 127.0.0.1:8025` + required},
		{"listen: {admin: \":8025\"}\n", `:3: admin.token: required: the console and API on :8025` + required},
		{"admin: {token: \"\"}\n", `:3: admin.token: required: the console and API on 127.0.0.1:8025` + required},
		{"admin: {token: change-me}\n", `:3: admin.token: "change-me" is a sample token from documentation, not a secret` + hint},
		{"admin: {token: CHANGE_ME_PLEASE_0123}\n", `:3: admin.token: "CHANGE_ME_PLEASE_0123" is a sample token from documentation, not a secret` + hint},
		{"admin: {token: changeme}\n", `:3: admin.token: "changeme" is a sample token from documentation, not a secret` + hint},
		{"admin: {token: secret}\n", `:3: admin.token: "secret" is a sample token from documentation, not a secret` + hint},
		{"admin: {token: Token}\n", `:3: admin.token: "Token" is a sample token from documentation, not a secret` + hint},
		{"admin: {token_file: sample}\n", `:3: admin.token_file: "change-me" is a sample token from documentation, not a secret` + hint},
		{"admin: {token: a, token_file: token}\n", `:3: admin.token_file: admin.token is set too (give either token or token_file)`},
		{"admin: {token_file: empty}\n", `:3: admin.token_file: ` + filepath.Join(dir, "empty") + ` is empty (generate one with: openssl rand -hex 32 > ` + filepath.Join(dir, "empty") + `)`},
		{"admin: {token_file: missing}\n", `:3: admin.token_file: cannot read ` + filepath.Join(dir, "missing") + `: no such file or directory (relative names start at the config file's directory)`},
		{"admin: {token: \"two words\"}\n", `:3: admin.token: the token contains white space (it is sent as an HTTP Bearer token)`},
		{"admin: {token_file: .}\n", `:3: admin.token_file: cannot read ` + dir + `: not a regular file (relative names start at the config file's directory)`},
	} {
		_, err := parse(tt.extra)
		if err == nil || err.Error() != cfgPath+tt.want {
			t.Errorf("%q: got error\n%v\nwant\n%s", tt.extra, err, cfgPath+tt.want)
		}
	}
}

func TestAnchorsAndMerge(t *testing.T) {
	c := mustParse(t, minimal+`rules:
  - &harvest {name: harvest, type: directory_harvest, threshold: 20, actions: [block]}
  - <<: *harvest
    name: harvest-slow
    window: 1h
    threshold: 50
trusted_networks: &nets [10.0.0.0/8]
allowlist: *nets
`)
	if len(c.Rules) != 2 {
		t.Fatalf("rules: %+v", c.Rules)
	}
	r := c.Rules[1]
	if r.Name != "harvest-slow" || r.Type != "directory_harvest" || r.Window != time.Hour || r.Threshold != 50 || r.BlockFor != time.Hour {
		t.Errorf("merged rule = %+v", r)
	}
	if !slices.Equal(c.Allowlist, c.TrustedNetworks) || len(c.Allowlist) != 1 {
		t.Errorf("alias of a list: allowlist %v, trusted %v", c.Allowlist, c.TrustedNetworks)
	}
}

func TestParseSize(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want Size
		str  string
	}{
		{"1024", 1024, "1KiB"},
		{"0", 0, "0B"},
		{"17B", 17, "17B"},
		{"500KB", 500_000, "500KB"},
		{"500kb", 500_000, "500KB"},
		{"10MiB", 10 << 20, "10MiB"},
		{"10mib", 10 << 20, "10MiB"},
		{"2GB", 2_000_000_000, "2GB"},
		{"10GiB", 10 << 30, "10GiB"},
		{"1.5MB", 1_500_000, "1500KB"},
		{"0.5KiB", 512, "512B"},
		{"1 TiB", 1 << 40, "1TiB"},
		{"3TB", 3_000_000_000_000, "3TB"},
	} {
		got, err := ParseSize(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			continue
		}
		if s := got.String(); s != tt.str {
			t.Errorf("Size(%d).String() = %q, want %q", got, s, tt.str)
		}
		if back, err := ParseSize(got.String()); err != nil || back != got {
			t.Errorf("ParseSize(%q) = %d, %v; want round trip to %d", got.String(), back, err, got)
		}
	}
	for _, bad := range []string{"", "MB", "-1", "1.", ".5MB", "1.2.3", "10M", "10 parsecs", "1/2", "1e3", "0.3B", "9999999999999999999", "8EiB"} {
		if got, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d, want an error", bad, got)
		}
	}
}

func TestSizeJSON(t *testing.T) {
	b, err := json.Marshal(struct{ S Size }{50 * MiB})
	if err != nil || string(b) != `{"S":52428800}` {
		t.Errorf("json = %s, %v; want the byte count as an integer", b, err)
	}
}

// TestNotBuilt checks that every key, value, rule type and action this
// build lacks is refused at its line, all at once, and that
// testdata/unsupported.yaml, which shows them, misses none.
func TestNotBuilt(t *testing.T) {
	const file = "testdata/unsupported.yaml"
	got := notBuiltOutput(t, file, "testdata/unsupported.golden")
	src, _ := os.ReadFile(file)
	lines := strings.Split(string(src), "\n")
	marked := map[int]int{} // line -> number of "!" marks in its comment
	for i, line := range lines {
		_, comment, _ := strings.Cut(line, "#")
		for _, w := range strings.Fields(comment) {
			if w == "!" {
				marked[i+1]++
			}
		}
	}
	errs := map[int]int{}
	refused := map[string]bool{} // key patterns refused
	for l := range strings.Lines(got) {
		l = strings.TrimSuffix(l, "\n")
		rest, ok := strings.CutPrefix(l, file+":")
		n, rest, _ := strings.Cut(rest, ": ")
		line, err := strconv.Atoi(n)
		if !ok || err != nil {
			t.Fatalf("bad error line %q", l)
		}
		errs[line]++
		if !strings.Contains(rest, "not supported by this build yet") {
			t.Errorf("line %d: %s: not a \"not supported\" error", line, rest)
		}
		key, _, _ := strings.Cut(rest, ": ")
		refused[pattern(key)] = true
	}
	for line, n := range marked {
		if errs[line] != n {
			t.Errorf("line %d has %d marks but %d errors: %s", line, n, errs[line], lines[line-1])
		}
	}
	for line := range errs {
		if marked[line] == 0 {
			t.Errorf("line %d has an error but no mark: %s", line, lines[line-1])
		}
	}
	for _, f := range notBuilt {
		for _, k := range f.keys {
			if !refused[k] {
				t.Errorf("%s does not show %s (%s)", file, k, f.feature)
			}
		}
	}
	for _, v := range notBuiltValues {
		if !refused[v.key] {
			t.Errorf("%s does not show a value of %s (%s)", file, v.key, v.feature)
		}
	}
	for _, rt := range ruletype.All() {
		if rt.Rule && !rt.Built && !strings.Contains(got, ".type: "+rt.Name+" is not supported") {
			t.Errorf("%s does not show a rule of type %s", file, rt.Name)
		}
	}
	for _, a := range ruletype.ActionNames() {
		if act, _ := ruletype.LookupAction(a); !act.Built && !strings.Contains(got, "]: "+a+" is not supported") {
			t.Errorf("%s does not show the action %s", file, a)
		}
	}
	for _, k := range ruletype.TypedKeys() {
		built := false
		for _, u := range ruletype.KeyUsers(k) {
			built = built || u.Built
		}
		if !built && !refused["rules[]."+k] {
			t.Errorf("%s does not show the rule key %s", file, k)
		}
	}
}

// TestStorage: postgres with a dsn and a retention in days load; a
// negative retention is refused; 0 keeps events.
func TestStorage(t *testing.T) {
	l := newLoader("t.yaml")
	c, err := l.parse([]byte(minimal + `storage: {driver: Postgres, dsn: "postgres://mxguard:pw@db.example.test/mxguard", retention: 30d}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Storage.Driver != "postgres" || c.Storage.DSN != "postgres://mxguard:pw@db.example.test/mxguard" || c.Storage.Retention != 30*24*time.Hour {
		t.Errorf("storage = %+v", c.Storage)
	}
	c, err = newLoader("t.yaml").parse([]byte(minimal + "storage: {retention: 0}\n"))
	if err != nil || c.Storage.Retention != 0 {
		t.Errorf("retention 0: %+v, %v", c.Storage, err)
	}
	_, err = newLoader("t.yaml").parse([]byte(minimal + "storage: {retention: -1h}\n"))
	if want := `t.yaml:4: storage.retention: must not be negative (0 keeps every event)`; err == nil || err.Error() != want {
		t.Errorf("negative retention: %v, want %s", err, want)
	}
}
