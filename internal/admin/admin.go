// Package admin serves listen.admin: the JSON API (INTERFACE.md §5), the
// Prometheus metrics (§6), a health check and the web console, all on one
// http.Handler.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"mxguard/internal/cluster"
	"mxguard/internal/config"
	"mxguard/internal/duration"
	"mxguard/internal/events"
	"mxguard/internal/metrics"
)

// Engine is what admin needs of the detection engine (internal/detect.Engine
// implements it).
type Engine interface {
	// Flush writes pending impact counts to the store so a listing is current.
	Flush(ctx context.Context) error
	Blocks() []events.Block
	AddBlock(ctx context.Context, source string, d time.Duration, reason string) (events.Block, error)
	// RemoveBlock returns events.ErrNotFound when the source is not blocked.
	RemoveBlock(ctx context.Context, source string) error
	Rules() []config.Rule
}

// Options configures a Server.
type Options struct {
	Engine  Engine
	Store   events.Store
	Metrics *metrics.Metrics // nil: no /metrics
	// Token is the bearer token of /api/ and the console login. An empty
	// token disables both (every call answers 401): configuration refuses
	// an empty one, so empty can only be a wiring mistake, and failing
	// closed is the safe reading of it.
	Token string
	// Reload re-reads the configuration. Its error lists every problem, one
	// per line (config.Errors); nil reload means the endpoint answers 503.
	Reload  func(ctx context.Context) error
	Logger  *slog.Logger // nil: discard
	Version string       // shown in the console footer
	// Servers and Spool feed GET /api/v1/servers, /api/v1/spool and its
	// operator requests, and the console's status page; nil leaves them
	// out (an instance without a relay or spool: the API answers 503).
	Servers func() []ServerView
	Spool   SpoolControl
	// Suspensions feeds /api/v1/suspensions (the engine); nil: 503.
	Suspensions Suspender
	// Sessions lists the open SMTP sessions for GET /api/v1/sessions and
	// the Connections page (connections.go); their times are the
	// listeners' own (the system clock, not Clock). nil: the API answers
	// 503.
	Sessions func() []SessionView
	// Cluster feeds GET /api/v1/cluster: this node, the state of Redis
	// ("off" without cluster.redis) and the nodes seen; nil: 503.
	Cluster func() cluster.Status
	// Clock gives console session expiry, login throttling and "expires
	// in 45m" their now; nil: the system clock.
	Clock interface{ Now() time.Time }
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Server is the admin http.Handler.
type Server struct {
	o        Options
	log      *slog.Logger
	mux      *http.ServeMux
	api      *http.ServeMux             // authenticated, JSON errors
	token    atomic.Pointer[tokenState] // SetToken swaps it on reload
	console  *console
	clock    interface{ Now() time.Time }
	sessions *sessions // console logins
	throttle *throttle // failed tokens per client address
}

// New builds the handler; it does not listen.
func New(o Options) *Server {
	s := &Server{o: o, log: o.Logger, mux: http.NewServeMux(), api: http.NewServeMux(), clock: o.Clock,
		sessions: newSessions(), throttle: newThrottle()}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.clock == nil {
		s.clock = systemClock{}
	}
	s.SetToken(o.Token)

	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	if o.Metrics != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(o.Metrics.Registry, promhttp.HandlerOpts{}))
	}
	s.mux.Handle("/api/", http.HandlerFunc(s.serveAPI))
	s.routeAPI()
	s.routePprof()
	s.console = newConsole(s)
	s.console.route(s.mux)
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// serveAPI checks the bearer token before routing, so an unauthenticated
// client learns nothing about which paths exist.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	if !s.bearerOK(w, r) {
		return
	}
	// The largest legitimate body is a block; a bigger one is refused
	// (413) before it is read, not buffered.
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	jw := &jsonErrors{ResponseWriter: w, r: r}
	s.api.ServeHTTP(jw, r)
	jw.finish()
}

