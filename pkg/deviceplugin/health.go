package deviceplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"

	"google.golang.org/grpc"
	v1beta1 "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/health"
)

// Liveness in device-plugin mode: Run's loop is not stuck past
// health.StuckAfter, and every group's gRPC server answers. The kubelet
// being away is no reason (the plugin registers again by itself).
// Readiness adds: the first inventory served, every group's plugin serving
// and registered with the kubelet.

// otherInstanceRegistered is how a kubelet older than 1.37, which keeps one
// endpoint per resource, refuses a second one (the old pod of a rolling
// update, or the old power-device-plugin): the plugin registers by itself
// once the other stops, and the rolling update waits for this pod to be
// ready before it stops the old one, so this refusal does not make the pod
// unready.
const otherInstanceRegistered = "already registered with a different socket path"

// doing runs f, one step of Run's loop, noting it for the liveness check.
func (m *Manager) doing(what string, f func()) {
	m.loop.Acquired(what)
	defer m.loop.Released()
	f()
}

// Ready reports whether the manager is ready: see readyReasons.
func (m *Manager) Ready() bool { return len(m.readyReasons()) == 0 }

// readyReasons says why the manager is not ready: no inventory served yet,
// or a group's plugin not serving or not registered with the kubelet.
func (m *Manager) readyReasons() []string {
	if !m.ready.Load() {
		return []string{"devices not served yet: waiting for the first inventory from device discovery (the plugin log says why if it fails)"}
	}
	var reasons []string
	for _, s := range m.Status() {
		why := s.LastError
		switch {
		case !s.Serving:
			if why == "" {
				why = "starting"
			}
			reasons = append(reasons, fmt.Sprintf("%s: not serving on a socket in %s: %s", s.Resource, m.opts.pluginDir, why))
		case !s.Registered && !strings.Contains(why, otherInstanceRegistered):
			if why == "" {
				why = "registering"
			}
			reasons = append(reasons, fmt.Sprintf("%s: not registered with the kubelet: %s", s.Resource, why))
		}
	}
	return reasons
}

func (m *Manager) checkLoop(context.Context) error {
	if what, held, stuck := m.loop.Stuck(m.opts.stuckAfter); stuck {
		return fmt.Errorf("the inventory loop has been %s for %s, longer than any wait the plugin does on purpose (%s): the plugin is stuck, most likely reading /sys under %s or writing the CDI spec in %s (look for hung tasks in the node's kernel log); a restart starts it afresh",
			what, held, m.opts.stuckAfter, m.opts.hostRoot, m.opts.cdiDir)
	}
	return nil
}

// checkGRPC asks every group's plugin a question. A socket that is
// gone is skipped: the plugin serves on a new one by itself (the kubelet
// removes them all when it restarts).
func (m *Manager) checkGRPC(ctx context.Context) error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, s := range m.Status() {
		if !s.Serving || s.Socket == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// An empty GetPreferredAllocation reads the device set under
			// the lock Allocate takes, and changes nothing.
			err := health.CallUnix(ctx, s.Socket, func(ctx context.Context, conn *grpc.ClientConn) error {
				_, err := v1beta1.NewDevicePluginClient(conn).GetPreferredAllocation(ctx, &v1beta1.PreferredAllocationRequest{})
				return err
			})
			if err == nil {
				return
			}
			if _, statErr := os.Stat(s.Socket); statErr != nil || statusOf(m, s.Group).Socket != s.Socket {
				return
			}
			mu.Lock()
			errs = append(errs, fmt.Errorf("%s: %w; the kubelet cannot allocate through it, a restart serves it again", s.Resource, err))
			mu.Unlock()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func statusOf(m *Manager, group string) PluginStatus {
	for _, s := range m.Status() {
		if s.Group == group {
			return s
		}
	}
	return PluginStatus{}
}

func (m *Manager) checkReady(context.Context) error {
	if reasons := m.readyReasons(); len(reasons) > 0 {
		return errors.New(strings.Join(reasons, "\n"))
	}
	return nil
}

// writeStatus writes a line per group's plugin.
func (m *Manager) writeStatus(w io.Writer) {
	for _, s := range m.Status() {
		state := "registered"
		if !s.Registered {
			state = "not registered"
			if s.LastError != "" {
				state += ": " + s.LastError
			}
		}
		_, _ = fmt.Fprintf(w, "%s: %d IDs, serving=%v, %s, %d stream(s)\n", s.Resource, s.IDs, s.Serving, state, s.Streams)
	}
}

// serveHealth answers /healthz and /readyz, with the plugins' status.
func (m *Manager) serveHealth(ctx context.Context, wg *sync.WaitGroup) (*http.Server, error) {
	e := &health.Endpoints{
		Live:    []health.Check{m.checkLoop, m.checkGRPC},
		Ready:   []health.Check{m.checkReady},
		Detail:  m.writeStatus,
		Timeout: m.opts.healthTimeout,
	}
	return health.Serve(ctx, m.opts.healthAddr, e.Handler(), wg)
}
