package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// healthcheckTimeout bounds the wait for the answer; the plugin's checks
// take at most health.ProbeTimeout (3 s) and the probes' timeoutSeconds
// is 10.
const healthcheckTimeout = 5 * time.Second

// runHealthcheck asks the running plugin's health endpoint, for exec probes
// (the image has no shell or curl). Usage: healthcheck [--ready] [ADDR].
// A failure's message carries every reason the plugin gives; the kubelet
// shows it in the probe's event.
func runHealthcheck(ctx context.Context, args []string, stdout io.Writer) error {
	path, addr := "/healthz", envDefault("HEALTH_ADDRESS", "127.0.0.1:51515")
	for _, a := range args {
		switch a {
		case "--ready":
			path = "/readyz"
		default:
			addr = a
		}
	}
	ctx, cancel := context.WithTimeout(ctx, healthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	resp, err := http.DefaultClient.Do(req)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("health endpoint %s: no answer within %s: the plugin is stuck", addr, healthcheckTimeout)
	}
	if err != nil {
		return fmt.Errorf("health endpoint %s: %w; the plugin is not running, or has not started its health endpoint yet (it does once it has registered with the kubelet)", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", path, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(stdout, "%s", body)
	return nil
}
