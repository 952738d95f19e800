package testutil

import (
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// RelayOne sends one message from a@remote.test to alice@example.test on
// an open client session: the transaction of the relay benchmarks.
func RelayOne(c *smtp.Client, msg string) error {
	if err := c.Mail("a@remote.test", nil); err != nil {
		return err
	}
	if err := c.Rcpt("alice@example.test", nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, strings.NewReader(msg)); err != nil {
		return err
	}
	return w.Close()
}

// ProcessCPU is the user and system CPU time of this process so far:
// benchmarks report it per operation, which moves less than a rate on a
// machine shared with other jobs.
func ProcessCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
