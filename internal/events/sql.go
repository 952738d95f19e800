package events

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// This file holds the SQL that every database store shares: the events
// columns, the filter/sort/page builder and the JSON encoding of actions
// and detail. Only the spelling of bind parameters and of times differs
// between SQLite and PostgreSQL; sqlDialect carries those differences.

// eventColumns is the column list every events SELECT uses, in the order
// the stores scan them.
const eventColumns = "id, type, rule, mode, status, started_at, ended_at, source, service, impact, actions, node, detail"

// sqlDialect describes what differs between the SQL databases a store may
// use.
type sqlDialect struct {
	// bind spells the n-th (1-based) bind parameter.
	bind func(n int) string
	// timeArg converts a time filter into the value the time columns
	// hold, so that since/until compare like with like.
	timeArg func(time.Time) any
	// snapshot are the options of Query's read transaction, under which
	// the count and the page see the same rows.
	snapshot *sql.TxOptions
	// plan, if set, chooses how Query reads a page of q, knowing that
	// total events match (see pageOptions); nil leaves it to the planner.
	plan func(ctx context.Context, tx *sql.Tx, q Query, total int) (pageOptions, error)
	// endedIndex follows "FROM events" in DeleteEnded's batch to make it
	// read events_by_ended_at; "" leaves that to the planner.
	endedIndex string
}

// rebind spells the ? placeholders of a statement written for SQLite in
// the dialect's bind style. The statements it is given are constants of
// this package with no ? inside literals.
func (d sqlDialect) rebind(text string) string {
	if d.bind(1) == "?" {
		return text
	}
	var b strings.Builder
	n := 0
	for _, r := range text {
		if r == '?' {
			n++
			b.WriteString(d.bind(n))
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// questionBind is the bind style of SQLite (and MySQL).
func questionBind(int) string { return "?" }

// dollarBind is the bind style of PostgreSQL.
func dollarBind(n int) string { return "$" + strconv.Itoa(n) }

// sqlStatement is a statement and its bind arguments.
type sqlStatement struct {
	text string
	args []any
}

// eventCount builds the statement that counts every event matching q
// (Result.Total). q must be normalized.
func (d sqlDialect) eventCount(q Query) sqlStatement {
	where, args := d.eventWhere(q, nil)
	return sqlStatement{text: "SELECT count(*) FROM events" + where, args: args}
}

// pageOptions steer the query planner through the page statement. The
// zero value leaves every choice to the database, which suits a planner
// with real statistics (PostgreSQL); see sqlitePageOptions for why SQLite
// needs help. Hiding a column spells it as +column: SQLite's unary plus
// changes no value or order but keeps the planner from using an index on
// that column for that term.
type pageOptions struct {
	// hideSort hides the sort column, so the matches are collected through
	// the filter indexes and then sorted.
	hideSort bool
	// hideFilter, if set, reports the filter columns to hide, so that the
	// planner walks the sort index in order and stops after the page.
	hideFilter func(column string) bool
}

// eventPage builds the statement that reads the requested page of the
// events matching q. q must be normalized. It shares its WHERE clause with
// eventCount, so the total counts exactly the population the page is cut
// from.
func (d sqlDialect) eventPage(q Query, opts pageOptions) (sqlStatement, error) {
	column, ok := sortColumn(q.Sort)
	if !ok {
		return sqlStatement{}, fmt.Errorf("%w: unknown sort %q", ErrBadQuery, q.Sort)
	}
	if opts.hideSort {
		column = "+" + column
	}
	direction := "DESC"
	if q.Order == OrderAsc {
		direction = "ASC"
	}
	where, args := d.eventWhere(q, opts.hideFilter)
	// id breaks ties in the same direction, so that pages are stable: an
	// event never shows up on two pages nor falls between them while the
	// population is unchanged.
	return sqlStatement{
		text: fmt.Sprintf("SELECT %s FROM events%s ORDER BY %s %s, id %s LIMIT %s OFFSET %s",
			eventColumns, where, column, direction, direction,
			d.bind(len(args)+1), d.bind(len(args)+2)),
		args: append(args, q.Limit, q.Offset),
	}, nil
}

// eventWhere builds the WHERE clause (with its leading space, or "" when
// q has no filter) and its arguments; hide, if set, names the columns to
// spell as +column (see pageOptions).
func (d sqlDialect) eventWhere(q Query, hide func(column string) bool) (clause string, args []any) {
	var conds []string
	where := func(column, op string, arg any) {
		if hide != nil && hide(column) {
			column = "+" + column
		}
		args = append(args, arg)
		conds = append(conds, column+" "+op+" "+d.bind(len(args)))
	}
	if q.Type != "" {
		where("type", "=", q.Type)
	}
	if q.Source != "" {
		where("source", "=", q.Source)
	}
	if q.Status != "" {
		where("status", "=", q.Status)
	}
	if q.MinImpact > 0 {
		where("impact", ">=", q.MinImpact)
	}
	// since is inclusive and until exclusive, so that consecutive windows
	// (since=T1&until=T2, since=T2&until=T3) never count an event twice.
	if !q.Since.IsZero() {
		where("started_at", ">=", d.timeArg(q.Since))
	}
	if !q.Until.IsZero() {
		where("started_at", "<", d.timeArg(q.Until))
	}
	if len(conds) == 0 {
		return "", args
	}
	return " WHERE " + strings.Join(conds, " AND "), args
}

// encodeActions returns the JSON array stored for actions; a nil slice is
// stored as [] so that the API never shows null (INTERFACE.md §3).
func encodeActions(actions []string) (string, error) {
	if actions == nil {
		actions = []string{}
	}
	b, err := json.Marshal(actions)
	return string(b), err
}

// encodeDetail returns the JSON object stored for detail; a nil map is
// stored as {}.
func encodeDetail(detail map[string]any) (string, error) {
	if detail == nil {
		detail = map[string]any{}
	}
	b, err := json.Marshal(detail)
	return string(b), err
}

// decodeJSONColumns fills e.Actions and e.Detail from their stored JSON,
// never leaving either nil. Numbers in detail come back as float64, as
// encoding/json decodes them.
func decodeJSONColumns(e *Event, actions, detail []byte) error {
	if err := json.Unmarshal(actions, &e.Actions); err != nil {
		return fmt.Errorf("actions of event %d: %w", e.ID, err)
	}
	if err := json.Unmarshal(detail, &e.Detail); err != nil {
		return fmt.Errorf("detail of event %d: %w", e.ID, err)
	}
	e.FillEmpty()
	return nil
}

// validateNew checks what Insert needs before anything is written.
func validateNew(e Event) error {
	if e.Type == "" {
		return errors.New("event has no type")
	}
	if e.StartedAt.IsZero() {
		return errors.New("event has no started_at")
	}
	switch e.Mode {
	case "", ModeEnforce, ModeShadow:
	default:
		return fmt.Errorf("event mode %q is neither enforce nor shadow", e.Mode)
	}
	return validateStatus(e.Status)
}

// storedMode is the mode column of e: an event of a rule without a mode
// enforces.
func storedMode(e Event) string {
	if e.Mode == "" {
		return ModeEnforce
	}
	return e.Mode
}

// validateStatus keeps the status column to the two values Query filters
// on; the events table has no CHECK constraint, so that a later status
// needs no table rebuild in SQLite.
func validateStatus(status string) error {
	switch status {
	case StatusActive, StatusEnded:
		return nil
	}
	return fmt.Errorf("event status %q is neither active nor ended", status)
}
