package config

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRulesPresence(t *testing.T) {
	for _, tt := range []struct {
		name      string
		extra     string
		wantNil   bool
		wantRules int
	}{
		{"absent: built-in defaults (those of the MX listener)", "", true, 6},
		{"empty list: none", "rules: []\n", false, 0},
		{"key without value: none", "rules:\n", false, 0},
		{"given: exactly these", "rules: [{name: a, type: dos, threshold: 5}]\n", false, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, minimal+tt.extra)
			if (c.Rules == nil) != tt.wantNil {
				t.Errorf("Rules = %#v, want nil %v", c.Rules, tt.wantNil)
			}
			if got := len(c.EffectiveRules()); got != tt.wantRules {
				t.Errorf("%d effective rules, want %d", got, tt.wantRules)
			}
		})
	}
}

// TestDefaultRulesSpelledOut checks DefaultRules against the same rules
// written in a file, so the built-ins pass the validation users' rules do.
func TestDefaultRulesSpelledOut(t *testing.T) {
	c := mustParse(t, minimal+`rules:
  - {name: dos, type: dos, window: 1m, threshold: 300, actions: [alert, block], block_for: 10m}
  - {name: bad_sessions, type: bad_sessions, window: 1m, threshold: 100, actions: [alert, block], block_for: 10m}
  - {name: directory_harvest, type: directory_harvest, window: 10m, threshold: 20, actions: [alert, block], block_for: 1h}
  - {name: spam_attack, type: spam_attack, window: 10m, threshold: 20, actions: [alert, block], block_for: 1h}
  - {name: virus_outbreak, type: virus_outbreak, window: 10m, threshold: 5, actions: [alert, block], block_for: 1h}
  - {name: mailbomb, type: mailbomb, window: 10m, threshold: 20, min_size: 500KB, actions: [alert, block], block_for: 1h}
  - {name: brute_force, type: brute_force, window: 10m, threshold: 20, actions: [alert, block], block_for: 1h}
  - {name: account_brute_force, type: account_brute_force, window: 1h, threshold: 30, actions: [alert]}
  - {name: internal_spammer, type: internal_spammer, window: 1h, threshold: 300, actions: [alert, suspend], block_for: 1h}
  - {name: bounce_spammer, type: bounce_spammer, window: 1h, threshold: 50, actions: [alert]}
  - {name: backscatter, type: backscatter, window: 10m, threshold: 10, actions: [alert]}
`)
	if !reflect.DeepEqual(c.Rules, DefaultRules()) {
		t.Errorf("spelled out:\n%+v\nDefaultRules:\n%+v", c.Rules, DefaultRules())
	}
	alerting := minimal + "alerts: {webhook: {url: \"http://127.0.0.1:9/hook\"}}\n"
	if got := mustParse(t, alerting).EffectiveRules(); !reflect.DeepEqual(got, DefaultRules()[:6]) {
		t.Errorf("EffectiveRules without a rules key = %+v, want the six of the MX listener", got)
	}
	// Without an alert channel no rule alerts: events list what was done.
	for _, r := range mustParse(t, minimal).EffectiveRules() {
		if !slices.Equal(r.Actions, []string{"block"}) {
			t.Errorf("without alert channels rule %s takes %v, want [block]", r.Name, r.Actions)
		}
	}
}

