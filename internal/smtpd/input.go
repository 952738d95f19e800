package smtpd

import (
	"bytes"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// input frames what the client sends the way go-smtp v0.25.1 reads it,
// so that conn can look at command lines, and only at command lines,
// before go-smtp parses them (routes.go: source routes go-smtp would
// drop; a bare "<postmaster>" go-smtp would refuse).
//
// A message (DATA up to its end marker, a BDAT chunk's octets) is never
// read as commands: a body line "RCPT TO:<@x:a@example.test>" is text.
// To know which bytes are which without guessing from the input alone
// (a client may pipeline a body after a DATA that gets refused, and
// go-smtp then reads that body as commands), conn hands go-smtp one
// command line per Read: when go-smtp asks for more, it has answered the
// line before, and conn has seen the answer (Write) — DATA is followed by
// a message only if go-smtp answered 354. A BDAT command go-smtp can parse
// is always followed by its chunk, which go-smtp reads (or discards) even
// when it refuses the command (RFC 3030 §2).
//
// Read, frame and the fields run on go-smtp's connection goroutine; the
// reply sniff is written under conn.outMu.
type input struct {
	raw   []byte // read from the client, not yet framed
	ready []byte // framed, to be handed to go-smtp
	mode  inputMode
	// long: the command line in progress outgrew maxHeldLine; the rest
	// of it goes to go-smtp unread (go-smtp's own line limit applies).
	long bool
	// scanned is how much of raw is known to hold no line end: a line
	// trickled in is searched once, not once per read.
	scanned int
	dot     dotState // where a DATA message stands, for its end marker
	// chunk is how many octets of a BDAT chunk are still to come.
	chunk uint64
	// await: the last line handed was DATA, STARTTLS, AUTH or an AUTH
	// response; its reply decides whether a message, a TLS handshake or
	// another AUTH response (334) follows.
	await inputMode
	// sasl: the line being framed (and handed to rewrite) is a response
	// of an AUTH exchange (RFC 4954 §4), not a command.
	sasl bool
	// sniff holds the first octets go-smtp wrote after that line.
	sniff []byte
	// rbuf is the read buffer, reused.
	rbuf []byte
}

type inputMode uint8

const (
	modeCommand inputMode = iota
	modeData              // DATA message up to <CRLF>.<CRLF>
	modeChunk             // BDAT chunk octets
	// modeTLS: go-smtp answered STARTTLS 220 itself (one conn did not
	// take, see conn.commandLine): what follows is a TLS hello, passed on
	// as it comes, which go-smtp's handshake refuses (guard.go); go-smtp
	// then goes on in plaintext and so does the framing.
	modeTLS
	// awaitSASL is no mode, only what await can wait for: a 334 to AUTH
	// makes the next line a SASL response.
	awaitSASL
)

// dotState follows go-smtp's dataReader: the end marker is a line ".",
// CRLF-terminated, after a CRLF (or at the start of the message).
type dotState uint8

const (
	dotLineStart dotState = iota
	dotDot
	dotDotCR
	dotCR
	dotMid
)

// maxHeldLine bounds the command line conn holds until its end arrives:
// go-smtp's own line limit (server.go maxLine), past which go-smtp ends
// the session anyway. A shorter bound would let a client pad a routed
// RCPT with white space (go-smtp takes it) past the watch; go-smtp's
// reader holds the same line meanwhile.
const maxHeldLine = maxLine

// frame moves framed bytes from raw to ready. It returns false when it
// needs more input. rewrite returns the line go-smtp is to read for a
// complete command line (the line itself when there is nothing to do).
func (in *input) frame(rewrite func(line []byte) []byte) bool {
	switch {
	case in.await == modeData && bytes.HasPrefix(in.sniff, []byte("354")):
		in.mode, in.dot = modeData, dotLineStart
	case in.await == modeTLS && bytes.HasPrefix(in.sniff, []byte("220")):
		// Whatever a client pipelined after STARTTLS is dropped, never
		// read as TLS data or commands (RFC 3207 §4.2, CVE-2011-0411).
		in.mode, in.raw, in.scanned = modeTLS, in.raw[:0], 0
	case in.await == awaitSASL:
		in.sasl = bytes.HasPrefix(in.sniff, []byte("334"))
	}
	in.await, in.sniff = modeCommand, in.sniff[:0]
	if len(in.raw) == 0 {
		return false
	}
	switch in.mode {
	case modeTLS:
		in.take(len(in.raw))
		return true
	case modeData:
		n := in.dataEnd(in.raw)
		in.take(n)
		return true
	case modeChunk:
		n := uint64(len(in.raw))
		if n > in.chunk {
			n = in.chunk
		}
		in.chunk -= n
		if in.chunk == 0 {
			in.mode = modeCommand
		}
		in.take(int(n))
		return true
	}
	i := bytes.IndexByte(in.raw[in.scanned:], '\n')
	if i >= 0 {
		i += in.scanned
		in.scanned = 0
	} else {
		in.scanned = len(in.raw)
	}
	if in.long {
		if i < 0 {
			in.take(len(in.raw))
			return true
		}
		in.long = false
		in.take(i + 1)
		return true
	}
	if i < 0 {
		if len(in.raw) <= maxHeldLine {
			return false
		}
		in.long = true
		in.take(len(in.raw))
		return true
	}
	line := in.raw[:i+1]
	if in.sasl {
		in.await = awaitSASL // LOGIN asks twice
	} else {
		in.command(line)
	}
	in.ready = rewrite(line)
	in.sasl = false
	in.raw = in.raw[i+1:]
	return true
}

// take hands the first n octets of raw to go-smtp as they are.
func (in *input) take(n int) {
	in.ready = in.raw[:n]
	in.raw = in.raw[n:]
	in.scanned = 0
}

// command notes what a command line does to the framing: DATA may open a
// message (its reply tells), a well-formed BDAT announces its chunk.
// Verbs are read as go-smtp's parseCmd reads them: four letters in any
// case, then a space and the argument, or nothing.
func (in *input) command(line []byte) {
	if startTLSLine(line) {
		in.await = modeTLS
		return
	}
	verb, arg, ok := commandVerb(line)
	if !ok {
		return
	}
	switch {
	case strings.EqualFold(verb, "AUTH"):
		in.await = awaitSASL
	case strings.EqualFold(verb, "DATA") && arg == "":
		in.await = modeData
	case strings.EqualFold(verb, "BDAT"):
		if n, ok := bdatSize(arg); ok && n > 0 {
			in.mode, in.chunk = modeChunk, n
		}
	}
}

// startTLSLine: go-smtp takes any line that starts so as STARTTLS once
// upper-cased (parseCmd: strings.ToUpper of the line), and "ſ" (U+017F)
// upper-cases to "S": "ſTARTTLS" is a STARTTLS to go-smtp, and must be
// one to conn too, or go-smtp's own handshake would read part of the
// next line and leave go-smtp the rest as a command conn never saw.
func startTLSLine(line []byte) bool {
	const verb = "STARTTLS"
	for i := 0; i < len(verb); i++ {
		r, n := utf8.DecodeRune(line)
		if n == 0 || unicode.ToUpper(r) != rune(verb[i]) {
			return false
		}
		line = line[n:]
	}
	return true
}

// commandVerb splits a command line as go-smtp's parseCmd does.
func commandVerb(line []byte) (verb, arg string, ok bool) {
	s := strings.TrimRight(string(line), "\r\n")
	switch {
	case len(s) == 4:
		return s, "", true
	case len(s) < 6 || s[4] != ' ':
		return "", "", false
	}
	return s[:4], strings.TrimSpace(s[5:]), true
}

// bdatSize is the chunk size of a BDAT argument go-smtp accepts
// (handleBdat): a size that fits in 32 bits, optionally "LAST".
func bdatSize(arg string) (uint64, bool) {
	f := strings.Fields(arg)
	if len(f) == 0 || len(f) > 2 || (len(f) == 2 && !strings.EqualFold(f[1], "LAST")) {
		return 0, false
	}
	n, err := strconv.ParseUint(f[0], 10, 32)
	return n, err == nil
}

// dataEnd returns how many octets of b belong to the message, switching
// back to commands after the end marker.
func (in *input) dataEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		if in.dot == dotMid {
			// Inside a line only a CR matters: skip to it.
			j := bytes.IndexByte(b[i:], '\r')
			if j < 0 {
				return len(b)
			}
			i += j
			in.dot = dotCR
			continue
		}
		c := b[i]
		switch in.dot {
		case dotLineStart:
			switch c {
			case '.':
				in.dot = dotDot
			case '\r':
				in.dot = dotCR
			default:
				in.dot = dotMid
			}
		case dotDot:
			in.dot = dotMid
			if c == '\r' {
				in.dot = dotDotCR
			}
		case dotDotCR:
			in.dot = dotMid
			if c == '\n' {
				in.mode = modeCommand
				return i + 1
			}
		case dotCR:
			// go-smtp leaves a line only at CR LF; a second CR is data.
			in.dot = dotMid
			if c == '\n' {
				in.dot = dotLineStart
			}
		}
	}
	return len(b)
}

// sniffReply keeps the start of what go-smtp answers to a DATA,
// STARTTLS or AUTH line.
func (in *input) sniffReply(p []byte) {
	if in.await != modeCommand && len(in.sniff) < 3 {
		in.sniff = append(in.sniff, p[:min(len(p), 3-len(in.sniff))]...)
	}
}
