package deviceplugin

import (
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

func healthAddrForTest(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// withHealthLimits shortens the stuck-loop limit and the checks' timeout.
func withHealthLimits(stuckAfter, timeout time.Duration) Option {
	return func(o *options) {
		if stuckAfter > 0 {
			o.stuckAfter = stuckAfter
		}
		if timeout > 0 {
			o.healthTimeout = timeout
		}
	}
}

func getHealth(addr, path string) (int, string, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitHealth polls path until it answers code with a body containing every
// one of want, and returns that body.
func waitHealth(t *testing.T, addr, path string, code int, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, body, err := getHealth(addr, path)
		ok := err == nil && got == code
		for _, w := range want {
			ok = ok && strings.Contains(body, w)
		}
		if ok {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d %q (%v); want %d with %q", path, got, body, err, code, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Readiness names each group whose plugin is not registered; the kubelet
// being away does not fail liveness (the plugin registers again by itself).
func TestHealthDevicePluginReadiness(t *testing.T) {
	addr := healthAddrForTest(t)
	e := newEnv(t, WithHealthAddress(addr))
	waitHealth(t, addr, "/readyz", http.StatusServiceUnavailable, "not ready\n",
		"- devices not served yet: waiting for the first inventory from device discovery")
	waitHealth(t, addr, "/healthz", http.StatusOK, "ok\n")

	e.src.send(t, threeGroups())
	waitHealth(t, addr, "/readyz", http.StatusOK, "ok\n", "power-dev-plugin/dev: 2 IDs, serving=true, registered")

	e.kubelet.Stop()
	body := waitHealth(t, addr, "/readyz", http.StatusServiceUnavailable, "not ready\n",
		"- power-dev-plugin/db2: not registered with the kubelet: ",
		"- power-dev-plugin/dev: not registered with the kubelet: register power-dev-plugin/dev with the kubelet at "+e.dir+"/kubelet.sock",
		"- power-dev-plugin/nx-gzip: not registered with the kubelet: ")
	if strings.Contains(body, "devices not served") {
		t.Errorf("a reason that no longer holds:\n%s", body)
	}
	waitHealth(t, addr, "/healthz", http.StatusOK, "ok\n")
}

// Run's loop stuck (a NUMA lookup in /sys that does not return) fails
// liveness once it is past the limit; freed, the plugin is live again.
func TestHealthDevicePluginStuckLoop(t *testing.T) {
	addr := healthAddrForTest(t)
	entered, release := make(chan struct{}), make(chan struct{})
	var once, freed sync.Once
	free := func() { freed.Do(func() { close(release) }) }
	numa := func(*discovery.Device) []int64 {
		once.Do(func() { close(entered) })
		<-release
		return nil
	}
	e := newEnv(t, WithHealthAddress(addr), WithNUMA(numa), withHealthLimits(time.Second, 0))
	t.Cleanup(free) // before the manager stops
	e.src.send(t, threeGroups())
	<-entered
	if code, body, err := getHealth(addr, "/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("a loop busy within the limit is not stuck: %d %q %v", code, body, err)
	}
	waitHealth(t, addr, "/healthz", http.StatusServiceUnavailable, "not live\n",
		"- the inventory loop has been applying a new inventory for ", "longer than any wait the plugin does on purpose (1s): the plugin is stuck",
		e.cdiDir)
	free()
	waitHealth(t, addr, "/healthz", http.StatusOK, "ok\n")
	waitHealth(t, addr, "/readyz", http.StatusOK, "ok\n")
}

// A group's gRPC server that does not answer (its device-set lock held, as
// a deadlock would) fails liveness, naming the resource; the other groups
// and the health endpoint itself are not held up.
func TestHealthDevicePluginGRPCStuck(t *testing.T) {
	addr := healthAddrForTest(t)
	e := newEnv(t, WithHealthAddress(addr), withHealthLimits(0, 500*time.Millisecond))
	e.src.send(t, threeGroups())
	waitHealth(t, addr, "/readyz", http.StatusOK, "ok\n")

	e.m.mu.RLock()
	p := e.m.plugins["dev"].plugin
	e.m.mu.RUnlock()
	socket := statusOf(e.m, "dev").Socket
	p.mu.Lock()
	body := waitHealth(t, addr, "/healthz", http.StatusServiceUnavailable, "not live\n",
		"- power-dev-plugin/dev: the gRPC server on "+socket+" does not answer: ", "DeadlineExceeded", "the kubelet cannot allocate through it")
	if strings.Contains(body, "- power-dev-plugin/db2") || strings.Contains(body, "did not finish") {
		t.Errorf("only the dev group is stuck, and the checks end in time:\n%s", body)
	}
	p.mu.Unlock()
	waitHealth(t, addr, "/healthz", http.StatusOK, "ok\n")
}
