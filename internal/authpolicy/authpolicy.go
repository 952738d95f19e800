// Package authpolicy is mxguard's Dovecot auth policy front end
// (INTERFACE.md §7, listen.auth_policy): Dovecot asks it before every
// authentication (POST ?command=allow) and tells it the outcome after
// (?command=report). A source the engine has blocked, for any reason and
// on any service, gets status -1; failed logins become auth-failure
// observations of the same engine the SMTP listeners feed, so password
// guessing over IMAP, POP3 or ManageSieve is counted per source and service
// and per account exactly like guessing over submission. See README.md.
package authpolicy

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"mxguard/internal/detect"
	"mxguard/internal/metrics"
)

// Engine is what the front end asks: the detection engine
// (internal/detect), which front ends never duplicate.
type Engine interface {
	// Blocked reports whether addr is blocked now (any rule, any service,
	// or a manual block).
	Blocked(addr netip.Addr) bool
	// Refused counts an attempt refused because addr is blocked toward
	// the impact of the event that blocked it.
	Refused(addr netip.Addr)
	// Observe counts an observation and reports whether the source is
	// blocked now.
	Observe(o detect.Observation) bool
	// DovecotPasswordKey fingerprints the pwhash Dovecot sent, so the same
	// wrong password again counts once.
	DovecotPasswordKey(login, pwhash string) uint64
}

// Options configure a Server.
type Options struct {
	Engine Engine
	// APIKey is auth.policy_api_key: when set, a request whose X-API-Key
	// header differs gets 401 and counts for nothing.
	APIKey string
	// Trusted are the peers allowed besides loopback (trusted_networks):
	// the policy server decides who may log in, so nobody else may talk
	// to it.
	Trusted []netip.Prefix
	Logger  *slog.Logger     // nil: discard
	Metrics *metrics.Metrics // may be nil
}

// Limits of one request. Dovecot's default request is ~170 bytes; custom
// auth_policy_request_attributes add a few fields. A body past MaxBody
// gets 413 (RFC 9110 §15.5.14) without being read further.
const (
	MaxBody           = 64 << 10
	maxHeaderBytes    = 16 << 10
	readHeaderTimeout = 10 * time.Second
	// A request is one small body; Dovecot's own client gives up after
	// auth_policy_server_timeout_msecs (2 s), so a peer slower than this
	// is stuck or hostile.
	readTimeout  = 30 * time.Second
	writeTimeout = 30 * time.Second
	// Dovecot keeps one connection per auth process open between logins.
	idleTimeout = 5 * time.Minute
	// maxProtocol bounds the service name; Dovecot's are short words.
	maxProtocol = 32
)

// Status values of Dovecot's answer (auth-policy.c): below zero refuses
// the login, zero lets it proceed, above zero delays it that many seconds.
const (
	statusReject = -1
	statusAllow  = 0
)

// Request is the JSON body Dovecot posts with its default
// auth_policy_request_attributes ("login=%{requested_username}
// pwhash=%{hashed_password} remote=%{rip} device_id=%{client_id}
// protocol=%s session_id=%{session}"), plus "tls" always and, for
// reports, "success" and "policy_reject". Other attributes an operator
// adds are ignored.
type Request struct {
	Login        string `json:"login"`
	PWHash       string `json:"pwhash"`
	Remote       string `json:"remote"`
	DeviceID     string `json:"device_id"`
	Protocol     string `json:"protocol"`
	SessionID    string `json:"session_id"`
	TLS          bool   `json:"tls"`
	Success      bool   `json:"success"`
	PolicyReject bool   `json:"policy_reject"`
}

// Answer is the JSON body of every answer to a valid request.
type Answer struct {
	Status int    `json:"status"`
	Msg    string `json:"msg"`
}

// Server answers Dovecot's auth policy requests; it is an http.Handler.
type Server struct {
	engine  Engine
	log     *slog.Logger
	metrics *metrics.Metrics
	cfg     atomic.Pointer[settings]
	// peerLogged is when a refused peer was last logged (UnixNano).
	peerLogged atomic.Int64

	// Pre-rendered answers: the hot path writes bytes, it marshals nothing.
	allowBody, rejectBody, reportBody []byte
}

// settings are what Reconfigure replaces.
type settings struct {
	apiKey  []byte
	trusted []netip.Prefix
}

var _ http.Handler = (*Server)(nil)

// Messages Dovecot shows the client: IMAP "NO [ALERT] <msg>", POP3
// "-ERR [AUTH] <msg>" (captured in ../shared/samples). They say what to do
// and nothing an attacker could use.
const (
	msgAllow   = "ok"
	msgBlocked = "Too many failed logins from your address; try again later."
)

