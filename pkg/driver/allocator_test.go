package driver

// These tests run what BuildResources publishes through the scheduler's real
// allocator (k8s.io/dynamic-resource-allocation/structured), with the
// features of a 1.37 cluster; see alloc_helpers_test.go.

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

const attrPrefix = `device.attributes["power-dev-plugin.io"].`
const capPrefix = `device.capacity["power-dev-plugin.io"].`

func pathIs(p string) string { return fmt.Sprintf(`%spath == %q`, attrPrefix, p) }

// nodeInventoryForTest is a small but varied node.
func nodeInventoryForTest() *discovery.Inventory {
	sda := diskForTest("sda", "/dev/sda", 100<<30)
	sda.Block.Serial = "S3Z1NB0K"
	sda.Block.FSType = "ext4"
	sdb := diskForTest("sdb", "/dev/sdb", 500<<30)
	sdb.Block.Serial = "WD-1234"
	sdb1 := diskForTest("sdb1", "/dev/sdb1", 200<<30)
	sdb1.Block.Kind, sdb1.Block.Parent, sdb1.Block.Serial = discovery.KindPartition, "sdb", ""
	return inventoryForTest(
		groupForTest("disks", sdb1, sdb, sda),
		groupForTest("fuse", charDeviceForTest("fuse", "/dev/fuse", 10, 229)),
		sharedGroupForTest("nx", 2, charDeviceForTest("nx-gzip", v1alpha1.NXGzipPath, 245, 0)),
	)
}

func TestAllocSelectWithCEL(t *testing.T) {
	tests := []struct {
		name      string
		classes   []*resourceapi.DeviceClass
		request   resourceapi.DeviceRequest
		want      []string // nil: not allocatable
		wantErr   string
		wantShare bool
	}{
		{name: "any device: first fit in publishing order", request: exactRequestForTest("r", ""), want: []string{"sda"}},
		{name: "by path", request: exactRequestForTest("r", "", pathIs("/dev/sdb")), want: []string{"sdb"}},
		{name: "by serial", request: exactRequestForTest("r", "", attrPrefix+`serial == "S3Z1NB0K"`), want: []string{"sda"}},
		{name: "by kind", request: exactRequestForTest("r", "", attrPrefix+`kind == "partition"`), want: []string{"sdb1"}},
		{
			name:    "by size",
			request: exactRequestForTest("r", "", attrPrefix+`kind == "disk"`, capPrefix+`size.compareTo(quantity("300Gi")) >= 0`),
			want:    []string{"sdb"},
		},
		{
			name:    "has() tells a missing attribute",
			request: exactRequestForTest("r", "", `has(`+attrPrefix+`parent) && `+attrPrefix+`parent == "sdb"`),
			want:    []string{"sdb1"},
		},
		{name: "char device by path", request: exactRequestForTest("r", "", pathIs("/dev/fuse")), want: []string{"fuse"}},
		{name: "shared device", request: exactRequestForTest("r", "", pathIs(v1alpha1.NXGzipPath)), want: []string{"nx-gzip"}, wantShare: true},
		{name: "no such path", request: exactRequestForTest("r", "", pathIs("/dev/nope"))},
		{name: "too large", request: exactRequestForTest("r", "", `has(`+capPrefix+`size) && `+capPrefix+`size.compareTo(quantity("1Ti")) >= 0`)},
		{
			// Every device carries every attribute and the size capacity
			// (0 and "" where not applicable), so an unguarded selector
			// that reaches a char device is simply false there instead
			// of a CEL "no such key" runtime error that would fail the
			// pod's scheduling.
			name:    "unguarded size selector is false on char devices, not an error",
			request: exactRequestForTest("r", "", capPrefix+`size.compareTo(quantity("1Ti")) >= 0`),
		},
		{
			name:    "unguarded serial selector skips char devices",
			request: exactRequestForTest("r", "", attrPrefix+`serial == "WD-1234"`),
			want:    []string{"sdb"},
		},
		{name: "by file system", request: exactRequestForTest("r", "", attrPrefix+`fsType == "ext4"`), want: []string{"sda"}},
		{
			// fsType is "" on a blank disk and on every char device.
			name:    "blank disks only",
			request: exactRequestForTest("r", "", attrPrefix+`type == "block" && `+attrPrefix+`fsType == ""`, attrPrefix+`kind == "disk"`),
			want:    []string{"sdb"},
		},
		{
			name:    "unguarded fsType selector skips char devices",
			request: exactRequestForTest("r", "", attrPrefix+`fsType == "xfs"`),
		},
		{
			name:    "optional chaining instead of has()",
			request: exactRequestForTest("r", "", capPrefix+`?size.orValue(quantity("0")).compareTo(quantity("1Ti")) >= 0`),
		},
		{
			name:    "a class that admits only block devices guards the claim's selectors",
			classes: []*resourceapi.DeviceClass{driverClassForTest("block", attrPrefix+`type == "block"`)},
			request: exactRequestForTest("r", "block", capPrefix+`size.compareTo(quantity("1Ti")) >= 0`),
		},
		{
			name:    "class selects a group, claim a device in it",
			classes: []*resourceapi.DeviceClass{driverClassForTest("disks", attrPrefix+`group == "disks"`)},
			request: exactRequestForTest("r", "disks", attrPrefix+`serial == "WD-1234"`),
			want:    []string{"sdb"},
		},
		{
			name:    "class excludes the device the claim wants",
			classes: []*resourceapi.DeviceClass{driverClassForTest("disks", attrPrefix+`group == "disks"`)},
			request: exactRequestForTest("r", "disks", pathIs("/dev/fuse")),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tryAllocateForTest(t, "node-1", nodeInventoryForTest(), tc.classes, claimForTest("c", tc.request))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("allocate: %v", err)
			}
			if tc.want == nil {
				if got != nil {
					t.Fatalf("want not allocatable, got %v", allocatedDeviceNames(got[0]))
				}
				return
			}
			if got == nil {
				t.Fatalf("not allocatable, want %v", tc.want)
			}
			if names := allocatedDeviceNames(got[0]); !slices.Equal(names, tc.want) {
				t.Errorf("allocated %v, want %v", names, tc.want)
			}
			r := got[0].Status.Allocation.Devices.Results[0]
			if r.Driver != DriverName || r.Pool != "node-1" {
				t.Errorf("result driver/pool: got %s/%s", r.Driver, r.Pool)
			}
			if (r.ShareID != nil) != tc.wantShare {
				t.Errorf("shareID: got %v, want set=%v", r.ShareID, tc.wantShare)
			}
			if ns := got[0].Status.Allocation.NodeSelector; ns == nil || !strings.Contains(ns.String(), "node-1") {
				t.Errorf("allocation must be limited to node-1, got node selector %v", ns)
			}
		})
	}
}

