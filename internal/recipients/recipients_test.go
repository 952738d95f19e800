package recipients

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"mxguard/internal/address"
	"mxguard/internal/metrics"
	"mxguard/internal/reply"
	"mxguard/internal/testutil"
)

func mustParse(t *testing.T, text string) *List {
	t.Helper()
	l, err := Parse("recipients.txt", strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// newDir is a directory for example.test and example.org on a fake clock.
func newDir(t *testing.T, o Options) (*Directory, *testutil.FakeClock) {
	t.Helper()
	clk := testutil.NewFakeClock()
	if o.Domains == nil {
		o.Domains = []string{"Example.TEST", "example.org."}
	}
	if o.TTL == 0 {
		o.TTL = 24 * time.Hour
	}
	o.Clock = clk
	return New(o), clk
}

// mb parses a test address.
func mb(s string) address.Mailbox { return address.MustParse(s) }

func TestKey(t *testing.T) {
	for in, want := range map[string]string{
		"alice@example.test":         "alice@example.test",
		"Alice@Example.TEST.":        "alice@example.test",
		`"Alice Smith"@example.test`: "alice smith@example.test",
		`"a@b"@example.test`:         "a@b@example.test",
		"Ünï@example.test":           "ünï@example.test",
		"user@[IPv6:2001:DB8::1]":    "user@[IPv6:2001:db8::1]",
	} {
		m := mb(in)
		if got := keyOf(m); got != want {
			t.Errorf("keyOf(%s) = %q, want %q", in, got, want)
		}
		// The cache file reads a key back to itself.
		if back, err := parseKey(keyOf(m)); err != nil || keyOf(back) != keyOf(m) {
			t.Errorf("parseKey(%q) = %v, %v", keyOf(m), back, err)
		}
	}
}

// FuzzParse: whatever a recipients file holds, Parse does not panic, and
// every address line it accepts is listed afterwards.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"alice@example.test\n@example.org\n", "# c\n\nbob@example.test OK\n", "x\n@\n@@\n\x00@a\n", "\"q\"@example.test\n", "Ünï@exämple.test\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		l, err := Parse("fuzz.txt", strings.NewReader(text))
		if err != nil {
			return
		}
		for line := range strings.Lines(text) {
			field, _, _ := strings.Cut(strings.ReplaceAll(strings.TrimSpace(line), "\t", " "), " ")
			if field == "" || field[0] == '#' || field[0] == '@' {
				continue
			}
			m, err := parseKey(field)
			if err != nil {
				t.Fatalf("Parse accepted %q, which does not parse", field)
			}
			if !l.lists(keyOf(m), m.Domain) || !l.covers(m.Domain) {
				t.Fatalf("%q accepted but not listed", field)
			}
		}
	})
}

func TestParseFile(t *testing.T) {
	l := mustParse(t, `# valid recipients
alice@Example.test
bob@example.test	OK
  carol@example.test   some value
@example.org

`)
	if a, c := l.Len(); a != 3 || c != 1 {
		t.Fatalf("Len = %d addresses, %d catch-all; want 3, 1", a, c)
	}
	for _, key := range []string{"alice@example.test", "bob@example.test", "carol@example.test"} {
		if !l.lists(key, "example.test") {
			t.Errorf("%s not listed", key)
		}
	}
	if l.lists("dave@example.test", "example.test") || !l.lists("anyone@example.org", "example.org") {
		t.Error("listing wrong")
	}
	if !l.covers("example.test") || !l.covers("example.org") || l.covers("example.net") {
		t.Error("coverage wrong")
	}
}

func TestParseFileErrors(t *testing.T) {
	_, err := Parse("r.txt", strings.NewReader("alice@example.test\nnot-an-address\n@bad..domain\nx@exa mple.test\n@\n"+strings.Repeat("y", maxLine+10)+"\n"))
	var fe FileErrors
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v, want FileErrors", err)
	}
	var lines []int
	for _, e := range fe {
		lines = append(lines, e.Line)
		if e.File != "r.txt" {
			t.Errorf("file = %q", e.File)
		}
	}
	// Line 4 is "x@exa" followed by a value: the address itself is fine.
	if fmt.Sprint(lines) != "[2 3 5 6]" {
		t.Errorf("bad lines = %v, want [2 3 5 6]\n%v", lines, err)
	}
	if !strings.HasPrefix(fe[0].Error(), "r.txt:2: ") {
		t.Errorf("format: %s", fe[0])
	}
}

