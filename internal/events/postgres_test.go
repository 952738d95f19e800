package events

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"mxguard/internal/testutil"
)

// Two nodes starting at once on an empty database: the advisory lock
// makes one migrate and the other find the schema done; then both write
// at once and every ID is distinct.
func TestPostgresTwoNodes(t *testing.T) {
	ctx := context.Background()
	open := storeKinds()[1].fresh(t)
	const nodes, perNode = 4, 30
	stores := make([]testStore, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() { stores[i], errs[i] = open(ctx) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
		defer stores[i].Close()
	}
	ids := make([][]int64, nodes)
	for i, s := range stores {
		wg.Go(func() {
			for j := range perNode {
				e := Event{Type: "dos", Status: StatusActive, StartedAt: t0, Source: "192.0.2.1", Node: fmt.Sprintf("mx%d", i)}
				if err := s.Insert(ctx, &e); err != nil {
					t.Error(err)
					return
				}
				ids[i] = append(ids[i], e.ID)
				// Every node blocks the same source: upserts, no conflict.
				if err := s.PutBlock(ctx, Block{Source: "192.0.2.1", EventID: e.ID, CreatedAt: t0.Add(time.Duration(j))}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	seen := map[int64]bool{}
	for _, l := range ids {
		for _, id := range l {
			if seen[id] {
				t.Errorf("id %d given twice", id)
			}
			seen[id] = true
		}
	}
	if res, err := stores[0].Query(ctx, Query{Source: "192.0.2.1"}); err != nil || res.Total != nodes*perNode || len(seen) != nodes*perNode {
		t.Errorf("total %d, %d ids, %v; want %d", res.Total, len(seen), err, nodes*perNode)
	}
	if bs, err := stores[1].Blocks(ctx); err != nil || len(bs) != 1 {
		t.Errorf("blocks = %+v, %v; want the one source", bs, err)
	}
	var rows int
	if err := stores[2].base().read.QueryRowContext(ctx, "SELECT count(*) FROM schema_version").Scan(&rows); err != nil || rows != len(postgresMigrations()) {
		t.Errorf("schema_version has %d rows, %v: a migration ran twice", rows, err)
	}
}

// A DSN's password never shows in an error, whether the DSN is malformed
// or the server refuses.
func TestPostgresDSNPasswordHidden(t *testing.T) {
	const pw = "s3cr3t-pw"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	closed := func() string { // a loopback port nobody listens on
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().String()
	}()
	for _, dsn := range []string{
		"postgres://mxguard:" + pw + "@127.0.0.1:99999999/mxguard",
		"postgres://mxguard:" + pw + "@[::1/mxguard",
		"postgres://mxguard:" + pw + "@" + closed + "/mxguard?sslmode=disable&connect_timeout=2",
		"host=127.0.0.1 port=x user=mxguard password=" + pw,
		"host=127.0.0.1 port=x user=mxguard password='" + pw + "'",
		"postgres://mxguard:" + pw + "@127.0.0.1/mxguard?pool_max_conns=many",
	} {
		s, err := OpenPostgres(ctx, dsn)
		if err == nil {
			s.Close()
			t.Errorf("OpenPostgres(%q) succeeded", dsn)
			continue
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("error shows the password: %v", err)
		}
		t.Logf("%s: %v", dsn, err)
	}
}

// The pool defaults apply unless the DSN sets them.
func TestPostgresConfig(t *testing.T) {
	cfg, err := postgresConfig("postgres://mxguard@db.example.test/mxguard")
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.ConnConfig.RuntimeParams
	if cfg.MaxConns != postgresMaxConns || cfg.ConnConfig.ConnectTimeout != postgresConnectTimeout ||
		p["statement_timeout"] != postgresStatementTimeout || p["application_name"] != "mxguard" {
		t.Errorf("defaults not applied: max %d, connect %v, params %v", cfg.MaxConns, cfg.ConnConfig.ConnectTimeout, p)
	}
	cfg, err = postgresConfig("postgres://mxguard@db.example.test/mxguard?pool_max_conns=3&connect_timeout=9&statement_timeout=5000&application_name=mx1")
	if err != nil {
		t.Fatal(err)
	}
	p = cfg.ConnConfig.RuntimeParams
	if cfg.MaxConns != 3 || cfg.ConnConfig.ConnectTimeout != 9*time.Second || p["statement_timeout"] != "5000" || p["application_name"] != "mx1" {
		t.Errorf("the DSN's settings were overridden: max %d, connect %v, params %v", cfg.MaxConns, cfg.ConnConfig.ConnectTimeout, p)
	}
}

// A database outage fails calls promptly (no hang, no panic) and the
// store works again once the database is back, without reopening.
func TestPostgresOutage(t *testing.T) {
	dsn := pg.Database(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := testutil.StartCutProxy(t, u.Host)
	u.Host = proxy.Addr()
	ctx := context.Background()
	s, err := OpenPostgres(ctx, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	e := Event{Type: "dos", Status: StatusActive, StartedAt: t0, Source: "192.0.2.1"}
	if err := s.Insert(ctx, &e); err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	// The detection engine's writer bounds its calls with a timeout
	// (detect's storeTimeout); so does this test.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.Insert(wctx, &Event{Type: "dos", Status: StatusActive, StartedAt: t0}); err == nil {
		t.Error("insert succeeded while the database was unreachable")
	}
	if _, err := s.Query(wctx, Query{}); err == nil {
		t.Error("query succeeded while the database was unreachable")
	}
	if err := Apply(wctx, s, &Batch{Insert: []*Event{{Type: "dos", Status: StatusActive, StartedAt: t0}}, Delete: []string{"x"}}); err == nil {
		t.Error("batch succeeded while the database was unreachable")
	}
	if wctx.Err() != nil {
		t.Fatal("calls during the outage ran into the test's deadline instead of failing")
	}
	proxy.Restore()
	// The pool drops the dead connections and dials again; the first call
	// after the outage may still meet one that died.
	var got Event
	for i := 0; ; i++ {
		got, err = s.Get(ctx, e.ID)
		if err == nil || i == 5 {
			break
		}
	}
	if err != nil || got.ID != e.ID {
		t.Errorf("after the outage: %+v, %v", got, err)
	}
	if err := s.Insert(ctx, &Event{Type: "dos", Status: StatusActive, StartedAt: t0}); err != nil {
		t.Errorf("insert after the outage: %v", err)
	}
}
