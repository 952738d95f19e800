// Package detect is mxguard's detection engine (DESIGN.md "Detection",
// INTERFACE.md §3). Front ends (smtpd, policyd, authpolicy) translate what
// they see into Observations; rules count them per source or account in
// sliding windows and, when a count reaches its threshold, start an event
// and block the source, alert, or suspend the account. See README.md.
package detect

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"mxguard/internal/config"
	"mxguard/internal/events"
	"mxguard/internal/metrics"
	"mxguard/internal/ruletype"
	"mxguard/internal/samepass"
)

// Clock gives the engine its notion of now; tests inject a fake one.
type Clock interface{ Now() time.Time }

// SystemClock is the wall clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

var _ Clock = SystemClock{}

// Kind is what an Observation reports; each kind feeds one rule type.
type Kind uint8

// Kinds of observation, one per rule type of INTERFACE.md §3 the engine
// counts (outbound_queue, mail_server_down and org_down are not counted
// per source or account and live elsewhere).
const (
	KindConnect          Kind = iota + 1 // dos: connection opened (per source)
	KindBadSession                       // bad_sessions: session ended without a message sent (per source)
	KindUnknownRecipient                 // directory_harvest: recipient rejected as unknown, 550 5.1.1 (per source)
	KindMessage                          // mailbomb: message of Size bytes (counted when Size >= min_size) (per source)
	KindSpam                             // spam_attack (per source)
	KindVirus                            // virus_outbreak (per source)
	KindAuthFailure                      // brute_force (per source and service; the rule's service picks one) and account_brute_force (per account)
	KindAccountMessage                   // internal_spammer (per account)
	KindBounce                           // bounce_spammer (per account)
	KindBackscatter                      // backscatter (per source)
	// kindAccountAuthFailure is how a KindAuthFailure counts for
	// account_brute_force; front ends observe KindAuthFailure only.
	kindAccountAuthFailure
	kindEnd
)

// kindTypes names the rule type each Kind feeds; what it counts and per
// what come from the one table of types (internal/ruletype).
var kindTypes = [kindEnd]string{
	KindConnect:          "dos",
	KindBadSession:       "bad_sessions",
	KindUnknownRecipient: "directory_harvest",
	KindMessage:          "mailbomb",
	KindSpam:             "spam_attack",
	KindVirus:            "virus_outbreak",
	KindAuthFailure:      "brute_force",
	KindAccountMessage:   "internal_spammer",
	KindBounce:           "bounce_spammer",
	KindBackscatter:      "backscatter",

	kindAccountAuthFailure: "account_brute_force",
}

// kinds describes each Kind: its rule type, what it counts (for block
// reasons) and whether it is counted per account. Read-only after init.
var kinds = func() (ks [kindEnd]struct {
	typ, noun  string
	perAccount bool
}) {
	for k := KindConnect; k < kindEnd; k++ {
		t, ok := ruletype.Lookup(kindTypes[k])
		if !ok || !t.Rule {
			panic("detect: kind " + kindTypes[k] + " is not a rule type of internal/ruletype")
		}
		ks[k].typ, ks[k].noun, ks[k].perAccount = t.Name, t.Noun, t.Per == ruletype.PerAccount
	}
	return ks
}()

// String returns the rule type the kind feeds, e.g. "directory_harvest".
func (k Kind) String() string {
	if k == 0 || k >= kindEnd {
		return fmt.Sprintf("Kind(%d)", uint8(k))
	}
	return kinds[k].typ
}

func kindOf(typ string) (Kind, bool) {
	for k := KindConnect; k < kindEnd; k++ {
		if kinds[k].typ == typ {
			return k, true
		}
	}
	return 0, false
}

// Observation is one thing a front end saw.
type Observation struct {
	Kind    Kind
	Addr    netip.Addr // source address, for per-source kinds (and the address an account rule blocks)
	Account string     // for per-account kinds
	Service string     // "smtp", "submission", "imap", "pop3", ...
	Size    int64      // KindMessage: message size in bytes
	// Password is the fingerprint of the password a failed authentication
	// tried (Engine.PasswordKey, Engine.DovecotPasswordKey), 0 if unknown:
	// the same wrong password again within a rule's window counts once.
	Password uint64
	// Refused: the observed thing was itself refused (unknown recipient
	// answered 550, virus rejected, auth failed, suspended account's
	// message): it counts toward the impact of an active event.
	Refused bool
	// Text is what the front end saw, for the evidence of an event this
	// observation helps fire: the SMTP command and our reply ("RCPT
	// TO:<guess17@example.test>: 550 5.1.1 ..."), a protocol fact ("imap
	// login bob: authentication failed"). Never a password. The engine
	// keeps it only for keys near a threshold and sanitizes it when the
	// rule fires (evidence.go), so a front end passes a string it has or
	// one cheap to build, and may leave it empty.
	Text string
}

