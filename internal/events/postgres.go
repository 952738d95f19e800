package events

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
)

// PostgresStore is the Store for clusters (storage.driver: postgres):
// every node writes its events, blocks and suspensions to one shared
// database. It is safe for concurrent use by any number of nodes: event
// IDs come from an identity sequence, blocks and suspensions are upserts,
// and migrations take an advisory lock.
//
// It runs the same statements as SQLiteStore (sqlStore) through pgx's
// database/sql adapter over a pgxpool.Pool, which owns the connections.
type PostgresStore struct {
	sqlStore
	pool *pgxpool.Pool
}

var (
	_ Store           = (*PostgresStore)(nil)
	_ BatchWriter     = (*PostgresStore)(nil)
	_ SuspensionStore = (*PostgresStore)(nil)
	_ Pruner          = (*PostgresStore)(nil)
)

// Pool defaults, for the DSN parameters an operator did not set. Each
// node's writer uses one connection at a time and the console a few, so
// a small pool leaves the server's max_connections (default 100) to many
// nodes. The timeouts bound what an unreachable or overloaded database
// can cost: the detection engine keeps its state in memory and retries
// (detect's writer), but a call must return for it to retry.
const (
	postgresMaxConns       = 8
	postgresConnectTimeout = 5 * time.Second
	// statement_timeout: no statement of this store should take seconds;
	// a stuck one (a lock held by a crashed client) fails instead.
	postgresStatementTimeout = "30s"
	// idle_in_transaction_session_timeout: a node that hangs inside a
	// transaction does not hold its locks against the others for long.
	postgresIdleInTransaction = "60s"
)

// postgresMigrations returns the schema changes in order; the
// schema_version table records which a database has run. Append, never
// edit: released databases have already run the earlier ones.
func postgresMigrations() []string {
	return []string{postgresSchemaV1}
}

// postgresSchemaV1 is the SQLite schema (v1 to v4) in PostgreSQL.
//
// Times are bigint unix nanoseconds in UTC, as in SQLite, rather than
// timestamptz: timestamptz keeps microseconds, so an event would not read
// back as it was written, and Query's since/until would compare
// differently in the two stores. (to_timestamp(started_at / 1e9) shows
// one in psql.) Text columns that Query sorts use the "C" collation, the
// byte order SQLite sorts in, whatever the database's default collation:
// a linguistic one would order sources like "2001:db8::/64" and
// "203.0.113.7" differently from SQLite and from the API's contract of one
// order. actions and detail are jsonb, so operators can query detail in
// SQL; the store reads them back through encoding/json either way.
//
// Identity columns (GENERATED ALWAYS) draw from one sequence shared by
// every node, never reused.
const postgresSchemaV1 = `
CREATE TABLE events (
	id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	type       text COLLATE "C" NOT NULL,
	rule       text NOT NULL,
	mode       text NOT NULL DEFAULT 'enforce',
	status     text NOT NULL,
	started_at bigint NOT NULL,
	ended_at   bigint,           -- NULL while active
	source     text COLLATE "C" NOT NULL,
	service    text NOT NULL,
	impact     bigint NOT NULL,
	actions    jsonb NOT NULL,   -- array
	node       text NOT NULL DEFAULT '',
	detail     jsonb NOT NULL    -- object
);
` + eventIndexes + `
CREATE INDEX events_by_ended_at ON events (ended_at) WHERE status = 'ended';

CREATE TABLE blocks (
	source     text PRIMARY KEY,
	reason     text NOT NULL,
	rule       text NOT NULL,
	event_id   bigint NOT NULL,  -- 0 for manual blocks
	created_at bigint,           -- NULL when the caller gave none
	expires_at bigint,           -- NULL: never expires
	manual     boolean NOT NULL
);

CREATE TABLE suspensions (
	account    text PRIMARY KEY,
	reason     text NOT NULL,
	rule       text NOT NULL,
	event_id   bigint NOT NULL,  -- 0 for manual suspensions
	created_at bigint,
	expires_at bigint,
	manual     boolean NOT NULL
);
`

// postgresMigrationLock is the pg_advisory_xact_lock key of migrations
// ("mxguard" in ASCII), so that nodes starting at once migrate one after
// the other instead of racing to create the same tables.
const postgresMigrationLock = 0x6d78677561726400

