package events

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the pure-Go "sqlite" driver
)

// SQLiteStore is the default Store: one database file, normally in
// data_dir. It is safe for concurrent use.
//
// It keeps two connection pools on the same file. SQLite allows one writer
// at a time; a pool of exactly one write connection makes writers queue in
// database/sql, in arrival order, instead of failing with SQLITE_BUSY or
// spinning in SQLite's busy handler. In WAL mode readers never wait for
// that writer, so queries get their own pool of read-only connections and
// are not starved by a burst of inserts.
type SQLiteStore struct {
	write *sql.DB
	read  *sql.DB
}

var (
	_ Store           = (*SQLiteStore)(nil)
	_ BatchWriter     = (*SQLiteStore)(nil)
	_ SuspensionStore = (*SQLiteStore)(nil)
)

// sqliteReadConns bounds the read pool. Queries are short and the file is
// shared, so a handful of connections covers an admin console, the CLI and
// the detection engine looking up events at the same time.
const sqliteReadConns = 4

// sqliteMigrations returns the schema changes in order; PRAGMA
// user_version records how many a database has run. Append, never edit:
// released databases have already run the earlier ones.
func sqliteMigrations() []string {
	return []string{sqliteSchemaV1, sqliteSchemaV2, sqliteSchemaV3}
}

// sqliteSchemaV1 is the first schema. Times are INTEGER unix nanoseconds
// in UTC: integers sort chronologically and compare cheaply in indexes
// while keeping sub-second precision, which RFC 3339 text with a varying
// number of fraction digits would not sort correctly. STRICT makes SQLite
// refuse a value of the wrong type instead of storing it.
//
// The indexes follow Query: one per sort field for the unfiltered views,
// and (filter, sort) pairs for the views the console uses most (one type
// by time or by impact, active events by time). Each ends in id, the tie
// breaker, so ORDER BY x, id is read straight from the index and LIMIT
// stops the scan early.
const sqliteSchemaV1 = `
CREATE TABLE events (
	id         INTEGER PRIMARY KEY AUTOINCREMENT, -- never reused: blocks and alerts refer to it
	type       TEXT    NOT NULL,
	rule       TEXT    NOT NULL,
	status     TEXT    NOT NULL,
	started_at INTEGER NOT NULL,
	ended_at   INTEGER,          -- NULL while active
	source     TEXT    NOT NULL,
	service    TEXT    NOT NULL,
	impact     INTEGER NOT NULL,
	actions    TEXT    NOT NULL, -- JSON array
	detail     TEXT    NOT NULL  -- JSON object
) STRICT;
CREATE INDEX events_by_started_at      ON events (started_at, id);
CREATE INDEX events_by_type            ON events (type, id);
CREATE INDEX events_by_source          ON events (source, id);
CREATE INDEX events_by_impact          ON events (impact, id);
CREATE INDEX events_by_type_started_at ON events (type, started_at, id);
CREATE INDEX events_by_type_impact     ON events (type, impact, id);
CREATE INDEX events_by_status_started  ON events (status, started_at, id);

CREATE TABLE blocks (
	source     TEXT    PRIMARY KEY,
	reason     TEXT    NOT NULL,
	rule       TEXT    NOT NULL,
	event_id   INTEGER NOT NULL, -- 0 for manual blocks
	created_at INTEGER,          -- NULL when the caller gave none
	expires_at INTEGER,          -- NULL: never expires
	manual     INTEGER NOT NULL
) STRICT;
`

// sqliteSchemaV2 adds suspended accounts, shaped like blocks.
const sqliteSchemaV2 = `
CREATE TABLE suspensions (
	account    TEXT    PRIMARY KEY,
	reason     TEXT    NOT NULL,
	rule       TEXT    NOT NULL,
	event_id   INTEGER NOT NULL, -- 0 for manual suspensions
	created_at INTEGER,
	expires_at INTEGER,
	manual     INTEGER NOT NULL
) STRICT;
`

