package duration

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"30s", 30 * time.Second, true},
		{"1h30m", 90 * time.Minute, true},
		{"90d", 90 * Day, true},
		{"1d12h", 36 * time.Hour, true},
		{" 2d ", 2 * Day, true},
		{"-1d", -Day, true},
		{"0", 0, true},
		{"d", 0, false},
		{"1.5d", 0, false},
		{"1d-2h", 0, false},
		{"1dx", 0, false},
		{"99999999999d", 0, false},
		{"10", 0, false},
	} {
		got, err := Parse(tt.in)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("Parse(%q) = %v, %v; want %v ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
	for _, d := range []time.Duration{0, time.Minute, 36 * time.Hour, 90 * Day, -3 * Day, 2*Day + time.Second} {
		if got, err := Parse(Format(d)); err != nil || got != d {
			t.Errorf("Parse(Format(%v)) = %v, %v", d, got, err)
		}
	}
}

func TestFormat(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0s", 30 * time.Second: "30s", 10 * time.Minute: "10m", time.Hour: "1h",
		90 * time.Minute: "1h30m", time.Hour + 5*time.Second: "1h0m5s", 36 * time.Hour: "36h",
		1500 * time.Millisecond: "1.5s", 2 * time.Minute: "2m", Day: "24h", 90 * Day: "90d",
		-3 * Day: "-72h",
	} {
		if got := Format(d); got != want {
			t.Errorf("Format(%v) = %q, want %q", d, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"1d", "1d12h", "30s", "-2d3m", "9223372036854775807ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := Parse(s)
		if err != nil {
			return
		}
		if back, err := Parse(Format(d)); err != nil || back != d {
			t.Fatalf("%q -> %v -> %q -> %v, %v", s, d, Format(d), back, err)
		}
	})
}
