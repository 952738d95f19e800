package gateway_test

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"mxguard/internal/alert"
	"mxguard/internal/cluster"
	"mxguard/internal/config"
	"mxguard/internal/gateway"
	"mxguard/internal/mailsink"
	"mxguard/internal/testutil"
)

// Two nodes of a cluster: two gateways in front of one downstream, sharing
// one private redis-server, each with its own SQLite store (which node
// records an attack is decided in Redis), or sharing one PostgreSQL
// database (TestClusterSharedPostgres).

const clusterRules = `rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 10, actions: [block], block_for: 1h}
`

func startCluster(t *testing.T, r *testutil.Redis) (a, b *env) {
	t.Helper()
	return startClusterWith(t, r, clusterRules)
}

// startClusterWith starts the two nodes with extra configuration lines
// (rules: and more) instead of clusterRules.
func startClusterWith(t *testing.T, r *testutil.Redis, extra string) (a, b *env) {
	t.Helper()
	sink, err := mailsink.Start(t.Context(), mailsink.Options{Mailboxes: []string{"alice@example.test"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	node := func(name string) *env {
		return startWith(t, fmt.Sprintf("cluster: {redis: %q, node: %s}\n%s", r.URL(), name, extra), sink, t.TempDir())
	}
	a, b = node("mx1"), node("mx2")
	for _, e := range []*env{a, b} {
		waitFor(t, func() bool { return e.cluster().Redis == "up" && len(e.cluster().Nodes) == 2 })
	}
	return a, b
}

func (e *env) cluster() cluster.Status {
	e.t.Helper()
	var v cluster.Status
	e.getJSON("/api/v1/cluster", &v)
	return v
}

// splitHarvest sends 5 unknown recipients from src to each node, half the
// threshold of clusterRules' harvest, and waits until both block src; it
// returns the two sessions, still open.
func splitHarvest(t *testing.T, a, b *env, src string) (ca, cb *testutil.SMTPClient) {
	t.Helper()
	ca, cb = a.session(src), b.session(src)
	for i := range 5 {
		ca.Cmd(fmt.Sprintf("RCPT TO:<guess-a%d@example.test>", i), 550)
		cb.Cmd(fmt.Sprintf("RCPT TO:<guess-b%d@example.test>", i), 550)
	}
	waitFor(t, func() bool { return a.blocked(src) && b.blocked(src) })
	return ca, cb
}

func (e *env) blocked(ip string) bool { return e.gw.Engine.Blocked(netip.MustParseAddr(ip)) }

// A harvest spread over both nodes, half the unknown recipients on each,
// reaches the threshold as one source: it fires once, and the source is
// refused by both nodes, in the open sessions and at connect.
func TestClusterHarvestAcrossNodes(t *testing.T) {
	r := testutil.StartRedis(t)
	h := newHookServer(t)
	a, b := startClusterWith(t, r, fmt.Sprintf(`rules:
  - {name: harvest, type: directory_harvest, window: 10m, threshold: 10, actions: [block, alert], block_for: 1h}
alerts: {webhook: {url: "%s/hook"}}
`, h.srv.URL))
	const src = "127.0.0.50"
	ca, cb := splitHarvest(t, a, b, src)
	for _, c := range []*testutil.SMTPClient{ca, cb} {
		if text := c.Cmd("RCPT TO:<alice@example.test>", 421); !strings.HasPrefix(text, "4.7.0 ") {
			t.Errorf("want 421 4.7.0 at the next command, got %s", text)
		}
		c.ExpectClosed()
	}
	a.dial(src).Expect(421)
	b.dial(src).Expect(421)

	// One event across the cluster, recorded by the node that saw the
	// threshold reached, naming it.
	waitFor(t, func() bool {
		return a.events("type=directory_harvest").Total+b.events("type=directory_harvest").Total >= 1
	})
	for _, e := range []*env{a, b} {
		if err := e.gw.Engine.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	la, lb := a.events("type=directory_harvest"), b.events("type=directory_harvest")
	if la.Total+lb.Total != 1 {
		t.Fatalf("want one event in the cluster, got %d on mx1 and %d on mx2: %+v %+v", la.Total, lb.Total, la, lb)
	}
	rec, node := la, "mx1"
	if lb.Total == 1 {
		rec, node = lb, "mx2"
	}
	if ev := rec.Events[0]; ev.Source != src || ev.Node != node || strings.Join(ev.Actions, ",") != "alert,block" {
		t.Errorf("event = %+v, want source %s on node %s with actions alert, block", ev, src, node)
	}
	// One alert, from the recording node. (A second one would be queued
	// by the flushes above; this catches it unless its send is slower
	// than the checks below.)
	if got := h.wait(t, 1); got[0].Alert != alert.Started || got[0].Event.Node != node {
		t.Errorf("first alert %s", got[0].body)
	}
	// Its impact counts what both nodes refused: each refused the next
	// command of its session and a connection.
	rec0 := a
	if node == "mx2" {
		rec0 = b
	}
	waitFor(t, func() bool {
		if err := rec0.gw.Engine.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		return rec0.events("type=directory_harvest").Events[0].Impact >= 4
	})
	if got := h.alerts(); len(got) != 1 {
		t.Errorf("%d alerts for one attack, want 1", len(got))
	}
	// Both nodes list the block.
	for _, e := range []*env{a, b} {
		if code, body := e.api("GET", "/api/v1/blocks", ""); code != 200 || !strings.Contains(body, `"source":"`+src+`"`) {
			t.Errorf("%s blocks: %d %s", e.cluster().Node, code, body)
		}
	}
}

// Two nodes on one Redis and one PostgreSQL database: a harvest spread over
// both is one event in the shared store, both nodes list it (with the node
// that recorded it) and the block, and both refuse the source.
func TestClusterSharedPostgres(t *testing.T) {
	r := testutil.StartRedis(t)
	dsn := pg.Database(t)
	a, b := startClusterWith(t, r, fmt.Sprintf("storage: {driver: postgres, dsn: %q}\n%s", dsn, clusterRules))
	const src = "127.0.0.52"
	ca, cb := splitHarvest(t, a, b, src)
	ca.Cmd("RCPT TO:<alice@example.test>", 421)
	cb.Cmd("RCPT TO:<alice@example.test>", 421)
	waitFor(t, func() bool { return a.events("type=directory_harvest").Total >= 1 })
	for _, e := range []*env{a, b} {
		if err := e.gw.Engine.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	la, lb := a.events("type=directory_harvest"), b.events("type=directory_harvest")
	if la.Total != 1 || lb.Total != 1 || la.Events[0].ID != lb.Events[0].ID {
		t.Fatalf("want the same one event on both nodes: mx1 %+v, mx2 %+v", la, lb)
	}
	if ev := la.Events[0]; ev.Source != src || (ev.Node != "mx1" && ev.Node != "mx2") {
		t.Errorf("event = %+v", ev)
	}
	for _, e := range []*env{a, b} {
		if code, body := e.api("GET", "/api/v1/blocks", ""); code != 200 || !strings.Contains(body, `"source":"`+src+`"`) {
			t.Errorf("blocks: %d %s", code, body)
		}
	}
}

// An operator's block on one node is enforced by the other (the
// propagation time is measured by BenchmarkBlockPropagation, not here),
// and so is its removal.
func TestClusterManualBlockPropagates(t *testing.T) {
	r := testutil.StartRedis(t)
	a, b := startCluster(t, r)
	const src = "127.0.0.51"
	if code, body := a.api("POST", "/api/v1/blocks", `{"source":"`+src+`","for":"1h","reason":"seen elsewhere"}`); code != 201 {
		t.Fatalf("add block: %d %s", code, body)
	}
	waitFor(t, func() bool { return b.blocked(src) })
	c := b.dial(src)
	c.Expect(421)
	c.ExpectClosed()
	if code, body := b.api("GET", "/api/v1/blocks", ""); !strings.Contains(body, `"reason":"seen elsewhere"`) || !strings.Contains(body, `"manual":true`) {
		t.Errorf("mx2 blocks: %d %s", code, body)
	}
	if code, _ := a.api("DELETE", "/api/v1/blocks/"+src, ""); code != 204 {
		t.Fatalf("remove block: %d", code)
	}
	waitFor(t, func() bool { return !b.blocked(src) })
	b.dial(src).Expect(220)
}

// An operator's suspension of an account on one node holds on the other,
// and so does lifting it.
func TestClusterSuspensionPropagates(t *testing.T) {
	r := testutil.StartRedis(t)
	a, b := startCluster(t, r)
	if code, body := a.api("POST", "/api/v1/suspensions", `{"account":"Mallory","for":"1h","reason":"spam run"}`); code != 201 {
		t.Fatalf("add suspension: %d %s", code, body)
	}
	waitFor(t, func() bool { return b.gw.Engine.Suspended("mallory") })
	if code, body := b.api("GET", "/api/v1/suspensions", ""); code != 200 || !strings.Contains(body, `"account":"mallory"`) {
		t.Errorf("mx2 suspensions: %d %s", code, body)
	}
	if code, _ := a.api("DELETE", "/api/v1/suspensions/mallory", ""); code != 204 {
		t.Fatalf("lift: %d", code)
	}
	waitFor(t, func() bool { return !b.gw.Engine.Suspended("mallory") })
}

// Redis stops mid-test: both nodes go on, each protecting with its own
// state (a harvest on one node still blocks there), report Redis down, and
// once it is back (empty: no persistence) the blocks made meanwhile reach
// the other node.
func TestClusterRedisDown(t *testing.T) {
	r := testutil.StartRedis(t)
	a, b := startCluster(t, r)
	r.Stop()
	for _, e := range []*env{a, b} {
		waitFor(t, func() bool { return e.cluster().Redis == "down" })
		if m := e.metrics(); !strings.Contains(m, "mxguard_cluster_redis_up 0\n") {
			t.Errorf("metrics while redis is down lack mxguard_cluster_redis_up 0")
		}
		if v := e.cluster(); len(v.Nodes) != 0 {
			t.Errorf("nodes while redis is down: %+v", v.Nodes)
		}
	}

	const harvester, manual = "127.0.0.60", "127.0.0.61"
	c := a.session(harvester)
	for i := range 10 {
		c.Cmd(fmt.Sprintf("RCPT TO:<guess%d@example.test>", i), 550)
	}
	c.Cmd("RCPT TO:<alice@example.test>", 421)
	c.ExpectClosed()
	a.dial(harvester).Expect(421)
	if code, body := a.api("POST", "/api/v1/blocks", `{"source":"`+manual+`","for":"1h"}`); code != 201 {
		t.Fatalf("add block while redis is down: %d %s", code, body)
	}
	if b.blocked(harvester) || b.blocked(manual) {
		t.Fatal("mx2 learned of mx1's blocks without redis")
	}
	b.dial(manual).Expect(220)

	r.Start()
	for _, e := range []*env{a, b} {
		waitFor(t, func() bool { return e.cluster().Redis == "up" })
	}
	waitFor(t, func() bool { return b.blocked(harvester) && b.blocked(manual) })
	b.dial(harvester).Expect(421)
	if m := a.metrics(); !strings.Contains(m, "mxguard_cluster_redis_up 1\n") {
		t.Errorf("metrics after redis is back lack mxguard_cluster_redis_up 1")
	}
}

// The password of cluster.redis shows in no log line and no answer, also
// while Redis is down; with the right password the node is up.
func TestClusterRedisPasswordHidden(t *testing.T) {
	const pw = "hunter2-redis-secret"
	r := testutil.StartRedis(t, "--requirepass", pw)
	var logs testutil.LockedBuffer
	dir := t.TempDir()
	yaml := testConfig("127.0.0.1:1", fmt.Sprintf("cluster: {redis: \"redis://:%s@%s/0\", node: mx1}\n", pw, r.Addr()), dir)
	cfg, err := config.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	gw, err := gateway.Start(t.Context(), cfg, gateway.Options{
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	e := &env{t: t, gw: gw, dir: dir}
	waitFor(t, func() bool { return e.cluster().Redis == "up" })
	r.Stop()
	waitFor(t, func() bool { return e.cluster().Redis == "down" })
	answers := e.metrics()
	for _, path := range []string{"/api/v1/cluster", "/api/v1/rules", "/api/v1/servers"} {
		_, body := e.api("GET", path, "")
		answers += body
	}
	if !strings.Contains(logs.String(), "redis unreachable") {
		t.Errorf("no log line says Redis is unreachable:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), pw) || strings.Contains(answers, pw) {
		t.Error("the password of cluster.redis shows in a log line or an API answer")
	}
}

// Without cluster.redis a node says so.
func TestClusterOff(t *testing.T) {
	e := start(t, "cluster: {node: solo}\n")
	if v := e.cluster(); v.Node != "solo" || v.Redis != "off" || v.Nodes == nil || len(v.Nodes) != 0 {
		t.Errorf("cluster = %+v", v)
	}
	if strings.Contains(e.metrics(), "mxguard_cluster_redis_up") {
		t.Error("a standalone node exports mxguard_cluster_redis_up")
	}
}