// allocationMode All over a group: a claim holds at most
// AllocationResultsMaxSize (32) devices, so a larger group has to be a
// bundle.
func TestAllocAllModeOverGroup(t *testing.T) {
	inGroup := func(g string) string { return fmt.Sprintf(`%sgroup == %q`, attrPrefix, g) }
	tests := []struct {
		name    string
		inv     *discovery.Inventory
		request resourceapi.DeviceRequest
		want    int    // devices allocated
		wantErr string // allocator error
		check   func(t *testing.T, c *resourceapi.ResourceClaim)
	}{
		{
			name:    "32 devices",
			inv:     inventoryForTest(groupForTest("g32", manyDisksForTest(32)...), groupForTest("other", diskForTest("sdz", "/dev/sdz", 1))),
			request: allRequestForTest("all", "", inGroup("g32")),
			want:    32,
		},
		{
			name:    "33 devices exceed the claim limit",
			inv:     inventoryForTest(groupForTest("g33", manyDisksForTest(33)...)),
			request: allRequestForTest("all", "", inGroup("g33")),
			wantErr: fmt.Sprintf("adding 33 devices exceeds the claim limit of %d", resourceapi.AllocationResultsMaxSize),
		},
		{
			name:    "1000 devices exceed the claim limit",
			inv:     inventoryForTest(groupForTest("big", manyDisksForTest(1000)...)),
			request: allRequestForTest("all", "", inGroup("big")),
			wantErr: "adding 1000 devices exceeds the claim limit of 32",
		},
		{
			name:    "a bundle of 1000 is one device",
			inv:     inventoryForTest(bundleGroupForTest("big", "big-all", manyDisksForTest(1000)...)),
			request: allRequestForTest("all", "", inGroup("big")),
			want:    1,
			check: func(t *testing.T, c *resourceapi.ResourceClaim) {
				if got := allocatedDeviceNames(c); !slices.Equal(got, []string{"big-all"}) {
					t.Errorf("allocated %v, want [big-all]", got)
				}
			},
		},
		{
			name:    "a bundle selected by its attributes",
			inv:     inventoryForTest(groupForTest("loose", manyDisksForTest(3)...), bundleGroupForTest("big", "big-all", manyDisksForTest(1000)...)),
			request: exactRequestForTest("r", "", attrPrefix+`?bundle.orValue(false)`, attrPrefix+`nodes >= 1000`),
			want:    1,
			check: func(t *testing.T, c *resourceapi.ResourceClaim) {
				if got := allocatedDeviceNames(c); !slices.Equal(got, []string{"big-all"}) {
					t.Errorf("allocated %v, want [big-all]", got)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tryAllocateForTest(t, "node-1", tc.inv, nil, claimForTest("c", tc.request))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got error %v (allocated: %v), want %q", err, got != nil, tc.wantErr)
				}
				return
			}
			if err != nil || got == nil {
				t.Fatalf("not allocated: %v", err)
			}
			if n := len(got[0].Status.Allocation.Devices.Results); n != tc.want {
				t.Errorf("allocated %d devices, want %d", n, tc.want)
			}
			if tc.check != nil {
				tc.check(t, got[0])
			}
		})
	}
}