// OpenPostgres connects to the database dsn names (a postgres:// URL or
// key=value string, as libpq takes; pool_max_conns and the other pgxpool
// parameters are honoured) and brings its schema up to date. The
// database must be reachable: the migration runs now. Errors never
// include the DSN's password.
func OpenPostgres(ctx context.Context, dsn string) (*PostgresStore, error) {
	cfg, err := postgresConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("events: open postgres: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("events: open postgres: %w", err)
	}
	db := stdlib.OpenDBFromPool(pool)
	s := &PostgresStore{sqlStore{write: db, read: db, d: postgresDialect()}, pool}
	if err := migratePostgres(ctx, db); err != nil {
		s.Close()
		return nil, fmt.Errorf("events: open postgres %s: %w", postgresTarget(cfg), err)
	}
	return s, nil
}

// postgresConfig parses dsn and fills in the defaults the DSN left out.
func postgresConfig(dsn string) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("bad dsn: %s", dsnProblem(dsn, err))
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = postgresMaxConns
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = postgresConnectTimeout
	}
	params := cfg.ConnConfig.RuntimeParams
	for k, v := range map[string]string{
		"application_name":                    "mxguard",
		"statement_timeout":                   postgresStatementTimeout,
		"idle_in_transaction_session_timeout": postgresIdleInTransaction,
	} {
		if _, ok := params[k]; !ok {
			params[k] = v
		}
	}
	return cfg, nil
}

// dsnProblem says what is wrong with dsn without showing it. pgx masks
// the passwords it recognizes in its parse errors, on a best-effort basis
// for a malformed DSN, and a wrapped url.Error quotes the URL whole; so the
// quoted DSN is cut off and anything that may be a password masked.
func dsnProblem(dsn string, err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, "`: "); i >= 0 {
		msg = msg[i+len("`: "):]
	}
	var secrets []string
	if _, rest, ok := strings.Cut(dsn, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
				secrets = append(secrets, pw)
			}
		}
	}
	for _, f := range strings.Fields(dsn) {
		if pw, ok := strings.CutPrefix(f, "password="); ok {
			secrets = append(secrets, strings.Trim(pw, "'"))
		}
	}
	for _, pw := range secrets {
		if pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}

// postgresTarget names the database for messages: user, host, port and
// database, never the password.
func postgresTarget(cfg *pgxpool.Config) string {
	c := cfg.ConnConfig
	return fmt.Sprintf("%s@%s:%d/%s", c.User, c.Host, c.Port, c.Database)
}

// migratePostgres runs the migrations the database has not run yet (see
// migrate; PostgreSQL's DDL is transactional too) under an advisory lock
// held until the transaction ends, so that nodes starting at once take
// turns: the second finds the schema up to date.
func migratePostgres(ctx context.Context, db *sql.DB) error {
	return migrate(ctx, db, postgresMigrations(), schemaVersion{
		prepare: func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(postgresMigrationLock)); err != nil {
				return fmt.Errorf("lock: %w", err)
			}
			// One row per migration run: which, and when.
			_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (
				version    integer PRIMARY KEY,
				applied_at timestamptz NOT NULL DEFAULT now())`)
			return err
		},
		read: func(ctx context.Context, tx *sql.Tx) (int, error) {
			var v int
			err := tx.QueryRowContext(ctx, "SELECT coalesce(max(version), 0) FROM schema_version").Scan(&v)
			return v, err
		},
		record: func(ctx context.Context, tx *sql.Tx, v int) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO schema_version (version) VALUES ($1)", v)
			return err
		},
	})
}

// postgresDialect is how the shared SQL builder talks to PostgreSQL.
func postgresDialect() sqlDialect {
	return sqlDialect{
		bind:    dollarBind,
		timeArg: func(t time.Time) any { return clampedNanos(t) },
		// PostgreSQL's default READ COMMITTED takes a snapshot per
		// statement; REPEATABLE READ gives the count and the page one.
		snapshot: &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true},
		// plan nil: PostgreSQL's planner has statistics.
	}
}

// Close closes the connections.
func (s *PostgresStore) Close() error {
	err := s.write.Close()
	s.pool.Close()
	return err
}
