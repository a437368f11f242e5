package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2/ktesting"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// chanSource is an InventorySource fed by the test. The real one is
// discovery.Watcher, tested in its own package against the kernel.
type chanSource struct{ ch chan *discovery.Inventory }

func newChanSource() *chanSource { return &chanSource{ch: make(chan *discovery.Inventory, 1)} }

func (s *chanSource) Run(ctx context.Context) error        { <-ctx.Done(); return nil }
func (s *chanSource) Updates() <-chan *discovery.Inventory { return s.ch }

// newFakeClient is the one fake in these tests: no API server runs in
// unit tests (the cluster suite has a real one). The reactor fills in
// GenerateName like the API server does, which the fake clientset omits.
func newFakeClient(objects ...runtime.Object) *fake.Clientset {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", UID: "node-1-uid"}}
	client := fake.NewClientset(append(objects, node)...)
	var n atomic.Int64
	client.PrependReactor("create", "resourceslices", func(action k8stesting.Action) (bool, runtime.Object, error) {
		slice := action.(k8stesting.CreateAction).GetObject().(*resourceapi.ResourceSlice)
		if slice.Name == "" && slice.GenerateName != "" {
			slice.Name = fmt.Sprintf("%s%05d", slice.GenerateName, n.Add(1))
		}
		return false, nil, nil
	})
	return client
}

type driverEnv struct {
	regDir, dataDir, cdiDir string
	client                  *fake.Clientset
	src                     *chanSource
	driver                  *Driver
	done                    chan error
	cancel                  context.CancelFunc
}

