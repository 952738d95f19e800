// Package gateway assembles a running mxguard from a configuration: events
// store, detection engine, relay, SMTP listener and admin HTTP server. It is
// shared by `mxguard serve`, `mxguard demo` and the integration tests, so
// all three run exactly the same wiring.
package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"mxguard/internal/admin"
	"mxguard/internal/alert"
	"mxguard/internal/authpolicy"
	"mxguard/internal/batv"
	"mxguard/internal/checks"
	"mxguard/internal/cluster"
	"mxguard/internal/config"
	"mxguard/internal/delivery"
	"mxguard/internal/detect"
	"mxguard/internal/events"
	"mxguard/internal/metrics"
	"mxguard/internal/msgbuf"
	"mxguard/internal/pipeline"
	"mxguard/internal/policyd"
	"mxguard/internal/queuemon"
	"mxguard/internal/recipients"
	"mxguard/internal/relay"
	"mxguard/internal/resolver"
	"mxguard/internal/ruletype"
	"mxguard/internal/smtpd"
	"mxguard/internal/spool"
	"mxguard/internal/users"
)

// Options are the process-level inputs besides the configuration.
type Options struct {
	Logger   *slog.Logger
	Clock    detect.Clock                                                      // nil: system clock
	OnChange func(detect.Change)                                               // optional observer (the demo prints these)
	Version  string                                                            //
	Dial     func(ctx context.Context, network, addr string) (net.Conn, error) // downstream dialer, nil: default
	// AdminHTTP bounds what a client may hold of the admin listener
	// (header, read, write and idle timeouts, header size); zero fields
	// take admin's defaults. Tests shorten them.
	AdminHTTP admin.HTTPLimits
	// RetentionFirstRun is how long after start storage.retention first
	// prunes; zero takes events' default (a minute), negative: at once.
	RetentionFirstRun time.Duration
}

// Gateway is a running instance.
type Gateway struct {
	o        Options
	mu       sync.Mutex // serialises Reload
	cfg      *config.Config
	Store    events.Store
	Engine   *detect.Engine
	Metrics  *metrics.Metrics
	Relay    *relay.Relay      // downstream client and connection pool
	Delivery *delivery.Manager // delivery servers: state, order, events
	Spool    *spool.Manager
	SMTP     *smtpd.Server
	Admin    *admin.Server
	// AuthPolicy answers Dovecot (listen.auth_policy); nil when off.
	AuthPolicy *authpolicy.Server
	// Policy answers Postfix's policy delegation requests
	// (listen.policy); nil when off.
	Policy *policyd.Server
	// Queues polls the queues of the outbound_queue rules.
	Queues *queuemon.Monitor
	// Submission is the submission listener (listen.submission) and Users
	// its login checker; nil when off.
	Submission *smtpd.Server
	Users      *users.Checker
	// Sessions lists the open sessions of both SMTP listeners.
	Sessions *smtpd.Sessions

	// Recipients is the recipients directory: the downstream's verdicts
	// and recipients.file, answering during outages.
	Recipients *recipients.Directory
	// Cluster shares counters, blocks and suspensions with the other
	// nodes through Redis (cluster.redis); nil when off.
	Cluster *cluster.Cluster

	// Alerts sends the alerts of events (alerts.*): webhook and email.
	Alerts *alert.Dispatcher

	spoolStore   *spool.Spool
	resolver     *resolver.Resolver // DNS for the checks; kept across reloads
	chainCancel  context.CancelFunc // stops the current chain's background work
	smtpLn       net.Listener
	adminLn      net.Listener
	policyLn     net.Listener // listen.auth_policy
	postfixLn    net.Listener // listen.policy
	submissionLn net.Listener
	batv         *batv.Signer // batv.key_file; nil when off
	senders      *smtpd.SenderAccounts
	queueRules   []queuemon.Rule
	queueStop    context.CancelFunc
	httpSrv      *http.Server
	cancel       context.CancelFunc
	done         sync.WaitGroup
}

