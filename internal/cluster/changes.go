package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"mxguard/internal/detect"
	"mxguard/internal/events"
)

// message is what goes over the changes channel: one block or suspension
// added or lifted on one node.
type message struct {
	From       string             `json:"from"` // the sending process (Cluster.id)
	Node       string             `json:"node"`
	Type       string             `json:"type"` // a detect.Change type
	Block      *events.Block      `json:"block,omitempty"`
	Suspension *events.Suspension `json:"suspension,omitempty"`
}

// maxMessage bounds a message read from Redis: a block or suspension
// record is a few hundred bytes.
const maxMessage = 16 << 10

// decodeMessage reads a message from the channel. Whoever can write to
// Redis can send anything: a message that is not a well-formed change is
// refused, never half applied.
func decodeMessage(b []byte) (message, error) {
	var m message
	if len(b) > maxMessage {
		return m, fmt.Errorf("cluster: message of %d bytes", len(b))
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("cluster: bad message: %w", err)
	}
	switch m.Type {
	case detect.ChangeBlockAdded, detect.ChangeBlockRemoved:
		if m.Block == nil || m.Block.Source == "" || m.Suspension != nil {
			return m, errors.New("cluster: bad message: block change without a block")
		}
	case detect.ChangeSuspensionAdded, detect.ChangeSuspensionRemoved:
		if m.Suspension == nil || m.Suspension.Account == "" || m.Block != nil {
			return m, errors.New("cluster: bad message: suspension change without a suspension")
		}
	default:
		return m, fmt.Errorf("cluster: bad message: type %q", m.Type)
	}
	return m, nil
}

func (m message) change() detect.Change {
	return detect.Change{Type: m.Type, Block: m.Block, Suspension: m.Suspension}
}

// stateKey is the Redis key holding what a change is about.
func stateKey(ch detect.Change) string {
	if ch.Block != nil {
		return blockKey + ch.Block.Source
	}
	return suspendKey + ch.Suspension.Account
}

// runPublish writes this node's changes to Redis and the channel as they
// come. While Redis is down they wait (the last change of each source or
// account) and go out when it is back.
func (c *Cluster) runPublish(ctx context.Context, eng Engine) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.resync:
			c.resynchronise(ctx, eng)
		case ch := <-c.changes:
			switch ch.Type {
			case detect.ChangeEventStarted, detect.ChangeEventEnded:
				c.eventChange(ctx, ch)
				continue
			}
			if ch.Block == nil && ch.Suspension == nil {
				continue
			}
			k := stateKey(ch)
			c.mu.Lock()
			if _, ok := c.pending[k]; ok || len(c.pending) < maxPending {
				c.pending[k] = ch
			} else {
				c.dropped++
			}
			c.mu.Unlock()
			if c.up.Load() {
				c.publishPending(ctx)
			}
		}
	}
}

// eventChange keeps the claims of this node's events: a claim is renewed
// while its event lasts and released when it ends, so the next attack of
// the source is a new event wherever it is seen.
func (c *Cluster) eventChange(ctx context.Context, ch detect.Change) {
	if ch.Type != detect.ChangeEventEnded {
		return // a claim is held from Claim on
	}
	k := claimOf(*ch.Event)
	c.mu.Lock()
	_, held := c.claims[k]
	delete(c.claims, k)
	c.mu.Unlock()
	if held && c.up.Load() {
		_ = c.call(ctx, func(ctx context.Context) error {
			return releaseScript.Run(ctx, c.rdb, []string{k}, c.o.Node+" "+c.id).Err()
		})
	}
}

// publishPending writes every pending change in one pipeline: the state
// key (with the TTL of the block or suspension, or deleted) and the
// message. On failure they stay pending for the resynchronisation.
func (c *Cluster) publishPending(ctx context.Context) {
	c.mu.Lock()
	batch := c.pending
	c.pending = make(map[string]detect.Change)
	c.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	err := c.call(ctx, func(ctx context.Context) error {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for k, ch := range batch {
				if err := c.write(ctx, p, k, ch); err != nil {
					c.log.Error("cluster: change not published", "key", k, "err", err)
				}
			}
			return nil
		})
		return err
	})
	if err != nil {
		c.mu.Lock()
		for k, ch := range batch {
			if _, newer := c.pending[k]; !newer && len(c.pending) < maxPending {
				c.pending[k] = ch
			}
		}
		c.mu.Unlock()
	}
}

