package driver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/operation"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/utils/ptr"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// declarativeCreate is a create operation with the validation options that
// k8s.io/api/resource/v1/zz_generated.validations.go references, set as on
// a 1.37 API server with default feature gates (DRAPartitionableDevicesType
// is alpha, off).
var declarativeCreate = operation.Operation{
	Type:    operation.Create,
	Options: map[string]bool{"DRAPartitionableDevicesType": false},
}

// checkPublishable runs every check a built result must pass: our
// ValidateResources, the generated declarative validation of k8s.io/api
// (a second, independent opinion on what it covers) and the pool-wide rules
// of the resourceslice controller (unique names).
func checkPublishable(t *testing.T, res resourceslice.DriverResources) {
	t.Helper()
	if err := ValidateResources(res); err != nil {
		t.Fatalf("ValidateResources: %v", err)
	}
	for pool, p := range res.Pools {
		for i, s := range p.Slices {
			spec := resourceapi.ResourceSliceSpec{
				Driver:         DriverName,
				Pool:           resourceapi.ResourcePool{Name: pool, Generation: 1, ResourceSliceCount: int64(len(p.Slices))},
				NodeName:       ptr.To(pool),
				Devices:        s.Devices,
				SharedCounters: s.SharedCounters,
			}
			errs := resourceapi.Validate_ResourceSliceSpec(context.Background(), declarativeCreate, field.NewPath("spec"), &spec, nil)
			if len(errs) > 0 {
				t.Errorf("pool %q slice %d: declarative validation: %v", pool, i, errs.ToAggregate())
			}
		}
	}
}

// publishedNames returns the device names of the node's pool in publishing
// order, and the number of devices per slice.
func publishedNames(t *testing.T, res resourceslice.DriverResources, node string) (names []string, perSlice []int) {
	t.Helper()
	if len(res.Pools) != 1 {
		t.Fatalf("want exactly one pool, got %d", len(res.Pools))
	}
	p, ok := res.Pools[node]
	if !ok {
		t.Fatalf("want a pool named %q, got %v", node, res.Pools)
	}
	for _, s := range p.Slices {
		perSlice = append(perSlice, len(s.Devices))
		for _, d := range s.Devices {
			names = append(names, d.Name)
		}
	}
	return names, perSlice
}

func findDevice(t *testing.T, res resourceslice.DriverResources, name string) *resourceapi.Device {
	t.Helper()
	for _, p := range res.Pools {
		for si := range p.Slices {
			for di := range p.Slices[si].Devices {
				if d := &p.Slices[si].Devices[di]; d.Name == name {
					return d
				}
			}
		}
	}
	t.Fatalf("device %q is not published", name)
	return nil
}

func deviceNames(devs []discovery.Device) []string {
	out := make([]string, len(devs))
	for i := range devs {
		out[i] = devs[i].Name
	}
	return out
}

