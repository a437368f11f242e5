package driver

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// taintsOf maps device name to its taints in res.
func taintsOf(res resourceslice.DriverResources) map[string][]resourceapi.DeviceTaint {
	out := map[string][]resourceapi.DeviceTaint{}
	for _, p := range res.Pools {
		for _, s := range p.Slices {
			for _, d := range s.Devices {
				out[d.Name] = d.Taints
			}
		}
	}
	return out
}

func buildHeldForTest(t *testing.T, inv *discovery.Inventory, held HeldDevices) resourceslice.DriverResources {
	t.Helper()
	res, _, err := BuildResourcesHeld("node-1", inv, held)
	if err != nil {
		t.Fatalf("BuildResourcesHeld: %v", err)
	}
	if err := ValidateResources(res); err != nil {
		t.Fatalf("ValidateResources: %v", err)
	}
	return res
}

// TestTaintsRecordedDeviceIsUniform: a gone device rebuilt from the
// checkpoint carries every attribute a published device has, so that no
// selector fails on it.
func TestTaintsRecordedDeviceIsUniform(t *testing.T) {
	published := DeviceAttributes(&discovery.Device{Group: "disks"})
	for _, rec := range []PlannedDevice{
		{Device: "sdb", Group: "disks", Nodes: []PlannedNode{{HostPath: "/dev/sdb", Type: "b", Major: 8, Minor: 16}}},
		{Device: "fuse", Group: "fuse", Nodes: []PlannedNode{{HostPath: "/dev/fuse", Type: "c", Major: 10, Minor: 229}}},
		{Device: "db2", Group: "db2", Nodes: []PlannedNode{{HostPath: "/dev/dm-0", Type: "b"}, {HostPath: "/dev/dm-1", Type: "b"}}},
	} {
		d := recordedDevice(&rec)
		want := published
		if len(rec.Nodes) > 1 {
			want = BundleAttributes(&discovery.Group{Name: rec.Group})
		}
		if got, w := attrKeys(d.Attributes), attrKeys(want); got != w {
			t.Errorf("%s: attributes %s, want %s", rec.Device, got, w)
		}
		if g := d.Attributes[AttrGroup].StringValue; g == nil || *g != rec.Group {
			t.Errorf("%s: group %v", rec.Device, g)
		}
	}
}

func attrKeys(a map[resourceapi.QualifiedName]resourceapi.DeviceAttribute) string {
	var keys []string
	for k := range a {
		keys = append(keys, string(k))
	}
	slices.Sort(keys)
	return strings.Join(keys, ",")
}