// write queues the commands of one change on p.
func (c *Cluster) write(ctx context.Context, p redis.Pipeliner, k string, ch detect.Change) error {
	msg, err := json.Marshal(message{From: c.id, Node: c.o.Node, Type: ch.Type, Block: ch.Block, Suspension: ch.Suspension})
	if err != nil {
		return err
	}
	switch ch.Type {
	case detect.ChangeBlockAdded, detect.ChangeSuspensionAdded:
		ttl := time.Until(expiresAt(ch))
		if ttl <= 0 {
			return nil // expired while it waited
		}
		rec, err := json.Marshal(record(ch))
		if err != nil {
			return err
		}
		p.Set(ctx, k, rec, ttl)
	default:
		p.Del(ctx, k)
	}
	p.Publish(ctx, changesChan, msg)
	return nil
}

func expiresAt(ch detect.Change) time.Time {
	if ch.Block != nil {
		return ch.Block.ExpiresAt
	}
	return ch.Suspension.ExpiresAt
}

func record(ch detect.Change) any {
	if ch.Block != nil {
		return ch.Block
	}
	return ch.Suspension
}

// runSubscribe applies the other nodes' changes. go-redis resubscribes by
// itself after a lost connection; what was published meanwhile is read
// back by resynchronise.
func (c *Cluster) runSubscribe(ctx context.Context, eng Engine) {
	ps := c.rdb.Subscribe(ctx, changesChan)
	defer ps.Close()
	msgs := ps.Channel(redis.WithChannelHealthCheckInterval(c.o.Heartbeat))
	for {
		select {
		case <-ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			msg, err := decodeMessage([]byte(m.Payload))
			if err != nil {
				c.log.Warn("cluster: message ignored", "err", err)
				continue
			}
			if msg.From == c.id {
				continue // our own, already in force here
			}
			eng.ApplyRemote(msg.change())
		}
	}
}

// resyncBudget bounds each bulk step of a resynchronisation.
const resyncBudget = 5 * time.Second

// resynchronise runs when Redis comes (back) up: the changes made while it
// was unreachable are published, the blocks and suspensions in force here
// are written where Redis lacks them (it may have restarted empty), and
// those of the other nodes are loaded.
func (c *Cluster) resynchronise(ctx context.Context, eng Engine) {
	c.publishPending(ctx)
	var blocks, sus []string
	err := c.callWithin(ctx, resyncBudget, func(ctx context.Context) error {
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, b := range eng.Blocks() {
				if ttl := time.Until(b.ExpiresAt); ttl > 0 {
					rec, _ := json.Marshal(b)
					p.SetNX(ctx, blockKey+b.Source, rec, ttl)
				}
			}
			for _, s := range eng.Suspensions() {
				if ttl := time.Until(s.ExpiresAt); ttl > 0 {
					rec, _ := json.Marshal(s)
					p.SetNX(ctx, suspendKey+s.Account, rec, ttl)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if blocks, err = c.scan(ctx, blockKey+"*"); err != nil {
			return err
		}
		sus, err = c.scan(ctx, suspendKey+"*")
		return err
	})
	if err != nil {
		return // the next heartbeat that succeeds tries again
	}
	n := c.load(ctx, eng, blocks, detect.ChangeBlockAdded) + c.load(ctx, eng, sus, detect.ChangeSuspensionAdded)
	c.log.Debug("cluster: resynchronised", "records", n)
}

// load reads the records of keys (blocks or suspensions) and applies them.
func (c *Cluster) load(ctx context.Context, eng Engine, keys []string, typ string) int {
	n := 0
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), 500)]
		keys = keys[len(chunk):]
		var vals []any
		if err := c.callWithin(ctx, resyncBudget, func(ctx context.Context) error {
			var err error
			vals, err = c.rdb.MGet(ctx, chunk...).Result()
			return err
		}); err != nil {
			return n
		}
		for _, v := range vals {
			s, ok := v.(string)
			if !ok || len(s) > maxMessage {
				continue // expired since SCAN
			}
			ch := detect.Change{Type: typ}
			var err error
			if typ == detect.ChangeBlockAdded {
				ch.Block = new(events.Block)
				err = json.Unmarshal([]byte(s), ch.Block)
			} else {
				ch.Suspension = new(events.Suspension)
				err = json.Unmarshal([]byte(s), ch.Suspension)
			}
			if err == nil {
				eng.ApplyRemote(ch)
				n++
			}
		}
	}
	return n
}
