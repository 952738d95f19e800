package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"mxguard/internal/duration"
	"mxguard/internal/events"
)

// Suspender is what the suspensions API needs of the detection engine:
// accounts whose mail the submission listener refuses (INTERFACE.md §5).
type Suspender interface {
	Suspensions() []events.Suspension
	AddSuspension(ctx context.Context, account string, d time.Duration, reason string) (events.Suspension, error)
	// RemoveSuspension returns events.ErrNotFound when the account is not
	// suspended.
	RemoveSuspension(ctx context.Context, account string) error
}

// defaultSuspendFor applies when POST /api/v1/suspensions has no "for".
const defaultSuspendFor = time.Hour

// maxAccountLen bounds an account in a request: a login name, at most a
// path's 256 octets (RFC 5321 §4.5.3.1.3).
const maxAccountLen = 256

var errNoSuspensions = &userError{http.StatusServiceUnavailable, "suspensions are not available"}

// suspensions lists the suspensions in force, newest first, never nil.
func (s *Server) suspensions() []events.Suspension {
	return newestFirst(s.o.Suspensions.Suspensions(), func(su events.Suspension) (time.Time, string) { return su.CreatedAt, su.Account })
}

func (s *Server) addSuspension(ctx context.Context, account, forText, reason string) (events.Suspension, error) {
	account = strings.TrimSpace(account)
	switch {
	case account == "":
		return events.Suspension{}, badRequest("account is required: the login name")
	case len(account) > maxAccountLen || strings.ContainsFunc(account, func(r rune) bool { return r < 0x21 || r == 0x7f }):
		return events.Suspension{}, badRequest("bad account %.64q: a login name, at most %d bytes, no spaces or control characters", account, maxAccountLen)
	}
	d, err := parseFor(forText, defaultSuspendFor)
	if err != nil {
		return events.Suspension{}, err
	}
	su, err := s.o.Suspensions.AddSuspension(ctx, account, d, strings.TrimSpace(reason))
	if err != nil {
		return su, fmt.Errorf("suspend %s: %w", account, err)
	}
	return su, nil
}

// withSuspensions answers 503 for the suspensions API when the server has
// no Suspender.
func (s *Server) withSuspensions(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.o.Suspensions == nil {
			s.fail(w, r, errNoSuspensions)
			return
		}
		h(w, r)
	}
}

func (s *Server) apiSuspensions(w http.ResponseWriter, r *http.Request) {
	s.flush(r.Context())
	writeJSON(w, http.StatusOK, map[string][]events.Suspension{"suspensions": s.suspensions()})
}

func (s *Server) apiAddSuspension(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Account string `json:"account"`
		For     string `json:"for"`
		Reason  string `json:"reason"`
	}
	if err := decodeBody(r, &req); err != nil {
		s.fail(w, r, err)
		return
	}
	su, err := s.addSuspension(r.Context(), req.Account, req.For, req.Reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, su)
}

func (s *Server) apiRemoveSuspension(w http.ResponseWriter, r *http.Request) {
	if err := s.removeSuspension(r.Context(), r.PathValue("account")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// removeSuspension lifts the suspension of account, from the API or the
// console.
func (s *Server) removeSuspension(ctx context.Context, account string) error {
	return removed(s.o.Suspensions.RemoveSuspension(ctx, account), "suspension", account)
}

// --- console ---

// suspensionsView is the suspensions page; Form keeps a refused
// submission's values.
type suspensionsView struct {
	Have        bool // false: this instance has no Suspender
	Suspensions []events.Suspension
	Form        struct{ Account, For, Reason string }
}

func (c *console) suspensionsView(ctx context.Context) *suspensionsView {
	v := &suspensionsView{Have: c.s.o.Suspensions != nil}
	v.Form.For = duration.Format(defaultSuspendFor)
	if v.Have {
		c.s.flush(ctx)
		v.Suspensions = c.s.suspensions()
	}
	return v
}

func (c *console) suspensionsPage(w http.ResponseWriter, r *http.Request) {
	p := page{Title: "Suspensions", Nav: "suspensions", Data: c.suspensionsView(r.Context())}
	q := r.URL.Query()
	if s := q.Get("added"); s != "" {
		p.Flash = "Suspended " + s + "."
	} else if s := q.Get("removed"); s != "" {
		p.Flash = "Lifted the suspension of " + s + "."
	}
	c.render(w, r, http.StatusOK, "suspensions", p)
}

// addSuspension and removeSuspension answer with a redirect
// (post/redirect/get), like the blocks page.
func (c *console) addSuspension(w http.ResponseWriter, r *http.Request) {
	if c.s.o.Suspensions == nil {
		c.renderError(w, r, http.StatusServiceUnavailable, "This instance does not suspend accounts.")
		return
	}
	account, forText, reason := r.PostFormValue("account"), r.PostFormValue("for"), r.PostFormValue("reason")
	su, err := c.s.addSuspension(r.Context(), account, forText, reason)
	if err != nil {
		status, msg := c.s.classify(r, err)
		v := c.suspensionsView(r.Context())
		v.Form.Account, v.Form.For, v.Form.Reason = account, forText, reason
		c.render(w, r, status, "suspensions", page{Title: "Suspensions", Nav: "suspensions", Error: msg, Data: v})
		return
	}
	http.Redirect(w, r, "/suspensions?added="+url.QueryEscape(su.Account), http.StatusSeeOther)
}

func (c *console) removeSuspension(w http.ResponseWriter, r *http.Request) {
	if c.s.o.Suspensions == nil {
		c.renderError(w, r, http.StatusServiceUnavailable, "This instance does not suspend accounts.")
		return
	}
	c.remove(w, r, "account", "/suspensions", c.s.removeSuspension)
}
