package policyd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Limits of one request (SMTPD_POLICY_README "Protocol description").
// Postfix 3.7 sends 29 attributes of at most a few hundred bytes each; the
// longest values are addresses, which Postfix's own smtpd bounds by
// line_length_limit (2048) on the SMTP side, and certificate subjects.
// A line past MaxLine, a request past MaxAttributes or MaxRequest, or a
// byte no Postfix sends (a control character other than tab) is not a
// policy client talking: the connection is closed, and only that one.
const (
	// MaxLine is the longest attribute line, "name=value" without the
	// newline: room for a 2048-byte address plus its name.
	MaxLine = 4096
	// MaxAttributes bounds the lines of one request: Postfix 3.7 sends
	// 29, later versions a few more (compatibility_level, mail_version,
	// client_*); 128 leaves room for any and stops a peer that never
	// ends its request.
	MaxAttributes = 128
	// MaxRequest bounds the bytes of one request.
	MaxRequest = 32 << 10
	// maxName bounds an attribute name ([a-z0-9_], Postfix's longest is
	// ccert_pubkey_fingerprint).
	maxName = 64
)

// Errors that end a connection. io.EOF is a clean end between requests.
var (
	ErrLineTooLong       = errors.New("attribute line over " + strconv.Itoa(MaxLine) + " bytes")
	ErrTooManyAttributes = errors.New("request over " + strconv.Itoa(MaxAttributes) + " attributes")
	ErrRequestTooLarge   = errors.New("request over " + strconv.Itoa(MaxRequest) + " bytes")
	ErrGarbage           = errors.New("not a name=value line")
)

// Protocol states (SMTPD_POLICY_README: the SMTP command or stage the
// request is about). A state Postfix sends that is not one of these is
// kept as stateOther and judged only by the checks every state gets.
type state uint8

const (
	stateOther state = iota
	stateConnect
	stateHelo // HELO and EHLO
	stateMail
	stateRcpt
	stateData
	stateEOM // END-OF-MESSAGE
	stateVrfy
	stateEtrn
)

func parseState(b []byte) state {
	switch string(b) { // no allocation: the compiler switches on the bytes
	case "CONNECT":
		return stateConnect
	case "EHLO", "HELO":
		return stateHelo
	case "MAIL":
		return stateMail
	case "RCPT":
		return stateRcpt
	case "DATA":
		return stateData
	case "END-OF-MESSAGE":
		return stateEOM
	case "VRFY":
		return stateVrfy
	case "ETRN":
		return stateEtrn
	}
	return stateOther
}

// Request is one policy request: the attributes mxguard judges by, as
// bytes into a buffer the next ReadRequest reuses. Attributes it does not
// use (client_name, helo_name, ccert_*, ...) are read, bounded and
// dropped, as SMTPD_POLICY_README asks of a server ("ignore attributes
// that it does not care about").
type Request struct {
	// Kind is the request attribute; Postfix's smtpd always sends
	// "smtpd_access_policy".
	Kind  []byte
	State state
	// StateName is protocol_state as sent.
	StateName []byte
	// ClientAddress is the SMTP client Postfix talks to: the source
	// judged, never the policy peer (INTERFACE.md §7).
	ClientAddress, ClientPort   []byte
	ServerAddress, ServerPort   []byte
	Sender, Recipient, Instance []byte
	SASLUsername                []byte
	// RecipientCount is recipient_count (accepted recipients; at
	// END-OF-MESSAGE the message's), Size is size (MAIL FROM SIZE= before
	// END-OF-MESSAGE, the real byte count at it); -1 when absent or not a
	// number.
	RecipientCount int64
	Size           int64
	// Attributes is how many lines the request had.
	Attributes int

	buf []byte // backing store of the fields, reused
}

func (r *Request) reset() {
	*r = Request{buf: r.buf[:0], RecipientCount: -1, Size: -1}
}

// ReadRequest reads one request, name=value lines ending with an empty
// line. It returns io.EOF when the peer closed cleanly before a request,
// io.ErrUnexpectedEOF when it closed within one, and ErrLineTooLong,
// ErrTooManyAttributes, ErrRequestTooLarge or ErrGarbage (wrapped, with the
// line number) for input no Postfix sends. br must have been made with a
// buffer of at least MaxLine+2 bytes (NewReader).
func ReadRequest(br *bufio.Reader, r *Request) error {
	r.reset()
	total := 0
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			return fmt.Errorf("line %d: %w", r.Attributes+1, ErrLineTooLong)
		}
		if err != nil {
			if err == io.EOF && len(line) == 0 && r.Attributes == 0 {
				return io.EOF
			}
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		total += len(line)
		line = line[:len(line)-1]
		// A bare LF is the protocol's; a CR before it (a test by hand with
		// telnet) is tolerated.
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			if r.Attributes == 0 {
				// An empty line with no attributes before it: nothing to
				// answer; Postfix never sends one.
				return fmt.Errorf("line 1: empty request: %w", ErrGarbage)
			}
			return nil
		}
		if len(line) > MaxLine {
			return fmt.Errorf("line %d: %w", r.Attributes+1, ErrLineTooLong)
		}
		r.Attributes++
		if r.Attributes > MaxAttributes {
			return ErrTooManyAttributes
		}
		if total > MaxRequest {
			return ErrRequestTooLarge
		}
		if err := r.add(line); err != nil {
			return fmt.Errorf("line %d: %w", r.Attributes, err)
		}
	}
}

// NewReader returns a reader sized for ReadRequest.
func NewReader(rd io.Reader) *bufio.Reader { return bufio.NewReaderSize(rd, MaxLine+2) }

func (r *Request) add(line []byte) error {
	eq := bytes.IndexByte(line, '=')
	if eq <= 0 || eq > maxName {
		return ErrGarbage
	}
	name, value := line[:eq], line[eq+1:]
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' && c != '-' {
			return ErrGarbage
		}
	}
	for _, c := range value {
		// Postfix sends printable text (addresses may be UTF-8 with
		// SMTPUTF8); a control character is binary garbage, and one in a
		// value mxguard logs or stores could forge a log line.
		if c < 0x20 && c != '\t' || c == 0x7f {
			return ErrGarbage
		}
	}
	switch string(name) {
	case "request":
		r.Kind = r.keep(value)
	case "protocol_state":
		r.StateName = r.keep(value)
		r.State = parseState(value)
	case "client_address":
		r.ClientAddress = r.keep(value)
	case "client_port":
		r.ClientPort = r.keep(value)
	case "server_address":
		r.ServerAddress = r.keep(value)
	case "server_port":
		r.ServerPort = r.keep(value)
	case "sender":
		r.Sender = r.keep(value)
	case "recipient":
		r.Recipient = r.keep(value)
	case "instance":
		r.Instance = r.keep(value)
	case "sasl_username":
		r.SASLUsername = r.keep(value)
	case "recipient_count":
		r.RecipientCount = number(value)
	case "size":
		r.Size = number(value)
	}
	return nil
}

// keep copies value into the request's buffer. The slices of earlier
// fields stay valid: when the buffer grows, they keep pointing at the old
// array, whose bytes are never written again.
func (r *Request) keep(value []byte) []byte {
	start := len(r.buf)
	r.buf = append(r.buf, value...)
	return r.buf[start:len(r.buf):len(r.buf)]
}

// number parses a decimal count; -1 if it is none (empty, signed, over
// 18 digits).
func number(b []byte) int64 {
	if len(b) == 0 || len(b) > 18 {
		return -1
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
