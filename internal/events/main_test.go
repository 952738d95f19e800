package events

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"mxguard/internal/testutil"
)

// pg is this package's private PostgreSQL cluster, started by the first
// test that needs it; every test gets a database of its own.
var pg = testutil.NewPostgres()

func TestMain(m *testing.M) { os.Exit(testutil.RunWithPostgres(m, pg)) }

// testStore is what the store suite runs against: either store.
type testStore interface {
	Store
	BatchWriter
	SuspensionStore
	Pruner
	base() *sqlStore
}

// storeKind is one store implementation under test.
type storeKind struct {
	name string
	// fresh makes an empty database for tb and returns how to open a
	// store on it; open may be called again (reopen, a second node).
	fresh func(tb testing.TB) (open func(ctx context.Context) (testStore, error))
}

func storeKinds() []storeKind {
	return []storeKind{
		{"sqlite", func(tb testing.TB) func(context.Context) (testStore, error) {
			path := filepath.Join(tb.TempDir(), "events.db")
			return func(ctx context.Context) (testStore, error) { return OpenSQLite(ctx, path) }
		}},
		{"postgres", func(tb testing.TB) func(context.Context) (testStore, error) {
			dsn := pg.Database(tb)
			return func(ctx context.Context) (testStore, error) { return OpenPostgres(ctx, dsn) }
		}},
	}
}

// forEachStore runs f as one subtest per store.
func forEachStore(t *testing.T, f func(t *testing.T, k storeKind)) {
	for _, k := range storeKinds() {
		t.Run(k.name, func(t *testing.T) { f(t, k) })
	}
}

// openTestStore opens a store of kind k on a fresh database and closes it
// in tb.Cleanup.
func openTestStore(tb testing.TB, k storeKind) testStore {
	tb.Helper()
	s, err := k.fresh(tb)(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

// benchEachStore runs f as one sub-benchmark per store.
func benchEachStore(b *testing.B, f func(b *testing.B, k storeKind)) {
	for _, k := range storeKinds() {
		b.Run(k.name, func(b *testing.B) { f(b, k) })
	}
}
