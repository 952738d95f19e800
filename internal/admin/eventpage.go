package admin

import (
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

// because is the console's sentence of events.Why: "Blocked because 20
// unknown recipients in 10m (threshold 20)."; empty for an event of no
// rule (a server outage), which has nothing to explain.
func because(e events.Event) string {
	if e.Rule == "" || e.Detail["threshold"] == nil {
		return ""
	}
	why := events.Why(e)
	return strings.ToUpper(why[:1]) + why[1:] + "."
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
