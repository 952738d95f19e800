package events

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"mxguard/internal/duration"
)

// ErrBadQuery marks a query the caller got wrong (unknown sort field, bad
// number, bad time); the HTTP layer answers it with 400 (INTERFACE.md §5).
var ErrBadQuery = errors.New("bad query")

// Page sizes of INTERFACE.md §5: a query without a limit gets DefaultLimit
// events, a larger limit is clamped to MaxLimit rather than refused so that
// a script asking for "everything" still gets a useful first page.
const (
	DefaultLimit = 100
	MaxLimit     = 500
)

// Sort fields and orders accepted by Query.
const (
	SortStartedAt = "started_at"
	SortType      = "type"
	SortSource    = "source"
	SortImpact    = "impact"

	OrderDesc = "desc"
	OrderAsc  = "asc"
)

// sortColumn maps Query.Sort to the events column it orders by. It is the
// only path from caller input into ORDER BY, so that clause cannot be
// injected whatever the HTTP client sends.
func sortColumn(sort string) (column string, ok bool) {
	switch sort {
	case SortStartedAt:
		return "started_at", true
	case SortType:
		return "type", true
	case SortSource:
		return "source", true
	case SortImpact:
		return "impact", true
	}
	return "", false
}

// Normalize fills in the defaults of q and validates it. Every store calls
// it, so a query means the same thing whichever store answers it; the
// HTTP layer may call it early to answer 400 before touching a store.
// Errors wrap ErrBadQuery.
func (q Query) Normalize() (Query, error) {
	q.Sort = strings.ToLower(q.Sort)
	if q.Sort == "" {
		q.Sort = SortStartedAt
	}
	if _, ok := sortColumn(q.Sort); !ok {
		return Query{}, fmt.Errorf("%w: unknown sort %q (want started_at, type, source or impact)", ErrBadQuery, q.Sort)
	}
	q.Order = strings.ToLower(q.Order)
	switch q.Order {
	case "":
		q.Order = OrderDesc
	case OrderDesc, OrderAsc:
	default:
		return Query{}, fmt.Errorf("%w: unknown order %q (want desc or asc)", ErrBadQuery, q.Order)
	}
	if q.Type != "" && !slices.Contains(Types, q.Type) {
		// No event can have it: a typo, which an empty answer would hide.
		return Query{}, fmt.Errorf("%w: unknown type %q (want one of %s)", ErrBadQuery, q.Type, strings.Join(Types, ", "))
	}
	switch q.Status {
	case "", StatusActive, StatusEnded:
	default:
		return Query{}, fmt.Errorf("%w: unknown status %q (want active or ended)", ErrBadQuery, q.Status)
	}
	switch {
	case q.Limit < 0:
		return Query{}, fmt.Errorf("%w: negative limit %d", ErrBadQuery, q.Limit)
	case q.Limit == 0:
		q.Limit = DefaultLimit
	case q.Limit > MaxLimit:
		q.Limit = MaxLimit
	}
	if q.Offset < 0 {
		return Query{}, fmt.Errorf("%w: negative offset %d", ErrBadQuery, q.Offset)
	}
	if q.MinImpact < 0 {
		return Query{}, fmt.Errorf("%w: negative min_impact %d", ErrBadQuery, q.MinImpact)
	}
	if !q.Since.IsZero() {
		q.Since = q.Since.UTC()
	}
	if !q.Until.IsZero() {
		q.Until = q.Until.UTC()
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Until.Before(q.Since) {
		return Query{}, fmt.Errorf("%w: until %s is before since %s", ErrBadQuery,
			q.Until.Format(time.RFC3339Nano), q.Since.Format(time.RFC3339Nano))
	}
	return q, nil
}

// ParseQuery reads the parameters of GET /api/v1/events (INTERFACE.md §5)
// and returns the normalized query. Empty parameters mean "no filter", as
// an HTML form sends every field; unknown parameters are ignored, as HTTP
// APIs usually do. since and until are RFC 3339 times or Go durations
// counted back from now ("24h" = the last 24 hours). Errors wrap
// ErrBadQuery.
func ParseQuery(values url.Values) (Query, error) {
	return ParseQueryAt(values, time.Now())
}

// ParseQueryAt is ParseQuery with the clock injected, so that relative
// times are testable.
func ParseQueryAt(values url.Values, now time.Time) (Query, error) {
	p := queryParser{values: values, now: now}
	q := Query{
		Type:      p.text("type"),
		Source:    p.text("source"),
		Status:    p.text("status"),
		MinImpact: p.number("min_impact", 64),
		Since:     p.time("since"),
		Until:     p.time("until"),
		Sort:      p.text("sort"),
		Order:     p.text("order"),
		// A limit beyond MaxLimit is clamped, however large it is.
		Limit:  int(min(p.number("limit", 64), MaxLimit)),
		Offset: int(p.number("offset", 32)),
	}
	if p.err != nil {
		return Query{}, p.err
	}
	return q.Normalize()
}

// queryParser keeps the first error so ParseQueryAt reads like the list of
// parameters it accepts.
type queryParser struct {
	values url.Values
	now    time.Time
	err    error
}

// text returns the value of key, or "" when absent. A repeated key is an
// error rather than "first wins": type=a&type=b looks like a request for
// both, which Query cannot express.
func (p *queryParser) text(key string) string {
	vs := p.values[key]
	switch {
	case len(vs) == 0:
		return ""
	case len(vs) > 1:
		p.fail(fmt.Errorf("%w: %s given %d times", ErrBadQuery, key, len(vs)))
		return ""
	}
	return strings.TrimSpace(vs[0])
}

// number parses a decimal integer of bitSize bits; offset is parsed as
// 32-bit so that its conversion to int cannot wrap on any platform.
func (p *queryParser) number(key string, bitSize int) int64 {
	v := p.text(key)
	if v == "" {
		return 0
	}
	n, err := strconv.ParseInt(v, 10, bitSize)
	if errors.Is(err, strconv.ErrRange) {
		p.fail(fmt.Errorf("%w: %s %q is out of range", ErrBadQuery, key, v))
		return 0
	}
	if err != nil {
		p.fail(fmt.Errorf("%w: %s %q is not a number", ErrBadQuery, key, v))
		return 0
	}
	return n
}

// time parses an RFC 3339 time (fractional seconds and any offset allowed)
// or a non-negative Go duration meaning "that long before now".
func (p *queryParser) time(key string) time.Time {
	v := p.text(key)
	if v == "" {
		return time.Time{}
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t.UTC()
	}
	d, err := duration.Parse(v)
	if err != nil || d < 0 {
		p.fail(fmt.Errorf("%w: %s %q is neither an RFC 3339 time nor a duration like 24h", ErrBadQuery, key, v))
		return time.Time{}
	}
	return p.now.Add(-d).UTC()
}

func (p *queryParser) fail(err error) {
	if p.err == nil {
		p.err = err
	}
}
