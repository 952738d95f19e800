package gateway

import (
	"mxguard/internal/admin"
	"mxguard/internal/spool"
)

// The console's status page speaks admin's view types (admin cannot import
// relay or spool: both mount their API through it); these adapters are the
// only place the two meet.

// consoleServers lists the relay's servers for the status page.
func (g *Gateway) consoleServers() []admin.ServerView {
	list := g.Relay.Servers()
	out := make([]admin.ServerView, len(list))
	for i, s := range list {
		out[i] = admin.ServerView{Address: s.Address, Role: s.Role, State: s.State, Since: s.Since, LastError: s.LastError}
	}
	return out
}

// consoleSpool gives the console the spool manager's state and its three
// operator requests (Suspend, Resume, Unspool come with the embedding).
type consoleSpool struct{ *spool.Manager }

var _ admin.SpoolControl = consoleSpool{}

func (s consoleSpool) View() admin.SpoolView {
	st := s.Status()
	return admin.SpoolView{State: string(st.State), Messages: st.Messages, Bytes: st.Bytes, MaxBytes: st.MaxBytes}
}
