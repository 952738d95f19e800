package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"mxguard/internal/cli"
	"mxguard/internal/cluster"
	"mxguard/internal/config"
	"mxguard/internal/gateway"
)

// parseFailed is the exit code after fs.Parse failed: 0 for -h (the usage
// was asked for and printed), 2 for a usage error.
func parseFailed(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "", "configuration file (YAML)")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if *file == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: mxguard serve -c FILE [--log-level LEVEL]")
		return 2
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(stderr, "mxguard: bad --log-level %q\n", *level)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))

	cfg, err := config.Load(*file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.Cluster.Redis != "" {
		// go-redis reports every failed attempt while Redis is down.
		cluster.LibraryLog(logger.With("component", "cluster"), 30*time.Second)
	}
	g, err := gateway.Start(ctx, cfg, gateway.Options{Logger: logger, Version: cli.VersionString()})
	if err != nil {
		fmt.Fprintf(stderr, "mxguard: %v\n", err)
		return 1
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	for {
		select {
		case <-hup:
			if err := g.ReloadFile(ctx); err != nil {
				logger.Error("reload refused, keeping the running configuration", "err", err)
			}
		case <-ctx.Done():
			logger.Info("shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := g.Shutdown(sctx)
			cancel()
			if err != nil && !errors.Is(err, context.DeadlineExceeded) {
				logger.Error("shutdown", "err", err)
				return 1
			}
			return 0
		}
	}
}

func checkConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("c", "", "configuration file (YAML)")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if *file == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: mxguard check-config -c FILE")
		return 2
	}
	cfg, err := config.Load(*file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if rules := cfg.AlertsUnsent(); len(rules) > 0 {
		// Valid, but not what the operator meant: said, not refused.
		fmt.Fprintf(stderr, "%s: warning: rules %s have the alert action but no alert channel is configured (alerts.email.to, alerts.webhook.url): their events are recorded, nothing is sent\n",
			*file, strings.Join(rules, ", "))
	}
	fmt.Fprintf(stdout, "%s: ok\n", *file)
	return 0
}
