package cli

import (
	"errors"
	"flag"
	"io"
)

// blocksKind is the blocks of INTERFACE.md §1 and §5.
var blocksKind = holdKind{
	cmd: "mxguard blocks", path: "/api/v1/blocks", arg: "SOURCE", field: "source", what: "block",
	added: "blocked", removed: "unblocked",
}

// Blocks manages blocked sources: mxguard blocks list|add|remove.
func Blocks(args []string, stdout, stderr io.Writer) int {
	return runHolds(blocksKind, args, stdout, stderr)
}

// subcommand reads the common flags that may precede a subcommand name
// ("mxguard blocks --api URL list") and returns that name, the arguments
// after it, and the top-level command for usage errors.
func subcommand(name, synopsis string, args []string, stdout, stderr io.Writer) (sub string, rest []string, c *command, code int, ok bool) {
	c = newCommand(name, synopsis, envAPI(), stdout, stderr)
	if err := c.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return "", nil, c, exitOK, false
		}
		return "", nil, c, exitUsage, false
	}
	if c.fs.NArg() == 0 {
		return "", nil, c, c.usage("missing subcommand"), false
	}
	return c.fs.Arg(0), c.fs.Args()[1:], c, 0, true
}

func (c *command) isSet(name string) bool {
	set := false
	c.fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// noArgs parses args for a command that takes flags only.
func (c *command) noArgs(args []string) (code int, ok bool) {
	pos, code, ok := c.parse(args)
	if !ok {
		return code, false
	}
	if len(pos) > 0 {
		return c.usage("unexpected argument %q", pos[0]), false
	}
	return 0, true
}

// oneArg parses args for a command that takes exactly one positional.
func (c *command) oneArg(args []string, what string) (arg string, code int, ok bool) {
	pos, code, ok := c.parse(args)
	switch {
	case !ok:
		return "", code, false
	case len(pos) == 0:
		return "", c.usage("missing %s", what), false
	case len(pos) > 1:
		return "", c.usage("unexpected argument %q", pos[1]), false
	}
	return pos[0], 0, true
}
