// Package ruletype is the one table of rule and event types (INTERFACE.md
// §3) and of rule actions: what each type counts and per what, whether a
// rule may have it, which rule keys and actions apply to it, whether this
// build counts it, and its built-in default rule. config (validation,
// defaults, hints), detect (observation kinds), events (the type list),
// admin (API, console) and the CLI derive their lists from here; tests in
// those packages prove they agree.
//
// A type or action becomes available by setting its Built field in this
// file, once the code that counts it (or takes it) exists.
package ruletype

import (
	"slices"
	"time"
)

// Per is what a type counts per, i.e. what an event's source is.
type Per string

// What types count per.
const (
	PerSource       Per = "source"       // an IPv4 address or an IPv6 prefix
	PerAccount      Per = "account"      // an authenticated login name
	PerQueue        Per = "queue"        // an outbound queue
	PerServer       Per = "server"       // a delivery server
	PerOrganisation Per = "organisation" // every delivery server at once
)

// Rule keys that only some types use (the other keys apply to every rule).
const (
	KeyService = "service"
	KeyMinSize = "min_size"
	KeyQueue   = "queue"
)

// Actions a rule may take.
const (
	ActionBlock   = "block"
	ActionAlert   = "alert"
	ActionSuspend = "suspend"
	// ActionNotify is the contract's synonym of ActionAlert.
	ActionNotify = "notify"
)

// Type is one rule or event type.
type Type struct {
	Name string
	Per  Per
	// Counts says what is counted, for documentation and the console.
	Counts string
	// Noun is the plural of what is counted, for block reasons
	// ("directory_harvest: 20 unknown recipients in 10m0s").
	Noun string
	// Rule: rules may have this type. Types that are not rule types are
	// raised by a component (the delivery manager's server events).
	Rule bool
	// Built: this build counts it (rule types) or raises it (the others).
	Built bool
	// Missing is what this build lacks while Built is false; config shows
	// it as the hint of "not supported by this build yet".
	Missing string
	// Keys are the rule keys only this type (and others listing them) use.
	Keys []string
	// Actions are the actions a rule of this type may take.
	Actions []string
	// DefaultActions apply when a rule gives no actions; Actions filters
	// them to those this build has.
	DefaultActions []string
	// Default is the built-in rule of this type, in force when the
	// configuration has no rules key; nil: none.
	Default *Default
}

// Default is a built-in rule: the values the README's "Built-in detection
// defaults" explains.
type Default struct {
	Window    time.Duration
	Threshold int
	BlockFor  time.Duration
	MinSize   int64 // bytes; mailbomb only
	Actions   []string
}

// Action is one rule action.
type Action struct {
	Name    string
	Built   bool
	Missing string // what this build lacks while Built is false
}

// The tables. Order is the order of INTERFACE.md §3, which lists and
// documentation follow.
var (
	types = []Type{
		{Name: "dos", Per: PerSource, Counts: "connections opened", Noun: "connections",
			Rule: true, Built: true, Actions: sourceActions, DefaultActions: alertOnly,
			Default: &Default{Window: time.Minute, Threshold: 300, BlockFor: 10 * time.Minute, Actions: blockAlert}},
		{Name: "bad_sessions", Per: PerSource, Counts: "sessions that end without a message being sent", Noun: "sessions without mail",
			Rule: true, Built: true, Actions: sourceActions, DefaultActions: alertOnly,
			Default: &Default{Window: time.Minute, Threshold: 100, BlockFor: 10 * time.Minute, Actions: blockAlert}},
		{Name: "directory_harvest", Per: PerSource, Counts: "recipients rejected as unknown (550 5.1.1, ours or the downstream's)", Noun: "unknown recipients",
			Rule: true, Built: true, Actions: sourceActions, DefaultActions: alertOnly,
			Default: &Default{Window: 10 * time.Minute, Threshold: 20, BlockFor: time.Hour, Actions: blockAlert}},
		{Name: "spam_attack", Per: PerSource, Counts: "messages judged spam", Noun: "spam messages",
			Rule: true, Built: true, Actions: sourceActions, DefaultActions: alertOnly,
			Default: &Default{Window: 10 * time.Minute, Threshold: 20, BlockFor: time.Hour, Actions: blockAlert}},
		{Name: "virus_outbreak", Per: PerSource, Counts: "messages carrying a virus or a blocked attachment", Noun: "infected messages",
			Rule: true, Built: true, Actions: sourceActions, DefaultActions: alertOnly,
			Default: &Default{Window: 10 * time.Minute, Threshold: 5, BlockFor: time.Hour, Actions: blockAlert}},
		{Name: "mailbomb", Per: PerSource, Counts: "messages of at least min_size", Noun: "large messages",
			Rule: true, Built: true, Keys: []string{KeyMinSize}, Actions: sourceActions, DefaultActions: alertOnly,
			Default: &Default{Window: 10 * time.Minute, Threshold: 20, BlockFor: time.Hour, MinSize: 500_000, Actions: blockAlert}},
		{Name: "brute_force", Per: PerSource, Counts: "failed authentications, per service (the same wrong password again counts once)", Noun: "failed authentications",
			Rule: true, Built: true, Keys: []string{KeyService}, Actions: sourceActions, DefaultActions: alertOnly,
			Default: &Default{Window: 10 * time.Minute, Threshold: 20, BlockFor: time.Hour, Actions: blockAlert}},
		{Name: "account_brute_force", Per: PerAccount, Counts: "failed authentications for one account from any sources", Noun: "failed authentications",
			Rule: true, Built: true, Actions: accountActions, DefaultActions: alertOnly,
			Default: &Default{Window: time.Hour, Threshold: 30, BlockFor: time.Hour, Actions: alertOnly}},
		{Name: "internal_spammer", Per: PerAccount, Counts: "messages sent by an authenticated account (one per recipient)", Noun: "messages",
			Rule: true, Built: true, Actions: accountActions, DefaultActions: alertOnly,
			Default: &Default{Window: time.Hour, Threshold: 300, BlockFor: time.Hour, Actions: suspendAlert}},
		{Name: "bounce_spammer", Per: PerAccount, Counts: "bounces and delivery failures caused by an account's mail", Noun: "bounces",
			Rule: true, Built: true, Actions: accountActions, DefaultActions: alertOnly,
			Default: &Default{Window: time.Hour, Threshold: 50, BlockFor: time.Hour, Actions: alertOnly}},
		{Name: "backscatter", Per: PerSource, Counts: "bounces to local recipients that carry no valid BATV tag", Noun: "unsigned bounces",
			Rule: true, Built: true, Actions: sourceActions, DefaultActions: alertOnly,
			Default: &Default{Window: 10 * time.Minute, Threshold: 10, BlockFor: time.Hour, Actions: alertOnly}},
		{Name: "outbound_queue", Per: PerQueue, Counts: "queued outbound messages above the threshold (polled every 15s)", Noun: "queued messages",
			Rule: true, Built: true,
			Keys: []string{KeyQueue}, Actions: alertOnly, DefaultActions: alertOnly},
		// The delivery manager's events alert whenever an alert channel
		// is configured (detect.Options.SystemActions): an outage is what
		// an operator must hear of first.
		{Name: "mail_server_down", Per: PerServer, Counts: "one delivery server failing its health checks", Built: true},
		{Name: "org_down", Per: PerOrganisation, Counts: "every delivery server down", Built: true},
	}

	actions = []Action{
		{Name: ActionBlock, Built: true},
		{Name: ActionAlert, Built: true},
		{Name: ActionSuspend, Built: true},
	}

	sourceActions  = []string{ActionBlock, ActionAlert}
	accountActions = []string{ActionSuspend, ActionAlert}
	alertOnly      = []string{ActionAlert}
	// blockAlert: a built-in rule that blocks also tells the operator
	// (when an alert channel is configured), who may have to lift a block
	// of a legitimate sender.
	blockAlert   = []string{ActionAlert, ActionBlock}
	suspendAlert = []string{ActionAlert, ActionSuspend}
)

