package events

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"
)

// sqlStore is what the SQL stores share: every Store, BatchWriter and
// SuspensionStore method over database/sql. SQLiteStore and PostgresStore
// embed it and add how they open, migrate and close; the statements differ
// only in what their sqlDialect spells.
type sqlStore struct {
	// write takes every write; read every read. They are one pool for
	// PostgreSQL and two for SQLite (see SQLiteStore).
	write, read *sql.DB
	d           sqlDialect
}

// base returns the shared store, for the tests that run on every store.
func (s *sqlStore) base() *sqlStore { return s }

// execer runs a statement on the write pool or in a transaction.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// schemaVersion is how a database records the migrations it has run.
type schemaVersion struct {
	prepare func(ctx context.Context, tx *sql.Tx) error // nil: nothing to do first
	read    func(ctx context.Context, tx *sql.Tx) (int, error)
	record  func(ctx context.Context, tx *sql.Tx, version int) error
}

// migrate runs the migrations db has not run yet, recording each, in one
// transaction so that a failure leaves the previous schema intact. It
// refuses a database from a newer mxguard: this one cannot know what its
// migrations changed. Migrations are appended, never edited: released
// databases have already run the earlier ones.
func migrate(ctx context.Context, db *sql.DB, migrations []string, sv schemaVersion) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback()
	if sv.prepare != nil {
		if err := sv.prepare(ctx, tx); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	version, err := sv.read(ctx, tx)
	if err != nil {
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
		if err := sv.record(ctx, tx, i+1); err != nil {
			return fmt.Errorf("migrate: record schema version %d: %w", i+1, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// Insert stores a new event and sets e.ID.
func (s *sqlStore) Insert(ctx context.Context, e *Event) error {
	e.Mode = storedMode(*e)
	id, err := s.insert(ctx, s.write, *e)
	if err != nil {
		return err
	}
	e.ID = id
	return nil
}

// insert stores a new event and returns its ID. RETURNING works in both
// databases (SQLite since 3.35), and database/sql's LastInsertId does not
// exist for PostgreSQL.
func (s *sqlStore) insert(ctx context.Context, x execer, e Event) (int64, error) {
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
	var id int64
	err = x.QueryRowContext(ctx, s.d.rebind(
		`INSERT INTO events (type, rule, mode, status, started_at, ended_at, source, service, impact, actions, node, detail)
		 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`),
		e.Type, e.Rule, storedMode(e), e.Status, started, ended, e.Source, e.Service, e.Impact, actions, e.Node, detail).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("events: insert: %w", err)
	}
	return id, nil
}

// Update rewrites status, ended_at, impact, actions and detail of e.ID;
// ErrNotFound when there is no such event.
func (s *sqlStore) Update(ctx context.Context, e Event) error {
	return s.update(ctx, s.write, e)
}

func (s *sqlStore) update(ctx context.Context, x execer, e Event) error {
	if err := validateStatus(e.Status); err != nil {
		return fmt.Errorf("events: update %d: %w", e.ID, err)
	}
	ended, actions, detail, err := mutableColumns(e)
	if err != nil {
		return fmt.Errorf("events: update %d: %w", e.ID, err)
	}
	res, err := x.ExecContext(ctx, s.d.rebind(
		`UPDATE events SET status = ?, ended_at = ?, impact = ?, actions = ?, detail = ? WHERE id = ?`),
		e.Status, ended, e.Impact, actions, detail, e.ID)
	return affectedOne(res, err, fmt.Sprintf("update event %d", e.ID))
}

// WriteBatch writes b in one transaction (BatchWriter); on any error
// nothing of it is written and no ID is set.
func (s *sqlStore) WriteBatch(ctx context.Context, b *Batch) (err error) {
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
		if ids[i], err = s.insert(ctx, tx, *e); err != nil {
			return err
		}
	}
	for _, e := range b.Update {
		if err = s.update(ctx, tx, e); err != nil {
			return err
		}
	}
	for _, bl := range b.Put {
		if err = s.putBlock(ctx, tx, bl); err != nil {
			return err
		}
	}
	for _, src := range b.Delete {
		if _, err = tx.ExecContext(ctx, s.d.rebind("DELETE FROM blocks WHERE source = ?"), src); err != nil {
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

// mutableColumns encodes the columns Update may change.
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
func (s *sqlStore) Get(ctx context.Context, id int64) (Event, error) {
	row := s.read.QueryRowContext(ctx, s.d.rebind("SELECT "+eventColumns+" FROM events WHERE id = ?"), id)
	e, err := scanEvent(row)
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
func (s *sqlStore) Query(ctx context.Context, q Query) (Result, error) {
	q, err := q.Normalize()
	if err != nil {
		return Result{}, fmt.Errorf("events: query: %w", err)
	}
	// One read transaction, so that the total and the page come from the
	// same snapshot even while writers insert.
	tx, err := s.read.BeginTx(ctx, s.d.snapshot)
	if err != nil {
		return Result{}, fmt.Errorf("events: query: %w", err)
	}
	defer tx.Rollback()
	count := s.d.eventCount(q)
	var total int
	if err := tx.QueryRowContext(ctx, count.text, count.args...).Scan(&total); err != nil {
		return Result{}, fmt.Errorf("events: query: count: %w", err)
	}
	res := Result{Total: total, Events: make([]Event, 0, max(0, min(q.Limit, total-q.Offset)))}
	if total <= q.Offset {
		return res, nil
	}
	var opts pageOptions
	if s.d.plan != nil {
		if opts, err = s.d.plan(ctx, tx, q, total); err != nil {
			return Result{}, fmt.Errorf("events: query: %w", err)
		}
	}
	page, err := s.d.eventPage(q, opts)
	if err != nil {
		return Result{}, fmt.Errorf("events: query: %w", err)
	}
	rows, err := tx.QueryContext(ctx, page.text, page.args...)
	if err != nil {
		return Result{}, fmt.Errorf("events: query: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		e, err := scanEvent(rows)
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

// rowScanner is what *sql.Row and *sql.Rows have in common.
type rowScanner interface {
	Scan(dest ...any) error
}

// scanEvent reads one row of eventColumns.
func scanEvent(r rowScanner) (Event, error) {
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

// DeleteEnded deletes at most limit ended events whose ended_at is before
// cutoff, oldest first, and returns how many it deleted (Pruner). One
// statement per call, so that the write lock (SQLite) or the row locks
// (PostgreSQL) are held for one small batch only.
func (s *sqlStore) DeleteEnded(ctx context.Context, cutoff time.Time, limit int) (int, error) {
	// The partial index events_by_ended_at holds exactly the ended
	// events in ended_at order, so a batch reads its rows straight off it
	// and stops at the limit. SQLite without statistics would rather
	// collect every ended event through the status index and sort them,
	// which costs the whole table per batch: the dialect names the index.
	res, err := s.write.ExecContext(ctx, s.d.rebind(
		`DELETE FROM events WHERE id IN (
		   SELECT id FROM events`+s.d.endedIndex+` WHERE status = 'ended' AND ended_at < ? ORDER BY ended_at LIMIT ?)`),
		clampedNanos(cutoff), limit)
	if err != nil {
		return 0, fmt.Errorf("events: delete ended events: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("events: delete ended events: %w", err)
	}
	return int(n), nil
}

// PutBlock inserts or replaces the block of b.Source. A zero CreatedAt or
// ExpiresAt is stored as NULL and read back as zero; a zero ExpiresAt
// means the block does not expire.
func (s *sqlStore) PutBlock(ctx context.Context, b Block) error {
	return s.putBlock(ctx, s.write, b)
}

func (s *sqlStore) putBlock(ctx context.Context, x execer, b Block) error {
	if b.Source == "" {
		return errors.New("events: put block: empty source")
	}
	return s.putHold(ctx, x, blocksTable, hold{b.Source, b.Reason, b.Rule, b.EventID, b.CreatedAt, b.ExpiresAt, b.Manual})
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

// putHold upserts h. Several nodes may put the same key at once
// (PostgreSQL): ON CONFLICT makes that one atomic statement, the last
// writer wins, and neither sees a unique violation.
func (s *sqlStore) putHold(ctx context.Context, x execer, t holdTable, h hold) error {
	created, err := nullableNanos(h.CreatedAt)
	if err != nil {
		return fmt.Errorf("events: put %s %s: created_at: %w", t.what, h.Key, err)
	}
	expires, err := nullableNanos(h.ExpiresAt)
	if err != nil {
		return fmt.Errorf("events: put %s %s: expires_at: %w", t.what, h.Key, err)
	}
	// Table and column names are constants.
	_, err = x.ExecContext(ctx, s.d.rebind(
		`INSERT INTO `+t.name+` (`+t.key+`, reason, rule, event_id, created_at, expires_at, manual)
		 VALUES (?, ?, ?, ?, ?, ?, ?)
		 ON CONFLICT (`+t.key+`) DO UPDATE SET reason = excluded.reason, rule = excluded.rule,
		   event_id = excluded.event_id, created_at = excluded.created_at,
		   expires_at = excluded.expires_at, manual = excluded.manual`),
		h.Key, h.Reason, h.Rule, h.EventID, created, expires, h.Manual)
	if err != nil {
		return fmt.Errorf("events: put %s %s: %w", t.what, h.Key, err)
	}
	return nil
}

func (s *sqlStore) holds(ctx context.Context, t holdTable) ([]hold, error) {
	// NULLS FIRST spells out SQLite's default, which PostgreSQL reverses.
	rows, err := s.read.QueryContext(ctx,
		`SELECT `+t.key+`, reason, rule, event_id, created_at, expires_at, manual
		 FROM `+t.name+` ORDER BY created_at NULLS FIRST, `+t.key)
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

func (s *sqlStore) deleteHold(ctx context.Context, t holdTable, key string) error {
	res, err := s.write.ExecContext(ctx, s.d.rebind("DELETE FROM "+t.name+" WHERE "+t.key+" = ?"), key)
	return affectedOne(res, err, "delete "+t.what+" "+key)
}

// DeleteBlock removes the block of source; ErrNotFound when there is none.
func (s *sqlStore) DeleteBlock(ctx context.Context, source string) error {
	return s.deleteHold(ctx, blocksTable, source)
}

// Blocks returns every stored block, expired ones included, oldest first.
func (s *sqlStore) Blocks(ctx context.Context) ([]Block, error) {
	return holdsAs(s, ctx, blocksTable, func(h hold) Block {
		return Block{h.Key, h.Reason, h.Rule, h.EventID, h.CreatedAt, h.ExpiresAt, h.Manual}
	})
}

// holdsAs lists a table of holds as T, never nil.
func holdsAs[T any](s *sqlStore, ctx context.Context, t holdTable, as func(hold) T) ([]T, error) {
	hs, err := s.holds(ctx, t)
	out := make([]T, len(hs))
	for i, h := range hs {
		out[i] = as(h)
	}
	return out, err
}

// PutSuspension inserts or replaces the suspension of su.Account.
func (s *sqlStore) PutSuspension(ctx context.Context, su Suspension) error {
	if su.Account == "" {
		return errors.New("events: put suspension: empty account")
	}
	return s.putHold(ctx, s.write, suspensionsTable, hold{su.Account, su.Reason, su.Rule, su.EventID, su.CreatedAt, su.ExpiresAt, su.Manual})
}

// DeleteSuspension removes the suspension of account; ErrNotFound when
// there is none.
func (s *sqlStore) DeleteSuspension(ctx context.Context, account string) error {
	return s.deleteHold(ctx, suspensionsTable, account)
}

// Suspensions returns every stored suspension, expired ones included,
// oldest first.
func (s *sqlStore) Suspensions(ctx context.Context) ([]Suspension, error) {
	return holdsAs(s, ctx, suspensionsTable, func(h hold) Suspension {
		return Suspension{h.Key, h.Reason, h.Rule, h.EventID, h.CreatedAt, h.ExpiresAt, h.Manual}
	})
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
