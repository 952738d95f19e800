// Package demo runs the self-contained showcase behind `mxguard demo`: the
// real gateway (same wiring as `mxguard serve`), two embedded downstream mail
// servers (primary and failover), and a traffic simulator that sends normal
// mail and, from distinct 127.0.0.x sources, the attacks mxguard detects.
// Everything the engine does is printed as readable lines.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"mxguard/internal/config"
	"mxguard/internal/detect"
	"mxguard/internal/events"
	"mxguard/internal/gateway"
	"mxguard/internal/mailsink"
	"mxguard/internal/users"
)

// Options configure the demo.
type Options struct {
	Duration time.Duration // 0: until ctx is done
	Admin    string        // admin listen address
	DataDir  string        // "" = a temporary directory, removed at the end
	Out      io.Writer     // the narration
	Logger   *slog.Logger  // gateway logs (default: discarded)
	// Cycle is the pause between attack rounds after the first; default 3m.
	Cycle time.Duration
	// Step is the pause between two attacks of a round; default 8s, so
	// each attack's lines stand apart on the screen.
	Step time.Duration
}

// Mailboxes of the embedded downstream servers.
var mailboxes = []string{"alice@example.test", "bob@example.test", "carol@example.test", "postmaster@example.test"}

// Run runs the demo until ctx is done or Duration has passed.
func Run(ctx context.Context, o Options) error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Cycle <= 0 {
		o.Cycle = 3 * time.Minute
	}
	if o.Step <= 0 {
		o.Step = 8 * time.Second
	}
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	if o.DataDir == "" {
		dir, err := os.MkdirTemp("", "mxguard-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		o.DataDir = dir
	}
	n := &narrator{w: o.Out, start: time.Now()}

	primary, err := mailsink.Start(ctx, mailsink.Options{Hostname: "mail1.example.test", Mailboxes: mailboxes, MaxStored: 100})
	if err != nil {
		return fmt.Errorf("demo: primary downstream: %w", err)
	}
	defer primary.Close()
	failover, err := mailsink.Start(ctx, mailsink.Options{Hostname: "mail2.example.test", Mailboxes: mailboxes, MaxStored: 100})
	if err != nil {
		return fmt.Errorf("demo: failover downstream: %w", err)
	}
	defer failover.Close()

	alerts, err := startReceivers(ctx, n)
	if err != nil {
		return err
	}
	defer alerts.close()

	token := randomToken()
	admin := o.Admin
	if admin == "" {
		admin = "127.0.0.1:8025"
	}
	if ln, err := net.Listen("tcp", admin); err != nil {
		n.say("admin address %s is busy; using a free port instead", admin)
		admin = "127.0.0.1:0"
	} else {
		ln.Close()
	}
	usersFile := filepath.Join(o.DataDir, "users")
	for _, a := range demoAccounts {
		if _, err := users.Add(usersFile, a[0], a[1], bcrypt.DefaultCost); err != nil {
			return fmt.Errorf("demo: users file: %w", err)
		}
	}
	// BATV signs the accounts' envelope senders, so bounces without the
	// tag are backscatter.
	batvKey := filepath.Join(o.DataDir, "batv.key")
	if err := os.WriteFile(batvKey, []byte(randomToken()+"\n"), 0o600); err != nil {
		return err
	}
	file := filepath.Join(o.DataDir, "mxguard-demo.yaml")
	if err := os.WriteFile(file, demoConfig(o.DataDir, admin, token, primary.Addr(), failover.Addr(), usersFile, batvKey, alerts), 0o600); err != nil {
		return err
	}
	cfg, err := config.Load(file)
	if err != nil {
		return fmt.Errorf("demo: generated configuration: %w", err)
	}
	g, err := gateway.Start(ctx, cfg, gateway.Options{Logger: o.Logger, OnChange: n.change, Version: "demo"})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer g.Close()

	api := "http://" + g.AdminAddr()
	fmt.Fprintf(o.Out, `mxguard demo
  SMTP gateway     %s  (relays to primary %s, failover %s)
  submission       %s  (STARTTLS, then AUTH as %s)
  Postfix policy   %s  (check_policy_service inet:%s)
  web console      %s/
  API token        %s
  configuration    %s
  alerts           webhook %s (signed), email to postmaster@example.test via %s
  try:  MXGUARD_API=%s MXGUARD_TOKEN=%s go run ./cmd/mxguard events
Normal mail flows from 127.0.0.10; attacks come from other 127.0.0.x sources.
Every attack and outage sends a webhook and an email (ALERT lines).
Why was a source blocked: the same with "events show ID" (the evidence).
Rule harvest-strict runs in shadow mode: its events show what it would do (no alert).
Press Ctrl-C to stop.

`, g.SMTPAddr(), primary.Addr(), failover.Addr(), g.SubmissionAddr(), demoUser, g.PolicyAddr(), g.PolicyAddr(), api, token, file,
		alerts.webhookURL(), alerts.inbox.Addr(), api, token)

	sim := &simulator{gw: g.SMTPAddr(), submission: g.SubmissionAddr(), policy: g.PolicyAddr(), n: n}
	out := &outage{g: g, primary: primary, failover: failover, n: n, send: sim.send}
	sim.outage = out.run
	go out.watchSpool(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sim.normalTraffic(ctx) }()
	go func() { defer wg.Done(); sim.attacks(ctx, o.Step, o.Cycle) }()
	<-ctx.Done()
	wg.Wait()
	n.say("stopping: %d messages reached the primary server, %d the failover", primary.Count(), failover.Count())
	return nil
}

