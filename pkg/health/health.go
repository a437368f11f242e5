// Package health serves the plugin's /healthz and /readyz endpoint, which the
// DaemonSet's exec probes query through `power-dev-plugin healthcheck`, and
// holds the rules both plugin modes (DRA and device plugin) share: liveness
// means not stuck (LockWatch, CallUnix), readiness lists every reason.
package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// retryInterval is how often Serve tries again for an address in use.
var retryInterval = 2 * time.Second

// Serve serves handler on addr until ctx ends or the returned server is
// closed; wg (optional) tracks the serving goroutine. An address in use is
// not an error: with hostNetwork the pod a rolling update replaces still
// holds the port for a while, and failing would stall the rollout
// (maxUnavailable 0), so Serve keeps trying until the port is free. Other
// listen errors are returned.
func Serve(ctx context.Context, addr string, handler http.Handler, wg *sync.WaitGroup) (*http.Server, error) {
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil && !errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("health endpoint %s: %w", addr, err)
	}
	if wg != nil {
		wg.Add(1)
	}
	go func() {
		if wg != nil {
			defer wg.Done()
		}
		logger := klog.FromContext(ctx)
		for ln == nil {
			logger.Info("Health endpoint address in use, retrying", "address", addr)
			select {
			case <-ctx.Done():
				return
			case <-time.After(retryInterval):
			}
			ln, _ = net.Listen("tcp", addr)
		}
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error(err, "Health endpoint stopped")
		}
	}()
	return srv, nil
}
