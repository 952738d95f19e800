package alert

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"mxguard/internal/events"
	"mxguard/internal/ruletype"
)

// compose writes the Subject and the plain-text body of an alert mail: a
// person on call reads what happened, who did it, since when, what it
// cost, what mxguard did about it and why, with a link to the event.
func compose(s *Settings, m message) (subject, body string) {
	if m.kind == Digest {
		return composeDigest(s, m.events)
	}
	e := m.events[0]
	src := clean(e.Source, 120)
	subject = fmt.Sprintf("[mxguard] %s %s: %s", clean(e.Type, 40), m.kind, src)
	if m.kind == Ended {
		subject += fmt.Sprintf(" (impact %d)", e.Impact)
	}

	var b strings.Builder
	t, _ := ruletype.Lookup(e.Type)
	switch m.kind {
	case Started:
		fmt.Fprintf(&b, "%s from %s started at %s and is active.\n\n", e.Type, src, stamp(e.StartedAt))
	case Ended:
		fmt.Fprintf(&b, "%s from %s has ended: quiet for one full window.\n\n", e.Type, src)
	}
	row := func(k, v string) { fmt.Fprintf(&b, "%-9s %s\n", k+":", v) }
	what := e.Type
	if e.Rule != "" {
		what += " (rule " + clean(e.Rule, 80) + ")"
	}
	if t.Counts != "" {
		what += ": " + t.Counts
	}
	row("What", what)
	who := src
	if t.Per != "" {
		who += " (" + string(t.Per)
		if e.Service != "" && t.Per == ruletype.PerSource {
			who += ", service " + clean(e.Service, 40)
		}
		who += ")"
	}
	row("Who", who)
	since := stamp(e.StartedAt)
	if e.EndedAt != nil {
		since += fmt.Sprintf(", ended %s (%s)", stamp(*e.EndedAt), e.EndedAt.Sub(e.StartedAt).Round(time.Second))
	}
	row("Since", since)
	impact := strconv.FormatInt(e.Impact, 10)
	if t.Noun != "" && t.Rule {
		impact += " " + t.Noun + " refused so far"
		if m.kind == Ended {
			impact = strings.TrimSuffix(impact, "so far") + "while it lasted"
		}
	}
	row("Impact", impact)
	row("Done", done(e.Actions))
	if why := reason(e, t); why != "" {
		row("Why", why)
	}
	mode := e.Mode
	if mode == "" {
		mode = events.ModeEnforce
	}
	row("Mode", mode)
	if e.Node != "" {
		row("Node", clean(e.Node, 80))
	}
	if u := eventURL(s, e.ID); u != "" {
		row("Console", u)
	}
	writeEvidence(&b, e.Detail["evidence"])
	writeDetail(&b, e.Detail)
	b.WriteString("\n-- \nmxguard alert (" + m.kind + "); alerts.min_impact and alerts.max_per_minute set what is sent.\n")
	return subject, b.String()
}

func composeDigest(s *Settings, evs []events.Event) (subject, body string) {
	byType := map[string]int{}
	for _, e := range evs {
		byType[e.Type]++
	}
	var parts []string
	for _, typ := range slices.Sorted(maps.Keys(byType)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", clean(typ, 40), byType[typ]))
	}
	subject = fmt.Sprintf("[mxguard] digest: %d more events (%s)", len(evs), strings.Join(parts, ", "))
	var b strings.Builder
	fmt.Fprintf(&b, "More events than alerts.max_per_minute (%d a minute) allows started or ended;\n", s.MaxPerMinute)
	b.WriteString("instead of one mail each, here they are, one a line:\n\n")
	for _, e := range evs {
		state := Started
		if e.Status == events.StatusEnded {
			state = Ended
		}
		fmt.Fprintf(&b, "%-7s  %s  %s  %s  impact %d", state, stamp(e.StartedAt), clean(e.Type, 40), clean(e.Source, 120), e.Impact)
		if u := eventURL(s, e.ID); u != "" {
			b.WriteString("  " + u)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n-- \nmxguard alert digest\n")
	return subject, b.String()
}

// eventURL is the console page of event id (internal/admin serves
// GET /events/{id}).
func eventURL(s *Settings, id int64) string {
	if s.ConsoleURL == "" || id == 0 {
		return ""
	}
	return strings.TrimSuffix(s.ConsoleURL, "/") + "/events/" + strconv.FormatInt(id, 10)
}

func done(actions []string) string {
	if len(actions) == 0 {
		return "nothing (recorded only)"
	}
	var out []string
	for _, a := range actions {
		switch a {
		case ruletype.ActionBlock:
			out = append(out, "blocked (new connections refused, open sessions get 421)")
		case ruletype.ActionSuspend:
			out = append(out, "account suspended (its mail gets 550 5.7.1)")
		case ruletype.ActionAlert:
			out = append(out, "alerted")
		default:
			out = append(out, clean(a, 40))
		}
	}
	return strings.Join(out, "; ")
}

// reason spells the rule's numbers from the event's detail: "20 unknown
// recipients in 10m (threshold 20)".
func reason(e events.Event, t ruletype.Type) string {
	th, ok := e.Detail["threshold"]
	if !ok {
		return ""
	}
	count, ok := e.Detail["count"]
	if !ok {
		count = th
	}
	s := fmt.Sprintf("%v %s", count, t.Noun)
	if w, ok := e.Detail["window"]; ok {
		s += fmt.Sprintf(" in %v", w)
	}
	return clean(s+fmt.Sprintf(" (threshold %v)", th), 200)
}

// evidence is one entry of detail.evidence (INTERFACE.md §3).
type evidence struct {
	At   string `json:"at"`
	What string `json:"what"`
	Text string `json:"text"`
}

// maxEvidence bounds what a mail lists (the engine keeps at most 20).
const maxEvidence = 20

// writeEvidence renders detail.evidence ([{at, what, text}], oldest
// first) when the event has it: the observations that made the rule fire.
// The value is read through its JSON form, so it may be decoded JSON (an
// event from the store) or the engine's own typed list.
func writeEvidence(b *strings.Builder, v any) {
	if v == nil {
		return
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return
	}
	var list []evidence
	if json.Unmarshal(raw, &list) != nil || len(list) == 0 {
		return
	}
	b.WriteString("\nEvidence (the observations that made the rule fire, oldest first):\n")
	if len(list) > maxEvidence {
		list = list[len(list)-maxEvidence:]
	}
	for _, x := range list {
		fmt.Fprintf(b, "  %s  %s  %s\n", clean(x.At, 40), clean(x.What, 40), clean(x.Text, 300))
	}
}

// writeDetail lists the rest of the detail (an outage's last error, a
// queue's top senders), one key a line.
func writeDetail(b *strings.Builder, d map[string]any) {
	var keys []string
	for k := range d {
		switch k {
		case "threshold", "window", "count", "evidence":
		default:
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return
	}
	b.WriteString("\nDetail:\n")
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(b, "  %s: %s\n", clean(k, 40), clean(events.DetailText(d[k]), 300))
	}
}

func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// clean makes text from the network (a source's login name, an SMTP line
// in the evidence) safe to put in a header or a body line: control
// characters (CR and LF above all: header injection) become spaces, and
// it is cut to at most n runes.
func clean(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	i := 0
	for _, r := range s {
		if i == n {
			b.WriteString("…")
			break
		}
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			r = ' '
		}
		b.WriteRune(r)
		i++
	}
	return b.String()
}
