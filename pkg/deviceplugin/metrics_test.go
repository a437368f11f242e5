package deviceplugin

import (
	"strings"
	"testing"
	"time"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics/metricstest"
)

// The metrics endpoint of device plugins served to the test kubelet over
// real sockets: every device-plugin family is there, and the counters move
// after registrations, an Allocate, a refused Allocate and a dropped
// connection.
func TestDevicePluginMetrics(t *testing.T) {
	m := metrics.New()
	url := metricstest.Serve(t, m)
	e := newEnv(t, WithMetrics(m))
	e.src.send(t, threeGroups())
	old := e.plugin(t, "power-dev-plugin/dev")
	waitIDs(t, old, "sdb", "sdc")
	ctx := waitCtx(t, 10*time.Second)
	if _, err := old.Allocate(ctx, []string{"sdb"}); err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	if _, err := old.Allocate(ctx, []string{"no-such-id"}); err == nil {
		t.Fatal("Allocate of an unknown ID succeeded")
	}
	e.kubelet.Disconnect("power-dev-plugin/dev")
	e.plugin(t, "power-dev-plugin/dev", old)

	fams := metricstest.Scrape(t, url)
	for _, name := range m.Names() {
		if strings.HasPrefix(name, "power_dev_plugin_dra_") || strings.HasPrefix(name, "rest_client_") {
			continue // the DRA driver's and client-go's: their own tests
		}
		if fams[name] == nil {
			t.Errorf("family %s missing", name)
		}
	}
	checks := []struct {
		name   string
		labels map[string]string
		min    float64
	}{
		{"power_dev_plugin_devices_published", metricstest.L("mode", "deviceplugin", "group", "dev", "type", "block"), 2},
		{"power_dev_plugin_deviceplugin_registrations_total", metricstest.L("group", "dev", "result", "ok"), 2},
		{"power_dev_plugin_deviceplugin_kubelet_reconnects_total", metricstest.L("group", "dev", "cause", "stream_lost"), 1},
		{"power_dev_plugin_deviceplugin_list_and_watch_updates_total", metricstest.L("group", "dev"), 2},
		{"power_dev_plugin_deviceplugin_allocate_requests_total", metricstest.L("group", "dev", "result", "ok"), 1},
		{"power_dev_plugin_deviceplugin_allocate_requests_total", metricstest.L("group", "dev", "result", "invalid"), 1},
		{"power_dev_plugin_deviceplugin_allocate_duration_seconds", metricstest.L("result", "ok"), 1},
	}
	for _, c := range checks {
		if v, _ := fams.Value(c.name, c.labels); v < c.min {
			t.Errorf("%s%v = %v, want >= %v", c.name, c.labels, v, c.min)
		}
	}
	if v, _ := fams.Value("power_dev_plugin_deviceplugin_allocate_requests_total", metricstest.L("group", "dev", "result", "ok")); v != 1 {
		t.Errorf("Allocate ok = %v, want exactly 1", v)
	}
}