// On a node with 1,000 devices in 8 slices, CEL picks exactly the one wanted,
// also from the last slice.
func TestAllocAmong1000(t *testing.T) {
	inv := inventoryForTest(groupForTest("dev", manyDisksForTest(1000)...))
	env := newAllocEnv(t, "node-1", inv, nil)
	if len(env.slices) != 8 {
		t.Fatalf("want 8 slices, got %d", len(env.slices))
	}
	for _, tc := range []struct {
		selector string
		want     string
	}{
		{pathIs("/dev/pdp/disk-0777"), "disk-0777"},
		{pathIs("/dev/pdp/disk-0999"), "disk-0999"},
		{attrPrefix + `serial == "SER-disk-0000"`, "disk-0000"},
		{capPrefix + `size == quantity("901Gi")`, "disk-0900"},
		{attrPrefix + `minor == 500`, "disk-0500"},
	} {
		got, err := env.tryAllocate(claimForTest("c", exactRequestForTest("r", "", tc.selector)))
		if err != nil || got == nil {
			t.Errorf("%s: not allocated: %v", tc.selector, err)
			continue
		}
		if names := allocatedDeviceNames(got[0]); !slices.Equal(names, []string{tc.want}) {
			t.Errorf("%s: allocated %v, want [%s]", tc.selector, names, tc.want)
		}
	}
}

// sharedDiskInventory is a node with one shared disk "sda" (100 GiB).
func sharedDiskInventory(maxConsumers int32) *discovery.Inventory {
	return inventoryForTest(sharedGroupForTest("shared", maxConsumers, diskForTest("sda", "/dev/sda", 100<<30)))
}

// Claims are allocated one after the other, each result feeding the
// allocated state of the next as in the scheduler: maxConsumers=N admits
// exactly N claims.
func TestAllocSharedMaxConsumers(t *testing.T) {
	for _, n := range []int32{1, 3, 8} {
		t.Run(fmt.Sprintf("maxConsumers=%d", n), func(t *testing.T) {
			env := newAllocEnv(t, "node-1", sharedDiskInventory(n), nil)
			shareIDs := map[string]bool{}
			for i := int32(1); i <= n+1; i++ {
				got, err := env.tryAllocate(claimForTest(fmt.Sprintf("c%d", i), exactRequestForTest("r", "")))
				if err != nil {
					t.Fatalf("claim %d: %v", i, err)
				}
				if i == n+1 {
					if got != nil {
						t.Fatalf("claim %d of a maxConsumers=%d device was allocated", i, n)
					}
					return
				}
				if got == nil {
					t.Fatalf("claim %d of %d not allocated", i, n)
				}
				r := got[0].Status.Allocation.Devices.Results[0]
				if r.Device != "sda" || r.ShareID == nil {
					t.Fatalf("claim %d: got device %s shareID %v, want a share of sda", i, r.Device, r.ShareID)
				}
				if shareIDs[string(*r.ShareID)] {
					t.Errorf("claim %d: share ID %s reused", i, *r.ShareID)
				}
				shareIDs[string(*r.ShareID)] = true
				// A claim without a capacity request consumes one
				// consumer and none of the size.
				if c := r.ConsumedCapacity[CapConsumers]; c.Cmp(resource.MustParse("1")) != 0 {
					t.Errorf("claim %d consumed %s consumers, want 1", i, &c)
				}
				if c := r.ConsumedCapacity[CapSize]; !c.IsZero() {
					t.Errorf("claim %d consumed %s of the size, want 0", i, &c)
				}
				env.commit(got...)
			}
		})
	}
}

