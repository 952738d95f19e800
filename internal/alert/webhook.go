package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"mxguard/internal/events"
)

// SignatureHeader carries "sha256=" + the lowercase hex HMAC-SHA256 of the
// raw body under alerts.webhook.secret.
const SignatureHeader = "X-Mxguard-Signature"

// webhook POSTs alerts as JSON (INTERFACE.md §2):
// {"alert": "started"|"ended", "event": EVENT} or
// {"alert": "digest", "events": [EVENT, ...]}.
type webhook struct {
	client *http.Client
	agent  string
}

func newWebhook(o Options) *webhook {
	dialer := &net.Dialer{Timeout: o.Timeout}
	return &webhook{
		agent: "mxguard/" + strings.TrimPrefix(o.Version, "mxguard "),
		client: &http.Client{
			Transport: &http.Transport{
				Proxy:                 http.ProxyFromEnvironment,
				DialContext:           dialer.DialContext,
				TLSHandshakeTimeout:   o.Timeout,
				ResponseHeaderTimeout: o.Timeout,
				MaxIdleConns:          2,
				IdleConnTimeout:       time.Minute,
			},
			// A redirect of a POST would be followed as a GET without the
			// body: a misconfigured URL, reported as a failure instead.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// Body is the webhook's JSON body.
type Body struct {
	Alert  string         `json:"alert"`
	Event  *events.Event  `json:"event,omitempty"`
	Events []events.Event `json:"events,omitempty"`
}

func webhookBody(m message) ([]byte, error) {
	b := Body{Alert: m.kind}
	if m.kind == Digest {
		b.Events = make([]events.Event, len(m.events))
		for i, e := range m.events {
			e.FillEmpty()
			b.Events[i] = e
		}
	} else {
		e := m.events[0]
		e.FillEmpty()
		b.Event = &e
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // as the API writes it
	if err := enc.Encode(b); err != nil {
		return nil, fmt.Errorf("alert: encode webhook body: %w", err)
	}
	return buf.Bytes(), nil
}

// Sign returns the X-Mxguard-Signature value of body under secret; a
// receiver recomputes it over the raw body and compares in constant time
// (hmac.Equal).
func Sign(secret string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

func (w *webhook) deliver(ctx context.Context, s *Settings, m message) error {
	body, err := webhookBody(m)
	if err != nil {
		return fmt.Errorf("%w: %w", errPermanent, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.Webhook.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: webhook: alerts.webhook.url is not a URL", errPermanent)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", w.agent)
	if s.Webhook.Secret != "" {
		req.Header.Set(SignatureHeader, Sign(s.Webhook.Secret, body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		// The URL stays out of the log: a webhook URL often carries its
		// own secret (chat services put the token in the path).
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("webhook POST to %s: %w", req.URL.Host, err)
	}
	// Read a little of the answer for the log, and drain what is small
	// enough so the connection can be reused.
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch code := resp.StatusCode; {
	case code >= 200 && code < 300:
		return nil
	case code >= 500 || code == http.StatusTooManyRequests || code == http.StatusRequestTimeout:
		return fmt.Errorf("webhook POST to %s: %s: %q", req.URL.Host, resp.Status, snippet)
	default:
		return fmt.Errorf("%w: webhook POST to %s: %s: %q", errPermanent, req.URL.Host, resp.Status, snippet)
	}
}
