package recipients

import (
	"strings"

	"mxguard/internal/address"
)

// keyOf is the directory's key for a parsed address (internal/address):
// the local part lower-cased, "@", the domain (already lower case, no
// trailing dot). The local part is in its unquoted form, so a key splits
// at its last "@"; the parser refuses control characters, so a key never
// holds a newline (the cache file is one entry a line).
//
// Local parts are compared case-insensitively. RFC 5321 §2.4 allows a
// server to treat them as case-sensitive, but real mail servers (Postfix's
// table look-ups, Exchange, Dovecot) do not, and keying "Alice" and
// "alice" apart would let a harvester multiply its guesses against the
// cache.
func keyOf(m address.Mailbox) string {
	return strings.ToLower(m.Local) + "@" + m.Domain
}

// parseKey reads an address as the file and the cache file write it: the
// unquoted form of Postfix's tables ("local@domain", split at the last
// "@"), UTF-8 allowed.
func parseKey(s string) (address.Mailbox, error) {
	return address.ParseUnquoted(s, address.Options{UTF8: true})
}

// isPostmaster reports the local part every domain must accept mail for
// (RFC 5321 §4.5.1): the directory never refuses or defers it.
func isPostmaster(m address.Mailbox) bool { return strings.EqualFold(m.Local, "postmaster") }