// bearerOK checks the bearer token of an API or pprof request, and
// answers it when the check fails: 401, or 429 while the client is locked
// out for too many wrong tokens (throttle.go). A request without a bearer
// token at all is no guess and does not count.
func (s *Server) bearerOK(w http.ResponseWriter, r *http.Request) bool {
	key, now := clientKey(r), s.clock.Now()
	if wait := s.throttle.wait(key, now); wait > 0 {
		setRetryAfter(w, wait)
		writeError(w, http.StatusTooManyRequests, "too many wrong tokens from your address; retry in "+duration.Format(roundUp(wait)))
		return false
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if ok && s.tokenOK(strings.TrimSpace(token)) {
		s.throttle.reset(key)
		return true
	}
	if ok {
		s.failed(r, key, now, "api")
	}
	w.Header().Set("WWW-Authenticate", `Bearer realm="mxguard"`)
	writeError(w, http.StatusUnauthorized, "missing or invalid bearer token")
	return false
}

// failed counts a wrong token from key and logs the lockout it starts.
func (s *Server) failed(r *http.Request, key netip.Prefix, now time.Time, via string) {
	if d := s.throttle.fail(key, now); d > 0 {
		s.log.WarnContext(r.Context(), "admin: too many wrong tokens, client locked out",
			"client", key.String(), "via", via, "for", d)
	}
}

// setRetryAfter says in whole seconds, rounded up, when to try again
// (RFC 9110 §10.2.3).
func setRetryAfter(w http.ResponseWriter, d time.Duration) {
	w.Header().Set("Retry-After", strconv.FormatInt(int64(roundUp(d)/time.Second), 10))
}

func roundUp(d time.Duration) time.Duration {
	return (d + time.Second - 1).Truncate(time.Second)
}

// tokenOK compares hashes in constant time: hashing first makes the time
// independent of the length of the guess as well as of its content.
func (s *Server) tokenOK(given string) bool {
	t := s.token.Load()
	if t.empty {
		return false
	}
	h := sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(h[:], t.hash[:]) == 1
}

// tokenState is the bearer token in force, kept as its hash.
type tokenState struct {
	empty bool // no token: API and console refuse everyone
	hash  [sha256.Size]byte
}

// SetToken replaces the bearer token (configuration reload): the old one
// stops working at once, and a changed token ends every console session
// (whoever logged in with the old one must prove they know the new one).
func (s *Server) SetToken(token string) {
	next := &tokenState{empty: token == "", hash: sha256.Sum256([]byte(token))}
	if old := s.token.Swap(next); old != nil && *old != *next {
		s.sessions.clear()
	}
}

// HTTPLimits bound what one client can hold of the admin listener. Zero
// fields take the defaults.
type HTTPLimits struct {
	// ReadHeaderTimeout cuts off a client that sends its request headers
	// slowly (slowloris): default 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included: 30s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing an answer: 60s (a CPU profile extends
	// its own deadline by the seconds asked for).
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request: 2m.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request headers: 64 KiB (a browser on
	// localhost may carry other local apps' cookies; Go's default is 1 MiB).
	MaxHeaderBytes int
}

// HTTPServer returns the http.Server for the admin listener: this handler
// with the limits l (defaults for zero fields).
func (s *Server) HTTPServer(l HTTPLimits) *http.Server {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeaderTimeout, 10*time.Second)
	def(&l.ReadTimeout, 30*time.Second)
	def(&l.WriteTimeout, time.Minute)
	def(&l.IdleTimeout, 2*time.Minute)
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = 64 << 10
	}
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// jsonErrors turns the plain-text errors of http.ServeMux (404, 405 with its
// Allow header) into the JSON error form of INTERFACE.md §5.
type jsonErrors struct {
	http.ResponseWriter
	r      *http.Request
	status int // non-zero once a text error is being captured
	text   strings.Builder
}

func (j *jsonErrors) WriteHeader(code int) {
	if code >= 400 && strings.HasPrefix(j.Header().Get("Content-Type"), "text/plain") {
		j.status = code
		return
	}
	j.ResponseWriter.WriteHeader(code)
}

func (j *jsonErrors) Write(b []byte) (int, error) {
	if j.status != 0 {
		if j.text.Len() < 1024 {
			j.text.Write(b)
		}
		return len(b), nil
	}
	return j.ResponseWriter.Write(b)
}

// finish writes the captured error, if any.
func (j *jsonErrors) finish() {
	if j.status == 0 {
		return
	}
	j.Header().Del("X-Content-Type-Options")
	msg := strings.TrimSpace(j.text.String())
	switch {
	case j.status == http.StatusNotFound && msg == "404 page not found": // ServeMux's text
		msg = "no such endpoint: " + j.r.URL.Path
	case j.status == http.StatusMethodNotAllowed:
		msg = fmt.Sprintf("method %s not allowed on %s (allowed: %s)", j.r.Method, j.r.URL.Path, j.Header().Get("Allow"))
	case msg == "":
		msg = strings.ToLower(http.StatusText(j.status))
	}
	writeError(j.ResponseWriter, j.status, msg)
}

// Unwrap lets http.ResponseController reach the real writer.
func (j *jsonErrors) Unwrap() http.ResponseWriter { return j.ResponseWriter }
