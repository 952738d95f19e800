package admin

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"mxguard/internal/events"
	"mxguard/internal/ruletype"
)

// eventView is the event page: the event, why it fired in words, the
// observations that made it fire, and what can be undone.
type eventView struct {
	events.Event
	// Because is "Blocked because 20 unknown recipients in 10m" from
	// detail.threshold, window, count and the type's noun; empty when the
	// event has no threshold (a server's event).
	Because  string
	Evidence []evidence
	Other    []detailField // detail keys other than the evidence's
	Block    *events.Block // the source's block in force, if any
	// Suspension is the account's suspension in force, for account events.
	Suspension *events.Suspension
	CanBlock   bool // the source is an address or prefix
}

// evidence is one observation of detail.evidence (INTERFACE.md §3).
type evidence struct {
	At   string
	What string
	Text string
}

type detailField struct {
	Key   string
	Value string
}

// evidenceKeys are the detail keys the evidence section shows.
var evidenceKeys = []string{"threshold", "window", "count", "evidence"}

func (c *console) eventPage(w http.ResponseWriter, r *http.Request) {
	e, err := c.s.event(r.Context(), r.PathValue("id"))
	if err != nil {
		status, msg := c.s.classify(r, err)
		c.renderError(w, r, status, msg)
		return
	}
	v := &eventView{Event: e, Because: because(e), Evidence: evidenceOf(e.Detail), CanBlock: isIPOrPrefix(e.Source)}
	for k, val := range e.Detail {
		if !slices.Contains(evidenceKeys, k) {
			v.Other = append(v.Other, detailField{k, events.DetailText(val)})
		}
	}
	slices.SortFunc(v.Other, func(a, b detailField) int { return strings.Compare(a.Key, b.Key) })
	for _, b := range c.s.o.Engine.Blocks() {
		if b.Source == e.Source {
			v.Block = &b
			break
		}
	}
	if t, ok := ruletype.Lookup(e.Type); ok && t.Per == ruletype.PerAccount && c.s.o.Suspensions != nil {
		for _, su := range c.s.o.Suspensions.Suspensions() {
			if su.Account == e.Source {
				v.Suspension = &su
				break
			}
		}
	}
	c.render(w, r, http.StatusOK, "event", page{Title: "Event " + strconv.FormatInt(e.ID, 10), Nav: "events", Data: v})
}

// because says in words why the rule fired: what it did (or, for a
// shadow rule, would have done), how many of what in which window.
func because(e events.Event) string {
	threshold, ok := number(e.Detail["threshold"])
	if !ok {
		return ""
	}
	count, ok := number(e.Detail["count"])
	if !ok {
		count = threshold
	}
	noun := "observations"
	if t, ok := ruletype.Lookup(e.Type); ok && t.Noun != "" {
		noun = t.Noun
	}
	did := "Fired"
	for _, a := range []struct{ action, done, would string }{
		{ruletype.ActionBlock, "Blocked", "Would have blocked"},
		{ruletype.ActionSuspend, "Suspended", "Would have suspended"},
		{ruletype.ActionAlert, "Alerted", "Would have alerted"},
		{ruletype.ActionNotify, "Alerted", "Would have alerted"},
	} {
		if slices.Contains(e.Actions, a.action) {
			did = a.done
			if e.Mode == events.ModeShadow {
				did = a.would + " (shadow rule)"
			}
			break
		}
	}
	s := fmt.Sprintf("%s because %d %s", did, count, noun)
	if w, ok := e.Detail["window"].(string); ok && w != "" {
		s += " in " + w
	}
	return s + fmt.Sprintf(" (threshold %d).", threshold)
}

// number reads a count of the detail: float64 from JSON, an int from an
// event still in memory.
func number(v any) (int64, bool) {
	switch n := v.(type) {
	case float64:
		return int64(n), true
	case int:
		return int64(n), true
	case int64:
		return n, true
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	}
	return 0, false
}

// evidenceOf reads detail.evidence, whatever of it has the contract's
// shape {"at", "what", "text"}; anything else in the list is skipped,
// never shown raw.
func evidenceOf(detail map[string]any) []evidence {
	list, _ := detail["evidence"].([]any)
	var out []evidence
	for _, item := range list {
		m, ok := item.(map[string]any)
		if !ok {
			continue
		}
		ev := evidence{What: events.DetailText(m["what"]), Text: events.DetailText(m["text"])}
		ev.At = events.DetailText(m["at"])
		if t, err := time.Parse(time.RFC3339Nano, ev.At); err == nil {
			ev.At = t.UTC().Format("15:04:05.000")
		}
		out = append(out, ev)
	}
	return out
}