// Start opens the store, builds every component and starts listening.
func Start(ctx context.Context, cfg *config.Config, o Options) (*Gateway, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{o: o, cfg: cfg, Metrics: metrics.New(), Sessions: smtpd.NewSessions()}
	g.Alerts = alert.New(alert.Options{
		Settings: g.alertSettings(cfg),
		Logger:   o.Logger.With("component", "alert"),
		Metrics:  g.Metrics,
		Version:  o.Version,
	})
	if err := g.start(ctx, cfg); err != nil {
		// Release what was opened before the failure (store, spool,
		// listeners), so a retry in the same process can have them.
		g.Close()
		return nil, err
	}
	return g, nil
}

func (g *Gateway) start(ctx context.Context, cfg *config.Config) (err error) {
	o := g.o
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	if g.Store, err = openStore(ctx, cfg); err != nil {
		return fmt.Errorf("events store: %w", err)
	}
	if cfg.Cluster.Redis != "" {
		g.Cluster, err = cluster.New(cluster.Options{
			URL:     cfg.Cluster.Redis,
			Node:    cfg.Cluster.Node,
			Logger:  o.Logger.With("component", "cluster"),
			Metrics: g.Metrics,
		})
		if err != nil {
			return err
		}
	}
	g.Engine, err = detect.New(ctx, g.engineOptions(cfg))
	if err != nil {
		return fmt.Errorf("detection engine: %w", err)
	}
	rs, err := recipientSettings(cfg)
	if err != nil {
		return err
	}
	g.Recipients = recipients.New(recipients.Options{
		Settings:  rs,
		StateFile: filepath.Join(cfg.DataDir, "recipients.cache"),
		Clock:     o.Clock,
		Logger:    o.Logger.With("component", "recipients"),
		Metrics:   g.Metrics,
	})
	if err := g.openSpool(cfg); err != nil {
		return err
	}
	tlsMode, err := relay.ParseTLSMode(cfg.Delivery.TLS)
	if err != nil {
		return err
	}
	g.Relay = relay.New(relay.Options{
		Hostname:       cfg.Hostname,
		Dial:           o.Dial,
		CommandTimeout: 2 * time.Minute,
		DataTimeout:    relay.FinalReplyTimeout(cfg.Timeouts.Data),
		TLS:            tlsMode,
		Logger:         o.Logger.With("component", "relay"),
		Metrics:        g.Metrics,
	})
	g.Delivery = delivery.New(delivery.Options{
		Servers:       deliveryServers(cfg),
		Relay:         g.Relay,
		Hostname:      cfg.Hostname,
		Logger:        o.Logger.With("component", "delivery"),
		CheckInterval: cfg.Delivery.CheckInterval,
		DownAfter:     cfg.Delivery.DownAfter,
		Clock:         o.Clock,
		Events:        g.Engine,
		Metrics:       g.Metrics,
		OnOrgDown:     g.Spool.OrgDown,
		OnOrgUp:       g.Spool.OrgUp,
	})
	warnFileLimit(o.Logger, cfg.Limits.MaxConnections, len(cfg.Delivery.Servers))
	g.resolver = g.dnsResolver(cfg)
	set, err := g.smtpSettings(cfg, g.resolver)
	if err != nil {
		return err
	}
	g.Metrics.Prime("smtp", events.Types, set.Chain.Names())
	// Message data past its first part waits in data_dir/tmp; what an
	// earlier run left there is deleted.
	buffers, err := msgbuf.New(msgbuf.Options{Dir: filepath.Join(cfg.DataDir, "tmp")})
	if err != nil {
		return fmt.Errorf("message buffers: %w", err)
	}
	if err := g.loadBATV(cfg); err != nil {
		return err
	}
	g.SMTP = smtpd.New(g.listenerOptions("smtp", "smtpd", buffers), set)

	token, err := adminToken(cfg)
	if err != nil {
		return err
	}
	g.Admin = admin.New(admin.Options{
		Engine:  g.Engine,
		Store:   g.Store,
		Metrics: g.Metrics,
		Token:   token,
		Reload:  g.ReloadFile,
		Logger:  o.Logger.With("component", "admin"),
		Version: o.Version,
		Servers: g.consoleServers,
		Spool:   consoleSpool{g.Spool},
		// Suspensions are refused by the submission listener.
		Suspensions: g.Engine,
		Sessions:    g.consoleSessions,
		Cluster:     g.clusterStatus,
		Clock:       o.Clock,
	})

	if g.smtpLn, err = smtpd.Listen(ctx, cfg.Listen.SMTP); err != nil {
		return fmt.Errorf("listen smtp: %w", err)
	}
	if err := g.startSubmission(ctx, cfg, set, buffers); err != nil {
		return err
	}
	if cfg.Listen.Admin != "" {
		if g.adminLn, err = net.Listen("tcp", cfg.Listen.Admin); err != nil {
			return fmt.Errorf("listen admin: %w", err)
		}
	}
	if cfg.Listen.AuthPolicy != "" {
		g.AuthPolicy, err = authpolicy.New(authpolicy.Options{
			Engine:  g.Engine,
			APIKey:  cfg.Auth.PolicyAPIKey,
			Trusted: cfg.TrustedNetworks,
			Logger:  o.Logger.With("component", "authpolicy"),
			Metrics: g.Metrics,
		})
		if err != nil {
			return err
		}
		if g.policyLn, err = net.Listen("tcp", cfg.Listen.AuthPolicy); err != nil {
			return fmt.Errorf("listen auth_policy: %w", err)
		}
	}
	if cfg.Listen.Policy != "" {
		g.Policy, err = policyd.New(policyd.Options{
			Engine:    g.Engine,
			Directory: g.Recipients,
			Settings:  policySettings(cfg, set),
			Logger:    o.Logger.With("component", "policyd"),
			Metrics:   g.Metrics,
			Clock:     o.Clock,
		})
		if err != nil {
			return err
		}
		if g.postfixLn, err = net.Listen("tcp", cfg.Listen.Policy); err != nil {
			return fmt.Errorf("listen policy: %w", err)
		}
	}
	// The console's address is known now: alert mails link to it.
	g.Alerts.Configure(g.alertSettings(cfg))
	g.warnAlertsUnsent(cfg)
	runCtx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.goRun(func() { g.Alerts.Run(runCtx) })
	// Know the servers' state (and tell the spool) before the spool
	// starts releasing or the listener takes mail.
	g.Delivery.Init(ctx)
	g.goRun(func() { g.Engine.Run(runCtx) })
	if g.Cluster != nil {
		g.goRun(func() { g.Cluster.Run(runCtx, g.Engine) })
	}
	g.goRun(func() { g.Delivery.Run(runCtx) })
	g.goRun(func() { g.Spool.Run(runCtx) })
	if err := g.startQueues(cfg); err != nil {
		return err
	}
	g.goRun(func() { g.Recipients.Run(runCtx) })
	if p, ok := g.Store.(events.Pruner); ok && cfg.Storage.Retention > 0 {
		g.goRun(func() { events.RunRetention(runCtx, p, g.retentionOptions(cfg)) })
	}
	g.runChain(set.Chain)
	g.goRun(func() { _ = g.SMTP.Serve(g.smtpLn) })
	if g.Submission != nil {
		g.goRun(func() { _ = g.Submission.Serve(g.submissionLn) })
	}
	if g.adminLn != nil {
		g.httpSrv = g.Admin.HTTPServer(o.AdminHTTP)
		g.goRun(func() { _ = g.httpSrv.Serve(g.adminLn) })
	}
	if g.policyLn != nil {
		g.goRun(func() {
			if err := g.AuthPolicy.Serve(runCtx, g.policyLn); err != nil {
				o.Logger.Error("auth policy server stopped", "err", err)
			}
		})
	}
	if g.postfixLn != nil {
		g.goRun(func() {
			if err := g.Policy.Serve(runCtx, g.postfixLn); err != nil {
				o.Logger.Error("postfix policy server stopped", "err", err)
			}
		})
	}
	o.Logger.Info("mxguard started", "smtp", g.SMTPAddr(), "submission", g.SubmissionAddr(), "admin", g.AdminAddr(), "auth_policy", g.AuthPolicyAddr(), "policy", g.PolicyAddr(),
		"servers", deliveryServers(cfg), "rules", len(g.Engine.Rules()))
	return nil
}