// New returns a Server.
func New(o Options) (*Server, error) {
	if o.Engine == nil {
		return nil, errors.New("authpolicy: no engine")
	}
	s := &Server{engine: o.Engine, log: o.Logger, metrics: o.Metrics}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.allowBody = mustAnswer(Answer{Status: statusAllow, Msg: msgAllow})
	s.rejectBody = mustAnswer(Answer{Status: statusReject, Msg: msgBlocked})
	s.reportBody = s.allowBody // Dovecot ignores the answer to a report
	s.Reconfigure(o.APIKey, o.Trusted)
	if m := s.metrics; m != nil {
		for _, a := range []string{actionAllow, actionReject, actionReport, actionBadRequest, actionUnauthorized, actionTooLarge, actionPeerRefused} {
			m.PolicyRequests.WithLabelValues(frontEnd, a)
		}
	}
	return s, nil
}

func mustAnswer(a Answer) []byte {
	b, err := json.Marshal(a)
	if err != nil {
		panic(err)
	}
	return b
}

// Reconfigure replaces the API key and the trusted peers (a config reload);
// requests in flight finish with the old ones.
func (s *Server) Reconfigure(apiKey string, trusted []netip.Prefix) {
	st := &settings{trusted: append([]netip.Prefix(nil), trusted...)}
	if apiKey != "" {
		st.apiKey = []byte(apiKey)
	}
	s.cfg.Store(st)
}

// Label values of mxguard_policy_requests_total.
const (
	frontEnd           = "dovecot"
	actionAllow        = "allow"
	actionReject       = "reject"
	actionReport       = "report"
	actionBadRequest   = "bad_request"
	actionUnauthorized = "unauthorized"
	actionTooLarge     = "too_large"
	actionPeerRefused  = "peer_refused"
)

// Label values of mxguard_auth_total.
const (
	authSuccess = "success"
	authFailure = "failure"
	authRefused = "refused"
)

func (s *Server) count(action string) {
	if s.metrics != nil {
		s.metrics.PolicyRequests.WithLabelValues(frontEnd, action).Inc()
	}
}

// ServeHTTP answers one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		s.fail(w, http.StatusMethodNotAllowed, actionBadRequest, "only POST ?command=allow|report")
		return
	}
	cfg := s.cfg.Load()
	// The key is checked before the body is read: a wrong key costs no
	// parsing and, as the contract says, counts for nothing.
	if cfg.apiKey != nil && subtle.ConstantTimeCompare([]byte(r.Header.Get("X-API-Key")), cfg.apiKey) != 1 {
		s.fail(w, http.StatusUnauthorized, actionUnauthorized, "missing or wrong X-API-Key")
		return
	}
	command := r.URL.Query().Get("command")
	if command != "allow" && command != "report" {
		s.fail(w, http.StatusBadRequest, actionBadRequest, "command must be allow or report")
		return
	}
	if r.ContentLength > MaxBody {
		s.fail(w, http.StatusRequestEntityTooLarge, actionTooLarge, "body over "+strconv.Itoa(MaxBody)+" bytes")
		return
	}
	body, err := readBody(r.Body)
	if err != nil {
		if errors.Is(err, errTooLarge) {
			s.fail(w, http.StatusRequestEntityTooLarge, actionTooLarge, "body over "+strconv.Itoa(MaxBody)+" bytes")
			return
		}
		s.fail(w, http.StatusBadRequest, actionBadRequest, "read body: "+err.Error())
		return
	}
	req, err := ParseRequest(body)
	if err != nil {
		s.fail(w, http.StatusBadRequest, actionBadRequest, err.Error())
		return
	}
	if command == "allow" {
		s.allow(w, req)
		return
	}
	s.report(w, req)
}

// allow answers ?command=allow, asked before the password is checked (and
// again after a success): -1 for a blocked source, whatever the service.
func (s *Server) allow(w http.ResponseWriter, req *Parsed) {
	if req.Addr.IsValid() && s.engine.Blocked(req.Addr) {
		// The refused attempt is impact of the event that blocked the
		// source, counted here once: the report that follows carries
		// policy_reject and is not counted again.
		s.engine.Refused(req.Addr)
		s.count(actionReject)
		s.write(w, http.StatusOK, s.rejectBody)
		return
	}
	s.count(actionAllow)
	s.write(w, http.StatusOK, s.allowBody)
}

// report takes ?command=report, sent after authentication: only a failure
// Dovecot's own password check made (success false, policy_reject false)
// is evidence of guessing.
func (s *Server) report(w http.ResponseWriter, req *Parsed) {
	s.count(actionReport)
	switch {
	case req.Success:
		s.countAuth(req.Service, authSuccess)
	case req.PolicyReject:
		// Our own refusal echoed back; counted as impact at allow.
		s.countAuth(req.Service, authRefused)
	default:
		s.countAuth(req.Service, authFailure)
		if req.Addr.IsValid() {
			blocked := s.engine.Observe(detect.Observation{
				Kind:     detect.KindAuthFailure,
				Addr:     req.Addr,
				Account:  req.Account,
				Service:  req.Service,
				Password: s.engine.DovecotPasswordKey(req.Account, req.PWHash),
				Refused:  true,
				// Dovecot's report, never the password or its hash.
				Text: req.Service + " login " + strconv.Quote(req.Account) + ": authentication failed (Dovecot auth policy report)",
			})
			if blocked {
				s.log.Info("auth policy: source blocked", "source", req.Addr, "service", req.Service, "login", req.Account)
			}
		}
	}
	s.write(w, http.StatusOK, s.reportBody)
}