// startDriver starts the plugin with the real kubeletplugin helper serving
// its registration and DRA gRPC sockets in temporary directories.
func startDriver(t *testing.T, client *fake.Clientset, inv *discovery.Inventory, opts ...Option) *driverEnv {
	t.Helper()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	// Unix socket paths are limited to 108 bytes: keep them short.
	base, err := os.MkdirTemp("", "pdp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	e := &driverEnv{
		regDir: filepath.Join(base, "reg"), dataDir: filepath.Join(base, "data"), cdiDir: filepath.Join(base, "cdi"),
		client: client, src: newChanSource(), done: make(chan error, 1), cancel: cancel,
	}
	for _, d := range []string{e.regDir, e.dataDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	e.driver, err = Start(ctx, append([]Option{
		WithKubeClient(client), WithNodeName("node-1"),
		WithCDIDir(e.cdiDir), WithRegistrarDir(e.regDir), WithPluginDataDir(e.dataDir)}, opts...)...)
	if err != nil {
		cancel()
		t.Fatalf("Start: %v", err)
	}
	go func() { e.done <- e.driver.Run(ctx, e.src) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-e.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	if inv != nil {
		e.src.ch <- inv
	}
	return e
}

// waitForDevices polls the (fake) API server until the node's pool has
// exactly the given device names.
// waitForSlices waits until the devices are published and the pool has n
// slices: a counters-only slice is created by a call of its own.
func (e *driverEnv) waitForSlices(t *testing.T, n int, devices ...string) []resourceapi.ResourceSlice {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		stored := e.waitForDevices(t, devices...)
		if len(stored) == n || time.Now().After(deadline) {
			return stored
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (e *driverEnv) waitForDevices(t *testing.T, want ...string) []resourceapi.ResourceSlice {
	t.Helper()
	sort.Strings(want)
	deadline := time.Now().Add(10 * time.Second)
	var got []string
	for time.Now().Before(deadline) {
		list, err := e.client.ResourceV1().ResourceSlices().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got = got[:0]
		for _, s := range list.Items {
			for _, d := range s.Spec.Devices {
				got = append(got, d.Name)
			}
		}
		sort.Strings(got)
		if strings.Join(got, ",") == strings.Join(want, ",") {
			return list.Items
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("published devices %v, want %v", got, want)
	return nil
}

func dialUnix(t *testing.T, path string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestDriverPrepareOverGRPC(t *testing.T) {
	inv := inventoryForTest(groupForTest("null", charDeviceForTest("null", "/dev/null", 1, 3)))
	class := driverClassForTest("pdp")
	good := allocateForTest(t, "node-1", inv, []*resourceapi.DeviceClass{class},
		claimForTest("good", exactRequestForTest("dev", "pdp")))[0]
	bad := allocateForTest(t, "node-1", inventoryForTest(groupForTest("null", charDeviceForTest("null", "/dev/null", 1, 3))),
		[]*resourceapi.DeviceClass{class}, claimForTest("bad", exactRequestForTest("dev", "pdp")))[0]
	bad.Status.Allocation.Devices.Config = []resourceapi.DeviceAllocationConfiguration{{
		Source: resourceapi.AllocationConfigSourceClaim,
		DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
			Driver:     DriverName,
			Parameters: runtime.RawExtension{Raw: []byte(`{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig","permissions":"rx"}`)},
		}},
	}}
	e := startDriver(t, newFakeClient(good, bad), inv)
	e.waitForDevices(t, "null")

	// The kubelet finds the plugin through the registration socket.
	reg := registerapi.NewRegistrationClient(dialUnix(t, filepath.Join(e.regDir, DriverName+"-reg.sock")))
	ctx := context.Background()
	info, err := reg.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatalf("GetInfo: %v", err)
	}
	if info.Type != registerapi.DRAPlugin || info.Name != DriverName || !strings.HasPrefix(info.Endpoint, e.dataDir) {
		t.Fatalf("GetInfo: %+v", info)
	}
	if _, err := reg.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatalf("NotifyRegistrationStatus: %v", err)
	}

	dra := drapb.NewDRAPluginClient(dialUnix(t, info.Endpoint))
	claimRef := func(c *resourceapi.ResourceClaim) *drapb.Claim {
		return &drapb.Claim{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)}
	}
	resp, err := dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{claimRef(good), claimRef(bad)}})
	if err != nil {
		t.Fatalf("NodePrepareResources: %v", err)
	}
	g := resp.Claims[string(good.UID)]
	// The second CDI device mounts the device metadata file (devicemetadata_test.go).
	if g == nil || g.Error != "" || len(g.Devices) != 1 || len(g.Devices[0].CdiDeviceIds) != 2 {
		t.Fatalf("good claim: %+v", g)
	}
	if d := g.Devices[0]; d.PoolName != "node-1" || d.DeviceName != "null" || d.RequestNames[0] != "dev" {
		t.Errorf("device: %+v", d)
	}
	b := resp.Claims[string(bad.UID)]
	if b == nil || !strings.Contains(b.Error, "claim default/bad") || !strings.Contains(b.Error, "permissions") {
		t.Errorf("bad claim must fail naming the claim and the field, got %+v", b)
	}

	// What the runtime would do with the ID: load the spec and inject it.
	cache, err := cdi.NewCache(cdi.WithSpecDirs(e.cdiDir), cdi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if dev := cache.GetDevice(g.Devices[0].CdiDeviceIds[0]); dev == nil {
		t.Fatalf("CDI device %s not in %s", g.Devices[0].CdiDeviceIds[0], e.cdiDir)
	}

	// Preparing again returns the same result.
	again, err := dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{claimRef(good)}})
	if err != nil || again.Claims[string(good.UID)].Devices[0].CdiDeviceIds[0] != g.Devices[0].CdiDeviceIds[0] {
		t.Errorf("second prepare: %+v, %v", again, err)
	}

	un, err := dra.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: []*drapb.Claim{claimRef(good), {Namespace: "default", Name: "never", Uid: "uid-never"}}})
	if err != nil {
		t.Fatalf("NodeUnprepareResources: %v", err)
	}
	for uid, r := range un.Claims {
		if r.Error != "" {
			t.Errorf("unprepare %s: %s", uid, r.Error)
		}
	}
	if _, err := os.Stat(filepath.Join(e.cdiDir, CDISpecName(good.UID))); !os.IsNotExist(err) {
		t.Errorf("spec file still there after unprepare: %v", err)
	}
}

func TestDriverRepublishesOnInventoryChange(t *testing.T) {
	one := inventoryForTest(groupForTest("disks", diskForTest("sdb", "/dev/sdb", 1<<30)))
	e := startDriver(t, newFakeClient(), one)
	slices := e.waitForDevices(t, "sdb")
	s := slices[0]
	if s.Spec.Pool.Name != "node-1" || s.Spec.NodeName == nil || *s.Spec.NodeName != "node-1" || s.Spec.Driver != DriverName {
		t.Errorf("slice: %+v", s.Spec)
	}

	two := inventoryForTest(groupForTest("disks", diskForTest("sdb", "/dev/sdb", 1<<30), diskForTest("sdc", "/dev/sdc", 2<<30)))
	e.src.ch <- two
	e.waitForDevices(t, "sdb", "sdc")

	// 1,000 devices are split over several slices of one pool.
	e.src.ch <- inventoryForTest(groupForTest("many", manyDisksForTest(1000)...))
	var want []string
	for _, d := range manyDisksForTest(1000) {
		want = append(want, d.Name)
	}
	slices = e.waitForDevices(t, want...)
	if len(slices) < 8 {
		t.Errorf("1,000 devices in %d slices, want at least 8", len(slices))
	}
	for _, s := range slices {
		if s.Spec.Pool.ResourceSliceCount != int64(len(slices)) {
			t.Errorf("slice %s: pool slice count %d, want %d", s.Name, s.Spec.Pool.ResourceSliceCount, len(slices))
		}
	}

	e.src.ch <- inventoryForTest()
	e.waitForDevices(t)
}