func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := ReadFile(dir); err == nil {
		t.Error("a directory was read as a recipients file")
	}
	p := filepath.Join(dir, "r.txt")
	os.WriteFile(p, []byte("alice@example.test\n"), 0o600)
	if l, err := ReadFile(p); err != nil || !l.lists("alice@example.test", "example.test") {
		t.Errorf("ReadFile: %v", err)
	}
}

// TestLookupPrecedence pins the documented order: postmaster, the file's
// "not listed", a cached verdict, the file's "listed", unseen.
func TestLookupPrecedence(t *testing.T) {
	d, _ := newDir(t, Options{Settings: Settings{List: mustParse(t, "alice@example.test\nbob@example.test\n")}})
	d.Record(mb("bob@example.test"), Unknown)        // the downstream removed bob; the file still lists him
	d.Record(mb("zed@example.test"), Known)          // not in the file: the file wins
	d.Record(mb("carol@example.org"), Known)         // example.org is not covered by the file
	d.Record(mb("dave@example.org"), Unknown)        //
	d.Record(mb("eve@elsewhere.test"), Known)        // not our domain: not remembered
	d.Record(mb("frank@example.org"), Unseen)        // nothing to remember
	d.Record(mb("Grace@EXAMPLE.org."), Known)        // canonical form
	d.Record(mb("postmaster@example.test"), Unknown) // postmaster stays known
	tests := []struct {
		addr string
		want Answer
	}{
		{"postmaster@example.test", Answer{Known, SourceNone}},
		{"PostMaster@example.org", Answer{Known, SourceNone}},
		{"alice@example.test", Answer{Known, SourceFile}},
		{"ALICE@example.test", Answer{Known, SourceFile}},
		{"bob@example.test", Answer{Unknown, SourceCache}},
		{"zed@example.test", Answer{Unknown, SourceFile}},
		{"nobody@example.test", Answer{Unknown, SourceFile}},
		{"carol@example.org", Answer{Known, SourceCache}},
		{"dave@example.org", Answer{Unknown, SourceCache}},
		{"frank@example.org", Answer{Unseen, SourceNone}},
		{"grace@example.org", Answer{Known, SourceCache}},
		{"eve@elsewhere.test", Answer{Unseen, SourceNone}},
		{"postmaster", Answer{Unseen, SourceNone}},
	}
	for _, tt := range tests {
		if got := d.Lookup(mb(tt.addr)); got != tt.want {
			t.Errorf("Lookup(%s) = %+v, want %+v", tt.addr, got, tt.want)
		}
	}
	if k, u := d.Len(); k != 3 || u != 2 {
		t.Errorf("Len = %d known, %d unknown; want 3, 2", k, u)
	}
}

func TestCatchAll(t *testing.T) {
	d, _ := newDir(t, Options{Settings: Settings{List: mustParse(t, "@example.test\n")}})
	if a := d.Lookup(mb("anyone@example.test")); a != (Answer{Known, SourceFile}) {
		t.Errorf("catch-all: %+v", a)
	}
	// The downstream's own "unknown" still refines a catch-all.
	d.Record(mb("gone@example.test"), Unknown)
	if a := d.Lookup(mb("gone@example.test")); a != (Answer{Unknown, SourceCache}) {
		t.Errorf("catch-all with a cached unknown: %+v", a)
	}
}

func TestCacheExpiry(t *testing.T) {
	d, clk := newDir(t, Options{Settings: Settings{TTL: time.Hour}})
	d.Record(mb("alice@example.test"), Known)
	clk.Advance(59 * time.Minute)
	d.Record(mb("bob@example.test"), Unknown)
	if d.Lookup(mb("alice@example.test")).Verdict != Known || d.Lookup(mb("bob@example.test")).Verdict != Unknown {
		t.Fatal("verdicts not remembered within the ttl")
	}
	clk.Advance(time.Minute) // alice's verdict is exactly an hour old
	if a := d.Lookup(mb("alice@example.test")); a.Verdict != Unseen {
		t.Errorf("alice after the ttl: %+v", a)
	}
	if d.Lookup(mb("bob@example.test")).Verdict != Unknown {
		t.Error("bob expired early")
	}
	// A fresh verdict replaces the other one and restarts the ttl.
	d.Record(mb("bob@example.test"), Known)
	clk.Advance(59 * time.Minute)
	if a := d.Lookup(mb("bob@example.test")); a != (Answer{Known, SourceCache}) {
		t.Errorf("bob after a new 250: %+v", a)
	}
	if k, u := d.Len(); k != 1 || u != 0 {
		t.Errorf("Len = %d, %d; want 1, 0 (alice removed when found expired)", k, u)
	}
}