func TestSliceBuildCounts(t *testing.T) {
	const node = "node-1"
	disks1000 := manyDisksForTest(1000)
	tests := []struct {
		name      string
		inv       *discovery.Inventory
		wantSlice []int    // devices per slice
		wantNames []string // in publishing order
	}{
		{name: "nil inventory", inv: nil, wantSlice: []int{0}},
		{name: "0 devices", inv: inventoryForTest(groupForTest("dev")), wantSlice: []int{0}},
		{
			name:      "1 device",
			inv:       inventoryForTest(groupForTest("dev", diskForTest("sda", "/dev/sda", 1<<30))),
			wantSlice: []int{1}, wantNames: []string{"sda"},
		},
		{
			name:      "128 devices",
			inv:       inventoryForTest(groupForTest("dev", manyDisksForTest(128)...)),
			wantSlice: []int{128}, wantNames: deviceNames(manyDisksForTest(128)),
		},
		{
			name:      "129 devices",
			inv:       inventoryForTest(groupForTest("dev", manyDisksForTest(129)...)),
			wantSlice: []int{128, 1}, wantNames: deviceNames(manyDisksForTest(129)),
		},
		{
			name:      "1000 devices",
			inv:       inventoryForTest(groupForTest("dev", slices.Clone(disks1000)...)),
			wantSlice: []int{128, 128, 128, 128, 128, 128, 128, 104}, wantNames: deviceNames(disks1000),
		},
		{
			// Shared devices (allowMultipleAllocations, consumable
			// capacity) do not lower the per-slice limit.
			name:      "1000 shared devices with maxConsumers",
			inv:       inventoryForTest(sharedGroupForTest("dev", 4, slices.Clone(disks1000)...)),
			wantSlice: []int{128, 128, 128, 128, 128, 128, 128, 104}, wantNames: deviceNames(disks1000),
		},
		{
			name: "1000 devices over three groups, one shared",
			inv: inventoryForTest(
				groupForTest("a", slices.Clone(disks1000[:300])...),
				sharedGroupForTest("b", 0, slices.Clone(disks1000[300:700])...),
				groupForTest("c", slices.Clone(disks1000[700:])...),
			),
			wantSlice: []int{128, 128, 128, 128, 128, 128, 128, 104}, wantNames: deviceNames(disks1000),
		},
		{
			name: "bundle of 1000 is one device",
			inv: inventoryForTest(
				groupForTest("fuse", charDeviceForTest("fuse", "/dev/fuse", 10, 229)),
				bundleGroupForTest("all", "all-disks", slices.Clone(disks1000)...),
			),
			wantSlice: []int{2}, wantNames: []string{"fuse", "all-disks"},
		},
		{
			name: "mixed: exclusive, shared, bundle, char; groups keep inventory order",
			inv: inventoryForTest(
				groupForTest("zz-first", diskForTest("sdb", "/dev/sdb", 2<<30), diskForTest("sda", "/dev/sda", 1<<30)),
				sharedGroupForTest("nx", 8, charDeviceForTest("nx-gzip", v1alpha1.NXGzipPath, 245, 0)),
				bundleGroupForTest("mpath", "mpath-bundle", diskForTest("dm-0", "/dev/dm-0", 1<<40), diskForTest("dm-1", "/dev/dm-1", 1<<40)),
				sharedGroupForTest("fuse", 0, charDeviceForTest("fuse", "/dev/fuse", 10, 229)),
			),
			wantSlice: []int{5}, wantNames: []string{"sda", "sdb", "nx-gzip", "mpath-bundle", "fuse"},
		},
		{
			name: "empty bundle publishes nothing",
			inv: inventoryForTest(
				bundleGroupForTest("empty", "empty-bundle"),
				groupForTest("dev", diskForTest("sda", "/dev/sda", 1<<30)),
			),
			wantSlice: []int{1}, wantNames: []string{"sda"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := BuildResources(node, tc.inv)
			if err != nil {
				t.Fatalf("BuildResources: %v", err)
			}
			checkPublishable(t, res)
			names, perSlice := publishedNames(t, res, node)
			if !slices.Equal(perSlice, tc.wantSlice) {
				t.Errorf("devices per slice: got %v, want %v", perSlice, tc.wantSlice)
			}
			if !slices.Equal(names, tc.wantNames) {
				t.Errorf("published devices differ from the input:\n got %d %.200v\nwant %d %.200v", len(names), names, len(tc.wantNames), tc.wantNames)
			}
			seen := map[string]bool{}
			for _, n := range names {
				if seen[n] {
					t.Errorf("device %q published twice", n)
				}
				seen[n] = true
			}
		})
	}
}

