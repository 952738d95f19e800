package smtpd

import (
	"time"

	"mxguard/internal/config"
)

// Stress mode, after Postfix's STRESS_README: when the open sessions pass
// stressEnter percent of limits.max_connections, the listener is being
// flooded or slowlorised, and every session, from its next command on,
// gets shorter timeouts so that slots held by idle or slow clients come
// free for real mail; a new session gets them from its greeting. The
// listener leaves stress mode when the load falls to stressLeave percent
// (the gap keeps it from flapping). Visible as the mxguard_stress gauge
// and a log line at each change.
const (
	stressEnter = 80
	stressLeave = 70
)

// Timeouts in stress mode (Options.Stress overrides them): Postfix's
// stress value of smtpd_timeout (10s) for the greeting and each command;
// a whole DATA transfer keeps two minutes. A configured timeout that is
// shorter stays.
const (
	stressGreeting = 10 * time.Second
	stressCommand  = 10 * time.Second
	stressData     = 2 * time.Minute
)

// stressTimeouts fills the zero fields of t with the defaults.
func stressTimeouts(t config.Timeouts) config.Timeouts {
	if t.Greeting == 0 {
		t.Greeting = stressGreeting
	}
	if t.Command == 0 {
		t.Command = stressCommand
	}
	if t.Data == 0 {
		t.Data = stressData
	}
	return t
}

// timeouts are the connection's timeouts now: its settings', shortened in
// stress mode.
func (c *conn) timeouts() config.Timeouts {
	t := c.set.Timeouts
	if c.srv.stress.Load() {
		s := c.srv.o.Stress
		t.Greeting = min(t.Greeting, s.Greeting)
		t.Command = min(t.Command, s.Command)
		t.Data = min(t.Data, s.Data)
	}
	return t
}

// updateStress enters or leaves stress mode after the number of open
// sessions changed to open.
func (s *Server) updateStress(open int64) {
	max := int64(s.cur.Load().set.Limits.MaxConnections)
	switch {
	case open*100 > max*stressEnter:
		if s.stress.CompareAndSwap(false, true) {
			s.setStressGauge(1)
			s.o.Logger.Warn("stress mode: shortened timeouts", "open", open, "max_connections", max)
		}
	case open*100 <= max*stressLeave:
		if s.stress.CompareAndSwap(true, false) {
			s.setStressGauge(0)
			s.o.Logger.Info("stress mode ended", "open", open, "max_connections", max)
		}
	}
}

func (s *Server) setStressGauge(v float64) {
	if s.o.Metrics != nil {
		s.o.Metrics.Stress.WithLabelValues(s.o.Name).Set(v)
	}
}
