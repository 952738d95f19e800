package events

import (
	"encoding/json"
	"fmt"
	"slices"

	"mxguard/internal/ruletype"
)

// DetailText spells a value of an event's detail (decoded JSON) for a
// person: a string as it is, anything else as compact JSON.
func DetailText(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// Why says in one line what a rule's event did and why, for the CLI, the
// console and alert mails alike: "blocked because 20 unknown recipients
// in 10m (threshold 20)"; a shadow event says what it would have done.
// The strongest action names what was done (block, then suspend, then
// alert); an event of no rule (mail_server_down, org_down) says only that.
func Why(e Event) string {
	verb := "recorded (no action taken)"
	for _, a := range []struct{ action, done string }{
		{ruletype.ActionBlock, "blocked"},
		{ruletype.ActionSuspend, "suspended"},
		{ruletype.ActionAlert, "alerted"},
		{ruletype.ActionNotify, "alerted"},
	} {
		if slices.Contains(e.Actions, a.action) {
			verb = a.done
			if e.Mode == ModeShadow {
				verb = "would have " + verb + " (shadow rule: nothing done)"
			}
			break
		}
	}
	threshold, ok := e.Detail["threshold"]
	if e.Rule == "" || !ok {
		return verb
	}
	noun := "observations"
	if t, ok := ruletype.Lookup(e.Type); ok && t.Noun != "" {
		noun = t.Noun
	}
	count := e.Detail["count"]
	if count == nil {
		count = threshold
	}
	s := verb + " because " + DetailText(count) + " " + noun
	if w := DetailText(e.Detail["window"]); w != "" {
		s += " in " + w
	}
	return s + " (threshold " + DetailText(threshold) + ")"
}
