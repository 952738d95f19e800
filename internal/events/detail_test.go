package events

import "testing"

// TestWhy: one sentence for the CLI, the console and alerts: the strongest
// action taken, what was counted, and the threshold; shadow events say
// what they would have done; events of no rule only what was done.
func TestWhy(t *testing.T) {
	detail := map[string]any{"threshold": 20.0, "window": "10m", "count": 20.0}
	tests := []struct {
		name string
		e    Event
		want string
	}{
		{"block beats alert", Event{Type: "directory_harvest", Rule: "h", Actions: []string{"alert", "block"}, Detail: detail},
			"blocked because 20 unknown recipients in 10m (threshold 20)"},
		{"suspend", Event{Type: "internal_spammer", Rule: "s", Actions: []string{"alert", "suspend"},
			Detail: map[string]any{"threshold": 500.0, "window": "1h", "count": 500.0}},
			"suspended because 500 messages in 1h (threshold 500)"},
		{"shadow", Event{Type: "dos", Rule: "d", Mode: ModeShadow, Actions: []string{"block"},
			Detail: map[string]any{"threshold": 50.0, "window": "1m"}},
			"would have blocked (shadow rule: nothing done) because 50 connections in 1m (threshold 50)"},
		{"no action", Event{Type: "dos", Rule: "d", Actions: []string{}, Detail: map[string]any{"threshold": 3, "window": "1m", "count": 3}},
			"recorded (no action taken) because 3 connections in 1m (threshold 3)"},
		{"no rule", Event{Type: "mail_server_down", Actions: []string{"alert"}, Detail: map[string]any{"role": "primary"}},
			"alerted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Why(tt.e); got != tt.want {
				t.Errorf("Why = %q, want %q", got, tt.want)
			}
		})
	}
}