func TestAllocSharedRules(t *testing.T) {
	capRequest := func(r resourceapi.DeviceRequest, name resourceapi.QualifiedName, q string) resourceapi.DeviceRequest {
		r.Exactly.Capacity = &resourceapi.CapacityRequirements{Requests: map[resourceapi.QualifiedName]resource.Quantity{name: resource.MustParse(q)}}
		return r
	}
	t.Run("unbounded shared device takes any number of claims", func(t *testing.T) {
		env := newAllocEnv(t, "node-1", sharedDiskInventory(0), nil)
		for i := range 50 {
			got, err := env.tryAllocate(claimForTest(fmt.Sprintf("c%d", i), exactRequestForTest("r", "")))
			if err != nil || got == nil {
				t.Fatalf("claim %d not allocated: %v", i, err)
			}
			env.commit(got...)
		}
	})
	t.Run("maxConsumers holds within one scheduling cycle", func(t *testing.T) {
		// Two claims of one pod on a maxConsumers=1 device.
		got, err := tryAllocateForTest(t, "node-1", sharedDiskInventory(1), nil,
			claimForTest("a", exactRequestForTest("r", "")), claimForTest("b", exactRequestForTest("r", "")))
		if err != nil || got != nil {
			t.Fatalf("got %v, %v; want not allocatable", got, err)
		}
		got, err = tryAllocateForTest(t, "node-1", sharedDiskInventory(2), nil,
			claimForTest("a", exactRequestForTest("r", "")), claimForTest("b", exactRequestForTest("r", "")))
		if err != nil || got == nil {
			t.Fatalf("maxConsumers=2: got %v, %v; want both allocated", got, err)
		}
	})
	t.Run("a claim cannot take more than one consumer", func(t *testing.T) {
		got, err := tryAllocateForTest(t, "node-1", sharedDiskInventory(4), nil,
			claimForTest("greedy", capRequest(exactRequestForTest("r", ""), CapConsumers, "2")))
		if err != nil || got != nil {
			t.Fatalf("got %v, %v; want not allocatable", got, err)
		}
	})
	t.Run("a request below one consumer is rounded up to one", func(t *testing.T) {
		got, err := tryAllocateForTest(t, "node-1", sharedDiskInventory(4), nil,
			claimForTest("small", capRequest(exactRequestForTest("r", ""), CapConsumers, "0")))
		if err != nil || got == nil {
			t.Fatalf("not allocated: %v", err)
		}
		if c := got[0].Status.Allocation.Devices.Results[0].ConsumedCapacity[CapConsumers]; c.Cmp(resource.MustParse("1")) != 0 {
			t.Errorf("consumed %s consumers, want 1", &c)
		}
	})
	t.Run("an explicit size request reserves size", func(t *testing.T) {
		env := newAllocEnv(t, "node-1", sharedDiskInventory(0), nil)
		req := capRequest(exactRequestForTest("r", ""), CapSize, "60Gi")
		got, err := env.tryAllocate(claimForTest("a", req))
		if err != nil || got == nil {
			t.Fatalf("first 60Gi: not allocated: %v", err)
		}
		env.commit(got...)
		if got, err := env.tryAllocate(claimForTest("b", req)); err != nil || got != nil {
			t.Fatalf("second 60Gi on a 100Gi disk: got %v, %v; want not allocatable", got, err)
		}
		// A CEL size selector consumes nothing.
		if got, err := env.tryAllocate(claimForTest("c", exactRequestForTest("r", "", capPrefix+`size.compareTo(quantity("60Gi")) >= 0`))); err != nil || got == nil {
			t.Fatalf("CEL size selector: not allocated: %v", err)
		}
	})
	t.Run("control: without the size policy a shared disk takes only one claim", func(t *testing.T) {
		// Shows why apply() gives "size" a request policy: with
		// allowMultipleAllocations every capacity is consumable and an
		// allocation without a request takes all of it.
		env := newAllocEnv(t, "node-1", sharedDiskInventory(0), nil)
		for _, s := range env.slices {
			for i := range s.Spec.Devices {
				c := s.Spec.Devices[i].Capacity[CapSize]
				c.RequestPolicy = nil
				s.Spec.Devices[i].Capacity[CapSize] = c
			}
		}
		got, err := env.tryAllocate(claimForTest("a", exactRequestForTest("r", "")))
		if err != nil || got == nil {
			t.Fatalf("first claim not allocated: %v", err)
		}
		env.commit(got...)
		if got, err := env.tryAllocate(claimForTest("b", exactRequestForTest("r", ""))); err != nil || got != nil {
			t.Fatalf("got %v, %v; the allocator no longer consumes the full capacity by default, revisit apply()", got, err)
		}
	})
}

