package events

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

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
	sqlStore
}

var (
	_ Store           = (*SQLiteStore)(nil)
	_ BatchWriter     = (*SQLiteStore)(nil)
	_ SuspensionStore = (*SQLiteStore)(nil)
	_ Pruner          = (*SQLiteStore)(nil)
)

// sqliteReadConns bounds the read pool. Queries are short and the file is
// shared, so a handful of connections covers an admin console, the CLI and
// the detection engine looking up events at the same time.
const sqliteReadConns = 4

// sqliteMigrations returns the schema changes in order; PRAGMA
// user_version records how many a database has run. Append, never edit:
// released databases have already run the earlier ones.
func sqliteMigrations() []string {
	return []string{sqliteSchemaV1, sqliteSchemaV2, sqliteSchemaV3, sqliteSchemaV4}
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
` + eventIndexes + `
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

// eventIndexes are the indexes of Query's sort fields and common
// filtered views (see sqliteSchemaV1), the same in every store. Part of
// released migrations: never edit, add indexes in a new migration.
const eventIndexes = `CREATE INDEX events_by_started_at      ON events (started_at, id);
CREATE INDEX events_by_type            ON events (type, id);
CREATE INDEX events_by_source          ON events (source, id);
CREATE INDEX events_by_impact          ON events (impact, id);
CREATE INDEX events_by_type_started_at ON events (type, started_at, id);
CREATE INDEX events_by_type_impact     ON events (type, impact, id);
CREATE INDEX events_by_status_started  ON events (status, started_at, id);
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

// sqliteSchemaV4 indexes ended_at for retention (DeleteEnded), which
// deletes the oldest ended events in small batches: without it each batch
// would scan and sort every ended event while holding the write lock.
// Partial, over ended events only, which are all retention deletes; the
// statement spells the same literal condition so that the planner can
// prove the index applies.
const sqliteSchemaV4 = `
CREATE INDEX events_by_ended_at ON events (ended_at) WHERE status = 'ended';
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
	return &SQLiteStore{sqlStore{write: write, read: read, d: sqliteDialect()}}, nil
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

// migrateSQLite runs the migrations db has not run yet (see migrate);
// PRAGMA user_version counts them.
func migrateSQLite(ctx context.Context, db *sql.DB) error {
	return migrate(ctx, db, sqliteMigrations(), schemaVersion{
		read: func(ctx context.Context, tx *sql.Tx) (int, error) {
			var v int
			err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v)
			return v, err
		},
		// PRAGMA takes no bind parameters; the value is an int we computed.
		record: func(ctx context.Context, tx *sql.Tx, v int) error {
			_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v))
			return err
		},
	})
}

// sqliteDialect is how the shared SQL builder talks to SQLite.
func sqliteDialect() sqlDialect {
	return sqlDialect{
		bind:    questionBind,
		timeArg: func(t time.Time) any { return clampedNanos(t) },
		// SQLite transactions are serializable; a read transaction sees
		// one WAL snapshot.
		snapshot: &sql.TxOptions{ReadOnly: true},
		// INDEXED BY fails the statement, rather than scanning, if the
		// index could not serve it.
		endedIndex: " INDEXED BY events_by_ended_at",
		plan: func(ctx context.Context, tx *sql.Tx, q Query, total int) (pageOptions, error) {
			// The largest id stands in for the table size: it is read
			// straight off the primary key and only overestimates after
			// deletions.
			var size sql.NullInt64
			if err := tx.QueryRowContext(ctx, "SELECT max(id) FROM events").Scan(&size); err != nil {
				return pageOptions{}, fmt.Errorf("size: %w", err)
			}
			return sqlitePageOptions(q, total, size.Int64), nil
		},
	}
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

// Close refreshes the planner statistics, as SQLite advises before a
// connection closes, and closes both pools.
func (s *SQLiteStore) Close() error {
	_, err := s.write.Exec("PRAGMA optimize")
	if err != nil {
		err = fmt.Errorf("events: close: optimize: %w", err)
	}
	return errors.Join(err, s.read.Close(), s.write.Close())
}