// The built-in rules that apply: logins need a listener that sees them,
// account rules the submission listener, backscatter BATV.
func TestDefaultRulesApply(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "batv.key")
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(users, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	names := func(rs []Rule) (out []string) {
		for _, r := range rs {
			out = append(out, r.Name)
		}
		return out
	}
	smtp := []string{"dos", "bad_sessions", "directory_harvest", "spam_attack", "virus_outbreak", "mailbomb"}
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"MX only", "", smtp},
		{"Dovecot", "listen: {smtp: 127.0.0.1:25, auth_policy: 127.0.0.1:8026}\n", append(slices.Clone(smtp), "brute_force", "account_brute_force")},
		{"submission", "listen: {smtp: 127.0.0.1:25, submission: 127.0.0.1:587}\nauth: {users_file: " + users + "}\n",
			append(slices.Clone(smtp), "brute_force", "account_brute_force", "internal_spammer", "bounce_spammer")},
		{"Postfix policy", "listen: {smtp: 127.0.0.1:25, policy: 127.0.0.1:10040}\n", append(slices.Clone(smtp), "internal_spammer")},
		{"BATV", "batv: {key_file: " + key + "}\n", append(slices.Clone(smtp), "backscatter")},
	} {
		if got := names(mustParse(t, tc.yaml+minimal).EffectiveRules()); !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestRuleDefaults(t *testing.T) {
	c := mustParse(t, minimal+`rules:
  - {name: harvest, type: directory_harvest, threshold: 20}
  - {name: flood, type: DoS, threshold: 10, actions: [block, Block]}
  - {name: bomb, type: mailbomb, threshold: 20, actions: [block]}
  - {name: quiet, type: bad_sessions, threshold: 5, actions: []}
  - {name: try, type: dos, threshold: 5, actions: [block], mode: " Shadow"}
`)
	want := []Rule{
		{Name: "harvest", Type: "directory_harvest", Service: "smtp", Window: 10 * time.Minute, Threshold: 20, Actions: []string{"alert"}, Mode: "enforce"},
		{Name: "flood", Type: "dos", Service: "smtp", Window: 10 * time.Minute, Threshold: 10, Actions: []string{"block"}, BlockFor: time.Hour, Mode: "enforce"},
		{Name: "bomb", Type: "mailbomb", Service: "smtp", Window: 10 * time.Minute, Threshold: 20, MinSize: 500 * KB, Actions: []string{"block"}, BlockFor: time.Hour, Mode: "enforce"},
		{Name: "quiet", Type: "bad_sessions", Service: "smtp", Window: 10 * time.Minute, Threshold: 5, Actions: []string{}, Mode: "enforce"},
		{Name: "try", Type: "dos", Service: "smtp", Window: 10 * time.Minute, Threshold: 5, Actions: []string{"block"}, BlockFor: time.Hour, Mode: "shadow"},
	}
	if !reflect.DeepEqual(c.Rules, want) {
		for i := range want {
			if i < len(c.Rules) && !reflect.DeepEqual(c.Rules[i], want[i]) {
				t.Errorf("rule %d:\n got %+v\nwant %+v", i, c.Rules[i], want[i])
			}
		}
	}
}

// TestNotBuiltRuleDefaults keeps the defaults of rule types and actions
// this build lacks working (they apply once the type is built).
func TestNotBuiltRuleDefaults(t *testing.T) {
	l := newLoader("t.yaml")
	l.pretendBuilt = true
	c, err := l.parse([]byte(minimal + `rules:
  - {name: spam, type: spam_attack, threshold: 50}
  - {name: guess, type: brute_force, threshold: 10, actions: [block]}
  - {name: bomb, type: mailbomb, threshold: 20, actions: [notify, alert, block, block]}
  - {name: queue, type: outbound_queue, threshold: 1000}
  - {name: sender, type: internal_spammer, threshold: 500, actions: [suspend, notify], service: smtp}
  - {name: drop, type: Outbound_Queue, threshold: 1, queue: "dir:maildrop", actions: []}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Rule{
		{Name: "spam", Type: "spam_attack", Service: "smtp", Window: 10 * time.Minute, Threshold: 50, Actions: []string{"alert"}, Mode: "enforce"},
		{Name: "guess", Type: "brute_force", Service: "", Window: 10 * time.Minute, Threshold: 10, Actions: []string{"block"}, BlockFor: time.Hour, Mode: "enforce"},
		{Name: "bomb", Type: "mailbomb", Service: "smtp", Window: 10 * time.Minute, Threshold: 20, MinSize: 500 * KB, Actions: []string{"alert", "block"}, BlockFor: time.Hour, Mode: "enforce"},
		{Name: "queue", Type: "outbound_queue", Service: "smtp", Window: 10 * time.Minute, Threshold: 1000, Actions: []string{"alert"}, Queue: "spool", Mode: "enforce"},
		{Name: "sender", Type: "internal_spammer", Service: "smtp", Window: 10 * time.Minute, Threshold: 500, Actions: []string{"alert", "suspend"}, BlockFor: time.Hour, Mode: "enforce"},
		{Name: "drop", Type: "outbound_queue", Service: "smtp", Window: 10 * time.Minute, Threshold: 1, Actions: []string{}, Queue: "dir:maildrop", Mode: "enforce"},
	}
	if !reflect.DeepEqual(c.Rules, want) {
		for i := range want {
			if i < len(c.Rules) && !reflect.DeepEqual(c.Rules[i], want[i]) {
				t.Errorf("rule %d:\n got %+v\nwant %+v", i, c.Rules[i], want[i])
			}
		}
	}
}

func TestRuleErrors(t *testing.T) {
	tests := []struct {
		name    string
		rule    string // one line, the rule is rules[0] on line 5
		want    []string
		pretend bool // the validation of a type or action not built yet
	}{
		{"name and type required", `{threshold: 1}`, []string{
			`t.yaml:5: rules[0].name: required (events and the console show it)`,
			`t.yaml:5: rules[0].type: required (one of dos, bad_sessions, directory_harvest, spam_attack, virus_outbreak, mailbomb, brute_force, account_brute_force, internal_spammer, bounce_spammer, backscatter, outbound_queue)`,
		}, false},
		{"alert on a queue, block too", `{name: a, type: outbound_queue, threshold: 1, actions: [notify, block]}`, []string{
			`t.yaml:5: rules[0].actions: outbound_queue rules cannot block (a queue has no source to block: use alert)`,
		}, false},
		{"unknown mode", `{name: a, type: dos, threshold: 1, mode: dry-run}`, []string{
			`t.yaml:5: rules[0].mode: unknown mode "dry-run" (enforce takes the actions; shadow records the events with the actions it would take and takes none)`,
		}, false},
		{"threshold required", `{name: a, type: dos}`, []string{
			`t.yaml:5: rules[0].threshold: required (the count within the window that fires the rule)`,
		}, false},
		{"unknown type with a close match", `{name: a, type: directory_harvesting, threshold: 1}`, []string{
			`t.yaml:5: rules[0].type: unknown rule type "directory_harvesting" (did you mean "directory_harvest"?)`,
		}, false},
		{"delivery manager types", `{name: a, type: mail_server_down, threshold: 1}`, []string{
			`t.yaml:5: rules[0].type: mail_server_down is not a rule type (the delivery manager raises it from health checks; no rule is needed)`,
		}, false},
		{"window must be positive", `{name: a, type: dos, threshold: 1, window: 0s}`, []string{
			`t.yaml:5: rules[0].window: must be greater than zero, got 0s`,
		}, false},
		{"suspend needs an account rule", `{name: a, type: dos, threshold: 1, actions: [suspend]}`, []string{
			`t.yaml:5: rules[0].actions: dos rules cannot suspend (only account_brute_force, internal_spammer, bounce_spammer rules can suspend)`,
		}, true},
		{"accounts are not blocked", `{name: a, type: bounce_spammer, threshold: 1, actions: [block]}`, []string{
			`t.yaml:5: rules[0].actions: bounce_spammer rules cannot block (accounts are suspended: use suspend)`,
		}, true},
		{"queues are not blocked", `{name: a, type: outbound_queue, threshold: 1, actions: [block]}`, []string{
			`t.yaml:5: rules[0].actions: outbound_queue rules cannot block (a queue has no source to block: use alert)`,
		}, true},
		{"block_for without block", `{name: a, type: dos, threshold: 1, block_for: 1h}`, []string{
			`t.yaml:5: rules[0].block_for: has no effect without the block action (add block to actions or remove block_for)`,
		}, false},
		{"block_for must be positive", `{name: a, type: dos, threshold: 1, actions: [block], block_for: 0s}`, []string{
			`t.yaml:5: rules[0].block_for: must be greater than zero, got 0s`,
		}, false},
		{"service only for brute_force", `{name: a, type: dos, threshold: 1, service: imap}`, []string{
			`t.yaml:5: rules[0].service: only brute_force rules use it (remove it)`,
		}, false},
		{"bad service name", `{name: a, type: brute_force, threshold: 1, service: IMAP}`, []string{
			`t.yaml:5: rules[0].service: "IMAP" is not a service name (a lowercase service name such as smtp, submission, imap, pop3 or sieve; leave it out for all services)`,
		}, true},
		{"min_size only for mailbomb", `{name: a, type: dos, threshold: 1, min_size: 1MB}`, []string{
			`t.yaml:5: rules[0].min_size: only mailbomb rules use it (remove it)`,
		}, false},
		{"queue only for outbound_queue", `{name: a, type: dos, threshold: 1, queue: spool}`, []string{
			`t.yaml:5: rules[0].queue: only outbound_queue rules use it (remove it)`,
		}, false},
		{"bad queue", `{name: a, type: outbound_queue, threshold: 1, queue: "command:"}`, []string{
			`t.yaml:5: rules[0].queue: "command:" is not a queue (spool, dir:/var/spool/postfix/maildrop or command:postqueue -j)`,
		}, true},
		{"bad window type", `{name: a, type: dos, threshold: many, window: 10}`, []string{
			`t.yaml:5: rules[0].threshold: expected a whole number, got the string "many"`,
			`t.yaml:5: rules[0].window: 10 has no unit (30s, 10m, 1h30m, 7d)`,
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLoader("t.yaml")
			l.pretendBuilt = tt.pretend
			_, err := l.parse([]byte(minimal + "rules:\n  - " + tt.rule + "\n"))
			if err == nil {
				t.Fatalf("accepted %s", tt.rule)
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestEffectiveRulesIsACopy(t *testing.T) {
	c := mustParse(t, minimal+"rules: [{name: a, type: dos, threshold: 5, actions: [block]}]\n")
	r := c.EffectiveRules()
	r[0].Threshold = 1
	r[0].Actions[0] = "alert"
	if c.Rules[0].Threshold != 5 || c.Rules[0].Actions[0] != "block" {
		t.Errorf("changing EffectiveRules changed the config: %+v", c.Rules[0])
	}
}

// An alert action without an alert channel is accepted (the built-in
// rules carry it) but not in force; AlertsUnsent names the file's rules
// that asked for it, for serve to warn about.
func TestAlertWithoutChannel(t *testing.T) {
	rules := "rules:\n  - {name: a, type: dos, threshold: 5, actions: [block, notify]}\n  - {name: b, type: dos, threshold: 9, actions: [block]}\n"
	c := mustParse(t, minimal+rules)
	if got := c.AlertsUnsent(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("AlertsUnsent = %v, want [a]", got)
	}
	if got := c.EffectiveRules()[0].Actions; !slices.Equal(got, []string{"block"}) {
		t.Errorf("rule a in force takes %v, want [block]", got)
	}
	c = mustParse(t, minimal+rules+"alerts: {email: {to: [ops@example.test], server: 127.0.0.1:25}}\n")
	if got := c.AlertsUnsent(); len(got) != 0 {
		t.Errorf("with an email channel AlertsUnsent = %v", got)
	}
	if got := c.EffectiveRules()[0].Actions; !slices.Equal(got, []string{"alert", "block"}) {
		t.Errorf("rule a in force takes %v, want [alert block]", got)
	}
	if want := "mxguard@" + c.Hostname; c.Alerts.Email.From != want {
		t.Errorf("alerts.email.from default = %q, want mxguard@HOSTNAME", c.Alerts.Email.From)
	}
}
