package events

import (
	"context"
	"errors"
)

// Batch is a set of writes the detection engine's writer collects: new
// events, changed events, blocks to put and blocks to delete (sources).
// Apply fills the Err slices, one outcome per item.
type Batch struct {
	Insert []*Event // IDs are set by a successful insert
	Update []Event
	Put    []Block
	Delete []string // a block that is not there is not an error

	InsertErr, UpdateErr, PutErr, DeleteErr []error
}

// Len is the number of writes in b.
func (b *Batch) Len() int { return len(b.Insert) + len(b.Update) + len(b.Put) + len(b.Delete) }

// BatchWriter is a Store that can write a whole Batch in one transaction:
// all of it or nothing, each Insert's ID set only if all of it was.
type BatchWriter interface {
	WriteBatch(ctx context.Context, b *Batch) error
}

// Apply writes b to s: in one transaction when s is a BatchWriter, which
// costs one commit instead of one per row. When that transaction fails, or
// s cannot batch, each item is written on its own so that one bad item
// holds back nothing else; the Err slices say which failed. Apply returns
// the errors joined.
func Apply(ctx context.Context, s Store, b *Batch) error {
	b.InsertErr = make([]error, len(b.Insert))
	b.UpdateErr = make([]error, len(b.Update))
	b.PutErr = make([]error, len(b.Put))
	b.DeleteErr = make([]error, len(b.Delete))
	if b.Len() == 0 {
		return nil
	}
	if bw, ok := s.(BatchWriter); ok && b.Len() > 1 {
		if err := bw.WriteBatch(ctx, b); err == nil || ctx.Err() != nil {
			fill(b, err)
			return err
		}
	}
	var errs []error
	for i, e := range b.Insert {
		b.InsertErr[i] = s.Insert(ctx, e)
		errs = append(errs, b.InsertErr[i])
	}
	for i, e := range b.Update {
		b.UpdateErr[i] = s.Update(ctx, e)
		errs = append(errs, b.UpdateErr[i])
	}
	for i, bl := range b.Put {
		b.PutErr[i] = s.PutBlock(ctx, bl)
		errs = append(errs, b.PutErr[i])
	}
	for i, src := range b.Delete {
		if err := s.DeleteBlock(ctx, src); !errors.Is(err, ErrNotFound) {
			b.DeleteErr[i] = err
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// fill gives every item of b the outcome of its one transaction.
func fill(b *Batch, err error) {
	for _, es := range [][]error{b.InsertErr, b.UpdateErr, b.PutErr, b.DeleteErr} {
		for i := range es {
			es[i] = err
		}
	}
}
