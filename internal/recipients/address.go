package recipients

import "strings"

// canonical turns a recipient address (as go-smtp hands it to Rcpt: the
// mailbox without angle brackets, a quoted local part already unquoted)
// into the directory's key, and returns its domain. ok is false for an
// address the directory does not answer for: no "@" (RFC 5321 §4.1.1.3
// bare "postmaster"), an empty part, or control characters (never in an
// address a client can send, and they would break the cache file's lines).
//
// Local parts are compared case-insensitively. RFC 5321 §2.4 allows a
// server to treat them as case-sensitive, but real mail servers (Postfix's
// table look-ups, Exchange, Dovecot) do not, and keying "Alice" and
// "alice" apart would let a harvester double its guesses against the
// cache. The domain is lower-cased and loses a trailing dot (RFC 1035
// absolute form).
//
// This is the directory's small, local parser until internal/address
// (the strict RFC 5321 parser) is available; callers see only this
// function.
func canonical(addr string) (key, domain string, ok bool) {
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "", "", false
	}
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c < 0x20 || c == 0x7f {
			return "", "", false
		}
	}
	key = strings.ToLower(addr) // no allocation when already lower case
	key = strings.TrimSuffix(key, ".")
	domain = key[at+1:]
	if domain == "" {
		return "", "", false
	}
	return key, domain, true
}

// isPostmaster reports the local part every domain must accept mail for
// (RFC 5321 §4.5.1): the directory never refuses or defers it.
func isPostmaster(key string) bool {
	return key[:strings.LastIndexByte(key, '@')+1] == "postmaster@"
}