func TestAllocExclusiveOnce(t *testing.T) {
	inv := inventoryForTest(groupForTest("dev", diskForTest("sda", "/dev/sda", 1<<30), diskForTest("sdb", "/dev/sdb", 1<<30)))
	env := newAllocEnv(t, "node-1", inv, nil)
	var names []string
	for i := range 2 {
		got, err := env.tryAllocate(claimForTest(fmt.Sprintf("c%d", i), exactRequestForTest("r", "")))
		if err != nil || got == nil {
			t.Fatalf("claim %d not allocated: %v", i, err)
		}
		r := got[0].Status.Allocation.Devices.Results[0]
		if r.ShareID != nil || len(r.ConsumedCapacity) != 0 {
			t.Errorf("exclusive allocation with shareID %v, consumed %v", r.ShareID, r.ConsumedCapacity)
		}
		names = append(names, r.Device)
		env.commit(got...)
	}
	if !slices.Equal(names, []string{"sda", "sdb"}) {
		t.Errorf("allocated %v, want [sda sdb]", names)
	}
	if got, err := env.tryAllocate(claimForTest("c2", exactRequestForTest("r", ""))); err != nil || got != nil {
		t.Fatalf("third claim on two exclusive devices: got %v, %v; want not allocatable", got, err)
	}
	if got, err := env.tryAllocate(claimForTest("c3", exactRequestForTest("r", "", pathIs("/dev/sda")))); err != nil || got != nil {
		t.Fatalf("allocated sda twice: %v, %v", got, err)
	}
	// Two requests of one claim never get the same exclusive device.
	got, err := tryAllocateForTest(t, "node-1", inv, nil, claimForTest("two", exactRequestForTest("a", ""), exactRequestForTest("b", "")))
	if err != nil || got == nil {
		t.Fatalf("two requests: not allocated: %v", err)
	}
	if names := allocatedDeviceNames(got[0]); !slices.Equal(names, []string{"sda", "sdb"}) {
		t.Errorf("two requests: allocated %v, want [sda sdb]", names)
	}
}

// The helpers leave their arguments alone and fill in what prepare needs.
func TestAllocHelpers(t *testing.T) {
	claim := claimForTest("c", exactRequestForTest("r", "", pathIs("/dev/fuse")))
	got := allocateForTest(t, "node-1", nodeInventoryForTest(), nil, claim)
	if claim.Status.Allocation != nil {
		t.Errorf("allocateForTest modified its argument")
	}
	if len(got) != 1 || got[0].Status.Allocation == nil || got[0].UID != claim.UID {
		t.Fatalf("got %+v", got)
	}
	if r := got[0].Status.Allocation.Devices.Results; len(r) != 1 || r[0].Request != "r" || r[0].Device != "fuse" {
		t.Errorf("results: %+v", r)
	}
	// allocatedStateForTest counts exclusive devices as allocated and
	// shared ones by share and consumed capacity.
	shared := allocateForTest(t, "node-1", nodeInventoryForTest(), nil, claimForTest("s", exactRequestForTest("r", "", pathIs(v1alpha1.NXGzipPath))))
	s := allocatedStateForTest(append(got, shared...))
	if s.AllocatedDevices.Len() != 1 || s.AllocatedSharedDeviceIDs.Len() != 1 || len(s.AggregatedCapacity) != 1 {
		t.Errorf("allocated state: %d devices, %d shares, %d capacities; want 1, 1, 1",
			s.AllocatedDevices.Len(), s.AllocatedSharedDeviceIDs.Len(), len(s.AggregatedCapacity))
	}
}
