package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The bounces area (DIR/bounces/) holds our own bounces that could not be
// delivered: the downstream refused the DSN for good (say 550 5.1.1 for a
// forged local sender, or 554 5.7.1 when it does not relay for mxguard),
// or kept deferring it until MaxAge. A bounce cannot be bounced (RFC 5321
// §4.5.5, §6.1: no notification about a notification), and dropping it
// would lose the only report of a message we accepted with 250 (§6.1:
// "MUST NOT lose the message for frivolous reasons"), so it waits here
// for the operator:
//
//	DIR/bounces/ID.msg     the DSN, in the spool's file format
//	DIR/bounces/ID.reason  when and why it was held
//
// Held messages are not counted in Stats or max_size and never delivered
// on their own (they are not the "held backlog" of auto_unspool: false);
// an unspool request (mxguard spool unspool) puts them back
// into the spool for one more attempt, e.g. after the downstream was told
// to relay for mxguard. The area is bounded by a tenth of max_size: past
// that a bounce is dropped, counted and logged.
const (
	heldDir   = "bounces"
	reasonExt = ".reason"
)

// errHeldFull: the bounces area has no room for one more bounce.
var errHeldFull = errors.New("spool: bounces area full")

// heldLimit is the bounces area's bound; 0 means none. s.mu is held.
func (s *Spool) heldLimit() int64 { return s.o.MaxBytes / 10 }

// recoverHeld counts what the bounces area holds (at Open).
func (s *Spool) recoverHeld() error {
	ents, err := os.ReadDir(filepath.Join(s.dir, heldDir))
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), msgExt) {
			continue
		}
		if fi, err := e.Info(); err == nil {
			s.held++
			s.heldBytes += fi.Size()
		}
	}
	return nil
}

// hold moves message id out of the spool into the bounces area, with reason
// beside it. It returns errHeldFull when the area has no room (the
// message stays in the spool) and a wrapped error on a disk failure.
func (s *Spool) hold(id string, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.msgs[id]
	if e == nil {
		return ErrNotFound
	}
	if limit := s.heldLimit(); limit > 0 && s.heldBytes+e.fileSize > limit {
		return errHeldFull
	}
	// The reason first: a crash between the two leaves an orphan reason
	// file, never a held message without its why.
	why := fmt.Sprintf("%s %s\n", s.clock.Now().UTC().Format(time.RFC3339), reason)
	if err := writeSynced(filepath.Join(s.dir, heldDir, id+reasonExt), writeBytes([]byte(why))); err != nil {
		return fmt.Errorf("spool: hold %s: %w", id, err)
	}
	if err := os.Rename(filepath.Join(s.dir, id+msgExt), filepath.Join(s.dir, heldDir, id+msgExt)); err != nil {
		os.Remove(filepath.Join(s.dir, heldDir, id+reasonExt))
		return fmt.Errorf("spool: hold %s: %w", id, err)
	}
	os.Remove(filepath.Join(s.dir, id+stateExt))
	s.bytes -= e.fileSize
	s.held++
	s.heldBytes += e.fileSize
	s.drop(e)
	return s.syncDirs(id)
}

// syncDirs makes a move between DIR and DIR/bounces durable.
func (s *Spool) syncDirs(id string) error {
	for _, d := range []string{s.dir, filepath.Join(s.dir, heldDir)} {
		f, err := os.Open(d)
		if err == nil {
			err = f.Sync()
			f.Close()
		}
		if err != nil {
			return fmt.Errorf("spool: sync directory after moving %s: %w", id, err)
		}
	}
	return nil
}

// HeldBounces returns the number of held bounces and the bytes of their
// files.
func (s *Spool) HeldBounces() (messages int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held, s.heldBytes
}

// releaseHeld puts every held message back into the spool, due at once,
// and returns how many. A file that cannot be read back is moved to
// corrupt/ like at Open.
func (s *Spool) releaseHeld() (int, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, heldDir))
	if err != nil {
		return 0, fmt.Errorf("spool: %w", err)
	}
	n := 0
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), msgExt)
		if !ok || !validID(id) {
			continue
		}
		if err := s.unhold(id); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (s *Spool) unhold(id string) error {
	held := filepath.Join(s.dir, heldDir, id+msgExt)
	fi, err := os.Stat(held)
	if err != nil {
		return fmt.Errorf("spool: release %s: %w", id, err)
	}
	s.mu.Lock()
	err = os.Rename(held, filepath.Join(s.dir, id+msgExt))
	if err == nil {
		s.held--
		s.heldBytes -= fi.Size()
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("spool: release %s: %w", id, err)
	}
	os.Remove(filepath.Join(s.dir, heldDir, id+reasonExt))
	env, size, err := s.read(id) // no lock held: disk I/O
	s.mu.Lock()
	// Indexed as new (its state file went when it was held), damaged:
	// quarantined, unreadable: read again later, as at Open.
	s.settle(id, env, size, err, fi.Size(), s.clock.Now())
	s.mu.Unlock()
	return s.syncDirs(id)
}
