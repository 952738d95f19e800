package gateway

import (
	"time"

	"mxguard/internal/admin"
	"mxguard/internal/spool"
)

// admin serves what the delivery manager and the spool report (GET
// /api/v1/servers, /api/v1/spool and its operator requests, the console's
// status page) in its own view types; these adapters are the only place
// the domain packages and the web layer meet.

// consoleServers lists the delivery servers for admin.
func (g *Gateway) consoleServers() []admin.ServerView {
	list := g.Delivery.Servers()
	out := make([]admin.ServerView, len(list))
	for i, s := range list {
		out[i] = admin.ServerView{Address: s.Address, Role: s.Role, State: s.State, Since: s.Since, LastError: s.LastError}
	}
	return out
}

// consoleSpool gives admin the spool manager's state and its three
// operator requests (Suspend, Resume, Unspool come with the embedding).
type consoleSpool struct{ *spool.Manager }

var _ admin.SpoolControl = consoleSpool{}

func (s consoleSpool) View() admin.SpoolView {
	st := s.Status()
	return admin.SpoolView{State: string(st.State), Messages: st.Messages, Bytes: st.Bytes, MaxBytes: st.MaxBytes}
}

// consoleSessions lists the open SMTP sessions for admin.
// smtpd times them by the system clock, whatever Options.Clock is.
func (g *Gateway) consoleSessions() []admin.SessionView {
	list := g.Sessions.Snapshot(time.Now())
	out := make([]admin.SessionView, len(list))
	for i, s := range list {
		out[i] = admin.SessionView{
			ID: s.ID, Source: s.Source, Listener: s.Listener, State: s.State.String(), StartedAt: s.StartedAt,
			IdleFor: int64(s.IdleFor / time.Second), Helo: s.Helo, TLS: s.TLS, BytesIn: s.BytesIn, Addr: s.Addr,
		}
	}
	return out
}
