// Package config defines the mxguard YAML configuration (INTERFACE.md §2),
// its defaults, and its validation. Load reports every error at once as
// "FILE:LINE: message (hint)".
//
// testdata/full.yaml shows every key this build supports; the keys of
// features not built yet are refused (notbuilt.go, testdata/unsupported.yaml).
// Their fields stay in Config, at their defaults, for the feature that
// will use them. Beyond INTERFACE.md: a key written
// with no value ("hostname:") keeps its default, except a list, which
// becomes empty ("rules:" = no rules); relative file names (token_file,
// users_file, key_file, cert_file, queue dir:) are resolved against the
// config file's directory and stored resolved; data_dir is left as
// written (relative to the working directory); admin.token_file is read
// into Admin.Token.
package config

import (
	"net/netip"
	"time"
)

// Config is the whole configuration file after defaults are applied.
type Config struct {
	Hostname        string         `yaml:"hostname"`
	Domains         []string       `yaml:"domains"`
	Listen          Listen         `yaml:"listen"`
	Admin           Admin          `yaml:"admin"`
	DataDir         string         `yaml:"data_dir"`
	TrustedNetworks []netip.Prefix `yaml:"trusted_networks"`
	Allowlist       []netip.Prefix `yaml:"allowlist"`
	Blocklist       []BlockEntry   `yaml:"blocklist"`
	ProxyProtocol   []netip.Prefix `yaml:"proxy_protocol"`
	IPv6Prefix      int            `yaml:"ipv6_prefix"`
	Delivery        Delivery       `yaml:"delivery"`
	Spool           Spool          `yaml:"spool"`
	Storage         Storage        `yaml:"storage"`
	Cluster         Cluster        `yaml:"cluster"`
	Limits          Limits         `yaml:"limits"`
	Timeouts        Timeouts       `yaml:"timeouts"`
	DNSBL           DNSBL          `yaml:"dnsbl"`
	Content         Content        `yaml:"content"`
	Recipients      Recipients     `yaml:"recipients"`
	Auth            Auth           `yaml:"auth"`
	BATV            BATV           `yaml:"batv"`
	TLS             TLS            `yaml:"tls"`
	// Rules is nil when the file has no "rules" key (built-in defaults are
	// used) and non-nil, possibly empty, when it has one.
	Rules  []Rule `yaml:"rules"`
	Alerts Alerts `yaml:"alerts"`

	// File is the path the configuration was loaded from (not a YAML key).
	File string `yaml:"-"`
}

// Listen holds the listener addresses; empty means "not listening".
type Listen struct {
	SMTP       string `yaml:"smtp"`
	Submission string `yaml:"submission"`
	Admin      string `yaml:"admin"`
	Policy     string `yaml:"policy"`
	AuthPolicy string `yaml:"auth_policy"`
}

// Admin configures the web console and API.
type Admin struct {
	Token     string `yaml:"token"`
	TokenFile string `yaml:"token_file"`
}

// Delivery lists the downstream servers mail is relayed to.
type Delivery struct {
	Servers       []Server      `yaml:"servers"`
	CheckInterval time.Duration `yaml:"check_interval"`
	DownAfter     int           `yaml:"down_after"`
	// TLS is the STARTTLS policy towards the servers: none, may
	// (default) or require; certificates are not verified.
	TLS string `yaml:"tls"`
}

// Server is one downstream mail server.
type Server struct {
	Address string `yaml:"address"`
	Role    string `yaml:"role"` // primary | failover
}

// Spool configures the outage spool.
type Spool struct {
	Delay       time.Duration `yaml:"delay"`
	MaxSize     Size          `yaml:"max_size"`
	UnspoolRate int           `yaml:"unspool_rate"`
	AutoUnspool bool          `yaml:"auto_unspool"`
}

// Storage selects the events store.
type Storage struct {
	Driver string `yaml:"driver"` // sqlite | postgres
	DSN    string `yaml:"dsn"`
	// Retention is how long ended events are kept (by ended_at); 0
	// keeps them forever.
	Retention time.Duration `yaml:"retention"`
}

// Cluster configures shared state between nodes.
type Cluster struct {
	Redis string `yaml:"redis"`
	// Node names this node in every event it records (INTERFACE.md §3
	// "node"); default: the machine's host name.
	Node string `yaml:"node"`
}

// Limits are per-listener resource limits.
type Limits struct {
	MaxConnections          int  `yaml:"max_connections"`
	MaxConnectionsPerSource int  `yaml:"max_connections_per_source"`
	MaxMessageSize          Size `yaml:"max_message_size"`
	MaxRecipients           int  `yaml:"max_recipients"`
}

