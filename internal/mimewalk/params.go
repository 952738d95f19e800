package mimewalk

import (
	"io"
	"mime"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// param is one parameter of a Content-Type or Content-Disposition value.
type param struct {
	name  string // lowercased attribute, e.g. "filename", "filename*0*"
	value string // unquoted
}

// maxParams bounds the parameters read from one field: legitimate mail
// has a handful; RFC 2231 continuations of a long name a few dozen.
const maxParams = 100

// parseValue splits a structured field value (RFC 2045 §5.1):
// "type/subtype; attr=value; attr="quoted value"". It never fails: a
// malformed parameter is skipped, an unclosed quote runs to the end, and
// repeated attributes are all kept, so that whatever name a mail client
// might pick is seen. (mime.ParseMediaType refuses the whole value on a
// duplicate or malformed parameter, which would hide the file name.)
func parseValue(v string) (token string, params []param) {
	i := strings.IndexByte(v, ';')
	if i < 0 {
		return strings.ToLower(strings.TrimSpace(v)), nil
	}
	token = strings.ToLower(strings.TrimSpace(v[:i]))
	rest := v[i+1:]
	for rest != "" && len(params) < maxParams {
		rest = strings.TrimLeft(rest, " \t\r\n;")
		eq := strings.IndexAny(rest, "=;")
		if eq < 0 || rest[eq] == ';' {
			// An attribute without a value: skip it.
			if eq < 0 {
				break
			}
			rest = rest[eq+1:]
			continue
		}
		name := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimLeft(rest[eq+1:], " \t\r\n")
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			j := 1
			for ; j < len(rest); j++ {
				c := rest[j]
				if c == '\\' && j+1 < len(rest) {
					j++
					b.WriteByte(rest[j])
					continue
				}
				if c == '"' {
					break
				}
				b.WriteByte(c)
			}
			val = b.String()
			if j < len(rest) {
				j++
			}
			rest = rest[j:]
			if k := strings.IndexByte(rest, ';'); k >= 0 {
				rest = rest[k+1:]
			} else {
				rest = ""
			}
		} else {
			k := strings.IndexByte(rest, ';')
			if k < 0 {
				val, rest = strings.TrimSpace(rest), ""
			} else {
				val, rest = strings.TrimSpace(rest[:k]), rest[k+1:]
			}
		}
		if name != "" {
			params = append(params, param{name, val})
		}
	}
	return token, params
}

// get returns the first value of a plain attribute.
func get(params []param, name string) string {
	for _, p := range params {
		if p.name == name {
			return p.value
		}
	}
	return ""
}

// names returns every value the parameters give for attr ("filename" or
// "name"): the plain value (RFC 2047 encoded words decoded, as Outlook
// and Thunderbird write them inside quotes), the RFC 2231 §4 extended
// value ("filename*=utf-8”%E2%82%AC.exe") and the RFC 2231 §3
// continuations ("filename*0*=...; filename*1=...") joined in order.
func names(params []param, attr string) []string {
	var out []string
	type piece struct {
		n   int
		ext bool
		v   string
	}
	var pieces []piece
	for _, p := range params {
		switch {
		case p.name == attr:
			out = append(out, decodeWords(p.value))
		case p.name == attr+"*":
			out = append(out, decodeExtended(p.value))
		case strings.HasPrefix(p.name, attr+"*"):
			s := strings.TrimPrefix(p.name, attr+"*")
			ext := strings.HasSuffix(s, "*")
			n, err := strconv.Atoi(strings.TrimSuffix(s, "*"))
			if err == nil && n >= 0 && n < maxParams {
				pieces = append(pieces, piece{n, ext, p.value})
			}
		}
	}
	if len(pieces) > 0 {
		sort.SliceStable(pieces, func(i, j int) bool { return pieces[i].n < pieces[j].n })
		var b strings.Builder
		charset := ""
		for i, pc := range pieces {
			v := pc.v
			if pc.ext {
				if i == 0 {
					// Only the first piece carries charset'language'.
					if cs, rest, ok := cutCharset(v); ok {
						charset, v = cs, rest
					}
				}
				v = percentDecode(v)
			}
			b.WriteString(v)
		}
		out = append(out, toUTF8(charset, b.String()))
	}
	return out
}

// decodeExtended decodes an RFC 2231 §4 value: charset'language'%XX...
func decodeExtended(v string) string {
	charset := ""
	if cs, rest, ok := cutCharset(v); ok {
		charset, v = cs, rest
	}
	return toUTF8(charset, percentDecode(v))
}

func cutCharset(v string) (charset, rest string, ok bool) {
	i := strings.IndexByte(v, '\'')
	if i < 0 {
		return "", v, false
	}
	j := strings.IndexByte(v[i+1:], '\'')
	if j < 0 {
		return "", v, false
	}
	return strings.ToLower(v[:i]), v[i+1+j+1:], true
}

// percentDecode decodes %XX; a malformed escape stays as it is.
func percentDecode(v string) string {
	if !strings.Contains(v, "%") {
		return v
	}
	return string(unescape(make([]byte, 0, len(v)), v, '%'))
}

// decodeWords decodes RFC 2047 encoded words in v; words in a charset the
// decoder does not know are read byte for byte (toUTF8), never dropped.
func decodeWords(v string) string {
	if !strings.Contains(v, "=?") {
		return v
	}
	d := mime.WordDecoder{CharsetReader: func(charset string, r io.Reader) (io.Reader, error) {
		b, err := io.ReadAll(io.LimitReader(r, 64<<10))
		if err != nil {
			return nil, err
		}
		return strings.NewReader(toUTF8(strings.ToLower(charset), string(b))), nil
	}}
	s, err := d.DecodeHeader(v)
	if err != nil {
		return v
	}
	return s
}

// toUTF8 converts a name from its charset. Only what matters for a file
// name's extension is exact: UTF-8 and ASCII pass, UTF-16 is decoded, and
// any other charset (the ISO 8859 and Windows code pages are all
// ASCII-compatible) keeps its ASCII bytes and turns the rest into U+FFFD.
func toUTF8(charset, s string) string {
	switch charset {
	case "", "utf-8", "utf8", "us-ascii":
		return s
	case "utf-16", "utf-16be", "utf-16le", "ucs-2":
		b := []byte(s)
		le := charset == "utf-16le"
		if len(b) >= 2 && (b[0] == 0xff && b[1] == 0xfe || b[0] == 0xfe && b[1] == 0xff) {
			le = b[0] == 0xff
			b = b[2:]
		}
		u := make([]uint16, 0, len(b)/2)
		for i := 0; i+1 < len(b); i += 2 {
			if le {
				u = append(u, uint16(b[i])|uint16(b[i+1])<<8)
			} else {
				u = append(u, uint16(b[i])<<8|uint16(b[i+1]))
			}
		}
		return string(utf16.Decode(u))
	}
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] < 0x80 {
			b.WriteByte(s[i])
		} else {
			b.WriteRune(utf8.RuneError)
		}
	}
	return b.String()
}
