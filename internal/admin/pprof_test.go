package admin

import (
	"net/http/httptest"
	"testing"
)

func TestPprofNeedsToken(t *testing.T) {
	s := New(Options{Token: "tok"})
	for _, tc := range []struct {
		auth string
		want int
	}{{"", 401}, {"Bearer wrong", 401}, {"Bearer tok", 200}} {
		req := httptest.NewRequest("GET", "/debug/pprof/", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("auth %q: %d, want %d", tc.auth, rec.Code, tc.want)
		}
	}
}
