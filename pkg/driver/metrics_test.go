package driver

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics/metricstest"
)

// The metrics endpoint of a driver served over the real kubelet plugin
// sockets: every DRA and discovery family is there, and the counters move
// after a prepare, a refused prepare (the device is held) and an unprepare.
func TestDriverMetricsAfterPrepare(t *testing.T) {
	inv := inventoryForTest(groupForTest("null", charDeviceForTest("null", "/dev/null", 1, 3)))
	class := driverClassForTest("pdp")
	first := allocateForTest(t, "node-1", inv, []*resourceapi.DeviceClass{class}, claimForTest("first", exactRequestForTest("dev", "pdp")))[0]
	second := allocateForTest(t, "node-1", inv, []*resourceapi.DeviceClass{class}, claimForTest("second", exactRequestForTest("dev", "pdp")))[0]
	m := metrics.New()
	url := metricstest.Serve(t, m)
	e := startDriver(t, newFakeClient(first, second), inv, WithMetrics(m), WithReleaseWait(0))
	e.waitForDevices(t, "null")

	before := metricstest.Scrape(t, url)
	for _, name := range m.Names() {
		if strings.HasPrefix(name, "power_dev_plugin_deviceplugin_") || strings.HasPrefix(name, "rest_client_") {
			continue // the device plugin's and client-go's: their own tests
		}
		if before[name] == nil {
			t.Errorf("family %s missing", name)
		}
	}
	if v, _ := before.Value("power_dev_plugin_devices_published", metricstest.L("mode", "dra", "group", "null", "type", "char")); v != 1 {
		t.Errorf("devices_published{mode=dra,group=null,type=char} = %v, want 1", v)
	}
	if v, _ := before.Value("power_dev_plugin_dra_slice_publications_total", metricstest.L("result", "ok")); v < 1 {
		t.Errorf("slice publications ok = %v, want >= 1", v)
	}

	reg := registerapi.NewRegistrationClient(dialUnix(t, filepath.Join(e.regDir, DriverName+"-reg.sock")))
	ctx := context.Background()
	info, err := reg.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatalf("GetInfo: %v", err)
	}
	dra := drapb.NewDRAPluginClient(dialUnix(t, info.Endpoint))
	ref := func(c *resourceapi.ResourceClaim) *drapb.Claim {
		return &drapb.Claim{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)}
	}
	if _, err := dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(first)}}); err != nil {
		t.Fatal(err)
	}
	resp, err := dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{ref(second)}})
	if err != nil || resp.Claims[string(second.UID)].GetError() == "" {
		t.Fatalf("second claim of the same device: %+v, %v; want a refusal", resp, err)
	}
	after := metricstest.Scrape(t, url)
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"power_dev_plugin_dra_requests_total", metricstest.L("operation", "prepare", "result", "ok"), 1},
		{"power_dev_plugin_dra_requests_total", metricstest.L("operation", "prepare", "result", "error"), 1},
		{"power_dev_plugin_dra_request_duration_seconds", metricstest.L("operation", "prepare"), 2},
		{"power_dev_plugin_dra_claims_prepared", nil, 1},
		{"power_dev_plugin_dra_exclusivity_conflicts_total", nil, 1},
	}
	for _, c := range checks {
		if v, _ := after.Value(c.name, c.labels); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	w0, _ := before.Value("power_dev_plugin_dra_checkpoint_writes_total", metricstest.L("result", "ok"))
	if w1, _ := after.Value("power_dev_plugin_dra_checkpoint_writes_total", metricstest.L("result", "ok")); w1 <= w0 {
		t.Errorf("checkpoint writes did not move with a prepare: %v -> %v", w0, w1)
	}

	if _, err := dra.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{ref(first)}}); err != nil {
		t.Fatal(err)
	}
	done := metricstest.Scrape(t, url)
	if v, _ := done.Value("power_dev_plugin_dra_requests_total", metricstest.L("operation", "unprepare", "result", "ok")); v != 1 {
		t.Errorf("unprepare ok = %v, want 1", v)
	}
	if v, _ := done.Value("power_dev_plugin_dra_claims_prepared", nil); v != 0 {
		t.Errorf("claims prepared after the unprepare = %v, want 0", v)
	}
}