// openStore opens the events store storage.driver names. It returns a
// nil interface on error, never a typed nil that Close would call.
func openStore(ctx context.Context, cfg *config.Config) (events.Store, error) {
	switch cfg.Storage.Driver {
	case "", "sqlite":
		s, err := events.OpenSQLite(ctx, filepath.Join(cfg.DataDir, "mxguard.db"))
		if err != nil {
			return nil, err
		}
		return s, nil
	case "postgres":
		// The DSN may hold a password: it is never logged, and
		// OpenPostgres's errors name only user, host and database.
		s, err := events.OpenPostgres(ctx, cfg.Storage.DSN)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
	return nil, fmt.Errorf("storage driver %q is not available in this build", cfg.Storage.Driver)
}

// retentionOptions runs storage.retention with the defaults of events
// (batches of 1000 rows, a pause between, hourly).
func (g *Gateway) retentionOptions(cfg *config.Config) events.RetentionOptions {
	o := events.RetentionOptions{
		Retention: cfg.Storage.Retention,
		FirstRun:  g.o.RetentionFirstRun,
		Logger:    g.o.Logger.With("component", "retention"),
		Deleted:   func(n int) { g.Metrics.EventsDeleted.Add(float64(n)) },
	}
	if g.o.Clock != nil {
		o.Now = g.o.Clock.Now
	}
	return o
}

func (g *Gateway) goRun(f func()) {
	g.done.Add(1)
	go func() {
		defer g.done.Done()
		f()
	}()
}

// SMTPAddr is the bound SMTP listener address.
func (g *Gateway) SMTPAddr() string {
	if g.smtpLn == nil {
		return ""
	}
	return g.smtpLn.Addr().String()
}

// AuthPolicyAddr is the bound Dovecot auth policy listener address (""
// when off).
func (g *Gateway) AuthPolicyAddr() string {
	if g.policyLn == nil {
		return ""
	}
	return g.policyLn.Addr().String()
}

// PolicyAddr is the bound Postfix policy listener address ("" when
// off).
func (g *Gateway) PolicyAddr() string {
	if g.postfixLn == nil {
		return ""
	}
	return g.postfixLn.Addr().String()
}

// policySettings are the Postfix policy server's reloadable settings:
// the peers it accepts and the SMTP listener's connect checks.
func policySettings(cfg *config.Config, set *smtpd.Settings) policyd.Settings {
	return policyd.Settings{Trusted: cfg.TrustedNetworks, Connect: set.Chain}
}

// AdminAddr is the bound admin listener address ("" when disabled).
func (g *Gateway) AdminAddr() string {
	if g.adminLn == nil {
		return ""
	}
	return g.adminLn.Addr().String()
}

// Config returns the configuration in force.
func (g *Gateway) Config() *config.Config {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cfg
}

// ReloadFile re-reads the configuration file. An invalid file is refused
// and the running configuration stays (the error lists every problem).
func (g *Gateway) ReloadFile(ctx context.Context) error {
	file := g.Config().File
	if file == "" {
		return errors.New("configuration was not loaded from a file")
	}
	cfg, err := config.Load(file)
	if err != nil {
		return err
	}
	return g.Apply(cfg)
}

// Apply switches to a new, valid configuration. Listener addresses, the
// data directory and the storage driver need a restart.
func (g *Gateway) Apply(cfg *config.Config) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	res := g.dnsResolver(cfg)
	set, err := g.smtpSettings(cfg, res)
	if err != nil {
		return err
	}
	token, err := adminToken(cfg)
	if err != nil {
		return err
	}
	rs, err := recipientSettings(cfg)
	if err != nil {
		return err
	}
	if err := g.startQueues(cfg); err != nil {
		return err
	}
	if err := g.Engine.Reconfigure(g.engineOptions(cfg)); err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	g.Delivery.SetServers(deliveryServers(cfg))
	g.Relay.SetDataTimeout(relay.FinalReplyTimeout(cfg.Timeouts.Data))
	g.SMTP.Reload(set)
	if g.Submission != nil {
		g.Submission.Reload(set)
		if err := g.Users.Reload(); err != nil {
			g.o.Logger.Error("auth.users_file: the last good one stays in force", "err", err)
		}
	}
	g.resolver = res
	g.runChain(set.Chain)
	g.Spool.Reconfigure(cfg.Spool.Delay, cfg.Spool.UnspoolRate, cfg.Spool.AutoUnspool)
	g.spoolStore.SetMaxBytes(int64(cfg.Spool.MaxSize))
	g.Admin.SetToken(token)
	g.Recipients.Configure(rs)
	g.Alerts.Configure(g.alertSettings(cfg))
	g.warnAlertsUnsent(cfg)
	if g.AuthPolicy != nil {
		g.AuthPolicy.Reconfigure(cfg.Auth.PolicyAPIKey, cfg.TrustedNetworks)
	}
	if g.Policy != nil {
		g.Policy.Reconfigure(policySettings(cfg, set))
	}
	if cfg.Delivery.CheckInterval != g.cfg.Delivery.CheckInterval || cfg.Delivery.DownAfter != g.cfg.Delivery.DownAfter || cfg.Delivery.TLS != g.cfg.Delivery.TLS {
		g.o.Logger.Warn("delivery.check_interval, delivery.down_after and delivery.tls change only on restart")
	}
	if cfg.Limits.MaxConnections != g.cfg.Limits.MaxConnections || len(cfg.Delivery.Servers) != len(g.cfg.Delivery.Servers) {
		warnFileLimit(g.o.Logger, cfg.Limits.MaxConnections, len(cfg.Delivery.Servers))
	}
	if cfg.Listen != g.cfg.Listen || cfg.DataDir != g.cfg.DataDir || cfg.Storage != g.cfg.Storage || cfg.Cluster != g.cfg.Cluster {
		g.o.Logger.Warn("listen addresses, data_dir, storage and cluster change only on restart")
	}
	g.cfg = cfg
	g.o.Logger.Info("configuration reloaded", "file", cfg.File, "rules", len(g.Engine.Rules()), "recipients", rs.String())
	return nil
}

