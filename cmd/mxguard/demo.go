package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"mxguard/internal/demo"
)

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dur := fs.Duration("duration", 0, "stop after this long (default: until Ctrl-C)")
	adminAddr := fs.String("admin", "127.0.0.1:8025", "web console and API address")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: mxguard demo [--duration D] [--admin ADDR]")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := demo.Run(ctx, demo.Options{Duration: *dur, Admin: *adminAddr, Out: stdout}); err != nil {
		fmt.Fprintf(stderr, "mxguard: %v\n", err)
		return 1
	}
	return 0
}
