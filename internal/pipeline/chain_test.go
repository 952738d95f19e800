package pipeline

import (
	"context"
	"testing"

	"mxguard/internal/address"
	"mxguard/internal/reply"
)

type rcptFunc struct {
	name string
	f    func(rcpt address.Mailbox) *reply.Reply
}

func (r rcptFunc) Name() string { return r.name }
func (r rcptFunc) CheckRcpt(_ context.Context, _ *Session, rcpt address.Mailbox) *reply.Reply {
	return r.f(rcpt)
}

// TestChainOrder: checks run in order and the first refusal ends the run.
func TestChainOrder(t *testing.T) {
	var ran []string
	check := func(name string, refuse bool) RcptCheck {
		return rcptFunc{name, func(address.Mailbox) *reply.Reply {
			ran = append(ran, name)
			if refuse {
				r := reply.RelayDenied
				return &r
			}
			return nil
		}}
	}
	c := &Chain{Rcpt: []RcptCheck{check("a", false), check("b", true), check("c", false)}}
	if r := c.RunRcpt(context.Background(), &Session{}, address.MustParse("x@example.test")); r == nil || r.Code != 554 {
		t.Fatalf("want b's refusal, got %v", r)
	}
	if got := ran; len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("ran %v, want [a b]", got)
	}
	if n := c.Names(); len(n) != 3 || n[2] != "c" {
		t.Errorf("Names() = %v", n)
	}
}
