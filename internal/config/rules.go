package config

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"mxguard/internal/ruletype"
)

// Defaults of rule keys the file leaves out.
const (
	defaultWindow   = 10 * time.Minute
	defaultBlockFor = time.Hour
	defaultMinSize  = 500 * KB
	defaultQueue    = "spool"
	defaultService  = "smtp"
	defaultMode     = "enforce"
)

// DefaultRules are the rules in force when the file has no "rules" key:
// the default rule of every type this build counts (internal/ruletype),
// the attacks every MX sees, with thresholds no legitimate sender reaches.
func DefaultRules() []Rule {
	var out []Rule
	for _, t := range ruletype.All() {
		d := t.Default
		if d == nil || !t.Rule || !t.Built {
			continue
		}
		r := Rule{Name: t.Name, Type: t.Name, Service: defaultService, Window: d.Window, Threshold: d.Threshold,
			MinSize: Size(d.MinSize), Actions: ruletype.BuiltActions(d.Actions), Mode: defaultMode}
		if slices.Contains(r.Actions, ruletype.ActionBlock) || slices.Contains(r.Actions, ruletype.ActionSuspend) {
			r.BlockFor = d.BlockFor // as the file's rules: block_for only with an action that lasts
		}
		if t.UsesKey(ruletype.KeyService) {
			r.Service = "" // every service
		}
		out = append(out, r)
	}
	return out
}

// EffectiveRules returns the rules in force: without a "rules" key the
// built-in rules that apply to this configuration (INTERFACE.md §2), else
// the file's rules with defaults filled in. Without an alert channel
// (alerts.email.to, alerts.webhook.url) no rule alerts: the alert action
// is dropped, so events list only what was done (see AlertsUnsent). The
// result is a copy the caller may change.
func (c *Config) EffectiveRules() []Rule {
	var out []Rule
	if c.Rules == nil {
		for _, r := range DefaultRules() {
			if c.applies(r.Type) {
				out = append(out, r)
			}
		}
	} else {
		out = slices.Clone(c.Rules)
	}
	for i := range out {
		out[i].Actions = slices.Clone(out[i].Actions)
		if !c.Alerts.Enabled() {
			out[i].Actions = slices.DeleteFunc(out[i].Actions, func(a string) bool { return a == ruletype.ActionAlert })
		}
	}
	return out
}

// AlertsUnsent names the file's rules that list the alert action while no
// alert channel is configured: their events are recorded without alerts.
// serve logs them, so an operator who wrote "alert" learns that nothing
// is sent. The built-in rules' alert is not listed: it is a default that
// waits for a channel.
func (c *Config) AlertsUnsent() []string {
	var out []string
	for _, r := range c.Rules {
		if !c.Alerts.Enabled() && slices.Contains(r.Actions, ruletype.ActionAlert) {
			out = append(out, r.Name)
		}
	}
	return out
}

// applies reports whether the configuration has what a rule type counts:
// failed logins need a listener that sees logins (submission, Dovecot's
// auth policy), account rules the submission listener (internal_spammer
// also Postfix's policy requests), backscatter BATV.
// A built-in rule of a type that can never fire would only clutter the
// rules page.
func (c *Config) applies(typ string) bool {
	switch typ {
	case "brute_force", "account_brute_force":
		return c.Listen.Submission != "" || c.Listen.AuthPolicy != ""
	case "internal_spammer":
		// Postfix's policy requests carry sasl_username.
		return c.Listen.Submission != "" || c.Listen.Policy != ""
	case "bounce_spammer":
		return c.Listen.Submission != ""
	case "backscatter":
		return c.BATV.KeyFile != ""
	}
	return true
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

	r.Mode = strings.ToLower(strings.TrimSpace(r.Mode))
	switch r.Mode {
	case "":
		r.Mode = defaultMode
	case "enforce", "shadow":
	default:
		l.errAt(key("mode"), "enforce takes the actions; shadow records the events with the actions it would take and takes none", "unknown mode %q", r.Mode)
	}

	r.Type = strings.ToLower(strings.TrimSpace(r.Type))
	t, ok := l.ruleType(r.Type, key("type"))
	l.ruleActions(r, key("actions"), t, ok)
	if ok {
		l.ruleTypeKeys(r, p, t)
	}
}

// ruleType looks up a rule's type and reports whether this build counts
// it; keys and actions are checked against it only then.
func (l *loader) ruleType(name, path string) (ruletype.Type, bool) {
	built := strings.Join(ruletype.BuiltRuleNames(), ", ")
	t, ok := ruletype.Lookup(name)
	switch {
	case name == "":
		l.errAt(path, "one of "+built, "required")
	case ok && !t.Rule:
		l.errAt(path, "the delivery manager raises it from health checks; no rule is needed", "%s is not a rule type", name)
	case !ok:
		l.errAt(path, suggest(name, ruletype.RuleNames()), "unknown rule type %q", name)
	case !t.Built && !l.pretendBuilt:
		l.errAt(path, t.Missing+"; this build counts "+built, "%s is %s", name, notSupported)
	default:
		return t, true
	}
	return ruletype.Type{}, false
}

