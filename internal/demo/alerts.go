package demo

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"mxguard/internal/alert"
	"mxguard/internal/mailsink"
)

// receivers are the demo's alert channels: an embedded webhook receiver
// that checks each signature the way an operator's receiver would, and an
// embedded SMTP server standing in for the on-call mailbox. Each alert
// they get is narrated on one line.
type receivers struct {
	n      *narrator
	secret string
	hook   *http.Server
	hookLn net.Listener
	inbox  *mailsink.Server
}

func startReceivers(ctx context.Context, n *narrator) (*receivers, error) {
	r := &receivers{n: n, secret: randomToken()}
	var err error
	if r.hookLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("demo: webhook receiver: %w", err)
	}
	r.hook = &http.Server{Handler: http.HandlerFunc(r.webhook), ReadHeaderTimeout: 5 * time.Second}
	go r.hook.Serve(r.hookLn)
	r.inbox, err = mailsink.Start(ctx, mailsink.Options{Hostname: "alerts.example.test", MaxStored: 100})
	if err != nil {
		r.hook.Close()
		return nil, fmt.Errorf("demo: alert mailbox: %w", err)
	}
	go r.watchInbox(ctx)
	return r, nil
}

func (r *receivers) close() {
	r.hook.Close()
	r.inbox.Close()
}

func (r *receivers) webhookURL() string { return "http://" + r.hookLn.Addr().String() + "/mxguard" }

// webhook verifies X-Mxguard-Signature over the raw body (HMAC-SHA256
// under the shared secret, compared in constant time) and narrates the
// alert.
func (r *receivers) webhook(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 4<<20))
	if err != nil {
		http.Error(w, "read error", http.StatusBadRequest)
		return
	}
	if !hmac.Equal([]byte(req.Header.Get(alert.SignatureHeader)), []byte(alert.Sign(r.secret, body))) {
		r.n.say("ALERT webhook  with a bad signature, refused")
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var b alert.Body
	if err := json.Unmarshal(body, &b); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	switch {
	case b.Event != nil:
		r.n.say("ALERT webhook  %-7s #%d %s from %s (signature verified)", b.Alert, b.Event.ID, b.Event.Type, b.Event.Source)
	default:
		r.n.say("ALERT webhook  %-7s %d events past alerts.max_per_minute", b.Alert, len(b.Events))
	}
	w.WriteHeader(http.StatusNoContent)
}

// watchInbox narrates each alert mail by its Subject.
func (r *receivers) watchInbox(ctx context.Context) {
	seen := 0
	for {
		if err := r.inbox.WaitCount(ctx, seen+1); err != nil {
			return
		}
		total := r.inbox.Count()
		msgs := r.inbox.Messages()
		fresh := min(total-seen, len(msgs))
		for i, m := range msgs[len(msgs)-fresh:] {
			subject, body := readMail(m.Data)
			r.n.say("ALERT email    to %s: %s", strings.Join(m.To, ", "), subject)
			if seen == 0 && i == 0 {
				// The first one in full: what an operator reads.
				r.n.say("  the alert mail reads:\n%s", indent(body))
			}
		}
		seen = total
	}
}

// readMail returns a mail's decoded Subject and text.
func readMail(data []byte) (subject, body string) {
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return "(unreadable mail)", ""
	}
	subject, err = new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
	if err != nil {
		subject = m.Header.Get("Subject")
	}
	var text io.Reader = m.Body
	if strings.EqualFold(m.Header.Get("Content-Transfer-Encoding"), "quoted-printable") {
		text = quotedprintable.NewReader(m.Body)
	}
	b, _ := io.ReadAll(io.LimitReader(text, 64<<10))
	return subject, strings.ReplaceAll(string(b), "\r\n", "\n")
}

func indent(text string) string {
	var b strings.Builder
	for line := range strings.Lines(strings.TrimRight(text, "\n")) {
		b.WriteString("           | " + line)
	}
	return b.String()
}