// sqliteSchemaV3 adds the rule's mode (enforce | shadow) and the node that
// recorded the event; events written before it enforced, on this node.
const sqliteSchemaV3 = `
ALTER TABLE events ADD COLUMN mode TEXT NOT NULL DEFAULT 'enforce';
ALTER TABLE events ADD COLUMN node TEXT NOT NULL DEFAULT '';
`

// OpenSQLite opens (creating if needed) the SQLite database at path and
// brings its schema up to date. path must name a file: an in-memory
// database would not be shared between the two pools.
func OpenSQLite(ctx context.Context, path string) (*SQLiteStore, error) {
	if path == "" {
		return nil, errors.New("events: open sqlite: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("events: open sqlite %s: %w", path, err)
	}
	// WAL lets readers run while the writer writes; synchronous=NORMAL is
	// safe from corruption in WAL mode and only risks the last commits on
	// power loss, acceptable for events and far cheaper than an fsync per
	// insert. busy_timeout covers other processes on the same file (an
	// operator's sqlite3 shell, a checkpoint). BEGIN IMMEDIATE takes the
	// write lock up front, so a transaction cannot fail halfway with
	// SQLITE_BUSY when it first writes.
	write, err := openSQLitePool(abs, 1,
		"_pragma=busy_timeout(5000)", "_pragma=journal_mode(WAL)", "_pragma=synchronous(NORMAL)",
		"_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("events: open sqlite %s: %w", path, err)
	}
	if err := migrateSQLite(ctx, write); err != nil {
		write.Close()
		return nil, fmt.Errorf("events: open sqlite %s: %w", path, err)
	}
	// SQLite's advice for long-lived connections: refresh the planner
	// statistics the indexes above depend on once at open, bounded by
	// analysis_limit so a large file does not delay startup.
	if _, err := write.ExecContext(ctx, "PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002"); err != nil {
		write.Close()
		return nil, fmt.Errorf("events: open sqlite %s: optimize: %w", path, err)
	}
	read, err := openSQLitePool(abs, sqliteReadConns, "_pragma=busy_timeout(5000)", "_pragma=query_only(1)")
	if err == nil {
		err = read.PingContext(ctx)
	}
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("events: open sqlite %s: %w", path, err)
	}
	return &SQLiteStore{write: write, read: read}, nil
}

// openSQLitePool opens a pool of at most conns connections to the file at
// the absolute path abs, each configured by the DSN parameters params.
func openSQLitePool(abs string, conns int, params ...string) (*sql.DB, error) {
	// A "file:" URI, with the characters URIs reserve escaped, so that a
	// data_dir containing '?' or '#' still names the right file.
	escaped := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.ToSlash(abs))
	db, err := sql.Open("sqlite", "file:"+escaped+"?"+strings.Join(params, "&"))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	return db, nil
}

