package main

import (
	"context"
	"fmt"
	"io"
)

// runPlugin runs the kubelet plugin in the selected mode.
func runPlugin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && (args[0] == "--help" || args[0] == "-h") {
		printUsage(stdout)
		return nil
	}
	return &exitError{code: exitUsage, err: fmt.Errorf("the plugin modes (dra, device-plugin) are not built yet; use the discover subcommand")}
}