// All returns every type, rule types and the others, in INTERFACE.md §3
// order. The result is a copy.
func All() []Type { return slices.Clone(types) }

// Names returns the name of every type (the event types).
func Names() []string {
	out := make([]string, len(types))
	for i, t := range types {
		out[i] = t.Name
	}
	return out
}

// RuleNames returns the names of the rule types, built or not.
func RuleNames() []string {
	var out []string
	for _, t := range types {
		if t.Rule {
			out = append(out, t.Name)
		}
	}
	return out
}

// BuiltRuleNames returns the names of the rule types this build counts.
func BuiltRuleNames() []string {
	var out []string
	for _, t := range types {
		if t.Rule && t.Built {
			out = append(out, t.Name)
		}
	}
	return out
}

// Lookup returns the type called name.
func Lookup(name string) (Type, bool) {
	i := slices.IndexFunc(types, func(t Type) bool { return t.Name == name })
	if i < 0 {
		return Type{}, false
	}
	return types[i], true
}

// UsesKey reports whether k is a key of this type. Keys no type lists
// apply to every rule.
func (t Type) UsesKey(k string) bool { return slices.Contains(t.Keys, k) }

// Allows reports whether a rule of this type may take action a.
func (t Type) Allows(a string) bool { return slices.Contains(t.Actions, a) }

// BuiltDefaultActions returns the default actions this build can take.
func (t Type) BuiltDefaultActions() []string { return BuiltActions(t.DefaultActions) }

// BuiltActions returns the actions of as this build can take, in order:
// a built-in rule whose intended action is not built yet (alert) records
// its events and takes nothing.
func BuiltActions(as []string) []string {
	out := []string{}
	for _, a := range as {
		if act, _ := LookupAction(a); act.Built {
			out = append(out, a)
		}
	}
	return out
}

// TypedKeys returns the rule keys that only some types use.
func TypedKeys() []string {
	var out []string
	for _, t := range types {
		for _, k := range t.Keys {
			if !slices.Contains(out, k) {
				out = append(out, k)
			}
		}
	}
	return out
}

// KeyUsers returns the rule types that use key k, built or not.
func KeyUsers(k string) []Type {
	var out []Type
	for _, t := range types {
		if t.Rule && t.UsesKey(k) {
			out = append(out, t)
		}
	}
	return out
}

// ActionNames returns the names of every action and of its synonyms.
func ActionNames() []string {
	out := make([]string, 0, len(actions)+1)
	for _, a := range actions {
		out = append(out, a.Name)
	}
	return append(out, ActionNotify)
}

// LookupAction returns the action called name; notify is alert.
func LookupAction(name string) (Action, bool) {
	if name == ActionNotify {
		name = ActionAlert
	}
	i := slices.IndexFunc(actions, func(a Action) bool { return a.Name == name })
	if i < 0 {
		return Action{}, false
	}
	return actions[i], true
}