// Timeouts follow RFC 5321 §4.5.3.2 in spirit but default shorter on the
// greeting, where a legitimate client answers at once.
type Timeouts struct {
	Greeting time.Duration `yaml:"greeting"`
	Command  time.Duration `yaml:"command"`
	Data     time.Duration `yaml:"data"`
}

// BlockEntry is one blocklist item: an address or network, or a host
// name matched against the client's forward-confirmed reverse DNS name
// ("mail.example.net"; ".example.net" for every name below example.net).
type BlockEntry struct {
	Prefix netip.Prefix // valid for an address or network
	Host   string       // lowercased, without a final dot, otherwise
}

// BlockedPrefixes and BlockedHosts split the blocklist.
func (c *Config) BlockedPrefixes() []netip.Prefix {
	var out []netip.Prefix
	for _, e := range c.Blocklist {
		if e.Prefix.IsValid() {
			out = append(out, e.Prefix)
		}
	}
	return out
}

// BlockedHosts returns the host name entries of the blocklist.
func (c *Config) BlockedHosts() []string {
	var out []string
	for _, e := range c.Blocklist {
		if e.Host != "" {
			out = append(out, e.Host)
		}
	}
	return out
}

// DNSBL lists DNS blocklist zones checked at connect.
type DNSBL struct {
	Zones     []string `yaml:"zones"` // postscreen syntax: zone[=filter][*weight]
	Threshold int      `yaml:"threshold"`
	Resolver  string   `yaml:"resolver"`
}

// Content configures content scanners and the built-in checks.
type Content struct {
	Rspamd             string        `yaml:"rspamd"`
	Spamd              string        `yaml:"spamd"`
	Clamd              string        `yaml:"clamd"`
	BlockedAttachments []string      `yaml:"blocked_attachments"` // extensions (lowercase, no dot) and MIME types
	Timeout            time.Duration `yaml:"timeout"`
	MaxConcurrency     int           `yaml:"max_concurrency"`
	OnFailure          string        `yaml:"on_failure"` // tempfail | accept
}

// Recipients configures the recipients directory (internal/recipients):
// who exists downstream, remembered from the downstream's verdicts and
// read from an optional file, answering while the downstream cannot.
type Recipients struct {
	File         string        `yaml:"file"`          // valid addresses, or @domain for a catch-all, one a line
	CacheTTL     time.Duration `yaml:"cache_ttl"`     // how long a downstream verdict is remembered; 0 = not at all
	DuringOutage string        `yaml:"during_outage"` // accept | known_only
}

// Auth configures submission authentication.
type Auth struct {
	UsersFile    string `yaml:"users_file"`
	Downstream   bool   `yaml:"downstream"`
	PolicyAPIKey string `yaml:"policy_api_key"`
}

// BATV configures bounce address tag validation.
type BATV struct {
	KeyFile string `yaml:"key_file"`
}

// TLS configures STARTTLS. When both are empty a self-signed certificate is
// generated into data_dir.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Rule is one detection rule (INTERFACE.md §2, §3).
type Rule struct {
	Name      string        `yaml:"name" json:"name"`
	Type      string        `yaml:"type" json:"type"`
	Service   string        `yaml:"service" json:"service"`
	Window    time.Duration `yaml:"window" json:"window"`
	Threshold int           `yaml:"threshold" json:"threshold"`
	MinSize   Size          `yaml:"min_size" json:"min_size"`
	Actions   []string      `yaml:"actions" json:"actions"`
	BlockFor  time.Duration `yaml:"block_for" json:"block_for"`
	Queue     string        `yaml:"queue" json:"queue"`
	// Mode is enforce (the default) or shadow: record events with the
	// actions the rule would take, and take none.
	Mode string `yaml:"mode" json:"mode"`
}

// Alerts configures alert delivery (internal/alert).
type Alerts struct {
	Email     EmailAlert   `yaml:"email"`
	Webhook   WebhookAlert `yaml:"webhook"`
	MinImpact int64        `yaml:"min_impact"`
	// MaxPerMinute caps the messages of each channel over any 60 s; past
	// it the rest go into one digest a minute.
	MaxPerMinute int `yaml:"max_per_minute"`
}

// Enabled reports whether any alert channel is configured.
func (a Alerts) Enabled() bool { return len(a.Email.To) > 0 || a.Webhook.URL != "" }

// EmailAlert sends alerts by mail.
type EmailAlert struct {
	To     []string `yaml:"to"`
	From   string   `yaml:"from"`
	Server string   `yaml:"server"`
}

// WebhookAlert POSTs event JSON, signed with Secret when it is set.
type WebhookAlert struct {
	URL    string `yaml:"url"`
	Secret string `yaml:"secret"`
}

// Size is a byte count written as 500KB, 10MiB, 2GB or a plain number.
type Size int64
