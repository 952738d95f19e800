package admin

import (
	"context"
	"strings"
	"testing"
	"time"

	"mxguard/internal/detect"
	"mxguard/internal/events"
)

// The suspensions API over the real engine (INTERFACE.md §5).
func TestSuspensionsAPI(t *testing.T) {
	eng, err := detect.New(context.Background(), detect.Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, func(o *Options) { o.Suspensions = eng })
	if r := f.api(t, "GET", "/api/v1/suspensions", ""); r.status != 200 || strings.TrimSpace(r.body) != `{"suspensions":[]}` {
		t.Fatalf("empty list: %d %s", r.status, r.body)
	}
	for _, tc := range []struct {
		name, body string
		status     int
		account    string
		dur        time.Duration
	}{
		{"account", `{"account":"Alice@Example.test","for":"2h","reason":"phished"}`, 201, "alice@example.test", 2 * time.Hour},
		{"default for", `{"account":"bob"}`, 201, "bob", time.Hour},
		{"days", `{"account":"carol","for":"7d"}`, 201, "carol", 7 * 24 * time.Hour},
		{"no account", `{"for":"1h"}`, 400, "", 0},
		{"account with a space", `{"account":"a b"}`, 400, "", 0},
		{"account too long", `{"account":"` + strings.Repeat("a", 257) + `"}`, 400, "", 0},
		{"bad duration", `{"account":"x","for":"soon"}`, 400, "", 0},
		{"zero duration", `{"account":"x","for":"0s"}`, 400, "", 0},
		{"bad json", `{"account":`, 400, "", 0},
		{"trailing data", `{"account":"x"} {}`, 400, "", 0},
		{"too large", `{"account":"x","reason":"` + strings.Repeat("r", maxBody) + `"}`, 413, "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.api(t, "POST", "/api/v1/suspensions", tc.body)
			if tc.status != 201 {
				wantError(t, r, tc.status)
				return
			}
			if r.status != 201 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			su := decode[events.Suspension](t, r)
			if su.Account != tc.account || !su.Manual || su.ExpiresAt.Sub(su.CreatedAt) != tc.dur {
				t.Errorf("suspension %+v, want %s for %v", su, tc.account, tc.dur)
			}
			if !eng.Suspended(tc.account) {
				t.Errorf("%s not suspended in the engine", tc.account)
			}
		})
	}
	list := decode[map[string][]events.Suspension](t, f.api(t, "GET", "/api/v1/suspensions", ""))["suspensions"]
	if len(list) != 3 || list[0].Reason != "phished" && list[2].Reason != "phished" {
		t.Errorf("list %+v", list)
	}
	if r := f.api(t, "DELETE", "/api/v1/suspensions/ALICE@example.test", ""); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if eng.Suspended("alice@example.test") {
		t.Error("still suspended after DELETE")
	}
	wantError(t, f.api(t, "DELETE", "/api/v1/suspensions/alice@example.test", ""), 404)
	if r := f.do(t, "GET", "/api/v1/suspensions", ""); r.status != 401 {
		t.Errorf("without token: %d", r.status)
	}
}

func TestSuspensionsUnavailable(t *testing.T) {
	f := newFixture(t)
	wantError(t, f.api(t, "GET", "/api/v1/suspensions", ""), 503)
	wantError(t, f.api(t, "POST", "/api/v1/suspensions", `{"account":"a"}`), 503)
	wantError(t, f.api(t, "DELETE", "/api/v1/suspensions/a", ""), 503)
}
