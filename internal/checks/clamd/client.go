// Package clamd scans messages with ClamAV's clamd over its INSTREAM
// command, on a TCP or a unix socket, and refuses infected mail. See
// README.md.
package clamd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"mxguard/internal/checks/scanner"
)

// ErrSizeLimit is clamd's answer to a stream longer than its
// StreamMaxLength: the message was not scanned.
var ErrSizeLimit = errors.New("clamd: INSTREAM size limit exceeded (clamd.conf StreamMaxLength)")

// Client talks to one clamd. The zero value is not usable; use Parse.
type Client struct {
	Network string // "tcp" or "unix"
	Address string // host:port or socket path
	// ChunkSize is the INSTREAM chunk length; default 64 KiB.
	ChunkSize int
	// Dial opens the connection; nil: a net.Dialer.
	Dial scanner.DialFunc
}

// Parse reads content.clamd: "tcp://host:port" or "unix:/path/clamd.ctl"
// (also "unix:///path").
func Parse(uri string) (*Client, error) {
	switch {
	case strings.HasPrefix(uri, "tcp://"):
		addr := strings.TrimPrefix(uri, "tcp://")
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("clamd address %q: want tcp://host:port", uri)
		}
		return &Client{Network: "tcp", Address: addr}, nil
	case strings.HasPrefix(uri, "unix:"):
		path := strings.TrimPrefix(strings.TrimPrefix(uri, "unix:"), "//")
		if !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("clamd address %q: want unix:/absolute/path", uri)
		}
		return &Client{Network: "unix", Address: path}, nil
	}
	return nil, fmt.Errorf("clamd address %q: want tcp://host:port or unix:/path", uri)
}

// Result is clamd's verdict on one stream.
type Result struct {
	Infected  bool
	Signature string // e.g. "Eicar-Test-Signature" when Infected
}

// maxReply bounds what is read of clamd's answer: a verdict line is a
// signature name, well under a kilobyte.
const maxReply = 4 << 10

// Scan streams r to clamd with zINSTREAM (clamd(8): "chunks of <4-byte
// network-order length><data>, terminated by a zero-length chunk") and
// returns its verdict. The connection's deadline is ctx's.
func (c *Client) Scan(ctx context.Context, r io.Reader) (Result, error) {
	conn, err := scanner.Dial(ctx, c.Dial, c.Network, c.Address)
	if err != nil {
		return Result{}, fmt.Errorf("clamd: connect %s: %w", c.Address, err)
	}
	defer conn.Close()

	sendErr := c.send(conn, r)
	// clamd answers and closes as soon as the stream passes
	// StreamMaxLength, while we are still sending: the write then fails
	// (EPIPE, or ECONNRESET) but the answer is waiting to be read.
	if sendErr != nil && !errors.Is(sendErr, syscall.EPIPE) && !errors.Is(sendErr, syscall.ECONNRESET) {
		return Result{}, sendErr
	}
	line, err := io.ReadAll(io.LimitReader(conn, maxReply))
	if err != nil && len(line) == 0 {
		if sendErr != nil {
			return Result{}, sendErr
		}
		return Result{}, fmt.Errorf("clamd: read answer: %w", err)
	}
	if ctx.Err() != nil {
		return Result{}, fmt.Errorf("clamd: %w", ctx.Err())
	}
	return ParseReply(line)
}

func (c *Client) send(conn net.Conn, r io.Reader) error {
	size := c.ChunkSize
	if size <= 0 {
		size = 64 << 10
	}
	w := bufio.NewWriterSize(conn, size+4)
	if _, err := w.WriteString("zINSTREAM\x00"); err != nil {
		return fmt.Errorf("clamd: send: %w", err)
	}
	buf := make([]byte, size)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			var hdr [4]byte
			binary.BigEndian.PutUint32(hdr[:], uint32(n))
			w.Write(hdr[:])
			if _, err := w.Write(buf[:n]); err != nil {
				return fmt.Errorf("clamd: send: %w", err)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return fmt.Errorf("clamd: read message: %w", rerr)
		}
	}
	w.Write([]byte{0, 0, 0, 0})
	if err := w.Flush(); err != nil {
		return fmt.Errorf("clamd: send: %w", err)
	}
	return nil
}

// ParseReply reads clamd's answer to INSTREAM, one line ended by NUL (z
// commands) or newline:
//
//	stream: OK
//	stream: Eicar-Test-Signature FOUND
//	INSTREAM size limit exceeded. ERROR
//
// Anything else is an error: an answer we do not understand never passes
// a message as clean.
func ParseReply(b []byte) (Result, error) {
	if i := bytes.IndexAny(b, "\x00\n"); i >= 0 {
		b = b[:i]
	}
	s := strings.TrimSpace(string(b))
	switch {
	case s == "stream: OK":
		return Result{}, nil
	case strings.HasPrefix(s, "stream: ") && strings.HasSuffix(s, " FOUND"):
		sig := strings.TrimSpace(strings.TrimSuffix(strings.TrimPrefix(s, "stream: "), " FOUND"))
		if sig == "" || !printable(sig) {
			return Result{}, fmt.Errorf("clamd: malformed answer %q", scanner.Clip(s))
		}
		return Result{Infected: true, Signature: sig}, nil
	case strings.Contains(s, "size limit exceeded"):
		return Result{}, ErrSizeLimit
	case strings.HasSuffix(s, " ERROR"):
		return Result{}, fmt.Errorf("clamd: %s", scanner.Clip(s))
	case s == "":
		return Result{}, errors.New("clamd: connection closed without an answer")
	}
	return Result{}, fmt.Errorf("clamd: unexpected answer %q", scanner.Clip(s))
}

// printable reports whether a signature name is plain ASCII text, safe for
// a log line and a header.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
