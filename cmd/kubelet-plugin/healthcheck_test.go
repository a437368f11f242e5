package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// The exec probes' command says why the plugin is not ready: here the
// kubelet went away, so no group is registered; liveness stays ok, since a
// restart would not bring the kubelet back.
func TestHealthcheckPrintsTheReason(t *testing.T) {
	clearPluginEnv(t)
	tr := hostTree(t)
	r := startPluginCmd(t, "--mode", "device-plugin", "--host-root", tr.Root)
	r.waitPlugin(t, "power-dev-plugin/dev")
	var out bytes.Buffer
	eventuallyHealthcheck(t, r.health, true, func(err error, out string) bool { return err == nil && strings.HasPrefix(out, "ok\n") })

	r.kubelet.Stop()
	eventuallyHealthcheck(t, r.health, true, func(err error, _ string) bool {
		return err != nil && strings.HasPrefix(err.Error(), "/readyz: not ready\n") &&
			strings.Contains(err.Error(), "\n- power-dev-plugin/dev: not registered with the kubelet: register power-dev-plugin/dev with the kubelet at "+r.dir+"/kubelet.sock")
	})
	out.Reset()
	if err := runHealthcheck(context.Background(), []string{r.health}, &out); err != nil || !strings.HasPrefix(out.String(), "ok\n") {
		t.Errorf("healthcheck (liveness) without the kubelet: %v %q", err, out.String())
	}

	// No plugin listening: say what that means.
	err := runHealthcheck(context.Background(), []string{freeAddr(t)}, &out)
	if err == nil || !strings.Contains(err.Error(), "the plugin is not running, or has not started its health endpoint yet") {
		t.Errorf("healthcheck of nothing: %v", err)
	}
}

// eventuallyHealthcheck runs the healthcheck command until ok accepts its
// outcome.
func eventuallyHealthcheck(t *testing.T, addr string, ready bool, ok func(err error, out string) bool) {
	t.Helper()
	args := []string{addr}
	if ready {
		args = append([]string{"--ready"}, args...)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		var out bytes.Buffer
		err := runHealthcheck(context.Background(), args, &out)
		if ok(err, out.String()) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthcheck %v: %v %q", args, err, out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
