package spool

import (
	"net/http"

	"mxguard/internal/admin"
)

// Handler serves the spool part of the admin API (INTERFACE.md §5):
//
//	GET  /api/v1/spool           status
//	POST /api/v1/spool/suspend   Suspend, then status
//	POST /api/v1/spool/resume    Resume, then status
//	POST /api/v1/spool/unspool   Unspool, then status
//
// It routes on the full path, so it can be mounted once per route or once
// for "GET /api/v1/spool" and "POST /api/v1/spool/{action}"; other paths
// and methods get the ServeMux's 404 and 405 (which admin turns into JSON
// errors). Authentication is the admin server's job.
func (m *Manager) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/spool", func(w http.ResponseWriter, _ *http.Request) {
		admin.WriteJSON(w, http.StatusOK, m.Status())
	})
	for action, f := range map[string]func(){"suspend": m.Suspend, "resume": m.Resume, "unspool": m.Unspool} {
		mux.HandleFunc("POST /api/v1/spool/"+action, func(w http.ResponseWriter, r *http.Request) {
			f()
			m.log.InfoContext(r.Context(), "spool: operator request", "action", action)
			admin.WriteJSON(w, http.StatusOK, m.Status())
		})
	}
	return mux
}
