package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Rule actions, in the order Parse normalizes them to.
const (
	ActionAlert   = "alert"
	ActionBlock   = "block"
	ActionSuspend = "suspend"
)

// ruleTypeList is every event type a rule can count (INTERFACE.md §3).
// mail_server_down and org_down are missing on purpose: the delivery
// manager raises them from health checks.
const ruleTypeList = "dos, bad_sessions, directory_harvest, spam_attack, virus_outbreak, mailbomb, " +
	"brute_force, internal_spammer, bounce_spammer, backscatter, outbound_queue"

// Defaults of rule keys the file leaves out.
const (
	defaultWindow   = 10 * time.Minute
	defaultBlockFor = time.Hour
	defaultMinSize  = 500 * KB
	defaultQueue    = "spool"
	defaultService  = "smtp"
)

// DefaultRules are the rules in force when the file has no "rules" key:
// the attacks every MX sees, with thresholds no legitimate sender reaches.
func DefaultRules() []Rule {
	return []Rule{
		{Name: "dos", Type: "dos", Service: defaultService, Window: time.Minute, Threshold: 300,
			Actions: []string{ActionAlert, ActionBlock}, BlockFor: 10 * time.Minute},
		{Name: "bad_sessions", Type: "bad_sessions", Service: defaultService, Window: time.Minute, Threshold: 100,
			Actions: []string{ActionAlert, ActionBlock}, BlockFor: 10 * time.Minute},
		{Name: "directory_harvest", Type: "directory_harvest", Service: defaultService, Window: 10 * time.Minute, Threshold: 20,
			Actions: []string{ActionAlert, ActionBlock}, BlockFor: time.Hour},
		{Name: "mailbomb", Type: "mailbomb", Service: defaultService, Window: 10 * time.Minute, Threshold: 20, MinSize: defaultMinSize,
			Actions: []string{ActionAlert, ActionBlock}, BlockFor: time.Hour},
	}
}

// EffectiveRules returns the rules in force: DefaultRules when the file
// has no "rules" key, else the file's rules with defaults filled in. The
// result is a copy the caller may change.
func (c *Config) EffectiveRules() []Rule {
	if c.Rules == nil {
		return DefaultRules()
	}
	out := slices.Clone(c.Rules)
	for i := range out {
		out[i].Actions = slices.Clone(out[i].Actions)
	}
	return out
}

// accountRule tells the types counted per authenticated account: they are
// suspended, never blocked, because the account's IP is usually a shared
// NAT or the customer's own office.
func accountRule(typ string) bool {
	return typ == "internal_spammer" || typ == "bounce_spammer"
}

func (l *loader) checkRules(c *Config) {
	names := map[string]string{} // rule name -> path of its first name key
	for i := range c.Rules {
		l.checkRule(&c.Rules[i], fmt.Sprintf("rules[%d]", i), names)
	}
}

func (l *loader) checkRule(r *Rule, p string, names map[string]string) {
	if l.failed[p] {
		return // not a mapping: "name: required" and the like would be noise
	}
	key := func(k string) string { return p + "." + k }

	r.Name = strings.TrimSpace(r.Name)
	if r.Name == "" {
		l.errAt(key("name"), "events and the console show it", "required")
	} else if first, dup := names[r.Name]; dup {
		l.errAt(key("name"), fmt.Sprintf("first used at line %d", l.line(first)), "rule name %q is used twice", r.Name)
	} else {
		names[r.Name] = key("name")
	}

	if !l.has(key("window")) {
		r.Window = defaultWindow
	}
	positive(l, key("window"), r.Window)
	if !l.has(key("threshold")) {
		l.errAt(key("threshold"), "the count within the window that fires the rule", "required")
	} else if r.Threshold < 1 {
		l.errAt(key("threshold"), "", "must be at least 1, got %d", r.Threshold)
	}
	l.ruleActions(r, key("actions"))

	r.Type = strings.ToLower(strings.TrimSpace(r.Type))
	types := strings.Split(ruleTypeList, ", ")
	switch {
	case r.Type == "":
		l.errAt(key("type"), "one of "+ruleTypeList, "required")
		return
	case r.Type == "mail_server_down" || r.Type == "org_down":
		l.errAt(key("type"), "the delivery manager raises it from health checks; no rule is needed", "%s is not a rule type", r.Type)
		return
	case !slices.Contains(types, r.Type):
		l.errAt(key("type"), suggest(r.Type, types), "unknown rule type %q", r.Type)
		return
	}
	// The checks below depend on the type.
	l.ruleTypeKeys(r, p)
}