// Change types passed to Options.OnChange.
const (
	ChangeEventStarted = "event_started"
	ChangeEventEnded   = "event_ended"
	ChangeBlockAdded   = "block_added"
	ChangeBlockRemoved = "block_removed"

	ChangeSuspensionAdded   = "suspension_added"
	ChangeSuspensionRemoved = "suspension_removed"
)

// Change reports an event, block or suspension change; Event, Block or
// Suspension is a copy the receiver may keep.
type Change struct {
	Type       string
	Event      *events.Event
	Block      *events.Block
	Suspension *events.Suspension
}

// Options configure an Engine.
type Options struct {
	Rules      []config.Rule    // rules in force, defaults filled in by config
	Trusted    []netip.Prefix   // never blocked; rules may still alert
	Allowlist  []netip.Prefix   // never blocked
	IPv6Prefix int              // IPv6 sources are aggregated to this prefix (default 64)
	Store      events.Store     // nil: events and blocks in memory only
	Clock      Clock            // nil: SystemClock
	Logger     *slog.Logger     // nil: discard
	Metrics    *metrics.Metrics // may be nil
	MaxKeys    int              // max tracked keys per rule (default 1<<20)
	Node       string           // this node's name, recorded in every event (cluster.node)
	// SystemActions are the actions recorded on the events other
	// components raise without a rule (mail_server_down, org_down):
	// [alert] when an alert channel is configured, so an outage is heard
	// of; the gateway's dispatcher sends it.
	SystemActions []string
	// Shared is the cluster's shared state (internal/cluster); nil: this
	// node counts and blocks alone.
	Shared Shared
	// OnChange is called for every change, never while an engine lock is
	// held; it must not block for long.
	OnChange func(Change)
}

// ErrProtected is returned by AddBlock for a source that overlaps
// trusted_networks or the allowlist, which are never blocked.
var ErrProtected = errors.New("source overlaps trusted_networks or allowlist")

const (
	defaultMaxKeys = 1 << 20
	// storeTimeout bounds one batch of the writer goroutine.
	storeTimeout = 5 * time.Second
	// sweepBudget is how many counters per rule Tick inspects for expiry.
	sweepBudget = 4096
	coarseStep  = 10 * time.Millisecond
)

// boundRule is a rule as compiled for the Observe path; immutable.
type boundRule struct {
	cfg            config.Rule
	kind           Kind
	id             uint32 // the rule's name hashed: the samepass key of its counters
	threshold      uint32
	near           uint32 // the count from which a key keeps evidence (nearMark)
	minSize        int64
	block, suspend bool
	alert          bool // recorded in the event; the alert dispatcher (OnChange) sends it
	// shadow: the rule records events with the actions it would take and
	// takes none (rules[].mode: shadow); wouldBlock counts what it would
	// have refused (mxguard_shadow_would_block_total), nil without
	// metrics.
	shadow     bool
	wouldBlock prometheus.Counter
	reason     string
	st         *ruleState
}

func (r *boundRule) matches(o *Observation) bool {
	switch r.kind {
	case KindMessage:
		return o.Size >= r.minSize
	case KindAuthFailure:
		return r.cfg.Service == "" || r.cfg.Service == o.Service
	}
	return true
}

// setup is everything Reconfigure replaces, swapped atomically so Observe
// takes no lock to read it.
type setup struct {
	rules   []config.Rule
	bound   []*boundRule
	byKind  [kindEnd][]*boundRule
	trusted []netip.Prefix
	allow   []netip.Prefix
	v6bits  int
	maxKeys int
	system  []string // Options.SystemActions
}

func (s *setup) rule(name, typ string) *boundRule {
	for _, r := range s.bound {
		if r.cfg.Name == name && r.cfg.Type == typ {
			return r
		}
	}
	return nil
}

func (s *setup) trustedAddr(a netip.Addr) bool { return containsAddr(s.trusted, a) }

func (s *setup) protected(a netip.Addr) bool {
	return containsAddr(s.trusted, a) || containsAddr(s.allow, a)
}