func (s *Server) countAuth(service, result string) {
	if s.metrics != nil {
		s.metrics.Auth.WithLabelValues(service, result).Inc()
	}
}

func (s *Server) write(w http.ResponseWriter, code int, body []byte) {
	h := w.Header()
	h["Content-Type"] = contentJSON
	h["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(code)
	_, _ = w.Write(body)
}

var contentJSON = []string{"application/json"}

// fail answers a request that is not a valid policy request: a 4xx with
// {"error": ...} (the admin API's error shape). Dovecot logs "Policy server
// HTTP error: <code>" and, with auth_policy_reject_on_fail = yes, refuses
// the login.
func (s *Server) fail(w http.ResponseWriter, code int, action, msg string) {
	s.count(action)
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{msg})
	if code == http.StatusRequestEntityTooLarge {
		// The rest of the body is not read; the connection cannot be
		// reused.
		w.Header().Set("Connection", "close")
	}
	s.write(w, code, b)
}

var errTooLarge = errors.New("body too large")

// readBody reads at most MaxBody bytes; a longer body (chunked, or a
// Content-Length that lied) is errTooLarge.
func readBody(r io.Reader) ([]byte, error) {
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r, MaxBody+1))
	if err != nil {
		return nil, err
	}
	if n > MaxBody {
		return nil, errTooLarge
	}
	return buf.Bytes(), nil
}

// Parsed is a validated request.
type Parsed struct {
	Addr         netip.Addr // remote; invalid when Dovecot sent none (a local doveadm auth test)
	Account      string     // login as an account name (detect.AccountName: lowercased, bounded)
	Service      string     // protocol, lowercased
	PWHash       string     // Dovecot's truncated hash of the tried password
	Success      bool
	PolicyReject bool
}

// ParseRequest decodes and validates a request body. Every string a
// client chose (login, the password hash) is bounded; remote must be an IP
// address when present; protocol must be a short word.
func ParseRequest(body []byte) (*Parsed, error) {
	var req Request
	if err := json.Unmarshal(body, &req); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return nil, fmt.Errorf("field %s: want a %s, got %s", te.Field, te.Type, te.Value)
		case errors.As(err, &se):
			return nil, fmt.Errorf("not JSON at byte %d: %v", se.Offset, se)
		}
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	p := &Parsed{Success: req.Success, PolicyReject: req.PolicyReject, PWHash: req.PWHash}
	if req.Remote != "" {
		a, err := netip.ParseAddr(req.Remote)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("remote %.64q is not an IP address", req.Remote)
		}
		p.Addr = a.Unmap()
	}
	proto := strings.ToLower(req.Protocol)
	if !validProtocol(proto) {
		return nil, fmt.Errorf("protocol %.64q is not a service name (letters, digits, - and _, at most %d)", req.Protocol, maxProtocol)
	}
	p.Service = proto
	p.Account = detect.AccountName(req.Login)
	if len(req.PWHash) > 128 {
		return nil, fmt.Errorf("pwhash is %d bytes long, at most 128", len(req.PWHash))
	}
	return p, nil
}

func validProtocol(s string) bool {
	if s == "" || len(s) > maxProtocol {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// Serve answers requests on ln until ctx ends, then shuts down (requests
// in flight get 5 s). Connections from peers that are neither loopback nor
// trusted are closed before a byte is read.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	err := hs.Serve(&peerFilter{Listener: ln, s: s})
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("authpolicy: %w", err)
}

// peerFilter drops connections from peers that may not ask.
type peerFilter struct {
	net.Listener
	s *Server
}

func (l *peerFilter) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.s.peerAllowed(c.RemoteAddr()) {
			return c, nil
		}
		l.s.count(actionPeerRefused)
		// Logged at most once a minute: a scan of an exposed port must not
		// flood the log; the metric counts every one.
		if now := time.Now().UnixNano(); now-l.s.peerLogged.Load() > int64(time.Minute) {
			l.s.peerLogged.Store(now)
			l.s.log.Warn("auth policy: connection refused: peer is neither loopback nor in trusted_networks", "peer", c.RemoteAddr().String())
		}
		_ = c.Close()
	}
}

func (s *Server) peerAllowed(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return false
	}
	ip := ta.AddrPort().Addr().Unmap()
	if ip.IsLoopback() {
		return true
	}
	for _, p := range s.cfg.Load().trusted {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
