package admin

import (
	"cmp"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"

	"mxguard/internal/detect"
	"mxguard/internal/duration"
)

// SessionView is one open SMTP session: GET /api/v1/sessions (INTERFACE.md
// §5) and the console's Connections page. The gateway adapts the SMTP
// listeners' registry (internal/smtpd) to it.
type SessionView struct {
	ID        uint64    `json:"id"`
	Source    string    `json:"source"`   // canonical: IPv4 address or IPv6 prefix
	Listener  string    `json:"listener"` // "smtp" or "submission"
	State     string    `json:"state"`    // greeting, helo, mail, rcpt, data, idle
	StartedAt time.Time `json:"started_at"`
	IdleFor   int64     `json:"idle_for"` // whole seconds since the client's last byte
	Helo      string    `json:"helo"`
	TLS       bool      `json:"tls"`
	BytesIn   int64     `json:"bytes_in"`
	// Addr is the client address, for ?source= to match a session inside
	// a CIDR; the API shows the source only.
	Addr netip.Addr `json:"-"`
}

// SourceCount is one source with its number of open sessions.
type SourceCount struct {
	Source string `json:"source"`
	Count  int    `json:"count"`
}

// SessionList is the answer of GET /api/v1/sessions.
type SessionList struct {
	Total    int           `json:"total"`
	Sessions []SessionView `json:"sessions"`
	BySource []SourceCount `json:"by_source"`
}

// maxSessionsListed bounds the sessions (and sources) one answer lists;
// Total still counts them all.
const maxSessionsListed = 500

// listSessions filters the open sessions by source (an IP address or a
// CIDR; "" for all) and orders them: the sources with the most sessions
// first (ties by source), and within a source the oldest session first.
func (s *Server) listSessions(source string) (SessionList, error) {
	match := func(SessionView) bool { return true }
	if source = strings.TrimSpace(source); source != "" {
		p, err := detect.ParseSource(source)
		if err != nil {
			return SessionList{}, badRequest("source %q is not an IP address or CIDR", source)
		}
		match = func(v SessionView) bool { return p.Contains(v.Addr) || v.Source == p.String() }
	}
	all := s.o.Sessions()
	list := SessionList{Sessions: []SessionView{}, BySource: []SourceCount{}}
	counts := map[string]int{}
	for _, v := range all {
		if match(v) {
			list.Sessions = append(list.Sessions, v)
			counts[v.Source]++
		}
	}
	list.Total = len(list.Sessions)
	for src, n := range counts {
		list.BySource = append(list.BySource, SourceCount{Source: src, Count: n})
	}
	slices.SortFunc(list.BySource, func(a, b SourceCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Source, b.Source))
	})
	slices.SortFunc(list.Sessions, func(a, b SessionView) int {
		return cmp.Or(cmp.Compare(counts[b.Source], counts[a.Source]), strings.Compare(a.Source, b.Source),
			a.StartedAt.Compare(b.StartedAt), cmp.Compare(a.ID, b.ID))
	})
	list.Sessions = list.Sessions[:min(len(list.Sessions), maxSessionsListed)]
	list.BySource = list.BySource[:min(len(list.BySource), maxSessionsListed)]
	return list, nil
}

func (s *Server) apiSessions(w http.ResponseWriter, r *http.Request) {
	if s.o.Sessions == nil {
		writeError(w, http.StatusServiceUnavailable, "this instance reports no SMTP sessions")
		return
	}
	list, err := s.listSessions(r.URL.Query().Get("source"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, list)
}

// connectionsView is the Connections page.
type connectionsView struct {
	SessionList
	Have    bool // false: this instance reports no sessions
	Source  string
	BlockBy string // the default duration of the Block buttons
}

func (c *console) connectionsPage(w http.ResponseWriter, r *http.Request) {
	p := page{Title: "Connections", Nav: "connections"}
	v := connectionsView{Source: r.URL.Query().Get("source"), BlockBy: duration.Format(defaultBlockFor)}
	status := http.StatusOK
	if c.s.o.Sessions != nil {
		v.Have = true
		list, err := c.s.listSessions(v.Source)
		if err != nil {
			status, p.Error = c.s.classify(r, err)
		}
		v.SessionList = list
	}
	p.Data = &v
	c.render(w, r, status, "connections", p)
}
