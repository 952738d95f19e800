// Package address parses SMTP envelope addresses strictly (RFC 5321 §4.1.2,
// with the SMTPUTF8 extensions of RFC 6531 §3.3) and writes them back in
// one canonical form, re-quoted only where RFC 5321 requires it.
//
// mxguard never hands a client's raw address text to anyone: the front end
// parses it into a Mailbox before any policy decision, and everything
// downstream (relay commands, spool envelopes, reply texts, trace headers)
// is written from Mailbox.String(). A parsed Mailbox tells whether its
// local part carries routing a downstream MTA would act on (the percent
// hack, bang paths, a second '@'; Postfix's allow_percent_hack and
// swap_bangpath) so the front end can refuse it from untrusted clients.
package address

import (
	"fmt"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of RFC 5321 §4.5.3.1, in octets of the canonical form.
const (
	MaxLocal  = 64  // §4.5.3.1.1 local part
	MaxDomain = 255 // §4.5.3.1.2 domain
	MaxPath   = 256 // §4.5.3.1.3 reverse- or forward-path, angle brackets included
)

// Mailbox is a parsed address. The zero value is the null reverse-path
// "<>" (RFC 5321 §4.5.5); a Mailbox with an empty Domain and Local
// "postmaster" is the bare postmaster of RFC 5321 §4.1.1.3.
type Mailbox struct {
	// Local is the local part as the mailbox owner sees it: the content of
	// a Quoted-string with its quoted-pairs resolved, or the Dot-string.
	// It is case-sensitive (RFC 5321 §2.4) and kept as received.
	Local string
	// Domain is lowercased (ASCII letters; U-labels are kept as received,
	// IDNA2008 does not allow upper case in them) without a trailing dot.
	// An address literal is kept in brackets in canonical form:
	// "[192.0.2.1]", "[IPv6:2001:db8::1]".
	Domain string
}

// IsNull reports the null reverse-path "<>".
func (m Mailbox) IsNull() bool { return m.Local == "" && m.Domain == "" }

// HasRouting reports a local part that a downstream MTA may read as a route
// to another host: "%" (the percent hack), "!" (a UUCP bang path) or "@"
// (only possible quoted, or in go-smtp's unquoted form). Postfix rewrites
// user%host@local and host!user@local into user@host when the domain is
// local (allow_percent_hack, swap_bangpath, both on by default) and resolves
// a local part holding "@" again; accepted from a stranger, any of them
// makes the gateway an open relay through a downstream that trusts it.
func (m Mailbox) HasRouting() bool { return strings.ContainsAny(m.Local, "%!@") }

// String is the canonical form: the local part as a Dot-string when it is
// one, otherwise as a Quoted-string with '"' and '\' escaped (RFC 5321
// §4.1.2: quote only when needed, quoted-pair only where needed), "@", and
// the domain. The null path is "", the bare postmaster "postmaster". It is
// what goes between the angle brackets of MAIL FROM and RCPT TO.
func (m Mailbox) String() string {
	if m.Domain == "" {
		return m.Local
	}
	return quoteLocal(m.Local) + "@" + m.Domain
}

// Path is what MAIL FROM and RCPT TO carry: a mailbox and an optional
// source route.
type Path struct {
	Mailbox
	// Route is the obsolete source route "@a,@b:" (RFC 5321 §4.1.2
	// A-d-l, Appendix C), its domains in order. It is recognised so that
	// it can be refused; it is never written (String drops it, as §3.6.1
	// tells servers to ignore it).
	Route []string
}

// Routed reports a source route or routing characters in the local part.
func (p Path) Routed() bool { return len(p.Route) > 0 || p.HasRouting() }

// Options say where an address appears.
type Options struct {
	// UTF8: the transaction declared SMTPUTF8 (RFC 6531 §3.4), so the local
	// part and domain labels may hold UTF-8; without it any octet above
	// 127 is an error of kind NeedUTF8.
	UTF8 bool
	// Null allows the null path "<>" (MAIL FROM only, RFC 5321 §4.1.1.2).
	Null bool
	// Postmaster allows the bare "postmaster" without a domain (RCPT TO
	// only, RFC 5321 §4.1.1.3, which servers must accept, §4.5.1).
	Postmaster bool
}

// Kind classifies a parse error for the reply (see Error).
type Kind uint8

const (
	// Syntax is text that is no path of RFC 5321 §4.1.2 / RFC 6531 §3.3.
	Syntax Kind = iota + 1
	// TooLong is a part over a limit of RFC 5321 §4.5.3.1.
	TooLong
	// NeedUTF8 is non-ASCII in a transaction without SMTPUTF8 (RFC 6531
	// §3.5: 553 with X.6.7).
	NeedUTF8
)

// Error is a parse error. Reason is for the log, not for the client.
type Error struct {
	Kind   Kind
	Reason string
}

func (e *Error) Error() string { return "address: " + e.Reason }

func errf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Reason: fmt.Sprintf(format, args...)}
}

