package driver

// Helpers that run the scheduler's real structured allocator
// (k8s.io/dynamic-resource-allocation/structured) against what BuildResources
// publishes. Other tests in this package use them to get claims whose
// Status.Allocation is exactly what kube-scheduler would write:
//
//	claims := allocateForTest(t, "node-1", inv, nil, claimForTest("c", exactRequestForTest("r", "")))
//	// claims[0].Status.Allocation.Devices.Results[0].Device == "sda"

import (
	"context"
	"fmt"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/dynamic-resource-allocation/cel"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/dynamic-resource-allocation/structured"
	"k8s.io/utils/ptr"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// allocTestClassName is the DeviceClass the helpers use when none is given. It
// selects every device of this driver.
const allocTestClassName = "power-dev-plugin.io"

// allocTestFeatures are the DRA features of a Kubernetes 1.37 scheduler with
// default feature gates: AdminAccess, PrioritizedList, DeviceTaints (GA),
// PartitionableDevices, DeviceBindingAndStatus (DRADeviceBindingConditions +
// DRAResourceClaimDeviceStatus) and ConsumableCapacity (beta, on). The
// alpha ones (list-type attributes, derived attributes, compatibility
// groups, fractional capacity ranges, optional node operations) stay off.
var allocTestFeatures = structured.Features{
	AdminAccess:            true,
	PrioritizedList:        true,
	DeviceTaints:           true,
	PartitionableDevices:   true,
	DeviceBindingAndStatus: true,
	ConsumableCapacity:     true,
}

// allocTestCELCache is shared by all tests, like the scheduler shares one.
var allocTestCELCache = cel.NewCache(100, cel.Features{EnableConsumableCapacity: allocTestFeatures.ConsumableCapacity})

// driverClassForTest returns a DeviceClass that selects this driver's
// devices, plus any extra CEL selectors.
func driverClassForTest(name string, extraCEL ...string) *resourceapi.DeviceClass {
	c := &resourceapi.DeviceClass{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: resourceapi.DeviceClassSpec{
			Selectors: []resourceapi.DeviceSelector{{CEL: &resourceapi.CELDeviceSelector{
				Expression: fmt.Sprintf("device.driver == %q", DriverName),
			}}},
		},
	}
	for _, expr := range extraCEL {
		c.Spec.Selectors = append(c.Spec.Selectors, resourceapi.DeviceSelector{CEL: &resourceapi.CELDeviceSelector{Expression: expr}})
	}
	return c
}

// exactRequestForTest is a request for one device of class
// (allocTestClassName when empty) that matches all CEL selectors.
func exactRequestForTest(name, class string, selectors ...string) resourceapi.DeviceRequest {
	if class == "" {
		class = allocTestClassName
	}
	r := resourceapi.DeviceRequest{
		Name: name,
		Exactly: &resourceapi.ExactDeviceRequest{
			DeviceClassName: class,
			AllocationMode:  resourceapi.DeviceAllocationModeExactCount,
			Count:           1,
		},
	}
	for _, expr := range selectors {
		r.Exactly.Selectors = append(r.Exactly.Selectors, resourceapi.DeviceSelector{CEL: &resourceapi.CELDeviceSelector{Expression: expr}})
	}
	return r
}

// allRequestForTest is like exactRequestForTest with allocationMode All.
func allRequestForTest(name, class string, selectors ...string) resourceapi.DeviceRequest {
	r := exactRequestForTest(name, class, selectors...)
	r.Exactly.AllocationMode = resourceapi.DeviceAllocationModeAll
	r.Exactly.Count = 0
	return r
}

// claimForTest is an unallocated claim in namespace "default" with a UID
// derived from its name.
func claimForTest(name string, requests ...resourceapi.DeviceRequest) *resourceapi.ResourceClaim {
	return &resourceapi.ResourceClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec:       resourceapi.ResourceClaimSpec{Devices: resourceapi.DeviceClaim{Requests: requests}},
	}
}

// resourceSlicesFromResources turns DriverResources into the ResourceSlice
// objects the resourceslice controller would publish for a node-local
// driver: Spec.Driver, Pool{Name, Generation, ResourceSliceCount},
// NodeName, and names that sort in slice order (zero-padded hex index
// first, as the controller does).
func resourceSlicesFromResources(nodeName string, res resourceslice.DriverResources) []*resourceapi.ResourceSlice {
	var out []*resourceapi.ResourceSlice
	for poolName, pool := range res.Pools {
		for i, s := range pool.Slices {
			out = append(out, &resourceapi.ResourceSlice{
				ObjectMeta: metav1.ObjectMeta{
					Name: fmt.Sprintf("%04x-%s-%s", i, DriverName, poolName),
				},
				Spec: resourceapi.ResourceSliceSpec{
					Driver:                 DriverName,
					Pool:                   resourceapi.ResourcePool{Name: poolName, Generation: pool.Generation + 1, ResourceSliceCount: int64(len(pool.Slices))},
					NodeName:               ptr.To(nodeName),
					Devices:                s.Devices,
					SharedCounters:         s.SharedCounters,
					PerDeviceNodeSelection: s.PerDeviceNodeSelection,
				},
			})
		}
	}
	return out
}

