// Command power-dev-plugin hands protected host devices to Kubernetes pods,
// as a DRA kubelet plugin or a legacy kubelet device plugin, and explains on
// any machine what it would publish (the discover subcommand).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Set at build time with -ldflags "-X main.version=... -X main.gitCommit=...".
var (
	version   = "devel"
	gitCommit = "unknown"
)

// exitError carries the process exit code for an error.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// Exit codes.
const (
	exitFailure = 1 // the command failed
	exitUsage   = 2 // bad flags or bad configuration: fix the input
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil {
		return
	}
	code := exitFailure
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if !errors.Is(err, errHelp) {
		fmt.Fprintf(os.Stderr, "power-dev-plugin: %v\n", err)
	}
	os.Exit(code)
}

// run dispatches to a subcommand; without one it runs the plugin.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "discover":
			return runDiscover(ctx, args[1:], stdout, stderr)
		case "healthcheck":
			return runHealthcheck(ctx, args[1:], stdout)
		case "version":
			fmt.Fprintf(stdout, "power-dev-plugin %s (commit %s)\n", version, gitCommit)
			return nil
		case "help":
			printUsage(stdout)
			return nil
		}
	}
	return runPlugin(ctx, args, stdout, stderr)
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, `power-dev-plugin hands protected host devices (disks, partitions, device-mapper
and multipath devices, /dev/crypto/nx-gzip, /dev/fuse, ...) to non-privileged
Kubernetes pods. Devices that the node itself needs (mounted, swap, held by
another device, kernel memory and port interfaces) are never published.

Usage:
  power-dev-plugin [flags]            run the kubelet plugin (see --help)
  power-dev-plugin discover [flags]   show what this node would publish, and why
                                      anything was left out (see discover --help)
  power-dev-plugin healthcheck [--ready] [ADDR]
                                      exit 0 when the running plugin is live (not
                                      stuck), with --ready when it is ready; else
                                      say every reason (for exec probes)
  power-dev-plugin version            print the version

`)
}
