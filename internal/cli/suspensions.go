package cli

import "io"

// suspensionsKind is the suspensions of INTERFACE.md §1 and §5.
var suspensionsKind = holdKind{
	cmd: "mxguard suspensions", path: "/api/v1/suspensions", arg: "ACCOUNT", field: "account", what: "suspension",
	added: "suspended", removed: "lifted the suspension of",
}

// Suspensions manages suspended accounts (their next message on the
// submission listener gets 550 5.7.1): mxguard suspensions list|add|remove.
func Suspensions(args []string, stdout, stderr io.Writer) int {
	return runHolds(suspensionsKind, args, stdout, stderr)
}