func TestTaintsHeldDevices(t *testing.T) {
	both := inventoryForTest(groupForTest("disks", diskForTest("sda", "/dev/sda", 1<<30), diskForTest("sdb", "/dev/sdb", 1<<30)))
	last := untainted(buildHeldForTest(t, both, HeldDevices{}))
	onlyA := inventoryForTest(groupForTest("disks", diskForTest("sda", "/dev/sda", 1<<30)))

	noExecute := inventoryForTest(groupForTest("disks", diskForTest("sda", "/dev/sda", 1<<30)))
	noExecute.Groups[0].UnhealthyTaintEffect = v1alpha1.TaintNoExecute

	for _, tc := range []struct {
		name string
		inv  *discovery.Inventory
		held HeldDevices
		want map[string]string // device -> "value/effect", "" untainted; absent devices are not published
	}{
		{"nothing held", both, HeldDevices{Last: last}, map[string]string{"sda": "", "sdb": ""}},
		{"held and healthy", both, HeldDevices{Names: []string{"sdb"}, Last: last}, map[string]string{"sda": "", "sdb": ""}},
		{"held device gone stays, tainted", onlyA, HeldDevices{Names: []string{"sdb"}, Last: last},
			map[string]string{"sda": "", "sdb": "gone/NoSchedule"}},
		{"gone device released", onlyA, HeldDevices{Last: last}, map[string]string{"sda": ""}},
		{"gone device neither published nor recorded", onlyA, HeldDevices{Names: []string{"sdb"}}, map[string]string{"sda": ""}},
		{"gone device never published by this process (restart): from the checkpoint", onlyA,
			HeldDevices{Names: []string{"sdb"}, Recorded: map[string]PlannedDevice{"sdb": {Device: "sdb", Group: "disks", Pool: "node-1",
				Nodes: []PlannedNode{{HostPath: "/dev/sdb", Type: "b", Major: 8, Minor: 16, Identity: "wwn:x"}}}}},
			map[string]string{"sda": "", "sdb": "gone/NoSchedule"}},
		{"held and not preparable", both, HeldDevices{Names: []string{"sda"}, Problems: map[string]string{"sda": "changed"}, Last: last},
			map[string]string{"sda": "unpreparable/NoSchedule", "sdb": ""}},
		{"problem on a device no claim holds", both, HeldDevices{Problems: map[string]string{"sda": "changed"}, Last: last},
			map[string]string{"sda": "", "sdb": ""}},
		{"group chooses NoExecute", noExecute, HeldDevices{Names: []string{"sda", "sdb"}, Problems: map[string]string{"sda": "changed"}, Last: last},
			// sdb's group is "disks" too (its last attributes say so).
			map[string]string{"sda": "unpreparable/NoExecute", "sdb": "gone/NoExecute"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := taintsOf(buildHeldForTest(t, tc.inv, tc.held))
			if len(got) != len(tc.want) {
				t.Errorf("published %v, want %v", got, tc.want)
			}
			for name, want := range tc.want {
				taints, ok := got[name]
				if !ok {
					t.Errorf("%s not published", name)
					continue
				}
				var have string
				if len(taints) > 0 {
					if len(taints) != 1 || taints[0].Key != TaintKey {
						t.Errorf("%s: taints %+v", name, taints)
					}
					have = taints[0].Value + "/" + string(taints[0].Effect)
				}
				if have != want {
					t.Errorf("%s: taint %q, want %q", name, have, want)
				}
			}
		})
	}
}

// TestTaintsSliceLimit: a tainted device lowers its slice's limit to 64, so
// it goes into a slice of its own kind; the validator rejects more.
func TestTaintsSliceLimit(t *testing.T) {
	disks := manyDisksForTest(200)
	inv := inventoryForTest(groupForTest("many", disks...))
	last := untainted(buildHeldForTest(t, inv, HeldDevices{}))
	var names []string
	problems := map[string]string{}
	for _, d := range disks[:100] {
		names = append(names, d.Name)
		problems[d.Name] = "changed"
	}
	res := buildHeldForTest(t, inv, HeldDevices{Names: names, Problems: problems, Last: last})
	tainted := 0
	for _, s := range res.Pools["node-1"].Slices {
		n := 0
		for _, d := range s.Devices {
			if len(d.Taints) > 0 {
				n++
			}
		}
		if n > 0 && len(s.Devices) > resourceapi.ResourceSliceMaxDevicesWithAdvancedFeatures {
			t.Errorf("a slice with %d tainted devices holds %d devices", n, len(s.Devices))
		}
		tainted += n
	}
	if tainted != 100 {
		t.Errorf("%d tainted devices, want 100", tainted)
	}

	// 65 tainted devices in one slice: rejected before publication.
	var sl resourceslice.Slice
	for _, s := range res.Pools["node-1"].Slices {
		for _, d := range s.Devices {
			if len(d.Taints) > 0 {
				sl.Devices = append(sl.Devices, d)
			}
		}
	}
	if len(sl.Devices) < 65 {
		t.Fatalf("%d tainted devices, want 100", len(sl.Devices))
	}
	sl.Devices = sl.Devices[:65]
	err := ValidateResources(resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{"node-1": {Slices: []resourceslice.Slice{sl}}}})
	if err == nil || !strings.Contains(err.Error(), "64") {
		t.Errorf("65 tainted devices in a slice: %v", err)
	}
}

