package gateway_test

import (
	"os"
	"testing"

	"mxguard/internal/testutil"
)

// pg is this package's private PostgreSQL cluster, started by the first
// test that needs it (storage.driver: postgres); each test gets a
// database of its own (pg.Database).
var pg = testutil.NewPostgres()

func TestMain(m *testing.M) { os.Exit(testutil.RunWithPostgres(m, pg)) }