// migrateSQLite runs the migrations db has not run yet, in one
// transaction so that a failure leaves the previous schema intact.
func migrateSQLite(ctx context.Context, db *sql.DB) error {
	migrations := sqliteMigrations()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()
	var version int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("migrate: read schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this mxguard knows (%d); refusing to use it", version, len(migrations))
	}
	if version == len(migrations) {
		return nil
	}
	for i := version; i < len(migrations); i++ {
		if _, err := tx.ExecContext(ctx, migrations[i]); err != nil {
			return fmt.Errorf("migrate to schema version %d: %w", i+1, err)
		}
	}
	// PRAGMA takes no bind parameters; the value is an int we computed.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
		return fmt.Errorf("migrate: set schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// sqliteDialect is how the shared SQL builder talks to SQLite.
func sqliteDialect() sqlDialect {
	return sqlDialect{bind: questionBind, timeArg: func(t time.Time) any { return clampedNanos(t) }}
}

// execer runs a statement on the write pool or in a transaction.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Insert stores a new event and sets e.ID.
func (s *SQLiteStore) Insert(ctx context.Context, e *Event) error {
	e.Mode = storedMode(*e)
	id, err := sqliteInsert(ctx, s.write, *e)
	if err != nil {
		return err
	}
	e.ID = id
	return nil
}

// sqliteInsert stores a new event and returns its ID.
func sqliteInsert(ctx context.Context, x execer, e Event) (int64, error) {
	if err := validateNew(e); err != nil {
		return 0, fmt.Errorf("events: insert: %w", err)
	}
	started, err := storedNanos(e.StartedAt)
	if err != nil {
		return 0, fmt.Errorf("events: insert: started_at: %w", err)
	}
	ended, actions, detail, err := mutableColumns(e)
	if err != nil {
		return 0, fmt.Errorf("events: insert: %w", err)
	}
	res, err := x.ExecContext(ctx,
		`INSERT INTO events (type, rule, mode, status, started_at, ended_at, source, service, impact, actions, node, detail)
		 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.Type, e.Rule, storedMode(e), e.Status, started, ended, e.Source, e.Service, e.Impact, actions, e.Node, detail)
	if err != nil {
		return 0, fmt.Errorf("events: insert: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("events: insert: %w", err)
	}
	return id, nil
}

// Update rewrites status, ended_at, impact, actions and detail of e.ID;
// ErrNotFound when there is no such event.
func (s *SQLiteStore) Update(ctx context.Context, e Event) error {
	return sqliteUpdate(ctx, s.write, e)
}

func sqliteUpdate(ctx context.Context, x execer, e Event) error {
	if err := validateStatus(e.Status); err != nil {
		return fmt.Errorf("events: update %d: %w", e.ID, err)
	}
	ended, actions, detail, err := mutableColumns(e)
	if err != nil {
		return fmt.Errorf("events: update %d: %w", e.ID, err)
	}
	res, err := x.ExecContext(ctx,
		`UPDATE events SET status = ?, ended_at = ?, impact = ?, actions = ?, detail = ? WHERE id = ?`,
		e.Status, ended, e.Impact, actions, detail, e.ID)
	return affectedOne(res, err, fmt.Sprintf("update event %d", e.ID))
}

// WriteBatch writes b in one transaction (BatchWriter); on any error
// nothing of it is written and no ID is set.
func (s *SQLiteStore) WriteBatch(ctx context.Context, b *Batch) (err error) {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("events: batch: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the error that got us here is the one to report
		}
	}()
	ids := make([]int64, len(b.Insert))
	for i, e := range b.Insert {
		e.Mode = storedMode(*e)
		if ids[i], err = sqliteInsert(ctx, tx, *e); err != nil {
			return err
		}
	}
	for _, e := range b.Update {
		if err = sqliteUpdate(ctx, tx, e); err != nil {
			return err
		}
	}
	for _, bl := range b.Put {
		if err = sqlitePutBlock(ctx, tx, bl); err != nil {
			return err
		}
	}
	for _, src := range b.Delete {
		if _, err = tx.ExecContext(ctx, "DELETE FROM blocks WHERE source = ?", src); err != nil {
			return fmt.Errorf("events: batch: delete block %s: %w", src, err)
		}
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("events: batch: commit: %w", err)
	}
	for i, e := range b.Insert {
		e.ID = ids[i]
	}
	return nil
}

// mutableColumns encodes the columns Update may change, as SQLite stores
// them.
func mutableColumns(e Event) (ended any, actions, detail string, err error) {
	if e.EndedAt != nil {
		n, err := storedNanos(*e.EndedAt)
		if err != nil {
			return nil, "", "", fmt.Errorf("ended_at: %w", err)
		}
		ended = n
	}
	if actions, err = encodeActions(e.Actions); err != nil {
		return nil, "", "", fmt.Errorf("actions: %w", err)
	}
	if detail, err = encodeDetail(e.Detail); err != nil {
		return nil, "", "", fmt.Errorf("detail: %w", err)
	}
	return ended, actions, detail, nil
}

// Get returns the event id; ErrNotFound when there is none.
func (s *SQLiteStore) Get(ctx context.Context, id int64) (Event, error) {
	row := s.read.QueryRowContext(ctx, "SELECT "+eventColumns+" FROM events WHERE id = ?", id)
	e, err := scanSQLiteEvent(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Event{}, fmt.Errorf("events: get %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Event{}, fmt.Errorf("events: get %d: %w", id, err)
	}
	return e, nil
}

// Query returns one page of the events matching q and the count of all
// matches. Errors from a bad q wrap ErrBadQuery.
func (s *SQLiteStore) Query(ctx context.Context, q Query) (Result, error) {
	q, err := q.Normalize()
	if err != nil {
		return Result{}, fmt.Errorf("events: query: %w", err)
	}
	// One read transaction, so that the total and the page come from the
	// same snapshot even while the writer inserts.
	tx, err := s.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return Result{}, fmt.Errorf("events: query: %w", err)
	}
	defer tx.Rollback()
	count := sqliteDialect().eventCount(q)
	var total int
	if err := tx.QueryRowContext(ctx, count.text, count.args...).Scan(&total); err != nil {
		return Result{}, fmt.Errorf("events: query: count: %w", err)
	}
	res := Result{Total: total, Events: make([]Event, 0, max(0, min(q.Limit, total-q.Offset)))}
	if total <= q.Offset {
		return res, nil
	}
	// The largest id stands in for the table size: it is read straight
	// off the primary key and only overestimates after deletions.
	var size sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT max(id) FROM events").Scan(&size); err != nil {
		return Result{}, fmt.Errorf("events: query: size: %w", err)
	}
	page, err := sqliteDialect().eventPage(q, sqlitePageOptions(q, total, size.Int64))
	if err != nil {
		return Result{}, fmt.Errorf("events: query: %w", err)
	}
	rows, err := tx.QueryContext(ctx, page.text, page.args...)
	if err != nil {
		return Result{}, fmt.Errorf("events: query: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanSQLiteEvent(rows)
		if err != nil {
			return Result{}, fmt.Errorf("events: query: %w", err)
		}
		res.Events = append(res.Events, e)
	}
	if err := rows.Err(); err != nil {
		return Result{}, fmt.Errorf("events: query: %w", err)
	}
	return res, nil
}

// sqlitePageOptions chooses how the page of q is read, knowing that total
// of size events match. SQLite keeps no statistics on bind-parameter
// ranges and few on anything until ANALYZE has run, and left alone it
// either walks a whole sort index looking for a handful of matches (a
// recent since, sorted by impact) or sorts nearly the whole table for a
// page of 100 (status=ended, sorted by impact). There are two sensible
// plans, and the count tells their cost: collecting the matches and
// sorting them visits total rows; walking the sort index in order visits
// about (offset+limit)*size/total rows before the page is full.
func sqlitePageOptions(q Query, total int, size int64) pageOptions {
	walk := int64(q.Offset+q.Limit) * size / int64(max(total, 1))
	if int64(total) <= walk {
		return pageOptions{hideSort: true}
	}
	sort, _ := sortColumn(q.Sort)
	return pageOptions{hideFilter: func(column string) bool {
		return column != sort && !sqliteIndexedPair(column, sort)
	}}
}

// sqliteIndexedPair reports whether an index of sqliteSchemaV1 serves an
// equality on filter and the order of sort at once; such a filter is left
// visible so that the planner reads the page straight from that index.
func sqliteIndexedPair(filter, sort string) bool {
	switch filter + "," + sort {
	case "type,started_at", "type,impact", "status,started_at":
		return true
	}
	return false
}

// rowScanner is what *sql.Row and *sql.Rows have in common.
type rowScanner interface {
	Scan(dest ...any) error
}

// scanSQLiteEvent reads one row of eventColumns.
func scanSQLiteEvent(r rowScanner) (Event, error) {
	var (
		e               Event
		started         int64
		ended           sql.NullInt64
		actions, detail []byte
	)
	err := r.Scan(&e.ID, &e.Type, &e.Rule, &e.Mode, &e.Status, &started, &ended,
		&e.Source, &e.Service, &e.Impact, &actions, &e.Node, &detail)
	if err != nil {
		return Event{}, err
	}
	e.StartedAt = nanosTime(started)
	if ended.Valid {
		t := nanosTime(ended.Int64)
		e.EndedAt = &t
	}
	if err := decodeJSONColumns(&e, actions, detail); err != nil {
		return Event{}, err
	}
	return e, nil
}

// PutBlock inserts or replaces the block of b.Source. A zero CreatedAt or
// ExpiresAt is stored as NULL and read back as zero; a zero ExpiresAt
// means the block does not expire.
func (s *SQLiteStore) PutBlock(ctx context.Context, b Block) error {
	return sqlitePutBlock(ctx, s.write, b)
}

func sqlitePutBlock(ctx context.Context, x execer, b Block) error {
	if b.Source == "" {
		return errors.New("events: put block: empty source")
	}
	return putHold(ctx, x, blocksTable, hold{b.Source, b.Reason, b.Rule, b.EventID, b.CreatedAt, b.ExpiresAt, b.Manual})
}

// hold is a row of blocks or suspensions: both keep what holds, why, for
// how long and which event caused it, keyed by a source or an account.
type hold struct {
	Key       string
	Reason    string
	Rule      string
	EventID   int64
	CreatedAt time.Time
	ExpiresAt time.Time
	Manual    bool
}

// holdTable names a table of holds and its key column.
type holdTable struct{ name, key, what string }

var (
	blocksTable      = holdTable{"blocks", "source", "block"}
	suspensionsTable = holdTable{"suspensions", "account", "suspension"}
)

func putHold(ctx context.Context, x execer, t holdTable, h hold) error {
	created, err := nullableNanos(h.CreatedAt)
	if err != nil {
		return fmt.Errorf("events: put %s %s: created_at: %w", t.what, h.Key, err)
	}
	expires, err := nullableNanos(h.ExpiresAt)
	if err != nil {
		return fmt.Errorf("events: put %s %s: expires_at: %w", t.what, h.Key, err)
	}
	// ON CONFLICT rather than SQLite's INSERT OR REPLACE: it is the same
	// statement in PostgreSQL. Table and column names are constants.
	_, err = x.ExecContext(ctx,
		`INSERT INTO `+t.name+` (`+t.key+`, reason, rule, event_id, created_at, expires_at, manual)
		 VALUES (?, ?, ?, ?, ?, ?, ?)
		 ON CONFLICT (`+t.key+`) DO UPDATE SET reason = excluded.reason, rule = excluded.rule,
		   event_id = excluded.event_id, created_at = excluded.created_at,
		   expires_at = excluded.expires_at, manual = excluded.manual`,
		h.Key, h.Reason, h.Rule, h.EventID, created, expires, h.Manual)
	if err != nil {
		return fmt.Errorf("events: put %s %s: %w", t.what, h.Key, err)
	}
	return nil
}

func (s *SQLiteStore) holds(ctx context.Context, t holdTable) ([]hold, error) {
	rows, err := s.read.QueryContext(ctx,
		`SELECT `+t.key+`, reason, rule, event_id, created_at, expires_at, manual
		 FROM `+t.name+` ORDER BY created_at, `+t.key)
	if err != nil {
		return nil, fmt.Errorf("events: %ss: %w", t.what, err)
	}
	defer rows.Close()
	var out []hold
	for rows.Next() {
		var (
			h                hold
			created, expires sql.NullInt64
		)
		if err := rows.Scan(&h.Key, &h.Reason, &h.Rule, &h.EventID, &created, &expires, &h.Manual); err != nil {
			return nil, fmt.Errorf("events: %ss: %w", t.what, err)
		}
		if created.Valid {
			h.CreatedAt = nanosTime(created.Int64)
		}
		if expires.Valid {
			h.ExpiresAt = nanosTime(expires.Int64)
		}
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("events: %ss: %w", t.what, err)
	}
	return out, nil
}

func (s *SQLiteStore) deleteHold(ctx context.Context, t holdTable, key string) error {
	res, err := s.write.ExecContext(ctx, "DELETE FROM "+t.name+" WHERE "+t.key+" = ?", key)
	return affectedOne(res, err, "delete "+t.what+" "+key)
}

// DeleteBlock removes the block of source; ErrNotFound when there is none.
func (s *SQLiteStore) DeleteBlock(ctx context.Context, source string) error {
	return s.deleteHold(ctx, blocksTable, source)
}

// Blocks returns every stored block, expired ones included, oldest first.
func (s *SQLiteStore) Blocks(ctx context.Context) ([]Block, error) {
	return holdsAs(s, ctx, blocksTable, func(h hold) Block {
		return Block{h.Key, h.Reason, h.Rule, h.EventID, h.CreatedAt, h.ExpiresAt, h.Manual}
	})
}

// holdsAs lists a table of holds as T, never nil.
func holdsAs[T any](s *SQLiteStore, ctx context.Context, t holdTable, as func(hold) T) ([]T, error) {
	hs, err := s.holds(ctx, t)
	out := make([]T, len(hs))
	for i, h := range hs {
		out[i] = as(h)
	}
	return out, err
}

// PutSuspension inserts or replaces the suspension of su.Account.
func (s *SQLiteStore) PutSuspension(ctx context.Context, su Suspension) error {
	if su.Account == "" {
		return errors.New("events: put suspension: empty account")
	}
	return putHold(ctx, s.write, suspensionsTable, hold{su.Account, su.Reason, su.Rule, su.EventID, su.CreatedAt, su.ExpiresAt, su.Manual})
}

// DeleteSuspension removes the suspension of account; ErrNotFound when
// there is none.
func (s *SQLiteStore) DeleteSuspension(ctx context.Context, account string) error {
	return s.deleteHold(ctx, suspensionsTable, account)
}

// Suspensions returns every stored suspension, expired ones included,
// oldest first.
func (s *SQLiteStore) Suspensions(ctx context.Context) ([]Suspension, error) {
	return holdsAs(s, ctx, suspensionsTable, func(h hold) Suspension {
		return Suspension{h.Key, h.Reason, h.Rule, h.EventID, h.CreatedAt, h.ExpiresAt, h.Manual}
	})
}

// Close refreshes the planner statistics, as SQLite advises before a
// connection closes, and closes both pools.
func (s *SQLiteStore) Close() error {
	_, err := s.write.Exec("PRAGMA optimize")
	if err != nil {
		err = fmt.Errorf("events: close: optimize: %w", err)
	}
	return errors.Join(err, s.read.Close(), s.write.Close())
}

// affectedOne turns the result of an UPDATE or DELETE by key into
// ErrNotFound when no row had that key.
func affectedOne(res sql.Result, err error, what string) error {
	if err != nil {
		return fmt.Errorf("events: %s: %w", what, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("events: %s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("events: %s: %w", what, ErrNotFound)
	}
	return nil
}

// storedNanos returns t as unix nanoseconds, refusing times an int64 of
// nanoseconds cannot hold (before 1678 or after 2262) rather than storing
// a wrapped value that would sort in the wrong place.
func storedNanos(t time.Time) (int64, error) {
	if t.Before(time.Unix(0, math.MinInt64)) || t.After(time.Unix(0, math.MaxInt64)) {
		return 0, fmt.Errorf("time %s out of the storable range", t.Format(time.RFC3339))
	}
	return t.UnixNano(), nil
}

// nullableNanos is storedNanos with the zero time stored as NULL.
func nullableNanos(t time.Time) (any, error) {
	if t.IsZero() {
		return nil, nil
	}
	return storedNanos(t)
}

// clampedNanos converts a filter bound; a bound outside the storable range
// is clamped to the nearest one, past every event Insert can store.
func clampedNanos(t time.Time) int64 {
	switch {
	case t.Before(time.Unix(0, math.MinInt64)):
		return math.MinInt64
	case t.After(time.Unix(0, math.MaxInt64)):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// nanosTime is the inverse of storedNanos, in UTC.
func nanosTime(n int64) time.Time {
	return time.Unix(0, n).UTC()
}