func TestValidateTaints(t *testing.T) {
	for _, tc := range []struct {
		taint resourceapi.DeviceTaint
		want  string
	}{
		{resourceapi.DeviceTaint{Key: TaintKey, Value: TaintGone, Effect: resourceapi.DeviceTaintEffectNoExecute}, ""},
		{resourceapi.DeviceTaint{Key: TaintKey, Value: TaintGone, Effect: "Evict"}, `taints[0].effect: "Evict"`},
		{resourceapi.DeviceTaint{Key: "bad key!", Effect: resourceapi.DeviceTaintEffectNoSchedule}, "taints[0].key:"},
		{resourceapi.DeviceTaint{Key: TaintKey, Value: "no spaces", Effect: resourceapi.DeviceTaintEffectNoSchedule}, "taints[0].value:"},
	} {
		res, err := BuildResources("node-1", inventoryForTest(groupForTest("disks", diskForTest("sda", "/dev/sda", 1<<30))))
		if err != nil {
			t.Fatal(err)
		}
		res.Pools["node-1"].Slices[0].Devices[0].Taints = []resourceapi.DeviceTaint{tc.taint}
		err = ValidateResources(res)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.taint, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: got %v, want an error with %q", tc.taint, err, tc.want)
		}
	}
}

// TestAllocTaintedDeviceNotAllocated runs the scheduler's real allocator
// on the slices with a tainted device: a claim without a toleration never
// gets it, one that tolerates the taint may.
func TestAllocTaintedDeviceNotAllocated(t *testing.T) {
	inv := inventoryForTest(groupForTest("disks", diskForTest("sda", "/dev/sda", 1<<30), diskForTest("sdb", "/dev/sdb", 1<<30)))
	res := buildHeldForTest(t, inv, HeldDevices{Names: []string{"sda"}, Problems: map[string]string{"sda": "changed"}})
	env := &allocEnv{
		node:    &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1"}},
		slices:  resourceSlicesFromResources("node-1", res),
		classes: testClassLister{driverClassForTest(allocTestClassName)},
	}

	// sda comes first and is free (its holder is not in the allocated
	// state, as after a restart of the scheduler): only the taint stops it.
	got, err := env.tryAllocate(claimForTest("any", exactRequestForTest("r", allocTestClassName)))
	if err != nil || got == nil {
		t.Fatalf("allocate any: %v, %v", got, err)
	}
	if d := allocatedDeviceNames(got[0]); len(d) != 1 || d[0] != "sdb" {
		t.Errorf("allocated %v, want sdb (sda is tainted)", d)
	}
	got, err = env.tryAllocate(claimForTest("sda", exactRequestForTest("r", allocTestClassName, pathIs("/dev/sda"))))
	if err != nil || got != nil {
		t.Errorf("a claim for the tainted sda without a toleration: allocated %v, err %v; want not allocatable", got, err)
	}

	tolerating := exactRequestForTest("r", allocTestClassName, pathIs("/dev/sda"))
	tolerating.Exactly.Tolerations = []resourceapi.DeviceToleration{{Key: TaintKey, Operator: resourceapi.DeviceTolerationOpExists}}
	got, err = env.tryAllocate(claimForTest("tolerates", tolerating))
	if err != nil || got == nil || allocatedDeviceNames(got[0])[0] != "sda" {
		t.Errorf("a claim that tolerates the taint: %v, %v; want sda", got, err)
	}
}

