package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"
)

// runHealthcheck asks the running plugin's health endpoint, for exec probes
// (the image has no shell or curl). Usage: healthcheck [--ready] [ADDR].
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
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return &exitError{code: exitUsage, err: err}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("health endpoint: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s: %s", path, resp.Status, body)
	}
	fmt.Fprintf(stdout, "%s", body)
	return nil
}
