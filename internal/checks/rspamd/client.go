// Package rspamd asks rspamd for a verdict over its HTTP /checkv2
// endpoint and applies the action rspamd chose. See README.md.
package rspamd

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"mxguard/internal/checks/scanner"
	"mxguard/internal/pipeline"
)

// Client talks to one rspamd normal worker (or proxy) at URL.
type Client struct {
	url  string // .../checkv2
	http *http.Client
}

// Options configures New.
type Options struct {
	// MaxConns bounds idle keep-alive connections kept to rspamd; set it
	// to content.max_concurrency so every scan slot reuses one.
	MaxConns int
	// Dial opens connections; nil: a net.Dialer.
	Dial scanner.DialFunc
}

// NewClient returns a client for content.rspamd, e.g.
// "http://127.0.0.1:11333".
func NewClient(base string, o Options) (*Client, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return nil, fmt.Errorf("rspamd address %q: want http://host:port", base)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 8
	}
	dial := o.Dial
	if dial == nil {
		dial = (&net.Dialer{Timeout: 5 * time.Second}).DialContext
	}
	tr := &http.Transport{
		DialContext:         dial,
		MaxIdleConnsPerHost: o.MaxConns,
		IdleConnTimeout:     60 * time.Second,
		DisableCompression:  true,
		Proxy:               nil, // rspamd is local; an HTTP_PROXY must not see mail
	}
	return &Client{url: strings.TrimRight(u.String(), "/") + "/checkv2", http: &http.Client{Transport: tr}}, nil
}

// Close drops idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// Result is rspamd's answer to /checkv2 (the fields mxguard uses).
type Result struct {
	Action   string  // "no action", "greylist", "add header", "rewrite subject", "soft reject", "reject"
	Score    float64 // the message's score
	Required float64 // the reject threshold
	Symbols  []string
	// SMTPMessage is rspamd's text for the client (messages.smtp_message).
	SMTPMessage string
	// AddHeaders are the headers rspamd asks the MTA to add
	// (milter.add_headers, e.g. from the milter_headers module), sorted by
	// name.
	AddHeaders []pipeline.Header
}

// maxAnswer bounds the JSON read from rspamd: symbols with options and
// milter headers, well under a megabyte even for big messages.
const maxAnswer = 1 << 20

// Check posts the message (size bytes from r) with the envelope in
// rspamd's request headers (From, Rcpt, IP, Helo, User: rspamd's
// protocol documentation, "HTTP headers").
func (c *Client) Check(ctx context.Context, s *pipeline.Session, r io.Reader, size int64) (Result, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, r)
	if err != nil {
		return Result{}, fmt.Errorf("rspamd: %w", err)
	}
	req.ContentLength = size
	if size == 0 {
		req.Body = http.NoBody
	}
	h := req.Header
	if s != nil {
		if s.Addr.IsValid() {
			h.Set("IP", s.Addr.Unmap().String())
		}
		setClean(h, "Helo", s.Helo)
		setClean(h, "From", s.From)
		setClean(h, "User", s.Account)
		for _, rc := range s.Rcpts {
			if clean(rc) {
				h.Add("Rcpt", rc)
			}
		}
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return Result{}, fmt.Errorf("rspamd: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return Result{}, fmt.Errorf("rspamd: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return Result{}, fmt.Errorf("rspamd: HTTP %d: %s", resp.StatusCode, scanner.Clip(body))
	}
	if len(body) > maxAnswer {
		return Result{}, fmt.Errorf("rspamd: answer over %d bytes", maxAnswer)
	}
	return ParseAnswer(body)
}

// setClean sets an envelope header when the value can travel in one.
func setClean(h http.Header, k, v string) {
	if v != "" && clean(v) {
		h.Set(k, v)
	}
}

// clean reports whether v is safe as an HTTP header value (no control
// characters; envelope addresses were parsed strictly before anyway).
func clean(v string) bool {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] == 0x7f {
			return false
		}
	}
	return true
}

