package gateway

import (
	"log/slog"
	"syscall"
)

// File descriptors a running gateway needs, counted generously: an
// operator who sees the warning should raise the limit, not wonder.
const (
	// fdsPerSession: the client's socket, its downstream connection, and
	// a spill or spool file for its message.
	fdsPerSession = 3
	// fdsPerServer: the idle connections kept per delivery server
	// (relay.Options.MaxIdle) and its health check.
	fdsPerServer = 64 + 1
	// fdsFixed: listeners, the events database and its journal, the
	// spool directory, logs, the admin server's connections.
	fdsFixed = 64
)

// warnFileLimit warns when the process's RLIMIT_NOFILE (Go raises the
// soft limit to the hard one at start) is too low for max_connections.
func warnFileLimit(log *slog.Logger, maxConns, servers int) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		log.Warn("cannot read RLIMIT_NOFILE", "err", err)
		return
	}
	checkFileLimit(log, rl.Cur, maxConns, servers)
}

// checkFileLimit logs a warning, and reports true, when limit file
// descriptors are fewer than maxConns sessions and servers delivery
// servers can take at once. Short of descriptors, accept(2) and
// connect(2) fail with EMFILE: clients get 451 4.3.0 (relay.ErrLocal)
// although nothing is down.
func checkFileLimit(log *slog.Logger, limit uint64, maxConns, servers int) bool {
	need := uint64(maxConns)*fdsPerSession + uint64(servers)*fdsPerServer + fdsFixed
	if limit >= need {
		return false
	}
	log.Warn("the file descriptor limit is too low for limits.max_connections: raise it (ulimit -n, LimitNOFILE= in the systemd unit) or lower max_connections",
		"rlimit_nofile", limit, "needed", need, "max_connections", maxConns,
		"fds_per_session", fdsPerSession, "delivery_servers", servers)
	return true
}
