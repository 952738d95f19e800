package admin

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The API and the status page show what the delivery manager and the
// spool report. Those domain packages expose data and know nothing of
// HTTP; admin defines the views it serves and the gateway adapts the
// components to them.

// ServerView is one delivery server: GET /api/v1/servers (INTERFACE.md
// §5) and the status page.
type ServerView struct {
	Address   string    `json:"address"`
	Role      string    `json:"role"`  // "primary" or "failover"
	State     string    `json:"state"` // "up" or "down"
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error"` // kept after recovery, so a flapping server shows why
}

// SpoolView is the spool: GET /api/v1/spool (INTERFACE.md §5) and the
// status page.
type SpoolView struct {
	State    string `json:"state"` // off, delay, spooling, suspended, full, unspooling
	Messages int    `json:"messages"`
	Bytes    int64  `json:"bytes"`
	MaxBytes int64  `json:"max_bytes"` // 0: no limit
}

// SpoolControl is what admin needs of the spool manager: its state, and
// the three operator requests of POST /api/v1/spool/{action}.
type SpoolControl interface {
	View() SpoolView
	Suspend()
	Resume()
	Unspool()
}

// statusView is the status page.
type statusView struct {
	Servers     []ServerView
	HaveServers bool // false: this instance reports no servers (not "none configured")
	Spool       SpoolView
	HaveSpool   bool
	SpoolHint   string
	SpoolUse    string // "42%" of MaxBytes; "<1%" rather than a misleading 0%
}

func (c *console) statusPage(w http.ResponseWriter, r *http.Request) {
	p := page{Title: "Status", Nav: "status"}
	if done := r.URL.Query().Get("done"); spoolDone[done] != "" {
		p.Flash = spoolDone[done]
	}
	v := c.s.status()
	p.Data = &v
	c.render(w, r, http.StatusOK, "status", p)
}

// status is what the status page and the overview show of the delivery
// servers and the spool.
func (s *Server) status() statusView {
	v := statusView{}
	if s.o.Servers != nil {
		v.Servers, v.HaveServers = s.o.Servers(), true
	}
	if s.o.Spool != nil {
		v.Spool, v.HaveSpool = s.o.Spool.View(), true
		v.SpoolHint = spoolHint(v.Spool)
		if sp := v.Spool; sp.MaxBytes > 0 {
			pct := min(100, sp.Bytes*100/sp.MaxBytes)
			v.SpoolUse = strconv.FormatInt(pct, 10) + "%"
			if pct == 0 && sp.Bytes > 0 {
				v.SpoolUse = "<1%"
			}
		}
	}
	return v
}

// spoolDone is the flash message after each operator request; its keys are
// the actions the form may post.
var spoolDone = map[string]string{
	"suspend": "Spool suspended: nothing is spooled or released until you resume it.",
	"resume":  "Spool resumed.",
	"unspool": "Unspool requested: the waiting messages are released while a server is up.",
}

// spoolAction runs one operator request and redirects back to the status
// page (post/redirect/get, so a reload does not repeat it).
func (c *console) spoolAction(w http.ResponseWriter, r *http.Request) {
	if c.s.o.Spool == nil {
		c.renderError(w, r, http.StatusNotFound, "This instance has no spool.")
		return
	}
	action := r.PathValue("action")
	if !c.s.spoolRequest(r.Context(), action, "console") {
		c.renderError(w, r, http.StatusNotFound, "No such spool action.")
		return
	}
	http.Redirect(w, r, "/status?done="+action, http.StatusSeeOther)
}

// spoolRequest runs one operator request on the spool, from the API or the
// console (via), and logs it the same way for both, so the log tells one
// story whichever way the operator came. It reports false for an unknown
// action. The caller checked that there is a spool.
func (s *Server) spoolRequest(ctx context.Context, action, via string) bool {
	sp := s.o.Spool
	switch action {
	case "suspend":
		sp.Suspend()
	case "resume":
		sp.Resume()
	case "unspool":
		sp.Unspool()
	default:
		return false
	}
	s.log.InfoContext(ctx, "spool: operator request", "action", action, "via", via)
	return true
}

// spoolHint explains a spool state in the operator's terms (the states
// and their replies are those of internal/spool, INTERFACE.md §5).
func spoolHint(v SpoolView) string {
	switch v.State {
	case "off":
		if v.Messages > 0 {
			return "Held: a server is up, but auto_unspool is off. Unspool releases the waiting messages."
		}
		return "A server is up: mail passes straight through."
	case "delay":
		return "Every server is down; new mail is answered 451 until spool.delay has passed, then spooled."
	case "spooling":
		return "Every server is down; new mail is accepted into the spool."
	case "full":
		return "Every server is down and the spool is full; new mail is answered 452."
	case "suspended":
		return "Suspended by an operator: nothing is spooled (451 while every server is down) and nothing is released."
	case "unspooling":
		return "A server is up; the spooled messages are being released to it."
	}
	return ""
}

// approxSize is a byte count for reading, not for the configuration:
// "1.5 MiB" (formatSize would write "1572864B").
func approxSize(n int64) string {
	const units = "KMGT"
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " B"
	}
	f, i := float64(n)/1024, 0
	for f >= 1024 && i < len(units)-1 {
		f /= 1024
		i++
	}
	s := strconv.FormatFloat(f, 'f', 1, 64)
	return strings.TrimSuffix(s, ".0") + " " + units[i:i+1] + "iB"
}
