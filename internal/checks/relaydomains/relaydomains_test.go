package relaydomains

import (
	"context"
	"testing"

	"mxguard/internal/address"
	"mxguard/internal/pipeline"
)

func TestCheckRcpt(t *testing.T) {
	c := New([]string{"Example.TEST", "other.test."})
	tests := []struct {
		name    string
		s       pipeline.Session
		rcpt    string // as a client writes it between < and >
		refused bool
	}{
		{"our domain", pipeline.Session{}, "alice@example.test", false},
		{"case and trailing dot", pipeline.Session{}, "alice@OTHER.test.", false},
		{"bare postmaster", pipeline.Session{}, "Postmaster", false},
		{"foreign from stranger", pipeline.Session{}, "victim@elsewhere.test", true},
		{"subdomain is foreign", pipeline.Session{}, "a@sub.example.test", true},
		{"literal is foreign", pipeline.Session{}, "a@[127.0.0.1]", true},
		{"foreign from trusted", pipeline.Session{Trusted: true}, "victim@elsewhere.test", false},
		{"foreign from authenticated", pipeline.Session{Account: "alice"}, "victim@elsewhere.test", false},
		{"allowlisted may not relay", pipeline.Session{Allowlisted: true}, "victim@elsewhere.test", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, _, err := address.ParsePath("<"+tt.rcpt+">", address.Options{Postmaster: true})
			if err != nil {
				t.Fatal(err)
			}
			r := c.CheckRcpt(context.Background(), &tt.s, p.Mailbox)
			if (r != nil) != tt.refused {
				t.Fatalf("refused = %v, want %v", r != nil, tt.refused)
			}
			if r != nil && (r.Code != 554 || r.Enhanced != [3]int{5, 7, 1}) {
				t.Errorf("reply %s, want 554 5.7.1", r.Error())
			}
		})
	}
}
