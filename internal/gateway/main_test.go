package gateway_test

import (
	"fmt"
	"os"
	"testing"

	"mxguard/internal/testutil"
)

// pg is this package's private PostgreSQL cluster, started by the first
// test that needs it (storage.driver: postgres); each test gets a
// database of its own (pg.Database).
var pg *testutil.Postgres

func TestMain(m *testing.M) {
	pg = testutil.NewPostgres()
	code := m.Run()
	if err := pg.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "postgres:", err)
		code = 1
	}
	os.Exit(code)
}
