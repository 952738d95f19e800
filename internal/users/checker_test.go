package users

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	tu "mxguard/internal/testutil"
)

func usersFile(t *testing.T, pw map[string]string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for n, p := range pw {
		if _, err := Add(path, n, p, bcrypt.MinCost); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

func TestCheck(t *testing.T) {
	path := usersFile(t, map[string]string{"alice": "secret", "bob@example.test": "hunter2"})
	c, err := NewChecker(CheckerOptions{Path: path, CacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name, pw string
		ok       bool
	}{
		{"alice", "secret", true},
		{"ALICE", "secret", true}, // the account is the login lowercased
		{"alice", "Secret", false},
		{"alice", "secret ", false},
		{"alice", "", false},
		{"bob@example.test", "hunter2", true},
		{"bob", "hunter2", false},
		{"mallory", "secret", false},
		{"alice", "secret" + string(make([]byte, 80)), false}, // past 72 bytes bcrypt would ignore the rest
	} {
		ok, err := c.Check(ctx, tc.name, tc.pw)
		if err != nil || ok != tc.ok {
			t.Errorf("Check(%q, %q) = %v, %v; want %v", tc.name, tc.pw, ok, err, tc.ok)
		}
	}
	if c.Users() != 2 {
		t.Errorf("Users() = %d", c.Users())
	}
	if _, err := NewChecker(CheckerOptions{Path: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("a missing users file was accepted")
	}
}

// `mxguard users add` takes effect at the next login a second later, no
// reload needed; a file broken by hand leaves the last good one in force.
func TestReloadOnChange(t *testing.T) {
	path := usersFile(t, map[string]string{"alice": "secret"})
	clock := tu.NewFakeClock()
	c, err := NewChecker(CheckerOptions{Path: path, Clock: clock, CacheTTL: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := Add(path, "carol", "pw3", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if ok, _ := c.Check(ctx, "carol", "pw3"); !ok {
		t.Fatal("a user added to the file cannot log in a second later")
	}
	if err := Remove(path, "alice"); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if ok, _ := c.Check(ctx, "alice", "secret"); ok {
		t.Fatal("a removed user can still log in")
	}
	if err := os.WriteFile(path, []byte("garbage\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	if ok, _ := c.Check(ctx, "carol", "pw3"); !ok {
		t.Error("a broken file took the good one out of force")
	}
	if err := c.Reload(); err == nil {
		t.Error("Reload of a broken file succeeded")
	}
}

func TestCache(t *testing.T) {
	path := usersFile(t, map[string]string{"alice": "secret"})
	clock := tu.NewFakeClock()
	var calls atomic.Int32
	c, err := NewChecker(CheckerOptions{Path: path, Clock: clock, compare: func(h, p []byte) error {
		calls.Add(1)
		return bcrypt.CompareHashAndPassword(h, p)
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(pw string, want bool, wantCalls int32, why string) {
		t.Helper()
		calls.Store(0)
		if ok, err := c.Check(ctx, "alice", pw); ok != want || err != nil {
			t.Fatalf("%s: Check = %v %v, want %v", why, ok, err, want)
		}
		if got := calls.Load(); got != wantCalls {
			t.Fatalf("%s: %d bcrypt comparisons, want %d", why, got, wantCalls)
		}
	}
	check("secret", true, 1, "first login")
	check("secret", true, 0, "again: cached")
	check("wrong", false, 1, "a wrong password is never cached")
	check("wrong", false, 1, "nor the second time")
	clock.Advance(5 * time.Minute)
	check("secret", true, 1, "after the TTL")
	if _, err := Add(path, "alice", "changed", bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Second)
	check("secret", false, 1, "the old password after a change: the cache is dropped with the file")
	check("changed", true, 1, "the new password")
}

// A flood of logins never runs more bcrypt comparisons than the bound,
// and past the queue it is refused at once as a temporary failure.
func TestConcurrencyBound(t *testing.T) {
	path := usersFile(t, map[string]string{"alice": "secret"})
	release := make(chan struct{})
	var running, peak atomic.Int32
	c, err := NewChecker(CheckerOptions{Path: path, Concurrency: 2, MaxWaiting: 4, MaxWait: time.Minute, CacheTTL: -1,
		compare: func(h, p []byte) error {
			n := running.Add(1)
			for {
				m := peak.Load()
				if n <= m || peak.CompareAndSwap(m, n) {
					break
				}
			}
			<-release
			running.Add(-1)
			return errors.New("mismatch")
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	results := make(chan error, 6)
	for range 6 { // 2 running + 4 waiting
		wg.Go(func() {
			_, err := c.Check(ctx, "alice", "guess")
			results <- err
		})
	}
	// Wait until 2 run and 4 wait.
	deadline := time.Now().Add(10 * time.Second)
	for (running.Load() != 2 || c.waiting.Load() != 4) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if running.Load() != 2 || c.waiting.Load() != 4 {
		t.Fatalf("running %d, waiting %d; want 2 and 4", running.Load(), c.waiting.Load())
	}
	t0 := time.Now()
	if _, err := c.Check(ctx, "alice", "one too many"); !errors.Is(err, ErrBusy) {
		t.Fatalf("7th concurrent check: %v, want ErrBusy", err)
	}
	if d := time.Since(t0); d > 5*time.Second {
		t.Errorf("refusing took %v", d)
	}
	close(release)
	wg.Wait()
	close(results)
	for err := range results {
		if err != nil {
			t.Errorf("queued check: %v", err)
		}
	}
	if peak.Load() != 2 {
		t.Errorf("peak %d comparisons at once, bound 2", peak.Load())
	}
}

func TestMaxWait(t *testing.T) {
	path := usersFile(t, map[string]string{"alice": "secret"})
	release := make(chan struct{})
	c, err := NewChecker(CheckerOptions{Path: path, Concurrency: 1, MaxWait: 20 * time.Millisecond, CacheTTL: -1,
		compare: func(h, p []byte) error { <-release; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		_, _ = c.Check(context.Background(), "alice", "secret")
		close(done)
	}()
	for len(c.slots) == 0 {
		time.Sleep(time.Millisecond)
	}
	if _, err := c.Check(context.Background(), "alice", "secret"); !errors.Is(err, ErrBusy) {
		t.Errorf("check behind a stuck one: %v, want ErrBusy after MaxWait", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.maxWait = time.Hour
	if _, err := c.Check(ctx, "alice", "secret"); !errors.Is(err, context.Canceled) {
		t.Errorf("check with an ended context: %v", err)
	}
	close(release)
	<-done
}

// BenchmarkCheck is the cost of one login at the default bcrypt cost
// (what `mxguard users add` writes); the cached case is a client logging
// in again within the cache TTL.
func BenchmarkCheck(b *testing.B) {
	path := filepath.Join(b.TempDir(), "users")
	if _, err := Add(path, "alice", "secret", bcrypt.DefaultCost); err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ttl  time.Duration
		pw   string
	}{{"bcrypt", -1, "secret"}, {"wrong_password", -1, "wrong"}, {"unknown_user", -1, "x"}, {"cached", 0, "secret"}} {
		b.Run(tc.name, func(b *testing.B) {
			c, err := NewChecker(CheckerOptions{Path: path, CacheTTL: tc.ttl})
			if err != nil {
				b.Fatal(err)
			}
			name := "alice"
			if tc.name == "unknown_user" {
				name = "mallory"
			}
			for b.Loop() {
				_, _ = c.Check(context.Background(), name, tc.pw)
			}
		})
	}
}

// auth.downstream: the verifier (the delivery servers' AUTH) is asked with
// the name as given, bounded and cached like bcrypt; its errors are
// temporary failures, never cached, never a wrong password.
func TestVerifier(t *testing.T) {
	var calls atomic.Int32
	var names []string
	var mu sync.Mutex
	verify := func(_ context.Context, name, pw string) (bool, error) {
		calls.Add(1)
		mu.Lock()
		names = append(names, name)
		mu.Unlock()
		switch pw {
		case "down":
			return false, errors.New("454 4.7.0 Temporary authentication failure")
		case "secret":
			return name == "Alice", nil
		}
		return false, nil
	}
	c, err := NewChecker(CheckerOptions{Verify: verify, Clock: tu.NewFakeClock()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if ok, err := c.Check(ctx, "Alice", "secret"); !ok || err != nil {
		t.Fatalf("Check = %v %v", ok, err)
	}
	if ok, _ := c.Check(ctx, "Alice", "secret"); !ok || calls.Load() != 1 {
		t.Errorf("second login asked the downstream again (%d calls)", calls.Load())
	}
	if ok, _ := c.Check(ctx, "alice", "secret"); ok {
		t.Error("the downstream's verdict on Alice was used for alice")
	}
	for range 2 {
		if ok, err := c.Check(ctx, "Alice", "down"); ok || err == nil {
			t.Errorf("downstream error: %v %v, want an error", ok, err)
		}
	}
	if calls.Load() != 4 {
		t.Errorf("%d calls, want 4 (errors are not cached)", calls.Load())
	}
	if names[0] != "Alice" {
		t.Errorf("names %v", names)
	}
	if _, err := NewChecker(CheckerOptions{}); err == nil {
		t.Error("a checker with neither file nor verifier")
	}
	if _, err := NewChecker(CheckerOptions{Path: "x", Verify: verify}); err == nil {
		t.Error("a checker with both")
	}
}