// The discovery types promise devices sorted by path, but the published order
// must not depend on it.
func TestSliceBuildOrderIsDeterministic(t *testing.T) {
	shuffled := inventoryForTest(groupForTest("dev",
		diskForTest("sdc", "/dev/sdc", 1<<30),
		diskForTest("sda", "/dev/sda", 1<<30),
		diskForTest("sdb", "/dev/sdb", 1<<30),
	))
	want := []string{"sda", "sdb", "sdc"}
	for i := 0; i < 20; i++ {
		res, err := BuildResources("n", shuffled)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := publishedNames(t, res, "n"); !slices.Equal(got, want) {
			t.Fatalf("run %d: got %v, want %v", i, got, want)
		}
	}
	if got := deviceNames(shuffled.Groups[0].Devices); got[0] != "sdc" {
		t.Errorf("BuildResources reordered its input: %v", got)
	}
}

func TestSliceBuildBundle(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		name     string
		group    discovery.Group
		wantType string // "" = no type attribute
		wantSize int64
		wantN    int64
	}{
		{
			name:     "three disks",
			group:    bundleGroupForTest("mp", "mp-all", diskForTest("dm-0", "/dev/dm-0", 1*gib), diskForTest("dm-1", "/dev/dm-1", 2*gib), diskForTest("dm-2", "/dev/dm-2", 3*gib)),
			wantType: "block", wantSize: 6 * gib, wantN: 3,
		},
		{
			name:     "block and char",
			group:    bundleGroupForTest("mix", "mix-all", diskForTest("sda", "/dev/sda", 5*gib), charDeviceForTest("fuse", "/dev/fuse", 10, 229)),
			wantType: "", wantSize: 5 * gib, wantN: 2,
		},
		{
			name:     "1000 disks",
			group:    bundleGroupForTest("big", "big-all", manyDisksForTest(1000)...),
			wantType: "block", wantSize: 1000 * 1001 / 2 * gib, wantN: 1000,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := BuildResources("n", inventoryForTest(tc.group))
			if err != nil {
				t.Fatal(err)
			}
			checkPublishable(t, res)
			names, _ := publishedNames(t, res, "n")
			if !slices.Equal(names, []string{tc.group.BundleName}) {
				t.Fatalf("a bundle must publish exactly its own device, got %v", names)
			}
			d := findDevice(t, res, tc.group.BundleName)
			if got := d.Attributes[AttrBundle].BoolValue; got == nil || !*got {
				t.Errorf("bundle attribute: got %v, want true", got)
			}
			if got := d.Attributes[AttrNodes].IntValue; got == nil || *got != tc.wantN {
				t.Errorf("nodes attribute: got %v, want %d", ptr.Deref(got, -1), tc.wantN)
			}
			if got := d.Attributes[AttrGroup].StringValue; got == nil || *got != tc.group.Name {
				t.Errorf("group attribute: got %v, want %q", got, tc.group.Name)
			}
			// Mixed node types: type is "" (present, so selectors on it
			// are false rather than a CEL error).
			if gotType, hasType := d.Attributes[AttrType]; !hasType || *gotType.StringValue != tc.wantType {
				t.Errorf("type attribute: got %v, want %q", gotType.StringValue, tc.wantType)
			}
			for _, name := range []resourceapi.QualifiedName{AttrSerial, AttrKind, AttrPath, AttrWWN} {
				if _, ok := d.Attributes[name]; !ok {
					t.Errorf("bundle lacks attribute %s: every device must carry every attribute", name)
				}
			}
			if got := d.Capacity[CapSize].Value; got.Value() != tc.wantSize {
				t.Errorf("size: got %s, want %d", &got, tc.wantSize)
			}
			if d.AllowMultipleAllocations != nil {
				t.Errorf("exclusive bundle must not allow multiple allocations")
			}
		})
	}
}