func containsAddr(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Engine counts observations, fires rules, and keeps events and blocks.
type Engine struct {
	clock    Clock
	log      *slog.Logger
	store    events.Store
	metrics  *metrics.Metrics
	onChange func(Change)
	node     string
	shared   Shared // nil outside a cluster
	obs      [kindEnd]prometheus.Counter
	hash     hasher
	// seen remembers which wrong passwords the auth rules counted;
	// passwords names the fingerprint key (samepass).
	seen      *samepass.Set
	passwords *samepass.Hasher
	// coarse is the system time in unix ns, refreshed every coarseStep by
	// Run, or 0. Reading the clock costs as much as the rest of an
	// observation (two vDSO calls, far more in some VMs); counting slots
	// of window/16 does not need better than 10ms.
	coarse   atomic.Int64
	sysClock bool

	setup atomic.Pointer[setup]

	blocks blockTable
	gen    atomic.Uint64

	sus suspensionTable

	evMu    sync.Mutex
	tracked map[*activeEvent]struct{} // active, or ended and not yet written
	nextID  atomic.Int64              // event IDs when there is no store
	fired   atomic.Uint64             // events fired, for their order (activeEvent.seq)
	ext     externalEvents            // events raised by other components (StartEvent)

	// houseMu serializes Tick and Reconfigure: event ownership (which
	// ruleState holds an event) and sweep cursors change only under it.
	houseMu sync.Mutex
	// flushMu makes the writer single-flight so an event is inserted
	// once, and orders manual block writes with the writer's.
	flushMu sync.Mutex
	writes  writeQueue  // what fire hands to the writer (writer.go)
	notes   changeQueue // changes on their way to OnChange
}

// New builds an engine and loads what the store remembers: unexpired
// blocks (blocks survive restarts) and active events, which go on counting
// impact and end after a quiet window.
func New(ctx context.Context, o Options) (*Engine, error) {
	e := &Engine{
		clock:     o.Clock,
		log:       o.Logger,
		store:     o.Store,
		metrics:   o.Metrics,
		onChange:  o.OnChange,
		node:      o.Node,
		shared:    o.Shared,
		hash:      newHasher(),
		seen:      samepass.New(samepass.Options{}),
		passwords: samepass.NewHasher(),
		sus:       suspensionTable{m: make(map[string]*suspension)},
		tracked:   make(map[*activeEvent]struct{}),
		writes:    newWriteQueue(),
	}
	if e.clock == nil {
		e.clock = SystemClock{}
	}
	_, e.sysClock = e.clock.(SystemClock)
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	if e.metrics != nil {
		for k := KindConnect; k < kindEnd; k++ {
			e.obs[k] = e.metrics.Observations.WithLabelValues(k.String())
		}
	}
	s, err := e.compile(o, nil)
	if err != nil {
		return nil, err
	}
	e.setup.Store(s)
	e.blocks.init(s.v6bits)
	if e.store != nil {
		evs, err := e.restoreEvents(ctx, s)
		if err != nil {
			return nil, err
		}
		if err := e.loadBlocks(ctx, evs); err != nil {
			return nil, err
		}
		if err := e.loadSuspensions(ctx, evs); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// compile validates o and binds its rules to counting state, reusing the
// state of old rules with the same name, type and window.
func (e *Engine) compile(o Options, old *setup) (*setup, error) {
	s := &setup{
		rules:   slices.Clone(o.Rules),
		v6bits:  o.IPv6Prefix,
		maxKeys: o.MaxKeys,
		system:  slices.Clone(o.SystemActions),
	}
	if s.v6bits == 0 {
		s.v6bits = 64
	}
	if s.v6bits < 1 || s.v6bits > 128 {
		return nil, fmt.Errorf("detect: ipv6_prefix %d out of range 1-128", s.v6bits)
	}
	if s.maxKeys == 0 {
		s.maxKeys = defaultMaxKeys
	}
	if s.maxKeys < 0 {
		return nil, fmt.Errorf("detect: max keys %d is negative", s.maxKeys)
	}
	for _, p := range o.Trusted {
		s.trusted = append(s.trusted, p.Masked())
	}
	for _, p := range o.Allowlist {
		s.allow = append(s.allow, p.Masked())
	}
	seen := make(map[string]bool)
	for _, rc := range o.Rules {
		if seen[rc.Name] {
			return nil, fmt.Errorf("detect: rule %q: duplicate name", rc.Name)
		}
		seen[rc.Name] = true
		k, ok := kindOf(rc.Type)
		if !ok {
			continue // counted elsewhere (outbound_queue, mail_server_down, org_down)
		}
		r, err := bindRule(rc, k)
		if err != nil {
			return nil, err
		}
		if r.shadow && e.metrics != nil {
			r.wouldBlock = e.metrics.ShadowWouldBlock.WithLabelValues(rc.Name)
		}
		if old != nil {
			// After an ipv6_prefix change the old IPv6 keys are never
			// matched again and age out; IPv4 and account keys stay valid.
			if or := old.rule(rc.Name, rc.Type); or != nil && or.st.window == int64(rc.Window) && or.st.maxKeys == s.maxKeys {
				r.st = or.st
			}
		}
		if r.st == nil {
			r.st = newRuleState(int64(rc.Window), s.maxKeys, &e.hash)
		}
		s.bound = append(s.bound, r)
		s.byKind[k] = append(s.byKind[k], r)
	}
	return s, nil
}

func bindRule(rc config.Rule, k Kind) (*boundRule, error) {
	if rc.Window <= 0 {
		return nil, fmt.Errorf("detect: rule %q: window must be positive", rc.Name)
	}
	if rc.Threshold < 1 {
		return nil, fmt.Errorf("detect: rule %q: threshold must be at least 1", rc.Name)
	}
	r := &boundRule{cfg: rc, kind: k, id: crc32.ChecksumIEEE([]byte(rc.Name)),
		threshold: uint32(min(rc.Threshold, 1<<31)), minSize: int64(rc.MinSize)}
	r.near = nearMark(r.threshold)
	switch rc.Mode {
	case "", events.ModeEnforce:
	case events.ModeShadow:
		r.shadow = true
	default:
		return nil, fmt.Errorf("detect: rule %q: mode %q is neither enforce nor shadow", rc.Name, rc.Mode)
	}
	for _, a := range rc.Actions {
		// The engine takes blocks and suspensions itself; an alert is
		// recorded in the event, and whoever listens to OnChange (the
		// gateway's alert dispatcher) sends it.
		switch a {
		case ruletype.ActionBlock:
			r.block = true
		case ruletype.ActionSuspend:
			r.suspend = true
		case ruletype.ActionAlert, ruletype.ActionNotify:
			r.alert = true
		default:
			return nil, fmt.Errorf("detect: rule %q: action %q is not one the engine takes", rc.Name, a)
		}
	}
	if (r.block || r.suspend) && rc.BlockFor <= 0 {
		return nil, fmt.Errorf("detect: rule %q: block_for must be positive", rc.Name)
	}
	noun := kinds[k].noun
	if k == KindMessage && rc.MinSize > 0 {
		noun = fmt.Sprintf("messages of at least %d bytes", rc.MinSize)
	}
	r.reason = fmt.Sprintf("%s: %d %s in %s", rc.Type, rc.Threshold, noun, rc.Window)
	return r, nil
}

// Observe counts o against every rule of its kind and fires the rules whose
// count reaches their threshold. It returns whether o.Addr is blocked after
// the observation. The common path takes one shard lock per matching rule
// and allocates nothing.
func (e *Engine) Observe(o Observation) bool {
	if o.Kind == 0 || o.Kind >= kindAccountAuthFailure {
		return false
	}
	if c := e.obs[o.Kind]; c != nil {
		c.Inc()
	}
	if o.Account != "" && (kinds[o.Kind].perAccount || o.Kind == KindAuthFailure) {
		o.Account = AccountName(o.Account)
	}
	s := e.setup.Load()
	if rules := s.byKind[o.Kind]; len(rules) > 0 {
		e.count(s, o.Kind, rules, o)
	}
	// A failed login counts for its source (brute_force) and for its
	// account from any source (account_brute_force).
	if o.Kind == KindAuthFailure {
		if rules := s.byKind[kindAccountAuthFailure]; len(rules) > 0 {
			e.count(s, kindAccountAuthFailure, rules, o)
		}
	}
	return o.Addr.IsValid() && e.Blocked(o.Addr)
}

// AccountName is the account a login name counts for (INTERFACE.md §3:
// the login name as given, lowercased), as valid UTF-8 of at most 256
// bytes, so a hostile name can neither break an event record nor grow it.
func AccountName(login string) string {
	lower := true
	for i := 0; i < len(login); i++ {
		if c := login[i]; c >= 0x80 || ('A' <= c && c <= 'Z') {
			lower = false
			break
		}
	}
	if lower && len(login) <= maxAccount {
		return login // the common case: nothing to allocate
	}
	a := strings.ToLower(strings.ToValidUTF8(login, "\uFFFD"))
	if len(a) > maxAccount {
		a = strings.ToValidUTF8(a[:maxAccount], "")
	}
	return a
}

// PasswordKey is the fingerprint of a password tried for login over SMTP
// AUTH (Observation.Password): a keyed hash under a key of this engine,
// never the password (internal/samepass).
func (e *Engine) PasswordKey(login, password string) uint64 {
	return e.passwords.Password(AccountName(login), password)
}

// DovecotPasswordKey is the fingerprint of the pwhash Dovecot's auth
// policy client sent for login.
func (e *Engine) DovecotPasswordKey(login, pwhash string) uint64 {
	if pwhash == "" {
		return 0
	}
	return e.passwords.Dovecot(AccountName(login), pwhash)
}

// maxAccount bounds an account name (RFC 5321 §4.5.3.1.3: a path is at
// most 256 octets; login names are shorter).
const maxAccount = 256

// keyOf is the counting key of an observation of kind: its account, its
// source and service (brute_force), or its source; false when the
// observation lacks what its kind counts per.
func (e *Engine) keyOf(kind Kind, addr netip.Addr, account, service string, v6bits int) (key, bool) {
	switch {
	case kinds[kind].perAccount:
		return e.hash.account(account), account != ""
	case !addr.IsValid():
		return key{}, false
	case kind == KindAuthFailure:
		return e.hash.service(addrKey(addr, v6bits), service), true
	}
	return addrKey(addr, v6bits), true
}

func (e *Engine) count(s *setup, kind Kind, rules []*boundRule, o Observation) {
	k, ok := e.keyOf(kind, o.Addr, o.Account, o.Service, s.v6bits)
	if !ok {
		return
	}
	h := e.hash.sum(k)
	now := e.nowNano()
	for _, r := range rules {
		if !r.matches(&o) {
			continue
		}
		if o.Password != 0 && (kind == KindAuthFailure || kind == kindAccountAuthFailure) &&
			e.seen.Repeat(samepass.Key{Rule: r.id, Counter: k.bytes(), Password: o.Password}, time.Unix(0, now), time.Duration(r.st.window)) {
			continue // the same wrong password again: counted once per window
		}
		ev, fired, reached := r.st.observe(k, h, now, r, &o)
		if e.shared != nil {
			e.share(r, kind, &o, now)
		}
		switch {
		case fired:
			e.fire(s, r, ev, o)
		case reached && ev != nil && (r.block || r.suspend) && !r.shadow:
			e.renew(s, r, ev, o)
		}
	}
}

// Reconfigure applies new rules, trusted networks, allowlist, IPv6 prefix,
// SystemActions and MaxKeys. Blocks and active events are kept; counters are kept for
// rules whose name, type and window (and MaxKeys) are unchanged. Store,
// Clock, Logger, Metrics, Node, Shared and OnChange are fixed by New.
func (e *Engine) Reconfigure(o Options) error {
	e.houseMu.Lock()
	defer e.houseMu.Unlock()
	old := e.setup.Load()
	s, err := e.compile(o, old)
	if err != nil {
		return err
	}
	kept := make(map[*ruleState]bool)
	for _, r := range s.bound {
		kept[r.st] = true
	}
	for _, or := range old.bound {
		if kept[or.st] {
			continue
		}
		// The rule changed or went away: its counters go, its events stay.
		// An event moves to the rule of the same name and type if there is
		// one; otherwise it has no owner and ends after a quiet window.
		nr := s.rule(or.cfg.Name, or.cfg.Type)
		for _, ev := range or.st.retire() {
			ev.owner = nil
			if nr != nil {
				ev.mu.Lock()
				ev.window = nr.st.window
				ev.mu.Unlock()
				nr.st.adopt(ev)
			}
		}
	}
	e.blocks.reclassify(s.v6bits)
	e.setup.Store(s)
	// A rule switched from shadow to enforce ends its shadow events now:
	// they never turn into blocks, and the source's next observation at
	// or over the threshold fires an enforcing event (with its own
	// evidence) that blocks. A rule switched to shadow lets its events
	// run their course with the blocks they took, and renews none. (A
	// changed window moved the events to the new state above: they are
	// its events now.)
	now := e.clock.Now()
	for _, r := range s.bound {
		if or := old.rule(r.cfg.Name, r.cfg.Type); or != nil && or.shadow && !r.shadow {
			e.endShadow(r.st, now)
		}
	}
	return nil
}

// Rules returns the rules in force.
func (e *Engine) Rules() []config.Rule { return slices.Clone(e.setup.Load().rules) }

// SourceKey returns the canonical source of addr: the IPv4 address, or the
// IPv6 prefix of length ipv6_prefix ("2001:db8:1:2::/64").
func (e *Engine) SourceKey(addr netip.Addr) string {
	return canonical(sourcePrefix(addr, e.setup.Load().v6bits))
}

// Protected reports whether addr is trusted or allowlisted.
func (e *Engine) Protected(addr netip.Addr) bool { return e.setup.Load().protected(addr) }

// Trusted reports whether addr is in trusted_networks.
func (e *Engine) Trusted(addr netip.Addr) bool { return e.setup.Load().trustedAddr(addr) }

// trackedKeys returns how many keys each rule tracks (for tests and the
// memory benchmark).
func (e *Engine) trackedKeys() map[string]int {
	m := make(map[string]int)
	for _, r := range e.setup.Load().bound {
		m[r.cfg.Name] = r.st.keys()
	}
	return m
}

// nowNano is the time on the hot paths: the coarse clock while Run keeps
// it, the Clock otherwise (always, with an injected clock).
func (e *Engine) nowNano() int64 {
	if c := e.coarse.Load(); c != 0 {
		return c
	}
	return e.clock.Now().UnixNano()
}

// Run writes events and blocks as they come (the writer, writer.go) and
// calls Tick every second until ctx is done, then flushes once more. With
// the system clock it also keeps the coarse clock of the hot paths.
func (e *Engine) Run(ctx context.Context) {
	var wg sync.WaitGroup
	cctx, stop := context.WithCancel(ctx)
	wg.Go(func() { e.runWriter(cctx) })
	if e.sysClock {
		wg.Go(func() { e.runCoarseClock(cctx) })
	}
	defer wg.Wait()
	defer stop()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := e.Flush(fctx); err != nil {
				e.log.Error("detect: final flush", "err", err)
			}
			cancel()
			return
		case <-t.C:
			e.Tick(ctx)
		}
	}
}

// runCoarseClock refreshes e.coarse in its own goroutine so a slow Tick
// (store writes) never freezes the time Observe sees.
func (e *Engine) runCoarseClock(ctx context.Context) {
	t := time.NewTicker(coarseStep)
	defer t.Stop()
	e.coarse.Store(time.Now().UnixNano())
	defer e.coarse.Store(0)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			e.coarse.Store(now.UnixNano())
		}
	}
}