// recipientSettings reads recipients.file (again, on a reload: an edited
// file takes effect with SIGHUP) into the directory's settings.
func recipientSettings(cfg *config.Config) (recipients.Settings, error) {
	mode, _ := recipients.ParseMode(cfg.Recipients.DuringOutage) // validated by config
	s := recipients.Settings{Domains: cfg.Domains, TTL: cfg.Recipients.CacheTTL, DuringOutage: mode}
	if cfg.Recipients.File != "" {
		l, err := recipients.ReadFile(cfg.Recipients.File)
		if err != nil {
			return s, fmt.Errorf("recipients.file: %w", err)
		}
		s.List = l
	}
	return s, nil
}

// clusterStatus is GET /api/v1/cluster: with cluster.redis off, this
// node alone.
func (g *Gateway) clusterStatus() cluster.Status {
	if g.Cluster == nil {
		return cluster.Status{Node: g.Config().Cluster.Node, Redis: cluster.StateOff, Nodes: []cluster.NodeSeen{}}
	}
	return g.Cluster.Status()
}

func (g *Gateway) engineOptions(cfg *config.Config) detect.Options {
	var shared detect.Shared // a nil *Cluster must not become a non-nil interface
	if g.Cluster != nil {
		shared = g.Cluster
	}
	return detect.Options{
		Shared:     shared,
		Rules:      cfg.EffectiveRules(),
		Trusted:    cfg.TrustedNetworks,
		Allowlist:  cfg.Allowlist,
		IPv6Prefix: cfg.IPv6Prefix,
		Store:      g.Store,
		Clock:      g.o.Clock,
		Logger:     g.o.Logger.With("component", "detect"),
		Metrics:    g.Metrics,
		Node:       cfg.Cluster.Node,
		OnChange:   g.onChange,
		// An outage (mail_server_down, org_down) alerts whenever a
		// channel is configured: no rule raises it, and it is what an
		// operator must hear of first.
		SystemActions: systemActions(cfg),
	}
}

