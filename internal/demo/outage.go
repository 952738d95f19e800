package demo

import (
	"context"
	"time"

	"mxguard/internal/gateway"
	"mxguard/internal/mailsink"
	"mxguard/internal/spool"
)

// outage plays a downstream failure: the primary stops (traffic moves to
// the failover), then the failover too (org_down: mail is deferred for
// spool.delay, then spooled), then both return and the spool drains.
type outage struct {
	g                 *gateway.Gateway
	primary, failover *mailsink.Server
	n                 *narrator
	send              func(ctx context.Context, ip, from string, to []string, body string) (int, string, error)
}

func (o *outage) run(ctx context.Context, step time.Duration) {
	o.n.say("OUTAGE         the primary mail server %s stops", o.primary.Addr())
	before := o.failover.Count()
	o.primary.SetDown(true)
	if !o.waitServerDown(ctx, o.primary.Addr()) {
		return
	}
	if !sleep(ctx, max(step, 3*time.Second)) {
		return
	}
	o.n.say("  meanwhile %d messages went to the failover %s", o.failover.Count()-before, o.failover.Addr())

	o.n.say("OUTAGE         the failover %s stops too: the whole organisation is down", o.failover.Addr())
	queued := o.n.startedCount("outbound_queue")
	o.failover.SetDown(true)
	if !o.waitSpool(ctx, 40*time.Second, func(s spool.Status) bool { return s.Messages >= 2 }) {
		return
	}
	// The spool is an outbound queue too: the outbound_queue rule fires
	// once its monitor (polling every 15 s) sees it reach the threshold.
	o.n.say("QUEUE          the spool is an outbound queue too: rule queue fires at 3 messages (the monitor polls every 15s)")
	if !o.waitEvent(ctx, "outbound_queue", queued, 40*time.Second) {
		return
	}
	// The recipients directory answers while the servers are away: an
	// address the downstream refused before (the harvester's guess) is
	// refused now too, instead of being spooled and bounced later.
	_, reply, err := o.send(ctx, "127.0.0.11", "newsletter@partner.test", []string{"admin@example.test"},
		"Subject: during the outage\r\n\r\nHello.\r\n")
	if err == nil {
		o.n.say("DIRECTORY      during the outage, mail to admin@example.test (the downstream said unknown before): %s", reply)
	}
	o.n.say("RECOVERY       both mail servers are back")
	delivered := o.primary.Count()
	o.primary.SetDown(false)
	o.failover.SetDown(false)
	if !o.waitSpool(ctx, 60*time.Second, func(s spool.Status) bool { return s.Messages == 0 && s.State == spool.StateOff }) {
		return
	}
	o.n.say("  the spool is empty: %d messages reached the primary since it came back; no message that got 250 was lost", o.primary.Count()-delivered)
}

// waitServerDown polls the delivery manager's view until addr is down.
func (o *outage) waitServerDown(ctx context.Context, addr string) bool {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		for _, s := range o.g.Delivery.Servers() {
			if s.Address == addr && s.State == "down" {
				return true
			}
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return false
		}
	}
	o.n.say("  (the server was not seen down in time)")
	return false
}

// waitEvent waits until more than before events of type typ have started.
func (o *outage) waitEvent(ctx context.Context, typ string, before int, limit time.Duration) bool {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); {
		if o.n.startedCount(typ) > before {
			return true
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return false
		}
	}
	o.n.say("  (no %s event in time)", typ)
	return false
}

func (o *outage) waitSpool(ctx context.Context, limit time.Duration, cond func(spool.Status) bool) bool {
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); {
		if cond(o.g.Spool.Status()) {
			return true
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return false
		}
	}
	o.n.say("  (the spool did not get there in time: %+v)", o.g.Spool.Status())
	return false
}

// watchSpool narrates every change of the spool state.
func (o *outage) watchSpool(ctx context.Context) {
	last := o.g.Spool.Status()
	for sleep(ctx, 100*time.Millisecond) {
		s := o.g.Spool.Status()
		if s.State != last.State {
			o.n.say("SPOOL          %s -> %s (%d messages in the spool)%s", last.State, s.State, s.Messages, spoolHint[s.State])
		}
		last = s
	}
}

var spoolHint = map[spool.State]string{
	spool.StateDelay:      ": every server is down; mail is deferred with 451 4.4.1 during spool.delay",
	spool.StateSpooling:   ": mail is written to disk (fsync) before the 250",
	spool.StateUnspooling: ": releasing the spool at unspool_rate",
	spool.StateOff:        ": mail passes straight through again",
}
