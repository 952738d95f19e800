package main

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	"mxguard/internal/mailsink"
)

// load sends messages from several clients until stop is closed and
// returns the Message-IDs that got 250.
func (r *rig) load(stop <-chan struct{}, clients int) []string {
	var mu sync.Mutex
	var accepted []string
	var wg sync.WaitGroup
	for c := 0; c < clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("c%d-%d-%d@crash.test", c, i, time.Now().UnixNano())
				if sendOne(r.smtpAddr, id) {
					mu.Lock()
					accepted = append(accepted, id)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return accepted
}

// crashConfig: fast health checks and spool, no detection rules.
const crashConfig = `limits: {max_connections_per_source: 100}
spool: {delay: 100ms, unspool_rate: 200}
rules: []
`

var msgIDRe = regexp.MustCompile(`Message-ID: <([^>]+)>`)

// delivered counts, per Message-ID, how often the sink received it.
func delivered(sink *mailsink.Server) map[string]int {
	got := map[string]int{}
	for _, m := range sink.Messages() {
		if sm := msgIDRe.FindSubmatch(m.Data); sm != nil {
			got[string(sm[1])]++
		}
	}
	return got
}

// TestKill9NoLoss kills mxguard with SIGKILL while it spools, and again
// while it unspools, with different timings: after a restart every message
// that got 250 reaches the downstream (duplicates allowed, counted).
func TestKill9NoLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	for round, killAfter := range []time.Duration{300 * time.Millisecond, 900 * time.Millisecond, 1700 * time.Millisecond} {
		t.Run(fmt.Sprintf("round%d", round), func(t *testing.T) {
			sink, err := mailsink.Start(context.Background(), mailsink.Options{Mailboxes: []string{"alice@example.test"}})
			if err != nil {
				t.Fatal(err)
			}
			defer sink.Close()
			r := newRig(t, sink.Addr(), crashConfig)

			// 1. Killed while spooling.
			sink.SetDown(true)
			r.start()
			r.waitSpool("spooling", func(st string, _ int) bool { return st == "spooling" })
			stop := make(chan struct{})
			var accepted []string
			done := make(chan struct{})
			go func() { accepted = r.load(stop, 4); close(done) }()
			time.Sleep(killAfter)
			r.kill()
			close(stop)
			<-done
			if len(accepted) == 0 {
				t.Fatal("no message was spooled before the kill")
			}

			// 2. Restart with the server back, kill again while unspooling
			// (rate 200/s: a backlog of hundreds takes seconds to drain).
			sink.SetDown(false)
			r.start()
			time.Sleep(killAfter / 3)
			r.kill()

			// 3. Restart and let it drain.
			r.start()
			r.waitSpool("drained", func(_ string, n int) bool { return n == 0 })
			got := delivered(sink)
			dups := 0
			for _, id := range accepted {
				switch n := got[id]; {
				case n == 0:
					t.Errorf("message %s got 250 and was lost", id)
				case n > 1:
					dups += n - 1
				}
			}
			t.Logf("kill after %s: %d messages accepted, all delivered, %d duplicates", killAfter, len(accepted), dups)
		})
	}
}

// sendOne sends one message and reports whether it got 250.
func sendOne(addr, msgID string) bool {
	c, err := dialSMTP(addr)
	if err != nil {
		return false
	}
	defer c.Close()
	return c.SendMail("sender@remote.test", []string{"alice@example.test"},
		fmt.Sprintf("Subject: crash\r\nMessage-ID: <%s>\r\n\r\nbody\r\n", msgID)) == nil
}