func TestNoCacheWithZeroTTL(t *testing.T) {
	d := New(Options{Settings: Settings{Domains: []string{"example.test"}}})
	d.Record(mb("alice@example.test"), Known)
	if a := d.Lookup(mb("alice@example.test")); a.Verdict != Unseen {
		t.Errorf("cache_ttl 0 remembered: %+v", a)
	}
}

// TestCheck is the decision table of the SMTP front end.
func TestCheck(t *testing.T) {
	withFile := Settings{List: mustParse(t, "alice@example.test\nbob@example.test\n")}
	tests := []struct {
		name    string
		set     Settings
		addr    string
		outage  bool
		code    int
		enh     [3]int
		wantErr error
	}{
		{"up, no file: the downstream decides", Settings{}, "nobody@example.test", false, 0, [3]int{}, nil},
		{"up, cached unknown: asked again", Settings{}, "gone@example.test", false, 0, [3]int{}, nil},
		{"up, file lists it", withFile, "alice@example.test", false, 0, [3]int{}, nil},
		{"up, file does not list it", withFile, "nobody@example.test", false, 550, [3]int{5, 1, 1}, errNotListed},
		{"up, file covers not example.org", withFile, "nobody@example.org", false, 0, [3]int{}, nil},
		{"up, foreign domain", withFile, "x@elsewhere.test", false, 0, [3]int{}, nil},
		{"outage, cached known", Settings{}, "known@example.test", true, 0, [3]int{}, nil},
		{"outage, cached unknown", Settings{}, "gone@example.test", true, 550, [3]int{5, 1, 1}, errCached},
		{"outage, file does not list it", withFile, "nobody@example.test", true, 550, [3]int{5, 1, 1}, errNotListed},
		{"outage, file lists it", withFile, "bob@example.test", true, 0, [3]int{}, nil},
		{"outage, unseen, accept", Settings{}, "new@example.test", true, 0, [3]int{}, nil},
		{"outage, unseen, known_only", Settings{DuringOutage: KnownOnly}, "new@example.test", true, 451, [3]int{4, 4, 1}, errNeverValid},
		{"outage, known, known_only", Settings{DuringOutage: KnownOnly}, "known@example.test", true, 0, [3]int{}, nil},
		{"outage, postmaster, known_only", Settings{DuringOutage: KnownOnly}, "postmaster@example.test", true, 0, [3]int{}, nil},
		{"outage, foreign domain, known_only", Settings{DuringOutage: KnownOnly}, "x@elsewhere.test", true, 0, [3]int{}, nil},
		{"outage, postmaster not in the file", withFile, "postmaster@example.test", true, 0, [3]int{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _ := newDir(t, Options{Settings: tt.set})
			d.Record(mb("known@example.test"), Known)
			d.Record(mb("gone@example.test"), Unknown)
			d.Record(mb("bob@example.test"), Known)
			r := d.Check(mb(tt.addr), tt.outage)
			if tt.code == 0 {
				if r != nil {
					t.Fatalf("Check = %v, want nil", r)
				}
				return
			}
			if r == nil || r.Code != tt.code || r.Enhanced != tt.enh || r.Check != "recipients" || !errors.Is(r, tt.wantErr) {
				t.Fatalf("Check = %v, want %d %v by recipients, cause %v", r, tt.code, tt.enh, tt.wantErr)
			}
			if r.Code == 550 && !strings.Contains(r.Text, "<"+tt.addr+">") {
				t.Errorf("550 text %q does not name the recipient", r.Text)
			}
			if r.Code == 550 && !IsUnknownUser(r.Code, r.Enhanced, r.Text) {
				t.Error("the directory's 550 would not count toward directory_harvest")
			}
		})
	}
}

func TestConfigure(t *testing.T) {
	d, _ := newDir(t, Options{})
	d.Record(mb("alice@example.test"), Known)
	if d.Check(mb("nobody@example.test"), false) != nil {
		t.Fatal("no file yet")
	}
	d.Configure(Settings{Domains: []string{"example.test"}, TTL: time.Hour, List: mustParse(t, "alice@example.test\n"), DuringOutage: KnownOnly})
	if r := d.Check(mb("nobody@example.test"), false); r == nil || r.Code != 550 {
		t.Errorf("after reload with a file: %v", r)
	}
	if a := d.Lookup(mb("alice@example.test")); a != (Answer{Known, SourceCache}) {
		t.Errorf("the cache did not survive the reload: %+v", a)
	}
	if r := d.Check(mb("new@example.org"), true); r != nil {
		t.Errorf("example.org is no longer ours but got %v", r)
	}
}