// ParsePath parses the argument of MAIL FROM: or RCPT TO: as a client
// writes it (RFC 5321 §4.1.2 Reverse-path / Forward-path): "<", an
// optional source route, a mailbox (or nothing, for "<>" with o.Null, or
// "postmaster" with o.Postmaster) and ">". rest is what follows the path:
// "" or the ESMTP parameters after a space.
func ParsePath(s string, o Options) (p Path, rest string, err error) {
	if !strings.HasPrefix(s, "<") {
		return Path{}, "", errf(Syntax, "path does not start with '<'")
	}
	i := 1
	if i < len(s) && s[i] == '@' {
		// A-d-l ":" — At-domain *( "," At-domain ), At-domain = "@" Domain.
		for {
			i++
			j := domainEnd(s, i)
			d, err := parseDomain(s[i:j], o, false)
			if err != nil {
				return Path{}, "", err
			}
			p.Route = append(p.Route, d)
			i = j
			if i < len(s) && s[i] == ',' && i+1 < len(s) && s[i+1] == '@' {
				i++
				continue
			}
			if i < len(s) && s[i] == ':' {
				i++
				break
			}
			return Path{}, "", errf(Syntax, "source route does not end with ':'")
		}
	}
	if i < len(s) && s[i] == '>' {
		if !o.Null || len(p.Route) > 0 {
			return Path{}, "", errf(Syntax, "empty path")
		}
		return p, s[i+1:], checkRest(s[i+1:])
	}
	m, n, err := parseMailbox(s[i:], o)
	if err != nil {
		return Path{}, "", err
	}
	i += n
	if i >= len(s) || s[i] != '>' {
		return Path{}, "", errf(Syntax, "path does not end with '>'")
	}
	i++
	if i > MaxPath {
		return Path{}, "", errf(TooLong, "path of %d octets, limit %d", i, MaxPath)
	}
	p.Mailbox = m
	return p, s[i:], checkRest(s[i:])
}

// checkRest accepts the end of the command or ESMTP parameters after a
// space (RFC 5321 §4.1.1.2: Reverse-path [SP Mail-parameters]).
func checkRest(rest string) error {
	if rest != "" && rest[0] != ' ' {
		return errf(Syntax, "text after the path")
	}
	return nil
}

// Parse parses the canonical text form that String returns ("local@domain",
// no angle brackets, no source route; "" with o.Null, "postmaster" with
// o.Postmaster) with the same strict rules as ParsePath. It reads back what
// mxguard wrote itself, such as spooled envelopes.
func Parse(s string, o Options) (Mailbox, error) {
	if s == "" {
		return empty(o)
	}
	m, n, err := parseMailbox(s, o)
	if err != nil {
		return Mailbox{}, err
	}
	if n != len(s) {
		return Mailbox{}, errf(Syntax, "text after the domain")
	}
	return m, nil
}

// MustParse is Parse with every option, panicking on error; for tests and
// constants.
func MustParse(s string) Mailbox {
	m, err := Parse(s, Options{UTF8: true, Null: true, Postmaster: true})
	if err != nil {
		panic(err)
	}
	return m
}

// ParseUnquoted reads an address whose local part is given unquoted, with
// nothing escaped: "local@domain" split at the last "@" (a domain never
// holds one). It is the form go-smtp hands to Session.Mail and Rcpt (it
// removes the quotes and the source route before the session sees them),
// and Postfix's internal form. The local part may hold any printable
// character (any would be representable as a Quoted-string), UTF-8 only
// with o.UTF8; the domain is checked as strictly as by ParsePath.
func ParseUnquoted(s string, o Options) (Mailbox, error) {
	if s == "" {
		return empty(o)
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		if o.Postmaster && strings.EqualFold(s, "postmaster") {
			return Mailbox{Local: "postmaster"}, nil
		}
		return Mailbox{}, errf(Syntax, "no '@'")
	}
	local := s[:at]
	if local == "" {
		return Mailbox{}, errf(Syntax, "empty local part")
	}
	for i := 0; i < len(local); {
		c := local[i]
		switch {
		case c >= 32 && c <= 126:
			i++
		case c >= utf8.RuneSelf:
			n, err := utf8Char(local[i:], o)
			if err != nil {
				return Mailbox{}, err
			}
			i += n
		default:
			return Mailbox{}, errf(Syntax, "control character 0x%02x in local part", c)
		}
	}
	d, err := parseDomain(s[at+1:], o, true)
	if err != nil {
		return Mailbox{}, err
	}
	m := Mailbox{Local: local, Domain: d}
	return m, m.checkLength()
}