// resourceSlicesForTest runs BuildResources and ValidateResources and
// returns the published ResourceSlices.
func resourceSlicesForTest(t testing.TB, nodeName string, inv *discovery.Inventory) []*resourceapi.ResourceSlice {
	t.Helper()
	res, err := BuildResources(nodeName, inv)
	if err != nil {
		t.Fatalf("BuildResources: %v", err)
	}
	if err := ValidateResources(res); err != nil {
		t.Fatalf("ValidateResources: %v", err)
	}
	return resourceSlicesFromResources(nodeName, res)
}

// testClassLister implements structured.DeviceClassLister over a fixed list.
type testClassLister []*resourceapi.DeviceClass

func (l testClassLister) List() ([]*resourceapi.DeviceClass, error) { return l, nil }

func (l testClassLister) Get(name string) (*resourceapi.DeviceClass, error) {
	for _, c := range l {
		if c.Name == name {
			return c, nil
		}
	}
	return nil, apierrors.NewNotFound(resourceapi.Resource("deviceclasses"), name)
}

// allocatedStateForTest is the AllocatedState the scheduler derives from
// allocated claims: results with a ShareID (devices with
// allowMultipleAllocations) count as shares and add their consumed
// capacity; other results mark the device as allocated. Admin-access
// results allocate nothing.
func allocatedStateForTest(claims []*resourceapi.ResourceClaim) structured.AllocatedState {
	s := structured.AllocatedState{
		AllocatedDevices:         sets.New[structured.DeviceID](),
		AllocatedSharedDeviceIDs: sets.New[structured.SharedDeviceID](),
		AggregatedCapacity:       structured.NewConsumedCapacityCollection(),
	}
	for _, c := range claims {
		if c.Status.Allocation == nil {
			continue
		}
		for _, r := range c.Status.Allocation.Devices.Results {
			if ptr.Deref(r.AdminAccess, false) {
				continue
			}
			id := structured.MakeDeviceID(r.Driver, r.Pool, r.Device)
			if r.ShareID == nil {
				s.AllocatedDevices.Insert(id)
				continue
			}
			s.AllocatedSharedDeviceIDs.Insert(structured.MakeSharedDeviceID(id, r.ShareID))
			if r.ConsumedCapacity != nil {
				s.AggregatedCapacity.Insert(structured.NewDeviceConsumedCapacity(id, r.ConsumedCapacity))
			}
		}
	}
	return s
}

// allocEnv is one node's published slices plus the claims already
// allocated there, for allocating claims one after the other the way the
// scheduler does (each allocation feeds the allocated state of the next).
type allocEnv struct {
	node      *v1.Node
	slices    []*resourceapi.ResourceSlice
	classes   testClassLister
	allocated []*resourceapi.ResourceClaim
	// features replaces allocTestFeatures when set (a scheduler with
	// other feature gates).
	features *structured.Features
}

// newAllocEnv publishes inv for nodeName. With no classes, the default
// driverClassForTest(allocTestClassName) is used.
func newAllocEnv(t testing.TB, nodeName string, inv *discovery.Inventory, classes []*resourceapi.DeviceClass) *allocEnv {
	t.Helper()
	if len(classes) == 0 {
		classes = []*resourceapi.DeviceClass{driverClassForTest(allocTestClassName)}
	}
	return &allocEnv{
		node:    &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{"kubernetes.io/hostname": nodeName}}},
		slices:  resourceSlicesForTest(t, nodeName, inv),
		classes: classes,
	}
}

// tryAllocate allocates claims together, taking the already allocated
// claims into account. It returns deep copies of the claims with
// Status.Allocation set, (nil, nil) when they cannot be allocated on the
// node, or the allocator's error (invalid input, such as a claim wanting
// more than 32 devices). It does not record the result; see commit.
func (e *allocEnv) tryAllocate(claims ...*resourceapi.ResourceClaim) ([]*resourceapi.ResourceClaim, error) {
	ctx := context.Background()
	features := allocTestFeatures
	if e.features != nil {
		features = *e.features
	}
	a, err := structured.NewAllocator(ctx, features, allocatedStateForTest(e.allocated), e.classes, e.slices, allocTestCELCache)
	if err != nil {
		return nil, fmt.Errorf("NewAllocator: %w", err)
	}
	results, err := a.Allocate(ctx, e.node, claims)
	if err != nil {
		return nil, err
	}
	if results == nil {
		return nil, nil
	}
	if len(results) != len(claims) {
		return nil, fmt.Errorf("allocator returned %d results for %d claims", len(results), len(claims))
	}
	out := make([]*resourceapi.ResourceClaim, len(claims))
	for i, c := range claims {
		c = c.DeepCopy()
		c.Status.Allocation = &results[i]
		out[i] = c
	}
	return out, nil
}

