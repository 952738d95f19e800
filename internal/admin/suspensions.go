package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

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
	account := r.PathValue("account")
	err := s.o.Suspensions.RemoveSuspension(r.Context(), account)
	switch {
	case errors.Is(err, events.ErrNotFound):
		s.fail(w, r, notFound("no suspension for %s", account))
	case err != nil:
		s.fail(w, r, fmt.Errorf("lift suspension %s: %w", account, err))
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}
