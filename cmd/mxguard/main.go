// Command mxguard is the SMTP security gateway. This file is wiring only:
// it parses the command line and hands over to internal packages.
package main

import (
	"fmt"
	"io"
	"os"

	"mxguard/internal/cli"
)

const usage = `usage: mxguard <command> [flags]

commands:
  serve -c FILE         run the gateway
  demo                  self-contained showcase with simulated attacks
  check-config -c FILE  validate a configuration file
  events [show ID]      list events of a running instance, or one with its evidence
  blocks                list|add|remove blocked sources
  spool                 status|suspend|resume|unspool
  servers               delivery servers and their state
  sessions              open SMTP sessions now and the busiest sources
  cluster               this node, the cluster's Redis and the nodes seen
  suspensions           list|add|remove suspended accounts
  users                 add|remove submission users (auth.users_file)
  version               version and build info

Run 'mxguard <command> -h' for the flags of a command.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	rest := args[1:]
	switch args[0] {
	case "serve":
		return serve(rest, stderr)
	case "demo":
		return runDemo(rest, stdout, stderr)
	case "check-config":
		return checkConfig(rest, stdout, stderr)
	case "events":
		return cli.Events(rest, stdout, stderr)
	case "blocks":
		return cli.Blocks(rest, stdout, stderr)
	case "spool":
		return cli.Spool(rest, stdout, stderr)
	case "servers":
		return cli.Servers(rest, stdout, stderr)
	case "sessions":
		return cli.Sessions(rest, stdout, stderr)
	case "cluster":
		return cli.Cluster(rest, stdout, stderr)
	case "suspensions":
		return cli.Suspensions(rest, stdout, stderr)
	case "users":
		return cli.Users(rest, os.Stdin, stdout, stderr)
	case "version", "--version", "-version":
		return cli.Version(rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "mxguard: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
