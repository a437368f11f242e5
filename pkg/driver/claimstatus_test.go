package driver

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2/ktesting"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// The API server here is client-go's fake clientset (NewClientset, whose
// tracker does server-side apply with the real merge rules); the cluster
// suite reads status.devices from a real one.

const otherDriver = "other.example.com"

// statusClaimForTest is an allocated claim with one device of this driver
// and one of another driver, whose status entry is already written.
func statusClaimForTest() *resourceapi.ResourceClaim {
	c := &resourceapi.ResourceClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "c1", UID: "uid-c1"}}
	c.Status.Allocation = &resourceapi.AllocationResult{Devices: resourceapi.DeviceAllocationResult{Results: []resourceapi.DeviceRequestAllocationResult{
		{Request: "disk", Driver: DriverName, Pool: "node-1", Device: "disk-a"},
		{Request: "gpu", Driver: otherDriver, Pool: "node-1", Device: "gpu-0"},
	}}}
	c.Status.Devices = []resourceapi.AllocatedDeviceStatus{{
		Driver: otherDriver, Pool: "node-1", Device: "gpu-0",
		Data: &runtime.RawExtension{Raw: []byte(`{"model":"x"}`)},
	}}
	return c
}

func preparedForTest() PreparedClaim {
	return PreparedClaim{Namespace: "default", Name: "c1", UID: "uid-c1", Devices: []PreparedDevice{{
		PlannedDevice: PlannedDevice{Request: "disk", Pool: "node-1", Device: "disk-a", Group: "disks", Nodes: []PlannedNode{{
			ContainerPath: "/dev/sdb", HostPath: "/dev/sdb", Type: "b", Major: 8, Minor: 16, Identity: "wwn:naa.5000c500a1b2c3d4",
		}}},
		CDIDeviceID: "x",
	}}}
}

func inventoryWithDiskA() *discovery.Inventory {
	d := diskForTest("disk-a", "/dev/sdb", 4<<30)
	d.Identity = "wwn:naa.5000c500a1b2c3d4"
	return inventoryForTest(groupForTest("disks", d))
}

type statusEnv struct {
	client  *fake.Clientset
	w       *claimStatusWriter
	patches atomic.Int64
}

func newStatusEnv(t *testing.T, prepared map[types.UID]PreparedClaim, objects ...runtime.Object) *statusEnv {
	e := &statusEnv{client: fake.NewClientset(objects...)}
	e.client.PrependReactor("patch", "resourceclaims", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "status" {
			e.patches.Add(1)
		}
		return false, nil, nil
	})
	lookup := func(uid types.UID) (PreparedClaim, bool) { pc, ok := prepared[uid]; return pc, ok }
	e.w = newClaimStatusWriter(e.client, lookup, inventoryWithDiskA, time.Millisecond, 10*time.Millisecond)
	return e
}