// Tick does the housekeeping at Clock.Now(): expires blocks and
// suspensions, ends events quiet for one full window, drops stale counters
// (bounded work per call) and flushes impact to the store.
func (e *Engine) Tick(ctx context.Context) {
	now := e.clock.Now()
	ns := now.UnixNano()
	expired := e.expireBlocks(ns)
	lifted := e.expireSuspensions(ns)

	e.houseMu.Lock()
	e.endQuiet(now)
	var authWindow time.Duration // the longest window of the rules that remember passwords
	for _, r := range e.setup.Load().bound {
		r.st.sweep(ns, sweepBudget)
		if r.kind == KindAuthFailure || r.kind == kindAccountAuthFailure {
			authWindow = max(authWindow, r.cfg.Window)
		}
	}
	e.houseMu.Unlock()
	if authWindow > 0 {
		e.seen.Sweep(now, authWindow, sweepBudget/64)
	}

	for _, b := range expired {
		e.writes.unblock(b.Source)
	}
	for _, su := range lifted {
		e.writes.unsuspend(su.Account)
	}
	if err := e.Flush(ctx); err != nil {
		e.log.Error("detect: flush", "err", err)
	}
	for _, b := range expired {
		e.log.Info("detect: block expired", "source", b.Source, "rule", b.Rule)
		e.emit(Change{Type: ChangeBlockRemoved, Block: &b})
	}
	for _, su := range lifted {
		e.log.Info("detect: suspension expired", "account", su.Account, "rule", su.Rule)
		e.emit(Change{Type: ChangeSuspensionRemoved, Suspension: &su})
	}
}