// Actions rspamd may answer (rspamd's actions.conf).
var actions = map[string]bool{
	"no action": true, "greylist": true, "add header": true,
	"rewrite subject": true, "soft reject": true, "reject": true,
}

type answer struct {
	Action   *string             `json:"action"`
	Score    *float64            `json:"score"`
	Required float64             `json:"required_score"`
	Symbols  map[string]struct{} `json:"symbols"`
	Messages struct {
		SMTP string `json:"smtp_message"`
	} `json:"messages"`
	Milter struct {
		AddHeaders map[string]json.RawMessage `json:"add_headers"`
	} `json:"milter"`
	Error string `json:"error"`
}

// ParseAnswer reads rspamd's JSON answer. An answer without a known
// action or a score is an error: a verdict we do not understand never
// passes a message as clean.
func ParseAnswer(b []byte) (Result, error) {
	var a answer
	if err := json.Unmarshal(b, &a); err != nil {
		return Result{}, fmt.Errorf("rspamd: bad answer: %w", err)
	}
	if a.Error != "" {
		return Result{}, fmt.Errorf("rspamd: error %q", scanner.Clip(a.Error))
	}
	if a.Action == nil || !actions[*a.Action] || a.Score == nil || !finite(*a.Score) || !finite(a.Required) {
		return Result{}, fmt.Errorf("rspamd: answer without a known action and score: %s", scanner.Clip(b))
	}
	res := Result{Action: *a.Action, Score: *a.Score, Required: a.Required}
	if clean(a.Messages.SMTP) && len(a.Messages.SMTP) <= 200 {
		res.SMTPMessage = a.Messages.SMTP
	}
	for name := range a.Symbols {
		if symbolName(name) {
			res.Symbols = append(res.Symbols, name)
		}
	}
	sort.Strings(res.Symbols)
	for name, raw := range a.Milter.AddHeaders {
		if !headerName(name) {
			continue
		}
		for _, v := range headerValues(raw) {
			if v, ok := unfold(v); ok {
				res.AddHeaders = append(res.AddHeaders, pipeline.Header{Name: name, Value: v})
			}
		}
	}
	sort.SliceStable(res.AddHeaders, func(i, j int) bool { return res.AddHeaders[i].Name < res.AddHeaders[j].Name })
	return res, nil
}

// headerValues reads one milter.add_headers entry: a string, an object
// {"value": ..., "order": ...}, or a list of either (rspamd's
// milter_headers module).
func headerValues(raw json.RawMessage) []string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}
	}
	var o struct {
		Value *string `json:"value"`
	}
	if json.Unmarshal(raw, &o) == nil && o.Value != nil {
		return []string{*o.Value}
	}
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) != nil {
		return nil
	}
	var out []string
	for _, e := range list {
		if len(out) >= 10 {
			break
		}
		var s string
		if json.Unmarshal(e, &s) == nil {
			out = append(out, s)
		} else if json.Unmarshal(e, &o) == nil && o.Value != nil {
			out = append(out, *o.Value)
		}
	}
	return out
}

// unfold undoes header folding (RFC 5322 §2.2.3: a CRLF followed by
// white space), as rspamd folds Authentication-Results; any other control
// character makes the value unusable (header injection).
func unfold(v string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\r' && i+2 < len(v) && v[i+1] == '\n' && (v[i+2] == ' ' || v[i+2] == '\t'):
			i += 2
			b.WriteByte(' ')
			for i+1 < len(v) && (v[i+1] == ' ' || v[i+1] == '\t') {
				i++
			}
		case c == '\t':
			b.WriteByte(' ')
		case c < 0x20 || c == 0x7f:
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	if b.Len() == 0 || b.Len() > 4000 {
		return "", false
	}
	return b.String(), true
}

// headerName reports whether s is an RFC 5322 §3.6.8 field name.
func headerName(s string) bool {
	if s == "" || len(s) > 76 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] > '~' || s[i] == ':' {
			return false
		}
	}
	return true
}

// symbolName reports whether s looks like an rspamd symbol ([A-Z0-9_]
// in practice), safe to list in a header.
func symbolName(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == '-' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
