package metrics_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics/metricstest"
)

// The served endpoint has the Go and process collectors, the series known
// in advance, and client-go's request metrics once a real client made a
// request (to an HTTP server standing in for the API server).
func TestServeScrape(t *testing.T) {
	m := metrics.New()
	url := metricstest.Serve(t, m)

	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`, http.StatusNotFound)
	}))
	defer api.Close()
	client, err := kubernetes.NewForConfig(&rest.Config{Host: api.URL})
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.CoreV1().Nodes().Get(context.Background(), "node-1", metav1.GetOptions{})
	if err == nil {
		t.Fatal("the stand-in API server answered 404; the client saw no error")
	}

	fams := metricstest.Scrape(t, url)
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_cpu_seconds_total", "process_open_fds"} {
		if fams[name] == nil {
			t.Errorf("family %s missing", name)
		}
	}
	if v, ok := fams.Value("rest_client_requests_total", metricstest.L("code", "404", "method", "GET")); !ok || v < 1 {
		t.Errorf("rest_client_requests_total{code=404,method=GET} = %v (found %v), want >= 1", v, ok)
	}
	if v, _ := fams.Value("rest_client_request_duration_seconds", metricstest.L("verb", "GET")); v < 1 {
		t.Errorf("rest_client_request_duration_seconds{verb=GET} count = %v, want >= 1", v)
	}
	// Known in advance, exported as 0 before anything happened.
	for _, name := range []string{
		"power_dev_plugin_dra_requests_total", "power_dev_plugin_dra_request_duration_seconds",
		"power_dev_plugin_dra_claims_prepared", "power_dev_plugin_dra_exclusivity_conflicts_total",
		"power_dev_plugin_dra_exclusivity_waits_total", "power_dev_plugin_dra_checkpoint_writes_total",
		"power_dev_plugin_dra_checkpoint_recoveries_total", "power_dev_plugin_dra_stale_claims_collected_total",
		"power_dev_plugin_dra_slice_publications_total", "power_dev_plugin_dra_background_errors_total",
		"power_dev_plugin_discovery_scans_total", "power_dev_plugin_discovery_scan_duration_seconds",
	} {
		if fams[name] == nil {
			t.Errorf("family %s missing before any event", name)
		}
	}
	// Every family served is one Names lists.
	known := map[string]bool{}
	for _, n := range m.Names() {
		known[n] = true
	}
	for name := range fams {
		if !known[name] {
			t.Errorf("served family %s is not in Names()", name)
		}
	}
}

// Published and excluded devices per mode: the excluded ones by reason
// class only, so the label stays bounded whatever the reasons say, and a
// mode's old series go when a new inventory comes.
func TestObserveInventory(t *testing.T) {
	m := metrics.New()
	url := metricstest.Serve(t, m)
	inv := &discovery.Inventory{
		Groups: []discovery.Group{{Name: "disks", Devices: []discovery.Device{
			{Path: "/dev/sdb", Type: v1alpha1.DeviceTypeBlock}, {Path: "/dev/sdc", Type: v1alpha1.DeviceTypeBlock},
		}}, {Name: "fuse", Devices: []discovery.Device{{Path: "/dev/fuse", Type: v1alpha1.DeviceTypeChar}}}},
		Excluded: []discovery.Exclusion{
			{Path: "/dev/sda", Reason: "in use: mounted at /"},
			{Path: "/dev/sdd", Reason: "in use: swap"},
			{Path: "/dev/sde", Reason: "a reason nobody classified for /dev/sde"},
		},
	}
	withheld := []discovery.Exclusion{{Path: "/dev/sdc", Reason: "not published in DRA mode: sdc shares blocks"}}
	m.ObserveInventory(metrics.ModeDRA, inv, withheld)
	m.ObserveInventory(metrics.ModeDevicePlugin, inv, nil)
	fams := metricstest.Scrape(t, url)
	want := []struct {
		name   string
		labels map[string]string
		v      float64
	}{
		{"power_dev_plugin_devices_published", metricstest.L("mode", "dra", "group", "disks", "type", "block"), 1},
		{"power_dev_plugin_devices_published", metricstest.L("mode", "deviceplugin", "group", "disks", "type", "block"), 2},
		{"power_dev_plugin_devices_published", metricstest.L("mode", "dra", "group", "fuse", "type", "char"), 1},
		{"power_dev_plugin_devices_published", metricstest.L("mode", "dra", "group", "fuse", "type", "block"), 0},
		{"power_dev_plugin_devices_excluded", metricstest.L("mode", "dra", "reason", "in_use"), 2},
		{"power_dev_plugin_devices_excluded", metricstest.L("mode", "dra", "reason", "dra_limit"), 1},
		{"power_dev_plugin_devices_excluded", metricstest.L("mode", "deviceplugin", "reason", "dra_limit"), 0},
		{"power_dev_plugin_devices_excluded", metricstest.L("mode", "dra", "reason", "other"), 1},
	}
	for _, w := range want {
		if v, ok := fams.Value(w.name, w.labels); !ok || v != w.v {
			t.Errorf("%s%v = %v (found %v), want %v", w.name, w.labels, v, ok, w.v)
		}
	}
	for _, s := range fams["power_dev_plugin_devices_excluded"].GetMetric() {
		for _, l := range s.GetLabel() {
			if strings.Contains(l.GetValue(), "/dev/") {
				t.Errorf("a label names a device: %v", s.GetLabel())
			}
		}
	}

	// A group that is gone leaves no series behind.
	m.ObserveInventory(metrics.ModeDRA, &discovery.Inventory{Groups: []discovery.Group{{Name: "fuse"}}}, nil)
	fams = metricstest.Scrape(t, url)
	if _, ok := fams.Value("power_dev_plugin_devices_published", metricstest.L("mode", "dra", "group", "disks")); ok {
		t.Error("series of the removed group disks still exported")
	}
	if v, _ := fams.Value("power_dev_plugin_devices_published", metricstest.L("mode", "deviceplugin", "group", "disks")); v != 2 {
		t.Errorf("the other mode's series changed: %v", v)
	}
}

// A nil *Metrics (metrics off) is safe to call.
func TestNilMetrics(t *testing.T) {
	var m *metrics.Metrics
	m.ObserveInventory(metrics.ModeDRA, &discovery.Inventory{}, nil)
	m.ObserveScan("initial", time.Second, errors.New("x"))
	m.ObserveRequest(metrics.OpPrepare, 1, 1, time.Second)
	m.SetClaimsPrepared(1)
	m.ExclusivityConflict()
	m.ExclusivityWait(true)
	m.CheckpointWrite(nil)
	m.CheckpointRecovered()
	m.StaleClaimCollected()
	m.SlicePublication(nil)
	m.BackgroundError()
	m.Registration("dev", nil)
	m.Reconnect("dev", metrics.CauseStreamLost)
	m.ListAndWatchUpdate("dev")
	m.Allocate("dev", metrics.ResultOK, time.Second)
}
