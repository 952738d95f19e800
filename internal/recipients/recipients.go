// Package recipients is the recipients directory: who exists downstream.
// It remembers the downstream's own verdicts seen in session (250: the
// address exists, 550 5.1.1: it does not) for cache_ttl, reads an optional
// file of valid addresses, and answers from both where the downstream
// cannot be asked: during an outage, so that the spool does not take
// typos, forged-sender spam or a directory harvest (which would turn the
// gateway into a backscatter source), and later for the Postfix policy
// front end, which never sees the downstream's answer. See README.md.
package recipients

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"

	"mxguard/internal/address"
	"mxguard/internal/metrics"
	"mxguard/internal/reply"
)

// Verdict is what the directory knows about an address.
type Verdict uint8

// Verdicts.
const (
	// Unseen: neither a recent downstream verdict nor the file says.
	Unseen Verdict = iota
	// Known: the downstream accepted the address within cache_ttl, or the
	// file lists it (itself or by a catch-all of its domain).
	Known
	// Unknown: the downstream refused it as unknown (550 5.1.1) within
	// cache_ttl, or the file covers its domain and does not list it.
	Unknown
)

func (v Verdict) String() string {
	switch v {
	case Known:
		return "known"
	case Unknown:
		return "unknown"
	}
	return "unseen"
}

// Source says where a verdict comes from.
type Source uint8

// Sources of an Answer.
const (
	SourceNone  Source = iota // Unseen, or postmaster (always known, RFC 5321 §4.5.1)
	SourceCache               // a downstream verdict seen within cache_ttl
	SourceFile                // recipients.file
)

// Answer is a Lookup's result.
type Answer struct {
	Verdict Verdict
	Source  Source
}

// Mode is recipients.during_outage: what happens to an address the
// directory has never seen while the downstream cannot be asked.
type Mode uint8

// Modes.
const (
	// Accept spools it; if the downstream refuses it at unspool, the
	// sender gets a bounce.
	Accept Mode = iota
	// KnownOnly defers it (451 4.4.1): only addresses seen valid are
	// spooled.
	KnownOnly
)

// ParseMode reads a during_outage value.
func ParseMode(s string) (Mode, bool) {
	switch s {
	case "accept":
		return Accept, true
	case "known_only":
		return KnownOnly, true
	}
	return Accept, false
}

func (m Mode) String() string {
	if m == KnownOnly {
		return "known_only"
	}
	return "accept"
}

// Clock gives the directory its notion of now; tests inject a fake one.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Settings are the reloadable part of the directory's configuration.
type Settings struct {
	// Domains are the recipient domains (config domains): the directory
	// answers for these only; other addresses (relayed by trusted
	// clients) are never refused or deferred by it, nor remembered.
	Domains []string
	// List is recipients.file, read by ReadFile; nil: no file.
	List *List
	// TTL is recipients.cache_ttl; 0 remembers nothing.
	TTL time.Duration
	// DuringOutage is recipients.during_outage.
	DuringOutage Mode
}

// Options configure a Directory.
type Options struct {
	Settings
	// StateFile keeps the cache across restarts (data_dir/recipients.cache);
	// "" keeps it in memory only.
	StateFile string
	// MaxKnown and MaxUnknown bound the cache (defaults DefaultMaxKnown,
	// DefaultMaxUnknown). They are separate so that a harvest, which
	// makes unknown entries at the attacker's will, can never push the
	// real recipients out of the cache.
	MaxKnown, MaxUnknown int
	// SaveInterval is how often Run writes a changed cache to StateFile;
	// default one minute.
	SaveInterval time.Duration
	Clock        Clock            // nil: system clock
	Logger       *slog.Logger     // nil: discard
	Metrics      *metrics.Metrics // nil: no metrics
}

// Defaults of Options.
const (
	DefaultMaxKnown     = 1 << 20
	DefaultMaxUnknown   = 1 << 17
	DefaultSaveInterval = time.Minute
)

// checkName labels the directory's replies (reply.Reply.Check).
const checkName = "recipients"

// Causes carried by the directory's replies, for the log.
var (
	errNotListed  = errors.New("recipients: not in recipients.file")
	errCached     = errors.New("recipients: the downstream refused it as unknown within cache_ttl")
	errNeverValid = errors.New("recipients: never seen valid and during_outage is known_only")
)

// Directory is the recipients directory. It is safe for concurrent use.
type Directory struct {
	o       Options
	clock   Clock
	log     *slog.Logger
	set     atomic.Pointer[settings]
	known   *table
	unknown *table
	dirty   atomic.Bool
	lookups *prometheus.CounterVec // result; nil without metrics
}