// commit records allocated claims, as the scheduler's claim cache would.
func (e *allocEnv) commit(claims ...*resourceapi.ResourceClaim) {
	e.allocated = append(e.allocated, claims...)
}

// tryAllocateForTest publishes inv for nodeName and allocates claims
// together. It returns (nil, nil) when the claims cannot be allocated and an
// error for invalid input; see allocEnv.tryAllocate. Building or validating
// the slices failing is fatal.
func tryAllocateForTest(t testing.TB, nodeName string, inv *discovery.Inventory, classes []*resourceapi.DeviceClass, claims ...*resourceapi.ResourceClaim) ([]*resourceapi.ResourceClaim, error) {
	t.Helper()
	return newAllocEnv(t, nodeName, inv, classes).tryAllocate(claims...)
}

// allocateForTest is tryAllocateForTest that fails the test unless all
// claims are allocated. The returned claims are copies with
// Status.Allocation filled in; the arguments are not modified.
func allocateForTest(t testing.TB, nodeName string, inv *discovery.Inventory, classes []*resourceapi.DeviceClass, claims ...*resourceapi.ResourceClaim) []*resourceapi.ResourceClaim {
	t.Helper()
	out, err := tryAllocateForTest(t, nodeName, inv, classes, claims...)
	if err != nil {
		t.Fatalf("allocate %s on %s: %v", claimNames(claims), nodeName, err)
	}
	if out == nil {
		t.Fatalf("allocate %s on %s: not allocatable", claimNames(claims), nodeName)
	}
	return out
}

func claimNames(claims []*resourceapi.ResourceClaim) string {
	names := make([]string, len(claims))
	for i, c := range claims {
		names[i] = c.Namespace + "/" + c.Name
	}
	return fmt.Sprint(names)
}

// allocatedDeviceNames lists the device names of an allocated claim.
func allocatedDeviceNames(c *resourceapi.ResourceClaim) []string {
	if c.Status.Allocation == nil {
		return nil
	}
	var out []string
	for _, r := range c.Status.Allocation.Devices.Results {
		out = append(out, r.Device)
	}
	return out
}

// diskForTest is a block disk as discovery reports it.
func diskForTest(name, path string, sizeBytes uint64) discovery.Device {
	return discovery.Device{
		Name:  name,
		Path:  path,
		Type:  v1alpha1.DeviceTypeBlock,
		Major: 8,
		Block: &discovery.BlockInfo{
			KernelName: strings.TrimPrefix(path, "/dev/"),
			Kind:       discovery.KindDisk,
			SizeBytes:  sizeBytes,
			Serial:     "SER-" + name,
		},
	}
}

// charDeviceForTest is a character device such as /dev/fuse.
func charDeviceForTest(name, path string, major, minor uint32) discovery.Device {
	return discovery.Device{Name: name, Path: path, Type: v1alpha1.DeviceTypeChar, Major: major, Minor: minor}
}

// groupForTest is an exclusive group; Device.Group is set to its name.
func groupForTest(name string, devices ...discovery.Device) discovery.Group {
	for i := range devices {
		devices[i].Group = name
	}
	return discovery.Group{
		Name:        name,
		Permissions: v1alpha1.DefaultPermissions,
		Sharing:     v1alpha1.Sharing{Mode: v1alpha1.SharingExclusive},
		Devices:     devices,
	}
}

// sharedGroupForTest is groupForTest with sharing mode shared and, unless
// maxConsumers is 0, a bound on concurrent claims.
func sharedGroupForTest(name string, maxConsumers int32, devices ...discovery.Device) discovery.Group {
	g := groupForTest(name, devices...)
	g.Sharing.Mode = v1alpha1.SharingShared
	if maxConsumers != 0 {
		g.Sharing.MaxConsumers = ptr.To(maxConsumers)
	}
	return g
}

// bundleGroupForTest is groupForTest published as one device named bundleName.
func bundleGroupForTest(name, bundleName string, devices ...discovery.Device) discovery.Group {
	g := groupForTest(name, devices...)
	g.Bundle = true
	g.BundleName = bundleName
	return g
}

// manyDisksForTest is n disks named disk-0000... at /dev/pdp/disk-0000...,
// of 1 GiB times their index + 1.
func manyDisksForTest(n int) []discovery.Device {
	out := make([]discovery.Device, n)
	for i := range out {
		name := fmt.Sprintf("disk-%04d", i)
		out[i] = diskForTest(name, "/dev/pdp/"+name, uint64(i+1)<<30)
		out[i].Minor = uint32(i)
	}
	return out
}

// inventoryForTest wraps groups into an Inventory.
func inventoryForTest(groups ...discovery.Group) *discovery.Inventory {
	return &discovery.Inventory{Groups: groups}
}