func TestSliceBuildSharing(t *testing.T) {
	disk := func() discovery.Device { return diskForTest("sda", "/dev/sda", 100<<30) }
	fuse := func() discovery.Device { return charDeviceForTest("fuse", "/dev/fuse", 10, 229) }
	tests := []struct {
		name          string
		group         discovery.Group
		device        string
		wantShared    bool
		wantConsumers int64 // 0: no consumers capacity
		wantSizePol   bool  // size has the "consume nothing by default" policy
	}{
		{name: "exclusive disk", group: groupForTest("g", disk()), device: "sda"},
		{name: "exclusive, empty mode is exclusive", group: func() discovery.Group { g := groupForTest("g", disk()); g.Sharing.Mode = ""; return g }(), device: "sda"},
		{name: "shared disk, unbounded", group: sharedGroupForTest("g", 0, disk()), device: "sda", wantShared: true, wantSizePol: true},
		{name: "shared disk, maxConsumers 3", group: sharedGroupForTest("g", 3, disk()), device: "sda", wantShared: true, wantConsumers: 3, wantSizePol: true},
		{name: "shared char device, maxConsumers 1", group: sharedGroupForTest("g", 1, fuse()), device: "fuse", wantShared: true, wantConsumers: 1, wantSizePol: true},
		{name: "shared char device, unbounded", group: sharedGroupForTest("g", 0, fuse()), device: "fuse", wantShared: true, wantSizePol: true},
		{name: "shared bundle, maxConsumers 2", group: func() discovery.Group {
			g := sharedGroupForTest("g", 2, disk(), fuse())
			g.Bundle, g.BundleName = true, "g-all"
			return g
		}(), device: "g-all", wantShared: true, wantConsumers: 2, wantSizePol: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := BuildResources("n", inventoryForTest(tc.group))
			if err != nil {
				t.Fatal(err)
			}
			checkPublishable(t, res)
			d := findDevice(t, res, tc.device)
			if got := ptr.Deref(d.AllowMultipleAllocations, false); got != tc.wantShared {
				t.Errorf("allowMultipleAllocations: got %v, want %v", got, tc.wantShared)
			}
			if !tc.wantShared && d.AllowMultipleAllocations != nil {
				t.Errorf("exclusive device: allowMultipleAllocations must be unset, got %v", *d.AllowMultipleAllocations)
			}
			c, hasConsumers := d.Capacity[CapConsumers]
			switch {
			case tc.wantConsumers == 0 && hasConsumers:
				t.Errorf("unexpected consumers capacity %s", &c.Value)
			case tc.wantConsumers != 0 && !hasConsumers:
				t.Errorf("missing consumers capacity")
			case tc.wantConsumers != 0:
				if c.Value.Value() != tc.wantConsumers {
					t.Errorf("consumers: got %s, want %d", &c.Value, tc.wantConsumers)
				}
				p := c.RequestPolicy
				one := resource.MustParse("1")
				if p == nil || p.Default == nil || p.Default.Cmp(one) != 0 || p.ValidRange == nil ||
					p.ValidRange.Min == nil || p.ValidRange.Min.Cmp(one) != 0 || p.ValidRange.Max == nil || p.ValidRange.Max.Cmp(one) != 0 {
					t.Errorf("consumers requestPolicy: want default 1, validRange [1,1], got %+v", p)
				}
			}
			size, hasSize := d.Capacity[CapSize]
			switch {
			case hasSize && tc.wantSizePol:
				if p := size.RequestPolicy; p == nil || p.Default == nil || !p.Default.IsZero() || p.ValidRange == nil || p.ValidRange.Min == nil || !p.ValidRange.Min.IsZero() || p.ValidRange.Max != nil {
					t.Errorf("size requestPolicy: want default 0, validRange {min: 0}, got %+v", p)
				}
			case hasSize && size.RequestPolicy != nil:
				t.Errorf("size requestPolicy: want none, got %+v", size.RequestPolicy)
			case !hasSize && tc.wantSizePol:
				t.Errorf("missing size capacity")
			}
		})
	}
}