// settings is Settings compiled for look-ups.
type settings struct {
	domains map[string]struct{}
	list    *List
	ttl     int64
	mode    Mode
}

func compile(s Settings) *settings {
	c := &settings{domains: make(map[string]struct{}, len(s.Domains)), list: s.List, ttl: int64(s.TTL), mode: s.DuringOutage}
	for _, d := range s.Domains {
		c.domains[strings.TrimSuffix(strings.ToLower(d), ".")] = struct{}{}
	}
	return c
}

func (s *settings) ours(domain string) bool {
	_, ok := s.domains[domain]
	return ok
}

// New returns a directory with o's settings and, when o.StateFile exists,
// the cache a previous run saved there (entries expired since are left
// out; a damaged file only costs what it held, and is logged).
func New(o Options) *Directory {
	if o.MaxKnown <= 0 {
		o.MaxKnown = DefaultMaxKnown
	}
	if o.MaxUnknown <= 0 {
		o.MaxUnknown = DefaultMaxUnknown
	}
	if o.SaveInterval <= 0 {
		o.SaveInterval = DefaultSaveInterval
	}
	d := &Directory{o: o, clock: o.Clock, log: o.Logger, known: newTable(o.MaxKnown), unknown: newTable(o.MaxUnknown)}
	if d.clock == nil {
		d.clock = systemClock{}
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.set.Store(compile(o.Settings))
	if o.Metrics != nil {
		d.register(o.Metrics.Registry)
	}
	if o.StateFile != "" {
		d.load()
	}
	return d
}

// Configure applies reloaded settings. The cache stays; with a shorter
// cache_ttl its entries still expire when their old ttl ends.
func (d *Directory) Configure(s Settings) {
	d.set.Store(compile(s))
}

// Lookup says what the directory knows about m. An address outside the
// configured domains (or the bare postmaster) is Unseen. Precedence:
//
//  1. postmaster is always Known (RFC 5321 §4.5.1);
//  2. an address the file does not list, in a domain the file covers
//     (by listing one of its addresses or a catch-all), is Unknown;
//  3. a downstream verdict within cache_ttl;
//  4. an address the file lists is Known;
//  5. Unseen.
//
// The file's "not listed" comes first because, with a file, such
// addresses are refused at RCPT without asking the downstream (Postfix's
// relay_recipient_maps), so the cache cannot know better; the cache comes
// before the file's "listed" because the downstream may have removed a
// mailbox the file still lists.
func (d *Directory) Lookup(m address.Mailbox) Answer {
	set := d.set.Load()
	if !set.ours(m.Domain) {
		return Answer{}
	}
	return d.lookup(set, m)
}

func (d *Directory) lookup(set *settings, m address.Mailbox) Answer {
	if isPostmaster(m) {
		return Answer{Verdict: Known}
	}
	key := keyOf(m)
	covered := set.list != nil && set.list.covers(m.Domain)
	listed := covered && set.list.lists(key, m.Domain)
	if covered && !listed {
		return Answer{Verdict: Unknown, Source: SourceFile}
	}
	if set.ttl > 0 {
		now := d.clock.Now().UnixNano()
		if d.unknown.get(key, now) {
			return Answer{Verdict: Unknown, Source: SourceCache}
		}
		if d.known.get(key, now) {
			return Answer{Verdict: Known, Source: SourceCache}
		}
	}
	if listed {
		return Answer{Verdict: Known, Source: SourceFile}
	}
	return Answer{}
}

// Check is the SMTP front end's question at RCPT, before the recipient is
// relayed (outage false) or spooled (outage true: every server is down,
// the spool delay is running, or the spool is suspended or full). It
// returns nil to go on, or the reply for the client:
//
//   - 550 5.1.1 for an address the file does not list (in every mode), and
//     during an outage also for one the downstream refused as unknown
//     within cache_ttl. The caller counts it toward directory_harvest.
//   - 451 4.4.1 during an outage for an Unseen address when during_outage
//     is known_only.
//
// While the downstream is up its live verdict is authoritative: a cached
// "unknown" does not stop the recipient from being asked again (the
// mailbox may have been created since), and the caller Records the new
// verdict.
func (d *Directory) Check(m address.Mailbox, outage bool) *reply.Reply {
	set := d.set.Load()
	if !set.ours(m.Domain) || (!outage && set.list == nil) {
		return nil // nothing to add to the downstream's own answer
	}
	a := d.lookup(set, m)
	if d.lookups != nil {
		d.lookups.WithLabelValues(a.Verdict.String()).Inc()
	}
	switch {
	case a.Verdict == Unknown && a.Source == SourceFile:
		return unknownUser(m, errNotListed)
	case a.Verdict == Unknown && outage:
		return unknownUser(m, errCached)
	case a.Verdict == Unseen && outage && set.mode == KnownOnly:
		return reply.ServersDown.By(checkName).With(errNeverValid)
	}
	return nil
}

func unknownUser(m address.Mailbox, cause error) *reply.Reply {
	r := reply.UnknownUser.By(checkName)
	r.Text = "<" + m.String() + ">: Recipient address rejected: user unknown"
	r.Cause = cause
	return r
}

// Record remembers the downstream's verdict on m for cache_ttl: Known
// for a 250 to RCPT, Unknown for a 550 5.1.1 (VerdictOf maps a reply).
// Unseen, postmaster (always known), addresses outside the configured
// domains and a cache_ttl of 0 record nothing.
func (d *Directory) Record(m address.Mailbox, v Verdict) {
	set := d.set.Load()
	if set.ttl <= 0 || v == Unseen || !set.ours(m.Domain) || isPostmaster(m) {
		return
	}
	key := keyOf(m)
	now := d.clock.Now().UnixNano()
	add, drop := d.known, d.unknown
	if v == Unknown {
		add, drop = d.unknown, d.known
	}
	drop.remove(key)
	add.put(key, now+set.ttl, now)
	if !d.dirty.Load() {
		d.dirty.Store(true)
	}
}

// VerdictOf turns the downstream's answer to RCPT TO into a verdict: nil
// (250, 251) is Known, a "user unknown" refusal is Unknown, anything else
// (a policy refusal, a full mailbox, a 4xx, a lost connection) says
// nothing about the address's existence and is Unseen.
func VerdictOf(err error) Verdict {
	if err == nil {
		return Known
	}
	if se, ok := errors.AsType[*smtp.SMTPError](err); ok && IsUnknownUser(se.Code, [3]int(se.EnhancedCode), se.Message) {
		return Unknown
	}
	return Unseen
}

// IsUnknownUser recognises "no such user": a 5xx with RFC 3463 X.1.1 (bad
// destination mailbox address), or a 550 without enhanced code from an
// older server whose text says so.
func IsUnknownUser(code int, enh [3]int, text string) bool {
	if code/100 != 5 {
		return false
	}
	if enh[0] == 5 && enh[1] == 1 && enh[2] == 1 {
		return true
	}
	if code != 550 || enh[0] == 5 {
		return false
	}
	t := strings.ToLower(text)
	for _, w := range []string{"unknown", "no such", "does not exist", "not found", "invalid recipient"} {
		if strings.Contains(t, w) {
			return true
		}
	}
	return false
}

// Len returns the number of cached entries of each verdict (expired ones
// not yet swept included).
func (d *Directory) Len() (known, unknown int) { return d.known.len(), d.unknown.len() }

// register creates the directory's metrics on reg, every series at zero.
func (d *Directory) register(reg *prometheus.Registry) {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mxguard_recipients_lookups_total",
		Help: "Recipients directory answers at RCPT, by result (known, unknown, unseen).",
	}, []string{"result"})
	if err := reg.Register(lookups); err != nil {
		are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
		if !ok {
			d.log.Error("recipients: register metrics", "err", err)
			return
		}
		lookups = are.ExistingCollector.(*prometheus.CounterVec)
	}
	for _, v := range []Verdict{Known, Unknown, Unseen} {
		lookups.WithLabelValues(v.String())
	}
	d.lookups = lookups
	for _, v := range []struct {
		name string
		t    *table
	}{{"known", d.known}, {"unknown", d.unknown}} {
		g := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "mxguard_recipients_cache_entries",
			Help:        "Downstream verdicts remembered by the recipients directory, by verdict.",
			ConstLabels: prometheus.Labels{"verdict": v.name},
		}, func() float64 { return float64(v.t.len()) })
		if err := reg.Register(g); err != nil {
			// A second directory on one registry: the first one's
			// gauges stay.
			d.log.Debug("recipients: cache gauge already registered", "verdict", v.name)
		}
	}
}

// String describes the settings for the log.
func (s Settings) String() string {
	file := "none"
	if s.List != nil {
		a, c := s.List.Len()
		file = fmt.Sprintf("%d addresses, %d catch-all domains", a, c)
	}
	return fmt.Sprintf("file: %s, cache_ttl: %s, during_outage: %s", file, s.TTL, s.DuringOutage)
}
