package admin

import (
	"net/http"
	"net/http/pprof"
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
		if s.bearerOK(w, r) {
			m.ServeHTTP(w, r)
		}
	}))
}