func TestDriverHealthReports(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	dir := t.TempDir()
	sdb := diskForTest("sdb", "/dev/sdb", 1<<30)
	sdb.Major, sdb.Minor = 1, 3 // /dev/null's numbers: the CDI spec needs no real disk here
	sdb.Path = "/dev/null"
	d := &Driver{invSignal: make(chan struct{})}
	d.opts.nodeName = "node-1"
	state, err := NewState(WithStateNodeName("node-1"), WithStateCDIDir(filepath.Join(dir, "cdi")),
		WithStateDataDir(filepath.Join(dir, "data")), WithStateInventory(d.inventory))
	if err != nil {
		t.Fatal(err)
	}
	state.probe = func(*discovery.Device) error { return nil } // /dev/null is no block device
	d.state = state
	inv := inventoryForTest(groupForTest("disks", sdb, diskForTest("sdc", "/dev/sdc", 1<<30)))
	d.setInventory(inv)
	claim := allocateForTest(t, "node-1", inv, []*resourceapi.DeviceClass{driverClassForTest("pdp")},
		claimForTest("c", exactRequestForTest("r", "pdp", `device.attributes["power-dev-plugin.io"].path == "/dev/null"`)))[0]
	if res := state.Prepare(ctx, []*resourceapi.ResourceClaim{claim}); res[claim.UID].Err != nil {
		t.Fatal(res[claim.UID].Err)
	}

	reports := make(chan kubeletplugin.DeviceHealthReport)
	hctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- d.WatchHealthStatus(hctx, reports) }()
	health := func() map[string]kubeletplugin.HealthStatus {
		select {
		case r := <-reports:
			m := map[string]kubeletplugin.HealthStatus{}
			for _, dh := range r.Devices {
				if dh.PoolName != "node-1" || dh.HealthCheckTimeout <= 0 || dh.HealthCheckTimeout > 60*time.Second {
					t.Errorf("report entry %+v", dh)
				}
				m[dh.DeviceName] = dh.Health
			}
			return m
		case <-time.After(5 * time.Second):
			t.Fatal("no health report")
			return nil
		}
	}
	got := health()
	if got["sdb"] != kubeletplugin.HealthStatusHealthy || got["sdc"] != kubeletplugin.HealthStatusHealthy || len(got) != 2 {
		t.Errorf("initial report: %v", got)
	}
	// sdb vanishes while a claim holds it: Unhealthy, at once.
	d.setInventory(inventoryForTest(groupForTest("disks", diskForTest("sdc", "/dev/sdc", 1<<30))))
	got = health()
	if got["sdb"] != kubeletplugin.HealthStatusUnhealthy || got["sdc"] != kubeletplugin.HealthStatusHealthy {
		t.Errorf("after sdb vanished: %v", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("WatchHealthStatus: %v", err)
	}
}