func systemActions(cfg *config.Config) []string {
	if cfg.Alerts.Enabled() {
		return []string{ruletype.ActionAlert}
	}
	return nil
}

// onChange hands the engine's event changes to the alert dispatcher (it
// never blocks) and every change to the optional observer (the demo).
func (g *Gateway) onChange(c detect.Change) {
	switch c.Type {
	case detect.ChangeEventStarted:
		g.Alerts.Notify(alert.Started, *c.Event)
	case detect.ChangeEventEnded:
		g.Alerts.Notify(alert.Ended, *c.Event)
	}
	if g.o.OnChange != nil {
		g.o.OnChange(c)
	}
}

// alertSettings are the dispatcher's settings for cfg. Alert mails link to
// the console at the admin listener's address (the bound one once it
// listens; the host name for a wildcard address).
func (g *Gateway) alertSettings(cfg *config.Config) alert.Settings {
	a := cfg.Alerts
	s := alert.Settings{
		Webhook:      alert.Webhook{URL: a.Webhook.URL, Secret: a.Webhook.Secret},
		Email:        alert.Email{To: a.Email.To, From: a.Email.From, Server: a.Email.Server},
		MinImpact:    a.MinImpact,
		MaxPerMinute: a.MaxPerMinute,
		Hostname:     cfg.Hostname,
	}
	addr := g.AdminAddr()
	if addr == "" {
		addr = cfg.Listen.Admin
	}
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			host = cfg.Hostname
		}
		s.ConsoleURL = "http://" + net.JoinHostPort(host, port)
	}
	return s
}