// TestHarvestCannotEvictKnown: unknown entries, which a harvester makes
// at will, have their own bound.
func TestHarvestCannotEvictKnown(t *testing.T) {
	d, clk := newDir(t, Options{MaxKnown: 1000, MaxUnknown: 160})
	for i := range 500 {
		d.Record(mb(fmt.Sprintf("user%d@example.test", i)), Known)
	}
	for i := range 100000 {
		clk.Advance(time.Millisecond)
		d.Record(mb(fmt.Sprintf("guess%d@example.test", i)), Unknown)
	}
	known, unknown := d.Len()
	if known != 500 || unknown > 160 {
		t.Fatalf("Len = %d known, %d unknown; want 500, at most 160", known, unknown)
	}
	for i := range 500 {
		if a := d.Lookup(mb(fmt.Sprintf("user%d@example.test", i))); a.Verdict != Known {
			t.Fatalf("user%d lost: %+v", i, a)
		}
	}
	// The newest refusals are kept (sampled eviction takes the oldest of
	// a sample, never one of the 7 newest of a shard).
	for i := 100000 - 7; i < 100000; i++ {
		if a := d.Lookup(mb(fmt.Sprintf("guess%d@example.test", i))); a.Verdict != Unknown {
			t.Errorf("recent guess%d evicted", i)
		}
	}
}

func TestVerdictOf(t *testing.T) {
	se := func(code int, enh [3]int, text string) error {
		return fmt.Errorf("relay: %w", &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode(enh), Message: text})
	}
	tests := []struct {
		err  error
		want Verdict
	}{
		{nil, Known},
		{se(550, [3]int{5, 1, 1}, "<x@example.test>: Recipient address rejected: User unknown in virtual mailbox table"), Unknown},
		{se(553, [3]int{5, 1, 1}, "no"), Unknown},
		{se(550, [3]int{0, 0, 0}, "No such user here"), Unknown},
		{se(550, [3]int{0, 0, 0}, "Mailbox unavailable"), Unseen},
		{se(550, [3]int{5, 7, 1}, "user unknown, but a policy code"), Unseen},
		{se(552, [3]int{5, 2, 2}, "Mailbox full"), Unseen},
		{se(450, [3]int{4, 1, 1}, "User unknown (soft_bounce)"), Unseen},
		{se(554, [3]int{5, 7, 1}, "Relay access denied"), Unseen},
		{errors.New("connection reset"), Unseen},
	}
	for _, tt := range tests {
		if got := VerdictOf(tt.err); got != tt.want {
			t.Errorf("VerdictOf(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestParseMode(t *testing.T) {
	for s, want := range map[string]Mode{"accept": Accept, "known_only": KnownOnly} {
		if m, ok := ParseMode(s); !ok || m != want || m.String() != s {
			t.Errorf("ParseMode(%q) = %v, %v", s, m, ok)
		}
	}
	if _, ok := ParseMode("Known_Only"); ok {
		t.Error("ParseMode accepted a wrong spelling")
	}
}

func TestMetrics(t *testing.T) {
	m := metrics.New()
	d, _ := newDir(t, Options{Metrics: m, Settings: Settings{DuringOutage: KnownOnly}})
	d.Record(mb("alice@example.test"), Known)
	d.Record(mb("gone@example.test"), Unknown)
	d.Check(mb("alice@example.test"), true)
	d.Check(mb("gone@example.test"), true)
	d.Check(mb("gone@example.test"), true)
	d.Check(mb("new@example.test"), true)
	d.Check(mb("new@example.test"), false) // up, no file: not a look-up
	for result, want := range map[string]float64{"known": 1, "unknown": 2, "unseen": 1} {
		if got := promtest.ToFloat64(d.lookups.WithLabelValues(result)); got != want {
			t.Errorf("lookups{result=%s} = %v, want %v", result, got, want)
		}
	}
	want := `
# HELP mxguard_recipients_cache_entries Downstream verdicts remembered by the recipients directory, by verdict.
# TYPE mxguard_recipients_cache_entries gauge
mxguard_recipients_cache_entries{verdict="known"} 1
mxguard_recipients_cache_entries{verdict="unknown"} 1
`
	if err := promtest.GatherAndCompare(m.Registry, strings.NewReader(want), "mxguard_recipients_cache_entries"); err != nil {
		t.Error(err)
	}
	// A second directory on the same registry (a test, a restart in
	// process) shares the counter.
	d2 := New(Options{Metrics: m, Settings: Settings{Domains: []string{"example.test"}, TTL: time.Hour}})
	d2.Check(mb("x@example.test"), true)
	if got := promtest.ToFloat64(d.lookups.WithLabelValues("unseen")); got != 2 {
		t.Errorf("shared counter = %v, want 2", got)
	}
}

func TestPersistAcrossRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "recipients.cache")
	d, clk := newDir(t, Options{StateFile: path, Settings: Settings{TTL: time.Hour}})
	d.Record(mb("alice@example.test"), Known)
	d.Record(mb("guess@example.test"), Unknown)
	clk.Advance(30 * time.Minute)
	d.Record(mb("bob@example.org"), Known)
	if err := d.Save(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left behind: %v", err)
	}

	// A restart 45 minutes after the first verdicts: alice and guess have
	// 15 minutes left, bob 45; example.org is no longer served.
	clk.Advance(15 * time.Minute)
	d2 := New(Options{StateFile: path, Clock: clk, Settings: Settings{Domains: []string{"example.test"}, TTL: time.Hour}})
	if a := d2.Lookup(mb("alice@example.test")); a != (Answer{Known, SourceCache}) {
		t.Errorf("alice after restart: %+v", a)
	}
	if a := d2.Lookup(mb("guess@example.test")); a != (Answer{Unknown, SourceCache}) {
		t.Errorf("guess after restart: %+v", a)
	}
	if k, u := d2.Len(); k != 1 || u != 1 {
		t.Errorf("Len after restart = %d, %d; want 1, 1 (bob's domain is gone)", k, u)
	}
	// The expiry is the original one, not restarted by the reload.
	clk.Advance(15 * time.Minute)
	if a := d2.Lookup(mb("alice@example.test")); a.Verdict != Unseen {
		t.Errorf("alice outlived her ttl across the restart: %+v", a)
	}
}

func TestPersistDamagedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "recipients.cache")
	clk := testutil.NewFakeClock()
	exp := clk.Now().Add(time.Hour).UnixNano()
	content := fmt.Sprintf("%s\nk %d alice@example.test\nx %d bad@example.test\nk notanumber bob@example.test\nk %d Carol@example.test\nu %d\nu %d guess@example.test\n",
		stateHeader, exp, exp, exp, exp, exp)
	os.WriteFile(path, []byte(content), 0o600)
	d := New(Options{StateFile: path, Clock: clk, Settings: Settings{Domains: []string{"example.test"}, TTL: time.Hour}})
	if k, u := d.Len(); k != 1 || u != 1 {
		t.Errorf("Len = %d, %d; want the two good lines only", k, u)
	}
	// Another format is ignored as a whole.
	os.WriteFile(path, []byte("alice@example.test\n"), 0o600)
	d = New(Options{StateFile: path, Clock: clk, Settings: Settings{Domains: []string{"example.test"}, TTL: time.Hour}})
	if k, u := d.Len(); k != 0 || u != 0 {
		t.Errorf("a foreign file was read: %d, %d", k, u)
	}
}

// TestRunSavesOnStop: the last verdicts reach the file when the gateway
// stops, without waiting for the interval.
func TestRunSavesOnStop(t *testing.T) {
	path := filepath.Join(t.TempDir(), "recipients.cache")
	d, _ := newDir(t, Options{StateFile: path, SaveInterval: time.Hour})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	d.Record(mb("alice@example.test"), Known)
	cancel()
	<-done
	b, err := os.ReadFile(path)
	if err != nil || !strings.Contains(string(b), " alice@example.test\n") {
		t.Fatalf("cache file after stop: %q %v", b, err)
	}
}

func TestUnknownReplyIsTyped(t *testing.T) {
	d, _ := newDir(t, Options{Settings: Settings{List: mustParse(t, "alice@example.test\n")}})
	r := d.Check(mb("nobody@example.test"), false)
	var rr *reply.Reply
	if !errors.As(error(r), &rr) || rr.Temporary() {
		t.Fatalf("reply %v", r)
	}
	if strings.Contains(string(r.Line()), "recipients.file") {
		t.Error("the internal cause reached the client's text")
	}
}
