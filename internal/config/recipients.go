package config

import (
	"errors"
	"strings"

	"mxguard/internal/recipients"
)

// checkRecipients validates the recipients directory's keys and reads
// recipients.file, reporting its bad lines at their own FILE:LINE, so a
// typo shows in check-config rather than as refused mail.
func (l *loader) checkRecipients(c *Config) {
	r := &c.Recipients
	r.DuringOutage = strings.ToLower(r.DuringOutage)
	if _, ok := recipients.ParseMode(r.DuringOutage); !ok {
		l.errAt("recipients.during_outage", "accept (spool unseen recipients) or known_only (451 4.4.1 for them)", "unknown value %q", r.DuringOutage)
	}
	if r.CacheTTL < 0 {
		l.errAt("recipients.cache_ttl", "0 remembers no downstream verdict", "must not be negative")
	}
	if r.File == "" {
		return
	}
	if _, err := l.readLocal("recipients.file", &r.File, 0); err != nil {
		return
	}
	_, err := recipients.ReadFile(r.File)
	var fe recipients.FileErrors
	switch {
	case errors.As(err, &fe):
		for _, e := range fe {
			l.errs = append(l.errs, Error{File: e.File, Line: e.Line, Msg: e.Msg, Hint: "one address a line, or @domain for a catch-all; # starts a comment"})
		}
	case err != nil:
		l.errAt("recipients.file", "", "%v", err)
	}
}