// empty is the null path where o allows it.
func empty(o Options) (Mailbox, error) {
	if o.Null {
		return Mailbox{}, nil
	}
	return Mailbox{}, errf(Syntax, "empty address")
}

// parseMailbox parses Mailbox = Local-part "@" ( Domain / address-literal )
// at the start of s (or the bare postmaster) and returns how much it read.
func parseMailbox(s string, o Options) (Mailbox, int, error) {
	var local string
	var i int
	quoted := strings.HasPrefix(s, `"`)
	if quoted {
		var err error
		if local, i, err = parseQuoted(s, o); err != nil {
			return Mailbox{}, 0, err
		}
		if local == "" {
			return Mailbox{}, 0, errf(Syntax, "empty local part")
		}
	} else {
		for i < len(s) && (isAtext(s[i]) || s[i] == '.' || s[i] >= utf8.RuneSelf) {
			i++
		}
		local = s[:i]
		if err := checkDotString(local, o); err != nil {
			return Mailbox{}, 0, err
		}
	}
	if i >= len(s) || s[i] != '@' {
		if !quoted && o.Postmaster && strings.EqualFold(local, "postmaster") {
			return Mailbox{Local: "postmaster"}, i, nil
		}
		return Mailbox{}, 0, errf(Syntax, "no '@' after the local part")
	}
	i++
	j := domainEnd(s, i)
	d, err := parseDomain(s[i:j], o, true)
	if err != nil {
		return Mailbox{}, 0, err
	}
	m := Mailbox{Local: local, Domain: d}
	return m, j, m.checkLength()
}

// parseQuoted reads Quoted-string = DQUOTE *QcontentSMTP DQUOTE at the
// start of s and returns its content with the quoted-pairs resolved.
func parseQuoted(s string, o Options) (string, int, error) {
	var b strings.Builder
	for i := 1; i < len(s); {
		c := s[i]
		switch {
		case c == '"':
			return b.String(), i + 1, nil
		case c == '\\':
			// quoted-pairSMTP = %d92 %d32-126
			if i+1 >= len(s) || s[i+1] < 32 || s[i+1] > 126 {
				return "", 0, errf(Syntax, "bad quoted-pair")
			}
			b.WriteByte(s[i+1])
			i += 2
		case c >= 32 && c <= 126:
			// qtextSMTP = %d32-33 / %d35-91 / %d93-126
			b.WriteByte(c)
			i++
		case c >= utf8.RuneSelf:
			// RFC 6531 §3.3: qtextSMTP =/ UTF8-non-ascii
			n, err := utf8Char(s[i:], o)
			if err != nil {
				return "", 0, err
			}
			b.WriteString(s[i : i+n])
			i += n
		default:
			return "", 0, errf(Syntax, "control character 0x%02x in quoted string", c)
		}
	}
	return "", 0, errf(Syntax, "unterminated quoted string")
}

// checkDotString checks Dot-string = Atom *("." Atom), Atom = 1*atext
// (RFC 6531 §3.3: atext =/ UTF8-non-ascii).
func checkDotString(s string, o Options) error {
	if s == "" {
		return errf(Syntax, "empty local part")
	}
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return errf(Syntax, "local part %q is no Dot-string", s)
	}
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			i++
			continue
		}
		n, err := utf8Char(s[i:], o)
		if err != nil {
			return err
		}
		i += n
	}
	return nil
}

// utf8Char checks the non-ASCII character at the start of s.
func utf8Char(s string, o Options) (int, error) {
	r, n := utf8.DecodeRuneInString(s)
	if r == utf8.RuneError && n <= 1 {
		return 0, errf(Syntax, "invalid UTF-8")
	}
	if !o.UTF8 {
		return 0, errf(NeedUTF8, "non-ASCII without SMTPUTF8")
	}
	if !unicode.IsGraphic(r) {
		return 0, errf(Syntax, "non-graphic character %U", r)
	}
	return n, nil
}

