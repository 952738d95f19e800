package relay_test

import (
	"context"
	"sync"
	"testing"

	"mxguard/internal/mailsink"
	"mxguard/internal/relay"
)

// TestStalePoolAfterRestart: when the downstream restarts, every pooled
// connection is dead; the next transaction must still go through on a
// fresh connection instead of failing with 451.
func TestStalePoolAfterRestart(t *testing.T) {
	ctx := context.Background()
	sink, err := mailsink.Start(ctx, mailsink.Options{Mailboxes: []string{"alice@example.test"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	r := relay.New(relay.Options{Hostname: "mx.test"})
	defer r.Close()
	rt := newRoute(sink.Addr())

	// Fill the pool with several connections.
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := send(t, r, rt); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()

	sink.SetDown(true) // closes every session: the pool is now stale
	sink.SetDown(false)
	if _, err := send(t, r, rt); err != nil {
		t.Fatalf("after the restart: %v", err)
	}
	if n := sink.Count(); n != 5 {
		t.Errorf("sink got %d messages, want 5", n)
	}
}
