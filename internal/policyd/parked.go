package policyd

import (
	"context"
	"sync"
	"time"

	"mxguard/internal/detect"
)

// Postfix closes a policy connection after smtpd_policy_service_max_ttl
// (1000 s) even in the middle of an SMTP session, and reconnects at the
// next request; an smtpd process that exits closes it between sessions.
// The policy server cannot tell which, so the session of a closed
// connection is parked: a new connection whose first request is about the
// same session (same client and server address and port) takes it over —
// its connection is not counted again, its recipients add up — and a
// parked session nobody took over within parkTTL has ended and is judged
// then (bad_sessions).
const (
	// parkTTL is Postfix's smtpd_timeout (300 s), the longest an SMTP
	// client may stay silent within a session, plus a margin.
	parkTTL = 330 * time.Second
	// maxParked bounds the table (one entry per smtpd process that
	// closed its connection within parkTTL); past it the oldest ends
	// early.
	maxParked = 4096
	// sweepEvery is how often Serve ends sessions parked for parkTTL.
	sweepEvery = 15 * time.Second
)

type parkedSession struct {
	sess  session
	since time.Time
}

type parking struct {
	mu sync.Mutex
	m  map[string]*parkedSession
}

// park keeps the active session of a closing connection.
func (s *Server) park(sess session) {
	if !sess.active {
		return
	}
	now := s.o.now()
	var ended []session
	s.parked.mu.Lock()
	if s.parked.m == nil {
		s.parked.m = make(map[string]*parkedSession)
	}
	if len(s.parked.m) >= maxParked {
		ended = s.parked.expire(now, true)
	}
	s.parked.m[string(sess.id)] = &parkedSession{sess: sess, since: now}
	s.parked.mu.Unlock()
	s.finish(ended)
}

// adopt takes over the parked session id, if there is one.
func (s *Server) adopt(id []byte) (session, bool) {
	s.parked.mu.Lock()
	defer s.parked.mu.Unlock()
	p, ok := s.parked.m[string(id)]
	if !ok {
		return session{}, false
	}
	delete(s.parked.m, string(id))
	return p.sess, true
}

// sweep ends the sessions parked for parkTTL.
func (s *Server) sweep() {
	s.parked.mu.Lock()
	ended := s.parked.expire(s.o.now(), false)
	s.parked.mu.Unlock()
	s.finish(ended)
}

// expire removes the sessions parked for parkTTL, and with full also the
// oldest one when none is that old; called with mu held.
func (p *parking) expire(now time.Time, full bool) []session {
	var out []session
	var oldest string
	for k, ps := range p.m {
		if now.Sub(ps.since) >= parkTTL {
			out = append(out, ps.sess)
			delete(p.m, k)
		} else if oldest == "" || ps.since.Before(p.m[oldest].since) {
			oldest = k
		}
	}
	if full && len(out) == 0 && oldest != "" {
		out = append(out, p.m[oldest].sess)
		delete(p.m, oldest)
	}
	return out
}

func (s *Server) finish(ended []session) {
	for i := range ended {
		s.judgeEnded(&ended[i])
	}
}

// judgeEnded counts an ended session toward bad_sessions only when
// mxguard knows no message came of it: it gave recipients, every one of
// which mxguard refused as unknown, and no END-OF-MESSAGE. A session
// whose recipients mxguard let through may still have been refused by a
// later restriction, or ended before DATA; Postfix does not say, so it is
// not counted. Nor is one mxguard refused (blocked, listed).
func (s *Server) judgeEnded(sess *session) {
	e := s.o.Engine
	if sess.unknown > 0 && sess.accepted == 0 && sess.messages == 0 && !sess.refused && (sess.protected || !e.Blocked(sess.addr)) {
		e.Observe(detect.Observation{Kind: detect.KindBadSession, Addr: sess.addr, Service: service})
	}
}

// runSweeper ends parked sessions until ctx ends; at the end every parked
// session is judged (the server stops: nobody will take them over).
func (s *Server) runSweeper(ctx context.Context) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.parked.mu.Lock()
			var ended []session
			for _, ps := range s.parked.m {
				ended = append(ended, ps.sess)
			}
			s.parked.m = nil
			s.parked.mu.Unlock()
			s.finish(ended)
			return
		case <-t.C:
			s.sweep()
		}
	}
}
