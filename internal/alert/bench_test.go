package alert

import (
	"testing"
)

// BenchmarkNotify is the cost the engine's writer pays per event change
// (it calls Notify from OnChange): filtering and a non-blocking enqueue
// on both channels. Nothing drains the queues here, so after 1024 events
// it measures the drop path, the worst case of a storm.
func BenchmarkNotify(b *testing.B) {
	d := New(Options{Settings: Settings{Webhook: Webhook{URL: "http://127.0.0.1:9/"},
		Email: Email{To: []string{"postmaster@example.test"}, From: "mxguard@example.test", Server: "127.0.0.1:9"}}})
	ev := harvest(1, "192.0.2.1")
	b.ReportAllocs()
	for b.Loop() {
		d.Notify(Started, ev)
	}
}
