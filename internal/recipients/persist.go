package recipients

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// The cache file (data_dir/recipients.cache) is text, so an operator can
// read it:
//
//	mxguard recipients cache 1
//	k 1795000000000000000 alice@example.test
//	u 1795000000000000000 guess17@example.test
//
// one entry a line: "k" known or "u" unknown, the expiry in Unix
// nanoseconds, the key (keyOf; last, so nothing in it can shift the
// fields, and it holds no newline).
// It is replaced atomically: a temporary file beside it, fsync, rename,
// fsync of the directory.
const stateHeader = "mxguard recipients cache 1"

// sweepBudget bounds the entries per shard Run inspects for expiry each
// interval.
const sweepBudget = 4096

// Run saves a changed cache every SaveInterval, and once more when ctx
// ends, and drops expired entries meanwhile.
func (d *Directory) Run(ctx context.Context) {
	t := time.NewTicker(d.o.SaveInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			d.saveIfDirty()
			return
		case <-t.C:
			now := d.clock.Now().UnixNano()
			d.known.sweep(now, sweepBudget)
			d.unknown.sweep(now, sweepBudget)
			d.saveIfDirty()
		}
	}
}

func (d *Directory) saveIfDirty() {
	if d.o.StateFile == "" || !d.dirty.Swap(false) {
		return
	}
	if err := d.Save(); err != nil {
		d.dirty.Store(true) // try again next time
		d.log.Error("recipients: cannot save the cache", "err", err)
	}
}

// Save writes the cache to StateFile now.
func (d *Directory) Save() error {
	if d.o.StateFile == "" {
		return nil
	}
	now := d.clock.Now().UnixNano()
	var b bytes.Buffer
	b.WriteString(stateHeader + "\n")
	for _, t := range []struct {
		tag byte
		t   *table
	}{{'k', d.known}, {'u', d.unknown}} {
		t.t.each(now, func(key string, exp int64) {
			b.WriteByte(t.tag)
			b.WriteByte(' ')
			b.Write(strconv.AppendInt(nil, exp, 10))
			b.WriteByte(' ')
			b.WriteString(key)
			b.WriteByte('\n')
		})
	}
	if err := writeAtomic(d.o.StateFile, b.Bytes()); err != nil {
		return fmt.Errorf("recipients: save %s: %w", d.o.StateFile, err)
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer dir.Close()
	return dir.Sync()
}

// load reads StateFile into the cache. A missing file is a first start; a
// bad line is skipped (and counted in the log), a file of another format
// is ignored entirely.
func (d *Directory) load() {
	f, err := os.Open(d.o.StateFile)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		d.log.Warn("recipients: cannot read the saved cache, starting empty", "err", err)
		return
	}
	defer f.Close()
	known, unknown, bad, err := d.readState(f)
	if err != nil {
		d.log.Warn("recipients: saved cache unusable, starting empty", "file", d.o.StateFile, "err", err)
		return
	}
	if bad > 0 {
		d.log.Warn("recipients: skipped damaged lines of the saved cache", "file", d.o.StateFile, "lines", bad)
	}
	d.log.Info("recipients: cache restored", "known", known, "unknown", unknown)
}

// readState adds the entries of a cache file that are still valid (and
// in the configured domains) and returns how many of each it added and
// how many lines it could not read.
func (d *Directory) readState(r io.Reader) (known, unknown, bad int, err error) {
	set := d.set.Load()
	now := d.clock.Now().UnixNano()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1024), maxLine)
	if !sc.Scan() || sc.Text() != stateHeader {
		if err := sc.Err(); err != nil {
			return 0, 0, 0, err
		}
		return 0, 0, 0, errors.New("not a recipients cache file")
	}
	for sc.Scan() {
		tag, exp, key, ok := parseStateLine(sc.Bytes())
		if !ok {
			bad++
			continue
		}
		m, _ := parseKey(key) // parseStateLine checked it
		if !set.ours(m.Domain) || exp <= now {
			continue // expired, or a domain no longer served
		}
		if tag == 'k' {
			d.known.put(key, exp, now)
			known++
		} else {
			d.unknown.put(key, exp, now)
			unknown++
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, bufio.ErrTooLong) {
		return known, unknown, bad, err
	}
	return known, unknown, bad, nil
}

// parseStateLine splits "T EXPIRY KEY". The key must parse and be its own
// key: a line that keyOf would change was not written by Save.
func parseStateLine(line []byte) (tag byte, exp int64, key string, ok bool) {
	if len(line) < 5 || (line[0] != 'k' && line[0] != 'u') || line[1] != ' ' {
		return 0, 0, "", false
	}
	rest := line[2:]
	sp := bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return 0, 0, "", false
	}
	exp, err := strconv.ParseInt(string(rest[:sp]), 10, 64)
	if err != nil {
		return 0, 0, "", false
	}
	key = string(rest[sp+1:])
	if m, err := parseKey(key); err != nil || keyOf(m) != key {
		return 0, 0, "", false
	}
	return line[0], exp, key, true
}