// warnAlertsUnsent tells an operator who wrote the alert action without
// configuring a channel that nothing is sent (the events are recorded).
func (g *Gateway) warnAlertsUnsent(cfg *config.Config) {
	if rules := cfg.AlertsUnsent(); len(rules) > 0 {
		g.o.Logger.Warn("rules with the alert action, but no alert channel is configured (alerts.email.to, alerts.webhook.url): their events are recorded, nothing is sent",
			"rules", rules)
	}
}

func (g *Gateway) smtpSettings(cfg *config.Config, res *resolver.Resolver) (*smtpd.Settings, error) {
	tlsCfg, err := smtpd.LoadTLS(cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.DataDir, cfg.Hostname)
	if err != nil {
		return nil, err
	}
	chain, err := checks.Build(checks.Deps{
		Config:   cfg,
		Blocker:  g.Engine,
		Resolver: res,
		Metrics:  g.Metrics,
		Logger:   g.o.Logger.With("component", "checks"),
	})
	if err != nil {
		return nil, err
	}
	return &smtpd.Settings{
		Hostname:      cfg.Hostname,
		Domains:       cfg.Domains,
		Trusted:       cfg.TrustedNetworks,
		Allowlist:     cfg.Allowlist,
		ProxyProtocol: cfg.ProxyProtocol,
		IPv6Prefix:    cfg.IPv6Prefix,
		Limits:        cfg.Limits,
		Timeouts:      cfg.Timeouts,
		TLS:           tlsCfg,
		Chain:         chain,
	}, nil
}

// listenerOptions are what the MX and the submission listener share.
func (g *Gateway) listenerOptions(name, component string, buffers *msgbuf.Store) smtpd.Options {
	return smtpd.Options{
		Name:      name,
		Detector:  g.Engine,
		Relay:     g.Delivery,
		Buffers:   buffers,
		Spooler:   spooler{Manager: g.Spool, store: g.spoolStore},
		Directory: g.Recipients,
		BATV:      g.batv,
		Senders:   g.senders,
		Metrics:   g.Metrics,
		Logger:    g.o.Logger.With("component", component),
		Sessions:  g.Sessions,
	}
}