// ruleActions normalizes actions: notify is a synonym of alert, repeats
// collapse, and the order is sorted so rules compare equal and read like
// the events they make. Without the key a rule takes its type's default
// actions that this build has.
func (l *loader) ruleActions(r *Rule, path string, t ruletype.Type, typeOK bool) {
	if !l.has(path) {
		r.Actions = []string{}
		switch {
		case typeOK && l.pretendBuilt:
			r.Actions = slices.Clone(t.DefaultActions)
		case typeOK:
			r.Actions = t.BuiltDefaultActions()
		}
		return
	}
	given := []string{}
	for i, a := range r.Actions {
		a = strings.ToLower(strings.TrimSpace(a))
		act, known := ruletype.LookupAction(a)
		ap := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case !known:
			l.errAt(ap, suggest(a, ruletype.ActionNames()), "unknown action %q", a)
		case !act.Built && !l.pretendBuilt:
			l.errAt(ap, act.Missing, "%s is %s", a, notSupported)
		case !slices.Contains(given, act.Name):
			given = append(given, act.Name)
		}
	}
	slices.Sort(given)
	r.Actions = given
	if !typeOK {
		return
	}
	for _, a := range given {
		if !t.Allows(a) {
			l.errAt(path, actionHint(t, a), "%s rules cannot %s", t.Name, a)
		}
	}
}

// actionHint says why a type cannot take an action, and what to use.
func actionHint(t ruletype.Type, action string) string {
	switch {
	case action == ruletype.ActionBlock && t.Per == ruletype.PerAccount:
		return "accounts are suspended: use suspend"
	case action == ruletype.ActionBlock:
		return fmt.Sprintf("a %s has no source to block: use alert", t.Per)
	}
	var users []string
	for _, u := range ruletype.All() {
		if u.Rule && u.Allows(action) {
			users = append(users, u.Name)
		}
	}
	return fmt.Sprintf("only %s rules can %s", strings.Join(users, ", "), action)
}

// ruleTypeKeys checks the keys whose meaning depends on the rule type and
// fills their defaults.
func (l *loader) ruleTypeKeys(r *Rule, p string, t ruletype.Type) {
	key := func(k string) string { return p + "." + k }
	for _, k := range ruletype.TypedKeys() {
		if t.UsesKey(k) || !l.has(key(k)) {
			continue
		}
		if k == ruletype.KeyService && r.Service == defaultService {
			continue // true of every other type: INTERFACE.md's own example says it
		}
		var names, all, missing []string
		for _, u := range ruletype.KeyUsers(k) {
			all = append(all, u.Name)
			if u.Built || l.pretendBuilt {
				names = append(names, u.Name)
			} else if !slices.Contains(missing, u.Missing) {
				missing = append(missing, u.Missing)
			}
		}
		if len(names) == 0 {
			l.refuseKey(l.line(key(k)), key(k), fmt.Sprintf("only %s rules use it, and %s", strings.Join(all, ", "), strings.Join(missing, "; ")))
			continue
		}
		l.errAt(key(k), "remove it", "only %s rules use it", strings.Join(names, ", "))
	}

	block := slices.Contains(r.Actions, ruletype.ActionBlock)
	suspend := slices.Contains(r.Actions, ruletype.ActionSuspend)
	switch {
	case !block && !suspend:
		if l.has(key("block_for")) {
			l.errAt(key("block_for"), "add block to actions or remove block_for", "has no effect without the block action")
		}
	case !l.has(key("block_for")):
		r.BlockFor = defaultBlockFor
	default:
		positive(l, key("block_for"), r.BlockFor)
	}

	if t.UsesKey(ruletype.KeyService) {
		// Dovecot's service names (imap, pop3, sieve, ...) are open-ended,
		// so any lowercase word is accepted; empty counts every service.
		if r.Service != "" && !serviceName(r.Service) {
			l.errAt(key("service"), "a lowercase service name such as smtp, submission, imap, pop3 or sieve; leave it out for all services", "%q is not a service name", r.Service)
		}
	} else {
		r.Service = defaultService
	}

	if t.UsesKey(ruletype.KeyMinSize) {
		if !l.has(key("min_size")) {
			r.MinSize = defaultMinSize
		}
		positive(l, key("min_size"), r.MinSize)
	}

	if t.UsesKey(ruletype.KeyQueue) {
		if !l.has(key("queue")) {
			r.Queue = defaultQueue
		}
		l.ruleQueue(r, key("queue"))
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