// TestDriverTaintsGoneDeviceUntilReleased: the running driver keeps a held
// device that vanished in its slice with a NoSchedule taint and republishes
// without it once its claim is unprepared.
func TestDriverTaintsGoneDeviceUntilReleased(t *testing.T) {
	inv := inventoryForTest(groupForTest("null", charDeviceForTest("null", "/dev/null", 1, 3), charDeviceForTest("zero", "/dev/zero", 1, 5)))
	claim := allocateForTest(t, "node-1", inv, nil,
		claimForTest("c", exactRequestForTest("r", allocTestClassName, pathIs("/dev/null"))))[0]
	e := startDriver(t, newFakeClient(claim), inv)
	e.waitForDevices(t, "null", "zero")
	ctx := context.Background()
	res, err := e.driver.PrepareResourceClaims(ctx, []*resourceapi.ResourceClaim{claim})
	if err != nil || res[claim.UID].Err != nil {
		t.Fatalf("prepare: %v, %v", err, res[claim.UID].Err)
	}

	taintOf := func(slices []resourceapi.ResourceSlice, name string) []resourceapi.DeviceTaint {
		for _, s := range slices {
			for _, d := range s.Spec.Devices {
				if d.Name == name {
					return d.Taints
				}
			}
		}
		return nil
	}
	// /dev/null vanishes while the claim holds it.
	e.src.ch <- inventoryForTest(groupForTest("null", charDeviceForTest("zero", "/dev/zero", 1, 5)))
	deadline := time.Now().Add(10 * time.Second)
	var taints []resourceapi.DeviceTaint
	for time.Now().Before(deadline) {
		taints = taintOf(e.waitForDevices(t, "null", "zero"), "null")
		if len(taints) > 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(taints) != 1 || taints[0].Key != TaintKey || taints[0].Value != TaintGone || taints[0].Effect != resourceapi.DeviceTaintEffectNoSchedule {
		t.Fatalf("the vanished, held device: taints %+v, want one %s=%s:NoSchedule", taints, TaintKey, TaintGone)
	}

	// Released: the device leaves the slice without a new inventory, at
	// once (not with the periodic check).
	un, err := e.driver.UnprepareResourceClaims(ctx, []kubeletplugin.NamespacedObject{ptRef(claim)})
	if err != nil || un[claim.UID] != nil {
		t.Fatalf("unprepare: %v, %v", err, un[claim.UID])
	}
	released := time.Now()
	e.waitForDevices(t, "zero")
	if d := time.Since(released); d > taintCheckInterval/2 {
		t.Errorf("republished %s after the release, want it at once", d)
	}
}

// TestDriverTaintsDroppedByOldAPIServer: an API server without
// DRADeviceTaints (before 1.36 by default) stores the slices without the
// taints. The plugin must not stop for it, and must not leave the gone
// device in the slice untainted, where the scheduler would hand it out.
func TestDriverTaintsDroppedByOldAPIServer(t *testing.T) {
	inv := inventoryForTest(groupForTest("null", charDeviceForTest("null", "/dev/null", 1, 3), charDeviceForTest("zero", "/dev/zero", 1, 5)))
	claim := allocateForTest(t, "node-1", inv, nil,
		claimForTest("c", exactRequestForTest("r", allocTestClassName, pathIs("/dev/null"))))[0]
	client := newFakeClient(claim)
	drop := func(action k8stesting.Action) (bool, runtime.Object, error) {
		s := action.(interface{ GetObject() runtime.Object }).GetObject().(*resourceapi.ResourceSlice)
		for i := range s.Spec.Devices {
			s.Spec.Devices[i].Taints = nil
		}
		return false, nil, nil
	}
	client.PrependReactor("create", "resourceslices", drop)
	client.PrependReactor("update", "resourceslices", drop)
	e := startDriver(t, client, inv)
	e.waitForDevices(t, "null", "zero")
	res, err := e.driver.PrepareResourceClaims(context.Background(), []*resourceapi.ResourceClaim{claim})
	if err != nil || res[claim.UID].Err != nil {
		t.Fatalf("prepare: %v, %v", err, res[claim.UID].Err)
	}

	e.src.ch <- inventoryForTest(groupForTest("null", charDeviceForTest("zero", "/dev/zero", 1, 5)))
	deadline := time.Now().Add(10 * time.Second)
	for !e.driver.taintsDropped.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the driver did not notice the dropped taints")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The gone device leaves the slice although its claim still holds it.
	e.waitForDevices(t, "zero")
	select {
	case err := <-e.done:
		t.Fatalf("the driver stopped: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
}