// demoConfig is a real configuration file with rules scaled down so a
// whole attack episode (start, block, quiet window, end) fits in minutes.
func demoConfig(dataDir, admin, token, primary, failover, usersFile, batvKey string, alerts *receivers) []byte {
	return fmt.Appendf(nil, `# Generated by mxguard demo. Rules are scaled down so events start and end
# within minutes; see README.md for the production defaults.
hostname: mx.example.test
domains: [example.test]
listen:
  smtp: 127.0.0.1:0
  submission: 127.0.0.1:0
  policy: 127.0.0.1:0
  admin: %s
auth: {users_file: %s}
batv: {key_file: %s}
admin:
  token: %q
data_dir: %s
trusted_networks: [127.0.0.1/32, "::1/128"]
delivery:
  servers:
    - {address: %s, role: primary}
    - {address: %s, role: failover}
  check_interval: 1s
  down_after: 2
spool: {delay: 5s, unspool_rate: 20}
limits:
  max_connections_per_source: 20
timeouts: {greeting: 10s, command: 1m, data: 2m}
alerts:
  webhook: {url: %q, secret: %q}
  email: {to: [postmaster@example.test], from: mxguard@mx.example.test, server: %s}
  max_per_minute: 60                 # the demo's pace: an attack every few seconds, each alerted on its own
rules:
  - {name: harvest, type: directory_harvest, window: 30s, threshold: 10, actions: [block, alert], block_for: 2m}
  # A stricter harvest threshold tried on live traffic before it is
  # enforced: its events say what it would have done, it does nothing.
  - {name: harvest-strict, type: directory_harvest, window: 30s, threshold: 5, actions: [block, alert], block_for: 2m, mode: shadow}
  - {name: flood, type: dos, window: 10s, threshold: 40, actions: [block, alert], block_for: 1m}
  - {name: probes, type: bad_sessions, window: 30s, threshold: 15, actions: [block, alert], block_for: 1m}
  - {name: mailbomb, type: mailbomb, window: 1m, threshold: 5, min_size: 200KB, actions: [block, alert], block_for: 2m}
  - {name: guessing, type: brute_force, window: 1m, threshold: 5, actions: [block, alert], block_for: 2m}
  - {name: spammer, type: internal_spammer, window: 1m, threshold: 12, actions: [suspend, alert], block_for: 2m}
  - {name: spam, type: spam_attack, window: 1m, threshold: 4, actions: [block, alert], block_for: 2m}
  - {name: virus, type: virus_outbreak, window: 1m, threshold: 3, actions: [block, alert], block_for: 2m}
  # Alert-only rules: without actions a rule takes its default, alert.
  - {name: spraying, type: account_brute_force, window: 1m, threshold: 10}
  - {name: stale-lists, type: bounce_spammer, window: 1m, threshold: 6}
  - {name: backscatter, type: backscatter, window: 30s, threshold: 5}
  - {name: queue, type: outbound_queue, queue: spool, window: 30s, threshold: 3}
`, admin, usersFile, batvKey, token, dataDir, primary, failover, alerts.webhookURL(), alerts.secret, alerts.inbox.Addr())
}

func randomToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// narrator prints timestamped lines; safe for concurrent use.
type narrator struct {
	mu      sync.Mutex
	w       io.Writer
	start   time.Time
	started map[string]int // event type -> events started
}

// startedCount returns how many events of type typ have started.
func (n *narrator) startedCount(typ string) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.started[typ]
}

func (n *narrator) say(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	el := time.Since(n.start).Round(time.Second)
	fmt.Fprintf(n.w, "[%6s] %s\n", el, fmt.Sprintf(format, args...))
}

func (n *narrator) change(c detect.Change) {
	switch c.Type {
	case "event_started":
		e := c.Event
		n.mu.Lock()
		if n.started == nil {
			n.started = map[string]int{}
		}
		n.started[e.Type]++
		n.mu.Unlock()
		rule := ""
		if e.Rule != "" {
			rule = " (rule " + e.Rule + ")"
		}
		// An event lists only what was done: a server outage blocks
		// nothing, it alerts.
		actions := strings.Join(e.Actions, ", ")
		if actions == "" {
			actions = "none"
		}
		if e.Mode == events.ModeShadow {
			n.say("EVENT STARTED  #%d %s from %s%s SHADOW: would take %s, took nothing", e.ID, e.Type, e.Source, rule, actions)
			break
		}
		n.say("EVENT STARTED  #%d %s from %s%s actions: %s", e.ID, e.Type, e.Source, rule, actions)
	case "event_ended":
		e := c.Event
		why := "quiet for one window"
		if e.Rule == "" {
			why = "service is back"
		}
		if e.Mode == events.ModeShadow {
			n.say("EVENT ENDED    #%d %s from %s (shadow rule %s): it would have refused %d (%s)", e.ID, e.Type, e.Source, e.Rule, e.Impact, why)
			break
		}
		n.say("EVENT ENDED    #%d %s from %s, impact %d (%s)", e.ID, e.Type, e.Source, e.Impact, why)
	case "block_added":
		b := c.Block
		n.say("BLOCKED        %s until %s (%s)", b.Source, b.ExpiresAt.Local().Format("15:04:05"), b.Reason)
	case "block_removed":
		n.say("UNBLOCKED      %s", c.Block.Source)
	case "suspension_added":
		su := c.Suspension
		n.say("SUSPENDED      %s until %s (%s)", su.Account, su.ExpiresAt.Local().Format("15:04:05"), su.Reason)
	case "suspension_removed":
		n.say("UNSUSPENDED    %s", c.Suspension.Account)
	}
}