// ruleActions normalizes actions: notify is a synonym of alert, repeats
// collapse, and the order is fixed so rules compare equal.
func (l *loader) ruleActions(r *Rule, path string) {
	if !l.has(path) {
		r.Actions = []string{ActionAlert}
		return
	}
	given := map[string]bool{}
	for i, a := range r.Actions {
		a = strings.ToLower(strings.TrimSpace(a))
		if a == "notify" {
			a = ActionAlert
		}
		switch a {
		case ActionAlert, ActionBlock, ActionSuspend:
			given[a] = true
		default:
			l.errAt(fmt.Sprintf("%s[%d]", path, i), suggest(a, []string{ActionBlock, ActionAlert, ActionSuspend, "notify"}), "unknown action %q", a)
		}
	}
	r.Actions = []string{}
	for _, a := range []string{ActionAlert, ActionBlock, ActionSuspend} {
		if given[a] {
			r.Actions = append(r.Actions, a)
		}
	}
}

// ruleTypeKeys checks the keys whose meaning depends on the rule type and
// fills their defaults.
func (l *loader) ruleTypeKeys(r *Rule, p string) {
	key := func(k string) string { return p + "." + k }
	onlyFor := func(k, typ string) {
		if l.has(key(k)) {
			l.errAt(key(k), "remove it", "only %s rules use it", typ)
		}
	}

	block := slices.Contains(r.Actions, ActionBlock)
	switch {
	case block && accountRule(r.Type):
		l.errAt(key("actions"), "accounts are suspended: use suspend", "%s rules cannot block", r.Type)
	case block && r.Type == "outbound_queue":
		l.errAt(key("actions"), "a queue has no source to block: use alert", "outbound_queue rules cannot block")
	case slices.Contains(r.Actions, ActionSuspend) && !accountRule(r.Type):
		l.errAt(key("actions"), "only internal_spammer and bounce_spammer rules count accounts", "%s rules cannot suspend", r.Type)
	}
	switch {
	case !block:
		if l.has(key("block_for")) {
			l.errAt(key("block_for"), "add block to actions or remove block_for", "has no effect without the block action")
		}
	case !l.has(key("block_for")):
		r.BlockFor = defaultBlockFor
	default:
		positive(l, key("block_for"), r.BlockFor)
	}

	if r.Type == "brute_force" {
		// Dovecot's service names (imap, pop3, sieve, ...) are open-ended,
		// so any lowercase word is accepted; empty counts every service.
		if r.Service != "" && !serviceName(r.Service) {
			l.errAt(key("service"), "a lowercase service name such as smtp, submission, imap, pop3 or sieve; leave it out for all services", "%q is not a service name", r.Service)
		}
	} else {
		if r.Service != defaultService {
			onlyFor("service", "brute_force")
		}
		r.Service = defaultService
	}

	if r.Type == "mailbomb" {
		if !l.has(key("min_size")) {
			r.MinSize = defaultMinSize
		}
		positive(l, key("min_size"), r.MinSize)
	} else {
		onlyFor("min_size", "mailbomb")
	}

	if r.Type == "outbound_queue" {
		if !l.has(key("queue")) {
			r.Queue = defaultQueue
		}
		l.ruleQueue(r, key("queue"))
	} else {
		onlyFor("queue", "outbound_queue")
	}
}

func serviceName(s string) bool {
	for i, r := range s {
		if (r < 'a' || r > 'z') && (i == 0 || (r < '0' || r > '9') && r != '-' && r != '_') {
			return false
		}
	}
	return s != ""
}

// ruleQueue checks the queue an outbound_queue rule watches: our own spool,
// a maildrop directory, or a command printing the queue (postqueue -j).
func (l *loader) ruleQueue(r *Rule, path string) {
	const hint = "spool, dir:/var/spool/postfix/maildrop or command:postqueue -j"
	if r.Queue == defaultQueue {
		return
	}
	if dir, ok := strings.CutPrefix(r.Queue, "dir:"); ok && strings.TrimSpace(dir) != "" {
		if !filepath.IsAbs(dir) {
			r.Queue = "dir:" + filepath.Join(l.dir, dir)
		}
		return
	}
	if cmd, ok := strings.CutPrefix(r.Queue, "command:"); ok && strings.TrimSpace(cmd) != "" {
		return
	}
	l.errAt(path, hint, "%q is not a queue", r.Queue)
}
