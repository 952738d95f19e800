package ruletype

import (
	"slices"
	"testing"
)

// TestTable checks the invariants every consumer relies on, so a new
// line in the table cannot leave config, detect or the console with a
// half-described type.
func TestTable(t *testing.T) {
	seen := map[string]bool{}
	keys := []string{KeyService, KeyMinSize, KeyQueue}
	for _, ty := range All() {
		if ty.Name == "" || seen[ty.Name] {
			t.Errorf("type %q: empty or listed twice", ty.Name)
		}
		seen[ty.Name] = true
		if ty.Counts == "" || ty.Per == "" {
			t.Errorf("%s: says neither what it counts nor per what", ty.Name)
		}
		if ty.Built == (ty.Missing != "") {
			t.Errorf("%s: Built %v with Missing %q; a type not built says what is missing, a built one nothing", ty.Name, ty.Built, ty.Missing)
		}
		if !ty.Rule {
			if ty.Keys != nil || ty.Actions != nil || ty.DefaultActions != nil || ty.Default != nil || ty.Noun != "" {
				t.Errorf("%s is not a rule type but has rule keys, actions or a default", ty.Name)
			}
			continue
		}
		if ty.Noun == "" || len(ty.Actions) == 0 {
			t.Errorf("%s: a rule type needs a noun and actions", ty.Name)
		}
		for _, k := range ty.Keys {
			if !slices.Contains(keys, k) {
				t.Errorf("%s: unknown rule key %q", ty.Name, k)
			}
		}
		for _, a := range append(slices.Clone(ty.Actions), ty.DefaultActions...) {
			if _, ok := LookupAction(a); !ok {
				t.Errorf("%s: unknown action %q", ty.Name, a)
			}
		}
		for _, a := range ty.DefaultActions {
			if !ty.Allows(a) {
				t.Errorf("%s: default action %s is not one it allows", ty.Name, a)
			}
		}
		if d := ty.Default; d != nil {
			if d.Window <= 0 || d.Threshold < 1 || len(d.Actions) == 0 {
				t.Errorf("%s: incomplete default rule %+v", ty.Name, d)
			}
			if (d.MinSize > 0) != ty.UsesKey(KeyMinSize) {
				t.Errorf("%s: default min_size %d but uses min_size %v", ty.Name, d.MinSize, ty.UsesKey(KeyMinSize))
			}
			// A default may intend an action this build lacks
			// (account_brute_force: alert); BuiltActions drops it until
			// it is built, and the rule records its events.
			for _, a := range d.Actions {
				if !ty.Allows(a) {
					t.Errorf("%s: default rule takes %s, which it cannot", ty.Name, a)
				}
				if act, _ := LookupAction(a); !act.Built && slices.Contains(BuiltActions(d.Actions), a) {
					t.Errorf("%s: BuiltActions keeps %s, which is not built", ty.Name, a)
				}
				if a == ActionBlock && d.BlockFor <= 0 {
					t.Errorf("%s: default rule blocks for %v", ty.Name, d.BlockFor)
				}
			}
		}
		if ty.Allows(ActionBlock) && ty.Per != PerSource {
			t.Errorf("%s counts per %s but may block", ty.Name, ty.Per)
		}
		if ty.Allows(ActionSuspend) != (ty.Per == PerAccount) {
			t.Errorf("%s counts per %s: suspend allowed %v", ty.Name, ty.Per, ty.Allows(ActionSuspend))
		}
	}
	for _, a := range actions {
		if a.Built == (a.Missing != "") {
			t.Errorf("action %s: Built %v with Missing %q", a.Name, a.Built, a.Missing)
		}
	}
	if len(BuiltRuleNames()) == 0 {
		t.Error("no rule type is built")
	}
}

func TestLookup(t *testing.T) {
	if ty, ok := Lookup("directory_harvest"); !ok || ty.Per != PerSource || !ty.Rule || ty.Noun != "unknown recipients" {
		t.Errorf("Lookup(directory_harvest) = %+v, %v", ty, ok)
	}
	if ty, ok := Lookup("org_down"); !ok || ty.Rule {
		t.Errorf("org_down: %+v, %v; want an event type that is not a rule type", ty, ok)
	}
	if _, ok := Lookup("harvest"); ok {
		t.Error("Lookup(harvest) found a type")
	}
	notify, ok := LookupAction(ActionNotify)
	if alert, _ := LookupAction(ActionAlert); !ok || notify != alert {
		t.Errorf("notify = %+v, want alert", notify)
	}
	if got := KeyUsers(KeyMinSize); len(got) != 1 || got[0].Name != "mailbomb" {
		t.Errorf("KeyUsers(min_size) = %v", got)
	}
	if mb, _ := Lookup("mailbomb"); !slices.Equal(mb.BuiltDefaultActions(), []string{ActionAlert}) {
		t.Errorf("mailbomb default actions in this build = %v, want [alert]", mb.BuiltDefaultActions())
	}
}
