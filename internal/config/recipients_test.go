package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestRecipientsKeys(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "valid.txt"), []byte("alice@example.test\n@example.org\n"), 0o600)
	c, err := Parse(filepath.Join(dir, "mxguard.yaml"), []byte(minimal+`recipients:
  file: valid.txt
  cache_ttl: 2h
  during_outage: Known_Only
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Recipients{File: filepath.Join(dir, "valid.txt"), CacheTTL: 2 * time.Hour, DuringOutage: "known_only"}
	if c.Recipients != want {
		t.Errorf("recipients = %+v, want %+v", c.Recipients, want)
	}
	if c := mustParse(t, minimal+"recipients: {cache_ttl: 0}\n"); c.Recipients.CacheTTL != 0 || c.Recipients.DuringOutage != "accept" {
		t.Errorf("cache_ttl 0: %+v", c.Recipients)
	}
}

func TestRecipientsErrors(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bad.txt"), []byte("alice@example.test\n# comment\nalice\n@exa..mple.test\n"), 0o600)
	name := filepath.Join(dir, "mxguard.yaml")
	_, err := Parse(name, []byte(minimal+`recipients:
  file: bad.txt
  cache_ttl: -1h
  during_outage: reject
`))
	if err == nil {
		t.Fatal("accepted")
	}
	got := strings.Split(err.Error(), "\n")
	bad := filepath.Join(dir, "bad.txt")
	want := []string{
		name + `:6: recipients.cache_ttl: must not be negative (0 remembers no downstream verdict)`,
		name + `:7: recipients.during_outage: unknown value "reject" (accept (spool unseen recipients) or known_only (451 4.4.1 for them))`,
		bad + `:3: "alice" is not an address (local@domain, or @domain for a catch-all) (one address a line, or @domain for a catch-all; # starts a comment)`,
		bad + `:4: "exa..mple.test" is not a domain (one address a line, or @domain for a catch-all; # starts a comment)`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	got = errorLines(t, minimal+"recipients: {file: missing.txt}\n")
	if len(got) != 1 || !strings.HasPrefix(got[0], "t.yaml:4: recipients.file: cannot read missing.txt: no such file or directory") {
		t.Errorf("missing file: %q", got)
	}
}
