// Package spamd asks SpamAssassin's spamd for a verdict over the SPAMD
// protocol (SYMBOLS) and refuses spam. See README.md.
package spamd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"mxguard/internal/checks/scanner"
)

// Client talks to one spamd at Address (host:port).
type Client struct {
	Address string
	// User is sent in the User header (spamd -x ignores per-user
	// configs, but logs it); default "mxguard".
	User string
	// Dial opens the connection; nil: a net.Dialer.
	Dial scanner.DialFunc
}

// Result is spamd's verdict.
type Result struct {
	Spam      bool
	Score     float64
	Threshold float64 // spamd's required_score
	Symbols   []string
}

// maxReply bounds what is read of spamd's answer: a status line, two
// header lines and the list of rule names that hit.
const maxReply = 64 << 10

// Check sends the message (size bytes read from r) with SYMBOLS and
// returns the verdict. Protocol: spamd's PROTOCOL file, as spamc 4.0
// speaks it — "SYMBOLS SPAMC/1.5", Content-length, User, an empty line,
// the message; the answer is "SPAMD/1.1 0 EX_OK", "Spam: True ; 1000.0 /
// 5.0", an empty line and the comma-separated names of the rules that hit.
func (c *Client) Check(ctx context.Context, r io.Reader, size int64) (Result, error) {
	conn, err := scanner.Dial(ctx, c.Dial, "tcp", c.Address)
	if err != nil {
		return Result{}, fmt.Errorf("spamd: connect %s: %w", c.Address, err)
	}
	defer conn.Close()

	user := c.User
	if user == "" {
		user = "mxguard"
	}
	w := bufio.NewWriterSize(conn, 64<<10)
	fmt.Fprintf(w, "SYMBOLS SPAMC/1.5\r\nContent-length: %d\r\nUser: %s\r\n\r\n", size, user)
	n, err := io.Copy(w, io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("message is %d bytes, not %d", n, size)
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("spamd: %w", ctx.Err())
		}
		return Result{}, fmt.Errorf("spamd: send: %w", err)
	}
	// spamd answers after reading Content-length bytes; closing our side
	// is not needed, and would confuse spamd versions that read on.
	b, err := io.ReadAll(io.LimitReader(conn, maxReply))
	if err != nil && len(b) == 0 {
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("spamd: %w", ctx.Err())
		}
		return Result{}, fmt.Errorf("spamd: read answer: %w", err)
	}
	return ParseReply(b)
}

// ParseReply reads spamd's answer to SYMBOLS or CHECK. Anything but a
// complete EX_OK answer with a Spam header is an error: a verdict we do
// not understand never passes a message as clean.
func ParseReply(b []byte) (Result, error) {
	head, body, ok := bytes.Cut(b, []byte("\r\n\r\n"))
	if !ok {
		return Result{}, fmt.Errorf("spamd: incomplete answer %q", scanner.Clip(b))
	}
	lines := strings.Split(string(head), "\r\n")
	// Status line: SPAMD/1.1 0 EX_OK (a non-zero code is an error, e.g.
	// "SPAMD/1.0 76 Bad header line").
	f := strings.Fields(lines[0])
	if len(f) < 2 || !strings.HasPrefix(f[0], "SPAMD/") {
		return Result{}, fmt.Errorf("spamd: bad status line %q", scanner.Clip(lines[0]))
	}
	if f[1] != "0" {
		return Result{}, fmt.Errorf("spamd: error %q", scanner.Clip(lines[0]))
	}
	var res Result
	var haveSpam bool
	length := -1
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			return Result{}, fmt.Errorf("spamd: bad header line %q", scanner.Clip(l))
		}
		v = strings.TrimSpace(v)
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "spam":
			var err error
			if res, err = parseSpam(v); err != nil {
				return Result{}, err
			}
			haveSpam = true
		case "content-length":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return Result{}, fmt.Errorf("spamd: bad Content-length %q", scanner.Clip(v))
			}
			length = n
		}
	}
	if !haveSpam {
		return Result{}, errors.New("spamd: answer without a Spam header")
	}
	if length >= 0 {
		if len(body) < length {
			return Result{}, fmt.Errorf("spamd: answer body is %d bytes, Content-length %d", len(body), length)
		}
		body = body[:length]
	}
	for s := range strings.SplitSeq(strings.TrimSpace(string(body)), ",") {
		if s = strings.TrimSpace(s); s != "" {
			if !ruleName(s) {
				return Result{}, fmt.Errorf("spamd: bad rule name %q", scanner.Clip(s))
			}
			res.Symbols = append(res.Symbols, s)
		}
	}
	return res, nil
}

// parseSpam reads "True ; 1000.0 / 5.0".
func parseSpam(v string) (Result, error) {
	flag, scores, ok := strings.Cut(v, ";")
	score, threshold, ok2 := strings.Cut(scores, "/")
	if !ok || !ok2 {
		return Result{}, fmt.Errorf("spamd: bad Spam header %q", scanner.Clip(v))
	}
	var res Result
	switch strings.ToLower(strings.TrimSpace(flag)) {
	case "true", "yes":
		res.Spam = true
	case "false", "no":
	default:
		return Result{}, fmt.Errorf("spamd: bad Spam header %q", scanner.Clip(v))
	}
	var err1, err2 error
	res.Score, err1 = strconv.ParseFloat(strings.TrimSpace(score), 64)
	res.Threshold, err2 = strconv.ParseFloat(strings.TrimSpace(threshold), 64)
	if err1 != nil || err2 != nil || math.IsNaN(res.Score+res.Threshold) || math.IsInf(res.Score+res.Threshold, 0) {
		return Result{}, fmt.Errorf("spamd: bad Spam header %q", scanner.Clip(v))
	}
	return res, nil
}

// ruleName reports whether s is a SpamAssassin rule name ([A-Za-z0-9_]),
// safe to put into a header.
func ruleName(s string) bool {
	if len(s) > 100 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}