// fullBlockDevice sets every optional attribute, with strings of length n.
func fullBlockDevice(n int) discovery.Device {
	long := func(prefix string) string { return prefix + strings.Repeat("x", n-len(prefix)) }
	d := diskForTest("dm-7", "/dev/dm-7", 1<<40)
	d.Block.Kind = discovery.KindMpath
	d.Block.Model = long("model-")
	d.Block.Vendor = long("vendor-")
	d.Block.Serial = long("serial-")
	d.Block.WWN = long("wwn-")
	d.Block.DMName = long("mpatha-")
	d.Block.DMUUID = long("mpath-3600")
	d.Block.Parent = "sdq"
	d.Block.FSType = long("fs-")
	d.Block.Rotational, d.Block.Removable, d.Block.ReadOnly = true, true, true
	d.Aliases = []string{"/dev/mapper/mpatha"}
	d.Block.ByID = []string{"/dev/disk/by-id/dm-name-mpatha"}
	d.Block.Slaves = []string{"sdq", "sdr"}
	return d
}

func TestSliceBuildLongStringsAreTruncated(t *testing.T) {
	d := fullBlockDevice(100)
	// A multi-byte rune straddling byte 64 must not be split.
	d.Block.Vendor = strings.Repeat("v", 63) + "é" + strings.Repeat("w", 36)
	res, err := BuildResources("n", inventoryForTest(sharedGroupForTest("g", 5, d)))
	if err != nil {
		t.Fatal(err)
	}
	checkPublishable(t, res)
	dev := findDevice(t, res, "dm-7")
	for _, tc := range []struct {
		attr resourceapi.QualifiedName
		full string
		want int
	}{
		{AttrModel, d.Block.Model, 64},
		{AttrSerial, d.Block.Serial, 64},
		{AttrDMUUID, d.Block.DMUUID, 64},
		{AttrWWN, d.Block.WWN, 64},
		{AttrVendor, d.Block.Vendor, 63},
		{AttrFSType, d.Block.FSType, 64},
	} {
		a, ok := dev.Attributes[tc.attr]
		if !ok || a.StringValue == nil {
			t.Errorf("%s: missing", tc.attr)
			continue
		}
		got := *a.StringValue
		if len(got) != tc.want || !strings.HasPrefix(tc.full, got) || !utf8.ValidString(got) {
			t.Errorf("%s: got %d bytes %q, want the first %d bytes of %q", tc.attr, len(got), got, tc.want, tc.full)
		}
	}
}

// The most attributes and capacities a device can carry must stay within the
// API's budget of 32 (and every name must be valid).
func TestSliceBuildAttributeBudget(t *testing.T) {
	res, err := BuildResources("n", inventoryForTest(sharedGroupForTest("g", 5, fullBlockDevice(10))))
	if err != nil {
		t.Fatal(err)
	}
	checkPublishable(t, res)
	dev := findDevice(t, res, "dm-7")
	n := len(dev.Attributes) + len(dev.Capacity)
	t.Logf("fully populated shared block device: %d attributes + %d capacities = %d of %d",
		len(dev.Attributes), len(dev.Capacity), n, resourceapi.ResourceSliceMaxAttributesAndCapacitiesPerDevice)
	if n > resourceapi.ResourceSliceMaxAttributesAndCapacitiesPerDevice {
		t.Errorf("%d attributes and capacities, more than %d", n, resourceapi.ResourceSliceMaxAttributesAndCapacitiesPerDevice)
	}
	// Every attribute attributes.go defines is set on this device.
	for _, name := range []resourceapi.QualifiedName{AttrGroup, AttrPath, AttrType, AttrMajor, AttrMinor, AttrKind, AttrModel, AttrVendor,
		AttrSerial, AttrWWN, AttrRotational, AttrRemovable, AttrReadOnly, AttrDMName, AttrDMUUID, AttrParent, AttrFSType} {
		if _, ok := dev.Attributes[name]; !ok {
			t.Errorf("attribute %s not set; the budget test no longer covers the worst case", name)
		}
	}
	for _, name := range []resourceapi.QualifiedName{CapSize, CapConsumers} {
		if _, ok := dev.Capacity[name]; !ok {
			t.Errorf("capacity %s not set; the budget test no longer covers the worst case", name)
		}
	}
}