// isAtext is RFC 5322 §3.2.3 atext (ASCII part).
func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// quoteLocal writes a local part as a Dot-string when it is one, else as
// a Quoted-string escaping only '"' and '\'.
func quoteLocal(l string) string {
	if isDotString(l) {
		return l
	}
	var b strings.Builder
	b.Grow(len(l) + 4)
	b.WriteByte('"')
	for i := 0; i < len(l); i++ {
		if l[i] == '"' || l[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(l[i])
	}
	b.WriteByte('"')
	return b.String()
}

// isDotString: non-empty atoms of atext (non-ASCII counts as atext: a
// Mailbox holds it only when it was parsed with SMTPUTF8) between dots.
func isDotString(l string) bool {
	if l == "" || l[0] == '.' || l[len(l)-1] == '.' || strings.Contains(l, "..") {
		return false
	}
	for i := 0; i < len(l); i++ {
		if c := l[i]; c != '.' && c < utf8.RuneSelf && !isAtext(c) {
			return false
		}
	}
	return true
}

// checkLength applies RFC 5321 §4.5.3.1 to the canonical form.
func (m Mailbox) checkLength() error {
	if n := len(quoteLocal(m.Local)); n > MaxLocal {
		return errf(TooLong, "local part of %d octets, limit %d", n, MaxLocal)
	}
	if n := len(m.String()) + 2; n > MaxPath {
		return errf(TooLong, "path of %d octets, limit %d", n, MaxPath)
	}
	return nil
}

// domainEnd returns where the domain starting at s[i] ends: after the "]"
// of an address literal, else at the first octet that cannot be part of a
// domain name.
func domainEnd(s string, i int) int {
	if i < len(s) && s[i] == '[' {
		if j := strings.IndexByte(s[i:], ']'); j >= 0 {
			return i + j + 1
		}
		return len(s)
	}
	j := i
	for j < len(s) && (isLetDig(s[j]) || s[j] == '-' || s[j] == '.' || s[j] >= utf8.RuneSelf) {
		j++
	}
	return j
}

func isLetDig(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// parseDomain checks Domain = sub-domain *("." sub-domain) (RFC 5321
// §4.1.2; RFC 6531 §3.3 adds U-labels) or, with literal, an
// address-literal, and returns its canonical form. One trailing dot (the
// DNS root) is accepted and removed: Postfix does the same, and a relay
// check must see "example.test." as "example.test".
func parseDomain(s string, o Options, literal bool) (string, error) {
	if s == "" {
		return "", errf(Syntax, "empty domain")
	}
	if s[0] == '[' {
		if !literal {
			return "", errf(Syntax, "address literal in a source route")
		}
		return parseLiteral(s)
	}
	s = strings.TrimSuffix(s, ".")
	if len(s) > MaxDomain {
		return "", errf(TooLong, "domain of %d octets, limit %d", len(s), MaxDomain)
	}
	if s == "" {
		return "", errf(Syntax, "empty domain")
	}
	upper := false
	for label := range strings.SplitSeq(s, ".") {
		if err := checkLabel(label, o); err != nil {
			return "", err
		}
		upper = upper || strings.ContainsFunc(label, func(r rune) bool { return 'A' <= r && r <= 'Z' })
	}
	if !upper {
		return s, nil // the common case: no copy
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b), nil
}

// checkLabel: sub-domain = Let-dig [Ldh-str], at most 63 octets (RFC 1035
// §2.3.4); a U-label (RFC 5890) only with SMTPUTF8, checked roughly:
// letters, marks and digits, no upper case, no hyphen at either end. (No
// IDNA2008 table and no NFC check: the downstream resolves the name.)
func checkLabel(l string, o Options) error {
	if l == "" {
		return errf(Syntax, "empty domain label")
	}
	if len(l) > 63 {
		return errf(TooLong, "domain label of %d octets, limit 63", len(l))
	}
	if l[0] == '-' || l[len(l)-1] == '-' {
		return errf(Syntax, "domain label %q starts or ends with '-'", l)
	}
	for i := 0; i < len(l); {
		c := l[i]
		if c < utf8.RuneSelf {
			if !isLetDig(c) && c != '-' {
				return errf(Syntax, "octet 0x%02x in domain", c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(l[i:])
		if r == utf8.RuneError && n <= 1 {
			return errf(Syntax, "invalid UTF-8 in domain")
		}
		if !o.UTF8 {
			return errf(NeedUTF8, "non-ASCII domain without SMTPUTF8")
		}
		if !(unicode.IsLetter(r) || unicode.IsMark(r) || unicode.IsDigit(r)) || unicode.IsUpper(r) {
			return errf(Syntax, "character %U in domain label", r)
		}
		i += n
	}
	return nil
}

// parseLiteral checks an IPv4 or IPv6 address literal (RFC 5321 §4.1.3);
// General-address-literal tags other than IPv6 have never been
// standardised and are refused.
func parseLiteral(s string) (string, error) {
	if len(s) < 3 || s[len(s)-1] != ']' {
		return "", errf(Syntax, "unterminated address literal")
	}
	in := s[1 : len(s)-1]
	if len(in) > 5 && strings.EqualFold(in[:5], "IPv6:") {
		a, err := netip.ParseAddr(in[5:])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", errf(Syntax, "bad IPv6 address literal")
		}
		return "[IPv6:" + a.String() + "]", nil
	}
	a, err := netip.ParseAddr(in)
	if err != nil || !a.Is4() {
		return "", errf(Syntax, "bad address literal (want [IPv4] or [IPv6:...])")
	}
	return "[" + a.String() + "]", nil
}