func (e *statusEnv) start(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { e.w.run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitForOwnEntry polls the claim until this driver's entry is there.
func waitForOwnEntry(t *testing.T, client *fake.Clientset) *resourceapi.ResourceClaim {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := client.ResourceV1().ResourceClaims("default").Get(context.Background(), "c1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range c.Status.Devices {
			if d.Driver == DriverName {
				return c
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no status.devices entry of %s: %+v", DriverName, c.Status.Devices)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestClaimStatusWritesOwnEntryOnly(t *testing.T) {
	e := newStatusEnv(t, map[types.UID]PreparedClaim{"uid-c1": preparedForTest()}, statusClaimForTest())
	e.w.enqueue(claimKey{Namespace: "default", Name: "c1", UID: "uid-c1"})
	e.start(t)
	c := waitForOwnEntry(t, e.client)

	if len(c.Status.Devices) != 2 {
		t.Fatalf("want the other driver's entry and ours, got %+v", c.Status.Devices)
	}
	for _, d := range c.Status.Devices {
		switch d.Driver {
		case otherDriver:
			if d.Device != "gpu-0" || string(d.Data.Raw) != `{"model":"x"}` {
				t.Errorf("the other driver's entry changed: %+v %s", d, d.Data.Raw)
			}
		case DriverName:
			if d.Pool != "node-1" || d.Device != "disk-a" {
				t.Errorf("our entry names %s/%s, want node-1/disk-a", d.Pool, d.Device)
			}
			var got v1alpha1.DeviceStatusData
			if err := json.Unmarshal(d.Data.Raw, &got); err != nil {
				t.Fatalf("data %s: %v", d.Data.Raw, err)
			}
			if got.APIVersion != v1alpha1.APIVersion || got.Kind != v1alpha1.DeviceStatusKind || got.Group != "disks" || got.SizeBytes != 4<<30 || got.Bundle {
				t.Errorf("data: %+v", got)
			}
			if len(got.Nodes) != 1 || got.Nodes[0] != (v1alpha1.DeviceStatusNode{Path: "/dev/sdb", HostPath: "/dev/sdb", Identity: "wwn:naa.5000c500a1b2c3d4", SizeBytes: 4 << 30}) {
				t.Errorf("nodes: %+v", got.Nodes)
			}
		}
	}
	// Server-side apply with the driver's name as field manager owns just
	// this driver's entry (the fake records no subresource).
	owns := ""
	for _, m := range c.ManagedFields {
		if m.Manager == DriverName && m.Operation == metav1.ManagedFieldsOperationApply {
			owns = string(m.FieldsV1.Raw)
		}
	}
	if !strings.Contains(owns, `disk-a`) || strings.Contains(owns, otherDriver) {
		t.Errorf("fields owned by %s: %s", DriverName, owns)
	}
}

func TestClaimStatusRetriesAfterAPIError(t *testing.T) {
	e := newStatusEnv(t, map[types.UID]PreparedClaim{"uid-c1": preparedForTest()}, statusClaimForTest())
	var failures atomic.Int64
	e.client.PrependReactor("patch", "resourceclaims", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "status" && failures.Add(1) <= 2 {
			return true, nil, apierrors.NewServiceUnavailable("etcd is busy")
		}
		return false, nil, nil
	})
	e.w.enqueue(claimKey{Namespace: "default", Name: "c1", UID: "uid-c1"})
	e.start(t)
	waitForOwnEntry(t, e.client)
	if n := failures.Load(); n != 3 {
		t.Errorf("want two failed writes and one that worked, got %d attempts", n)
	}
}

func TestClaimStatusCoalescesPerClaim(t *testing.T) {
	e := newStatusEnv(t, map[types.UID]PreparedClaim{"uid-c1": preparedForTest()}, statusClaimForTest())
	for range 5 {
		e.w.enqueue(claimKey{Namespace: "default", Name: "c1", UID: "uid-c1"})
	}
	e.start(t)
	waitForOwnEntry(t, e.client)
	time.Sleep(50 * time.Millisecond) // would-be further writes
	if n := e.patches.Load(); n != 1 {
		t.Errorf("five queued writes of one claim made %d API writes, want 1", n)
	}
}

func TestClaimStatusSkipsUnpreparedClaim(t *testing.T) {
	// Unprepared before the write ran: nothing to write.
	e := newStatusEnv(t, map[types.UID]PreparedClaim{}, statusClaimForTest())
	e.w.enqueue(claimKey{Namespace: "default", Name: "c1", UID: "uid-c1"})
	e.start(t)
	time.Sleep(100 * time.Millisecond)
	if n := e.patches.Load(); n != 0 {
		t.Errorf("unprepared claim: %d writes", n)
	}
}

func TestClaimStatusGivesUpOnReplacedClaim(t *testing.T) {
	// The write carries the prepared claim's UID. The API server rejects
	// an apply whose UID differs from the stored claim's (uid is immutable,
	// apimachinery api/validation/objectmeta.go); the fake does not check
	// it, so a reactor stands in for that rule. The writer must not retry.
	replaced := preparedForTest()
	replaced.UID = "uid-old"
	e := newStatusEnv(t, map[types.UID]PreparedClaim{"uid-old": replaced}, statusClaimForTest())
	var attempts atomic.Int64
	e.client.PrependReactor("patch", "resourceclaims", func(a k8stesting.Action) (bool, runtime.Object, error) {
		var obj struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := json.Unmarshal(a.(k8stesting.PatchAction).GetPatch(), &obj); err != nil {
			return true, nil, err
		}
		attempts.Add(1)
		if obj.Metadata.UID != "uid-c1" {
			return true, nil, apierrors.NewInvalid(schema.GroupKind{Group: "resource.k8s.io", Kind: "ResourceClaim"}, "c1", nil)
		}
		return false, nil, nil
	})
	e.w.enqueue(claimKey{Namespace: "default", Name: "c1", UID: "uid-old"})
	e.start(t)
	time.Sleep(100 * time.Millisecond)
	c, err := e.client.ResourceV1().ResourceClaims("default").Get(context.Background(), "c1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if attempts.Load() != 1 || len(c.Status.Devices) != 1 {
		t.Errorf("a replaced claim: %d attempts (want 1), status %+v", attempts.Load(), c.Status.Devices)
	}
}

func TestDeviceStatusBundleStaysUnderLimit(t *testing.T) {
	disks := manyDisksForTest(400)
	inv := inventoryForTest(bundleGroupForTest("all", "all-disks", disks...))
	d := PlannedDevice{Pool: "node-1", Device: "all-disks", Group: "all"}
	var total uint64
	for _, dev := range disks {
		d.Nodes = append(d.Nodes, PlannedNode{ContainerPath: dev.Path, HostPath: dev.Path, Type: "b", Major: dev.Major, Minor: dev.Minor})
		total += dev.Block.SizeBytes
	}
	s := DeviceStatus(&d, inv)
	raw, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > v1alpha1.DeviceStatusMaxBytes {
		t.Errorf("data is %d bytes, the API takes %d", len(raw), v1alpha1.DeviceStatusMaxBytes)
	}
	if !s.Bundle || s.SizeBytes != total || s.NodesOmitted == 0 || len(s.Nodes)+s.NodesOmitted != len(disks) {
		t.Errorf("bundle %v size %d (want %d), %d nodes + %d omitted (want %d)", s.Bundle, s.SizeBytes, total, len(s.Nodes), s.NodesOmitted, len(disks))
	}
}

// TestDriverPrepareDoesNotWaitForClaimStatus: an API server that does not
// answer the status write must not hold up NodePrepareResources.
func TestDriverPrepareDoesNotWaitForClaimStatus(t *testing.T) {
	inv := inventoryForTest(groupForTest("null", charDeviceForTest("null", "/dev/null", 1, 3)))
	claim := allocateForTest(t, "node-1", inv, []*resourceapi.DeviceClass{driverClassForTest("pdp")},
		claimForTest("c1", exactRequestForTest("dev", "pdp")))[0]
	client := newFakeClient(claim)
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	var blocked atomic.Int64
	client.PrependReactor("patch", "resourceclaims", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "status" {
			blocked.Add(1)
			<-release
		}
		return false, nil, nil
	})
	e := startDriver(t, client, inv, WithClaimStatusBackoff(time.Millisecond, 10*time.Millisecond))
	e.waitForDevices(t, "null")

	_, ctx := ktesting.NewTestContext(t)
	type answer struct {
		res map[types.UID]kubeletplugin.PrepareResult
		err error
	}
	answered := make(chan answer, 1)
	go func() {
		res, err := e.driver.PrepareResourceClaims(ctx, []*resourceapi.ResourceClaim{claim})
		answered <- answer{res, err}
	}()
	select {
	case a := <-answered:
		if a.err != nil || a.res[claim.UID].Err != nil {
			t.Fatalf("prepare: %v %v", a.err, a.res[claim.UID].Err)
		}
	case <-time.After(5 * time.Second):
		once.Do(func() { close(release) })
		t.Fatal("Prepare waits for the claim status write")
	}
	deadline := time.Now().Add(5 * time.Second)
	for blocked.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if blocked.Load() == 0 {
		t.Fatal("the status write never started")
	}
	once.Do(func() { close(release) })
	got := waitForOwnEntry(t, client)
	var data v1alpha1.DeviceStatusData
	for _, d := range got.Status.Devices {
		if d.Driver == DriverName {
			if err := json.Unmarshal(d.Data.Raw, &data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(data.Nodes) != 1 || data.Nodes[0].HostPath != "/dev/null" {
		t.Errorf("data: %+v", data)
	}
}

// A claim prepared by an earlier run of the plugin (whose status write a
// restart may have cut off) gets its status once the plugin runs again.
func TestDriverWritesStatusOfClaimsPreparedBefore(t *testing.T) {
	base := t.TempDir()
	cdiDir, dataDir, regDir := filepath.Join(base, "cdi"), filepath.Join(base, "data"), filepath.Join(base, "reg")
	_, ctx := ktesting.NewTestContext(t)
	dev := charDeviceForTest("null", "/dev/null", 1, 3)
	dev.Identity = "path:/dev/null"
	inv := inventoryForTest(groupForTest("chars", dev))
	foo := claimOnNode1("foo", "null")
	st, err := NewState(WithStateNodeName("node-1"), WithStateCDIDir(cdiDir), WithStateDataDir(dataDir),
		WithStateInventory(func() *discovery.Inventory { return inv }))
	if err != nil {
		t.Fatal(err)
	}
	mustPrepare(t, ctx, st, foo)

	client := newFakeClient(foo)
	ctx, cancel := context.WithCancel(ctx)
	d, err := Start(ctx, WithKubeClient(client), WithNodeName("node-1"), WithCDIDir(cdiDir),
		WithRegistrarDir(regDir), WithPluginDataDir(dataDir))
	if err != nil {
		cancel()
		t.Fatalf("Start: %v", err)
	}
	src := newChanSource()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, src) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	src.ch <- inv
	waitFor(t, "foo's status.devices entry", func() bool {
		c, err := client.ResourceV1().ResourceClaims("default").Get(context.Background(), "foo", metav1.GetOptions{})
		if err != nil || len(c.Status.Devices) != 1 || c.Status.Devices[0].Data == nil {
			return false
		}
		var data v1alpha1.DeviceStatusData
		return json.Unmarshal(c.Status.Devices[0].Data.Raw, &data) == nil && len(data.Nodes) == 1 && data.Nodes[0].Identity == "path:/dev/null"
	})
}

// The API server reports a missing per-driver permission (resourceclaims/driver)
// as an Invalid claim with a Forbidden field (AuthorizedForDeviceStatus in
// Kubernetes' pkg/registry/resource); a reactor stands in for it. That is
// retried, unlike an Invalid claim.
func TestClaimStatusRetriesWhenDriverPermissionMissing(t *testing.T) {
	e := newStatusEnv(t, map[types.UID]PreparedClaim{"uid-c1": preparedForTest()}, statusClaimForTest())
	var attempts atomic.Int64
	e.client.PrependReactor("patch", "resourceclaims", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if attempts.Add(1) <= 2 {
			return true, nil, apierrors.NewInvalid(schema.GroupKind{Group: "resource.k8s.io", Kind: "ResourceClaim"}, "c1", field.ErrorList{
				field.Forbidden(field.NewPath("status", "devices"), `changing status.devices requires resource="resourceclaims/driver"`)})
		}
		return false, nil, nil
	})
	e.w.enqueue(claimKey{Namespace: "default", Name: "c1", UID: "uid-c1"})
	e.start(t)
	waitForOwnEntry(t, e.client)
	if n := attempts.Load(); n != 3 {
		t.Errorf("want two refused writes and one that worked, got %d attempts", n)
	}
}