func TestSliceBuildErrors(t *testing.T) {
	tests := []struct {
		name      string
		emptyNode bool
		inv       *discovery.Inventory
		wantErr   string
	}{
		{name: "empty node name", emptyNode: true, inv: inventoryForTest(), wantErr: "node name is empty"},
		{
			name: "same device name in two groups",
			inv: inventoryForTest(
				groupForTest("a", diskForTest("sda", "/dev/sda", 1)),
				groupForTest("b", diskForTest("sda", "/dev/sda", 1)),
			),
			wantErr: `device name "sda" is used by both /dev/sda in group "a" and /dev/sda in group "b"`,
		},
		{
			name: "bundle name collides with a device",
			inv: inventoryForTest(
				groupForTest("a", diskForTest("sda", "/dev/sda", 1)),
				bundleGroupForTest("b", "sda", diskForTest("sdb", "/dev/sdb", 1)),
			),
			wantErr: `device name "sda" is used by both /dev/sda in group "a" and bundle of group "b"`,
		},
		{
			name:    "bundle without name",
			inv:     inventoryForTest(bundleGroupForTest("b", "", diskForTest("sdb", "/dev/sdb", 1))),
			wantErr: `group "b": bundle has no name`,
		},
		{
			name: "unknown sharing mode",
			inv: inventoryForTest(func() discovery.Group {
				g := groupForTest("g", diskForTest("sda", "/dev/sda", 1))
				g.Sharing.Mode = "sometimes"
				return g
			}()),
			wantErr: `group "g": unknown sharing mode "sometimes"`,
		},
		{
			name: "maxConsumers 0",
			inv: inventoryForTest(func() discovery.Group {
				g := sharedGroupForTest("g", 0, diskForTest("sda", "/dev/sda", 1))
				g.Sharing.MaxConsumers = ptr.To[int32](0)
				return g
			}()),
			wantErr: `group "g": maxConsumers must be at least 1, got 0`,
		},
		{
			name: "maxConsumers on an exclusive group",
			inv: inventoryForTest(func() discovery.Group {
				g := groupForTest("g", diskForTest("sda", "/dev/sda", 1))
				g.Sharing.MaxConsumers = ptr.To[int32](2)
				return g
			}()),
			wantErr: `group "g": maxConsumers 2 is only valid with sharing mode "shared"`,
		},
		{
			name:    "more devices than MaxSlicesPerPool slices hold",
			inv:     inventoryForTest(groupForTest("g", manyDisksForTest(MaxSlicesPerPool*resourceapi.ResourceSliceMaxDevices+1)...)),
			wantErr: fmt.Sprintf("%d devices need %d ResourceSlices, more than the %d allowed", MaxSlicesPerPool*resourceapi.ResourceSliceMaxDevices+1, MaxSlicesPerPool+1, MaxSlicesPerPool),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			node := "n"
			if tc.emptyNode {
				node = ""
			}
			_, err := BuildResources(node, tc.inv)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("got error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	// The largest inventory that still fits is accepted.
	res, err := BuildResources("n", inventoryForTest(groupForTest("g", manyDisksForTest(MaxSlicesPerPool*resourceapi.ResourceSliceMaxDevices)...)))
	if err != nil {
		t.Fatalf("%d devices: %v", MaxSlicesPerPool*resourceapi.ResourceSliceMaxDevices, err)
	}
	// Only our check here: the declarative one takes seconds for 16k devices.
	if err := ValidateResources(res); err != nil {
		t.Fatal(err)
	}
}

// Devices that lower the per-slice limit (taints, counters, list attributes)
// are kept apart so that the other slices keep 128 devices.
func TestSliceSplitAdvancedFeatures(t *testing.T) {
	mk := func(prefix string, n int, mod func(*resourceapi.Device)) []resourceapi.Device {
		out := make([]resourceapi.Device, n)
		for i := range out {
			out[i] = resourceapi.Device{Name: fmt.Sprintf("%s-%03d", prefix, i)}
			if mod != nil {
				mod(&out[i])
			}
		}
		return out
	}
	tainted := func(d *resourceapi.Device) {
		d.Taints = []resourceapi.DeviceTaint{{Key: "example.com/unhealthy", Effect: resourceapi.DeviceTaintEffectNoSchedule}}
	}
	listAttr := func(d *resourceapi.Device) {
		d.Attributes = map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{"aliases": {StringValues: []string{"a", "b"}}}
	}
	shared := func(d *resourceapi.Device) { d.AllowMultipleAllocations = ptr.To(true) }
	tests := []struct {
		name    string
		devices []resourceapi.Device
		want    []int
	}{
		{name: "none", want: []int{0}},
		{name: "200 plain", devices: mk("p", 200, nil), want: []int{128, 72}},
		{name: "200 shared stay at 128", devices: mk("s", 200, shared), want: []int{128, 72}},
		{name: "130 plain, 70 tainted", devices: append(mk("p", 130, nil), mk("t", 70, tainted)...), want: []int{128, 2, 64, 6}},
		{name: "interleaved list attributes", devices: append(append(mk("a", 64, listAttr), mk("p", 128, nil)...), mk("b", 1, listAttr)...), want: []int{128, 64, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := splitIntoSlices(tc.devices)
			var sizes []int
			var names []string
			for _, s := range got {
				sizes = append(sizes, len(s.Devices))
				for _, d := range s.Devices {
					names = append(names, d.Name)
				}
			}
			if !slices.Equal(sizes, tc.want) {
				t.Errorf("slice sizes: got %v, want %v", sizes, tc.want)
			}
			var want []string
			for _, d := range tc.devices {
				want = append(want, d.Name)
			}
			slices.Sort(want)
			slices.Sort(names)
			if !slices.Equal(names, want) {
				t.Errorf("devices lost or duplicated: got %d, want %d", len(names), len(want))
			}
			if err := ValidateResources(resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{"n": {Slices: got}}}); err != nil {
				t.Errorf("ValidateResources: %v", err)
			}
		})
	}
}

func BenchmarkBuildResources1000(b *testing.B) {
	inv := inventoryForTest(
		groupForTest("disks", manyDisksForTest(600)...),
		sharedGroupForTest("shared", 8, manyDisksForTest(1000)[600:]...),
		bundleGroupForTest("bundle", "bundle-all", manyDisksForTest(100)...),
	)
	b.ReportAllocs()
	for b.Loop() {
		res, err := BuildResources("node-1", inv)
		if err != nil {
			b.Fatal(err)
		}
		if n := len(res.Pools["node-1"].Slices); n != 8 {
			b.Fatalf("got %d slices", n)
		}
	}
}

func BenchmarkValidateResources1000(b *testing.B) {
	res, err := BuildResources("node-1", inventoryForTest(groupForTest("disks", manyDisksForTest(1000)...)))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := ValidateResources(res); err != nil {
			b.Fatal(err)
		}
	}
}

// A configuration with groups: [] publishes nothing: the node's pool is one
// empty slice, which the API server accepts, so that earlier devices are
// withdrawn.
func TestSliceBuildNoGroups(t *testing.T) {
	res, err := BuildResources("n", &discovery.Inventory{Groups: []discovery.Group{}, Excluded: []discovery.Exclusion{}})
	if err != nil {
		t.Fatal(err)
	}
	checkPublishable(t, res)
	names, perSlice := publishedNames(t, res, "n")
	if len(names) != 0 || len(perSlice) != 1 {
		t.Errorf("got devices %v in slices %v, want one empty slice", names, perSlice)
	}
}