// TestDriverStartReconciles: specs of claims the checkpoint does not hold are
// removed at start, before the kubelet can call.
func TestDriverStartReconciles(t *testing.T) {
	base, err := os.MkdirTemp("", "pdp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	cdiDir, dataDir := filepath.Join(base, "cdi"), filepath.Join(base, "data")
	_, ctx := ktesting.NewTestContext(t)
	// A first run leaves an (empty) checkpoint behind.
	st, err := NewState(WithStateNodeName("node-1"), WithStateCDIDir(cdiDir), WithStateDataDir(dataDir),
		WithStateInventory(func() *discovery.Inventory { return inventoryForTest() }))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(cdiDir, CDISpecName("uid-orphan"))
	spec := map[string]any{"cdiVersion": "0.5.0", "kind": CDIKind, "devices": []any{map[string]any{
		"name": "uid-orphan_null", "containerEdits": map[string]any{"deviceNodes": []any{map[string]any{"path": "/dev/null"}}}}}}
	b, _ := json.Marshal(spec)
	if err := os.WriteFile(orphan, b, 0o644); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(cdiDir, "example.com-gpu_abc.json")
	if err := os.WriteFile(foreign, []byte(`{"cdiVersion":"0.5.0","kind":"example.com/gpu","devices":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d, err := Start(ctx, WithKubeClient(newFakeClient()), WithNodeName("node-1"), WithCDIDir(cdiDir),
		WithRegistrarDir(filepath.Join(base, "reg")), WithPluginDataDir(dataDir))
	if err != nil {
		t.Fatal(err)
	}
	defer d.helper.Stop()
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("orphan spec of ours survived Start: %v", err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Errorf("another vendor's spec must be left alone: %v", err)
	}
}

// With hostNetwork the pod being replaced in a rolling update still holds the
// health port: the new plugin must start anyway and take the port once free.
func TestDriverHealthEndpointWaitsForPort(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := busy.Addr().String()
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	base, err := os.MkdirTemp("", "pdp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	d, err := Start(ctx, WithKubeClient(newFakeClient()), WithNodeName("node-1"), WithCDIDir(filepath.Join(base, "cdi")),
		WithRegistrarDir(filepath.Join(base, "reg")), WithPluginDataDir(filepath.Join(base, "data")), WithHealthAddress(addr))
	if err != nil {
		t.Fatal(err)
	}
	src := newChanSource()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, src) }()
	src.ch <- inventoryForTest(groupForTest("null", charDeviceForTest("null", "/dev/null", 1, 3)))
	select {
	case err := <-done:
		t.Fatalf("Run ended while the health port was busy: %v", err)
	case <-time.After(500 * time.Millisecond):
	}
	busy.Close()
	// Ready also needs the kubelet's confirmation of the registration.
	reg := registerapi.NewRegistrationClient(dialUnix(t, filepath.Join(base, "reg", DriverName+"-reg.sock")))
	if _, err := reg.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatalf("NotifyRegistrationStatus: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("health endpoint never came up on %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// The overlap counters reach the API server in a slice of their own.
func TestDriverPublishesOverlapCounters(t *testing.T) {
	e := startDriver(t, newFakeClient(), inventoryForTest(groupForTest("disks", diskWithPartitionsForTest("sdd", 3, 2)...)))
	stored := e.waitForSlices(t, 2, "sdd", "sdd1", "sdd2")
	var sets []string
	for _, s := range stored {
		for _, cs := range s.Spec.SharedCounters {
			sets = append(sets, cs.Name)
		}
	}
	if len(stored) != 2 || !slices.Equal(sets, []string{"sdd"}) {
		t.Errorf("%d slices, counter sets %v; want 2 slices and set sdd", len(stored), sets)
	}
}

// An API server of 1.34 or 1.35 (DRAPartitionableDevices off) drops the
// counters: the counters slice is stored empty, the devices without what
// they consume, the driver says once what that means and keeps running.
func TestDriverCountersDroppedByOldAPIServer(t *testing.T) {
	client := newFakeClient()
	drop := func(action k8stesting.Action) (bool, runtime.Object, error) {
		s := action.(interface{ GetObject() runtime.Object }).GetObject().(*resourceapi.ResourceSlice)
		s.Spec.SharedCounters = nil
		for i := range s.Spec.Devices {
			s.Spec.Devices[i].ConsumesCounters = nil
		}
		return false, nil, nil
	}
	client.PrependReactor("create", "resourceslices", drop)
	client.PrependReactor("update", "resourceslices", drop)
	e := startDriver(t, client, inventoryForTest(groupForTest("disks", diskWithPartitionsForTest("sdd", 3, 2)...)))
	stored := e.waitForSlices(t, 2, "sdd", "sdd1", "sdd2")
	empty := 0
	for _, s := range stored {
		if s.Spec.Pool.ResourceSliceCount != 2 || len(s.Spec.SharedCounters) > 0 {
			t.Errorf("slice %s: %+v", s.Name, s.Spec)
		}
		if len(s.Spec.Devices) == 0 {
			empty++
		}
	}
	if len(stored) != 2 || empty != 1 {
		t.Errorf("%d slices, %d empty; want 2 and 1", len(stored), empty)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !e.driver.countersDropped.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the driver did not notice the dropped counters")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-e.done:
		t.Fatalf("the driver stopped: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
}

// Devices left out for the API's counter limits are logged when that
// changes, not on every publication.
func TestDriverLogsWithheldOncePerChange(t *testing.T) {
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	d := &Driver{}
	w := []discovery.Exclusion{{Path: "/dev/sdc", Reason: "not published in DRA mode: ..."}}
	d.logWithheld(logger, w)
	d.logWithheld(logger, w)
	d.logWithheld(logger, nil)
	d.logWithheld(logger, nil)
	out := logger.GetSink().(ktesting.Underlier).GetBuffer().String()
	if n := strings.Count(out, "Not publishing a device path=\"/dev/sdc\""); n != 1 {
		t.Errorf("withheld logged %d times:\n%s", n, out)
	}
	if n := strings.Count(out, "Publishing a device that was withheld before path=\"/dev/sdc\""); n != 1 {
		t.Errorf("published again logged %d times:\n%s", n, out)
	}
}
