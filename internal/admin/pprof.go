package admin

import (
	"net/http"
	"net/http/pprof"
	"strings"
)

// routePprof serves Go's profiler under /debug/pprof/, behind the same
// bearer token as the API: profiles reveal internals and cost CPU, so they
// are for the operator only (docs/benchmarks.md shows how they are used).
func (s *Server) routePprof() {
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	s.mux.Handle("/debug/pprof/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !s.tokenOK(strings.TrimSpace(token)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="mxguard"`)
			WriteError(w, http.StatusUnauthorized, "missing or invalid bearer token")
			return
		}
		m.ServeHTTP(w, r)
	}))
}