// dnsResolver is the resolver for cfg: the running one while
// dnsbl.resolver stays the same (its cache survives a reload), a new one
// otherwise.
func (g *Gateway) dnsResolver(cfg *config.Config) *resolver.Resolver {
	if g.resolver == nil || cfg.DNSBL.Resolver != g.cfg.DNSBL.Resolver {
		return resolver.New(resolver.Options{Server: cfg.DNSBL.Resolver})
	}
	return g.resolver
}

// runChain starts the background work of chain (dnsbl zone health) and
// stops that of the chain it replaces.
func (g *Gateway) runChain(chain *pipeline.Chain) {
	if g.chainCancel != nil {
		g.chainCancel()
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.chainCancel = cancel
	g.goRun(func() { chain.Run(ctx) })
}

// The engine records the delivery manager's events and hands back those a
// previous run left open, so an outage spanning a restart stays one event.
var _ delivery.EventResumer = (*detect.Engine)(nil)

// deliveryServers lists primaries before failovers, each in configured
// order: the order the delivery manager tries them in.
func deliveryServers(cfg *config.Config) []delivery.Server {
	var prim, fail []delivery.Server
	for _, s := range cfg.Delivery.Servers {
		rs := delivery.Server{Address: s.Address, Role: s.Role}
		if s.Role == "failover" {
			fail = append(fail, rs)
		} else {
			prim = append(prim, rs)
		}
	}
	return append(prim, fail...)
}

// adminToken is the token of the admin listener. config.Load has read
// token_file and refused weak tokens; a Config built in code gets the
// same refusal of an empty one (INTERFACE.md §2: required).
func adminToken(cfg *config.Config) (string, error) {
	token := cfg.Admin.Token
	if token == "" && cfg.Admin.TokenFile != "" {
		b, err := os.ReadFile(cfg.Admin.TokenFile)
		if err != nil {
			return "", fmt.Errorf("admin.token_file: %w", err)
		}
		token = string(bytes.TrimRight(b, "\r\n "))
	}
	if token == "" && cfg.Listen.Admin != "" {
		return "", fmt.Errorf("admin: listen.admin %s needs admin.token or admin.token_file", cfg.Listen.Admin)
	}
	return token, nil
}

// Close stops listeners, ends sessions, flushes events and closes the store.
func (g *Gateway) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return g.Shutdown(ctx)
}

// Shutdown stops gracefully: sessions get until ctx is done to finish.
func (g *Gateway) Shutdown(ctx context.Context) error {
	if g.SMTP != nil {
		if err := g.SMTP.Shutdown(ctx); err != nil {
			g.SMTP.Close()
		}
	}
	if g.Submission != nil {
		if err := g.Submission.Shutdown(ctx); err != nil {
			g.Submission.Close()
		}
	}
	if g.submissionLn != nil {
		g.submissionLn.Close()
	}
	if g.smtpLn != nil {
		g.smtpLn.Close() // also when Start failed before Serve took it
	}
	if g.httpSrv != nil {
		g.httpSrv.Shutdown(ctx)
	} else if g.adminLn != nil {
		g.adminLn.Close()
	}
	if g.cancel != nil {
		g.cancel()
	}
	if g.queueStop != nil {
		g.queueStop()
	}
	g.mu.Lock()
	if g.chainCancel != nil {
		g.chainCancel()
	}
	g.mu.Unlock()
	g.done.Wait()
	if g.policyLn != nil {
		g.policyLn.Close() // when Start failed before Serve took it
	}
	if g.postfixLn != nil {
		g.postfixLn.Close() // when Start failed before Serve took it
	}
	if g.Relay != nil {
		g.Relay.Close()
	}
	var err error
	if g.Engine != nil {
		err = g.Engine.Flush(context.Background())
	}
	if g.Store != nil {
		err = errors.Join(err, g.Store.Close())
	}
	if g.spoolStore != nil {
		err = errors.Join(err, g.spoolStore.Close())
	}
	return err
}
