// Package events holds the attack event model (INTERFACE.md §3) and its
// stores: SQLite by default, PostgreSQL for clusters.
package events

import (
	"context"
	"errors"
	"time"

	"mxguard/internal/ruletype"
)

// Event statuses.
const (
	StatusActive = "active"
	StatusEnded  = "ended"
)

// Event is one attack episode: it starts when a rule fires and ends once the
// source has been quiet for one full window.
type Event struct {
	ID        int64          `json:"id"`
	Type      string         `json:"type"`
	Rule      string         `json:"rule"`
	Mode      string         `json:"mode"` // ModeEnforce or ModeShadow; empty is stored as enforce
	Status    string         `json:"status"`
	StartedAt time.Time      `json:"started_at"`
	EndedAt   *time.Time     `json:"ended_at"`
	Source    string         `json:"source"`
	Service   string         `json:"service"`
	Impact    int64          `json:"impact"`
	Actions   []string       `json:"actions"`
	Node      string         `json:"node"` // the mxguard node that recorded the event (cluster.node)
	Detail    map[string]any `json:"detail"`
}

// FillEmpty makes empty lists and maps render as [] and {} rather than
// null, as in the event JSON of INTERFACE.md §3 (the API, the webhook).
func (e *Event) FillEmpty() {
	if e.Actions == nil {
		e.Actions = []string{}
	}
	if e.Detail == nil {
		e.Detail = map[string]any{}
	}
}

// Rule modes (INTERFACE.md §2 rules[].mode, §3): a shadow rule records its
// events with the actions it would have taken and takes none.
const (
	ModeEnforce = "enforce"
	ModeShadow  = "shadow"
)

// Query selects events over the whole population. Zero values mean "no
// filter"; Sort is one of started_at (default), type, source, impact; Order
// is desc (default) or asc; Limit defaults to 100 and is at most 500.
type Query struct {
	Type      string
	Source    string
	Status    string
	MinImpact int64
	Since     time.Time
	Until     time.Time
	Sort      string
	Order     string
	Limit     int
	Offset    int
}

// Result is one page of a query and the count of all matches.
type Result struct {
	Total  int     `json:"total"`
	Events []Event `json:"events"`
}

// Block is a temporary (or manual) refusal of a source.
type Block struct {
	Source    string    `json:"source"` // canonical: IPv4 address, IPv6 prefix or CIDR
	Reason    string    `json:"reason"`
	Rule      string    `json:"rule"`
	EventID   int64     `json:"event_id"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Manual    bool      `json:"manual"`
}

// Suspension is a temporary (or manual) refusal of an account's mail on
// the submission listener (INTERFACE.md §5).
type Suspension struct {
	Account   string    `json:"account"` // the login name, lowercased
	Reason    string    `json:"reason"`
	Rule      string    `json:"rule"`
	EventID   int64     `json:"event_id"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Manual    bool      `json:"manual"`
}

// SuspensionStore persists suspensions; a Store that is not one keeps
// them in memory only (the detection engine checks).
type SuspensionStore interface {
	// PutSuspension inserts or replaces the suspension of s.Account.
	PutSuspension(ctx context.Context, s Suspension) error
	// DeleteSuspension removes one; ErrNotFound when none.
	DeleteSuspension(ctx context.Context, account string) error
	Suspensions(ctx context.Context) ([]Suspension, error)
}

// ErrNotFound is returned for a missing event or block.
var ErrNotFound = errors.New("not found")

// Store persists events and blocks.
type Store interface {
	// Insert stores a new event and sets its ID.
	Insert(ctx context.Context, e *Event) error
	// Update rewrites status, ended_at, impact, actions and detail of e.ID.
	Update(ctx context.Context, e Event) error
	Get(ctx context.Context, id int64) (Event, error)
	Query(ctx context.Context, q Query) (Result, error)
	// PutBlock inserts or replaces the block of b.Source.
	PutBlock(ctx context.Context, b Block) error
	// DeleteBlock removes a block; ErrNotFound when none.
	DeleteBlock(ctx context.Context, source string) error
	Blocks(ctx context.Context) ([]Block, error)
	Close() error
}

// Types are the event types of INTERFACE.md §3, from the one table of
// them (internal/ruletype).
var Types = ruletype.Names()
