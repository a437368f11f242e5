package driver

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/utils/ptr"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// CapConsumers is the consumable capacity that bounds how many claims may
// hold a shared device at once (Sharing.MaxConsumers). Every allocation
// consumes exactly one unit of it; see sharingPolicy.
const CapConsumers resourceapi.QualifiedName = "consumers"

// MaxSlicesPerPool bounds the number of ResourceSlices BuildResources
// produces for one node (16,384 devices at 128 per slice). The API has no such
// limit; it is a sanity bound against a runaway discovery configuration
// (for example a group that includes every /dev node), whose slices would
// all be rewritten on every change.
const MaxSlicesPerPool = 128

// Devices per ResourceSlice
//
// k8s.io/api/resource/v1/types.go (v0.37.2) documents the limit in three
// places:
//
//   - ResourceSliceSpec.Devices: "Must not have more than 128 entries. If any
//     device uses taints or consumes counters the limit is 64."
//   - Device.Taints: "If taints are set for any device in a ResourceSlice,
//     then the maximum number of allowed devices per ResourceSlice is 64
//     instead of 128."
//   - ResourceSliceMaxDevicesWithAdvancedFeatures: "the maximum number of
//     devices in a ResourceSlice if any of those devices uses advanced
//     features: device taints (DRADeviceTaints), consuming counters
//     (DRAPartitionableDevices), list attributes (DRAListTypeAttributes)".
//
// The check itself is hand-written apiserver validation that is not in the
// module cache (k8s.io/kubernetes is not importable; the generated
// declarative rules in k8s.io/api/resource/v1/zz_generated.validations.go
// have no device-count rule). Its upstream source,
// kubernetes/kubernetes pkg/apis/resource/validation/validation.go,
// validateResourceSliceSpec (read at commit 009801d930e2, the 1.37 API with
// list-type attributes), agrees with the comments: the limit drops to 64
// when haveDeviceTaints || haveConsumesCounters || haveListAttributes, i.e.
// when any device in the slice has a non-empty Taints or ConsumesCounters, or
// an attribute with a list value (bools/ints/strings/versions).
//
// Not in that list, and therefore allowed in a 128-device slice:
// AllowMultipleAllocations, capacities with a RequestPolicy (consumable
// capacity), BindsToNode, binding conditions and per-device node selection.
// Shared devices (AllowMultipleAllocations + consumable capacity) therefore
// need no slice of their own; usesAdvancedFeatures below still keeps any
// device that would lower the limit apart from the others, so that one such
// device never halves the capacity of the slice it lands in.

// usesAdvancedFeatures reports whether a device lowers its slice's limit to
// ResourceSliceMaxDevicesWithAdvancedFeatures.
func usesAdvancedFeatures(d *resourceapi.Device) bool {
	if len(d.Taints) > 0 || len(d.ConsumesCounters) > 0 {
		return true
	}
	for _, a := range d.Attributes {
		if a.BoolValues != nil || a.IntValues != nil || a.StringValues != nil || a.VersionValues != nil {
			return true
		}
	}
	return false
}

func anyUsesAdvancedFeatures(devices []resourceapi.Device) bool {
	for i := range devices {
		if usesAdvancedFeatures(&devices[i]) {
			return true
		}
	}
	return false
}

// maxDevicesInSlice is the API limit for the given slice content.
func maxDevicesInSlice(devices []resourceapi.Device) int {
	if anyUsesAdvancedFeatures(devices) {
		return resourceapi.ResourceSliceMaxDevicesWithAdvancedFeatures
	}
	return resourceapi.ResourceSliceMaxDevices
}

// BuildResources turns one discovery pass into what the kubelet plugin
// publishes: a single pool named after the node with all of the node's
// devices.
//
//   - A group publishes one device per device node, named Device.Name, with
//     DeviceAttributes and DeviceCapacity.
//   - A bundle group publishes only one device, named Group.BundleName, with
//     BundleAttributes and BundleCapacity; a bundle that matched no node
//     publishes nothing, since granting it would grant nothing.
//   - A shared group (Sharing.Mode shared) marks its devices
//     AllowMultipleAllocations. Every capacity of such a device is consumable
//     (see the API docs of Device.AllowMultipleAllocations), so each one gets
//     a request policy: "size" is consumed only when a claim explicitly
//     requests it (default 0), and with MaxConsumers a "consumers" capacity
//     of that value is added of which every allocation takes exactly one, so
//     that the scheduler allocates the device at most MaxConsumers times.
//   - Devices that share blocks (a disk and its partitions, see
//     discovery.Overlaps) consume shared counters, so that the scheduler
//     never allocates two of them at once; the counter sets go into slices
//     of their own, after the device slices. Where the API's limits cannot
//     express a stack, the devices under it are withheld (see counters.go).
//
// Order is deterministic and expresses preference, because the scheduler
// uses first fit over slices (sorted by name, which the resourceslice
// controller derives from the slice index) and over devices within a slice:
// groups come in inventory (configuration) order and within a group devices
// are sorted by Path, then Name. Devices are then cut into slices of at most
// ResourceSliceMaxDevices (128), with devices that use limit-lowering
// features (consuming counters) in slices of their own of at most 64, those
// that consume fewer counters (block fewer others) first. A node without
// devices still gets one empty slice: "an empty pool" tells the scheduler
// that the driver runs and has nothing to offer.
//
// BuildResources rejects input that cannot be published as is: an empty node
// name, duplicate device names, a bundle without a name, an unknown sharing
// mode, MaxConsumers below 1 or on an exclusive group, and more than
// MaxSlicesPerPool slices. It does not re-check every API rule; callers run
// ValidateResources on the result before publishing it.
func BuildResources(nodeName string, inv *discovery.Inventory) (resourceslice.DriverResources, error) {
	res, _, err := BuildResourcesWithheld(nodeName, inv)
	return res, err
}

// BuildResourcesWithheld is BuildResources that also returns the nodes it
// did not publish, with the reason: devices whose overlaps exceed the API's
// counter limits. Sorted by path.
func BuildResourcesWithheld(nodeName string, inv *discovery.Inventory) (resourceslice.DriverResources, []discovery.Exclusion, error) {
	return buildResources(nodeName, inv, nil)
}

func buildResources(nodeName string, inv *discovery.Inventory, held *HeldDevices) (resourceslice.DriverResources, []discovery.Exclusion, error) {
	if nodeName == "" {
		return resourceslice.DriverResources{}, nil, errors.New("build resources: node name is empty")
	}

	var groups []discovery.Group
	if inv != nil {
		groups = inv.Groups
	}
	n := 0
	for i := range groups {
		if groups[i].Bundle {
			n++
		} else {
			n += len(groups[i].Devices)
		}
	}

	devices := make([]resourceapi.Device, 0, n)
	// publisher remembers who published a device name, for the error
	// message about a duplicate; it is formatted only then.
	type publisher struct {
		group string
		path  string // empty for a bundle
	}
	describe := func(p publisher) string {
		if p.path == "" {
			return fmt.Sprintf("bundle of group %q", p.group)
		}
		return fmt.Sprintf("%s in group %q", p.path, p.group)
	}
	owner := make(map[string]publisher, n)
	var errs []error
	plan := planCounters(inv)
	add := func(dev resourceapi.Device, p publisher) {
		if prev, dup := owner[dev.Name]; dup {
			errs = append(errs, fmt.Errorf("device name %q is used by both %s and %s", dev.Name, describe(prev), describe(p)))
			return
		}
		owner[dev.Name] = p
		if _, withheld := plan.withheld[dev.Name]; withheld {
			return
		}
		dev.ConsumesCounters = plan.consumes[dev.Name]
		devices = append(devices, dev)
	}

	for gi := range groups {
		g := &groups[gi]
		policy, err := sharingPolicy(g.Sharing)
		if err != nil {
			errs = append(errs, fmt.Errorf("group %q: %w", g.Name, err))
			continue
		}
		if g.Bundle {
			if len(g.Devices) == 0 {
				continue
			}
			if g.BundleName == "" {
				errs = append(errs, fmt.Errorf("group %q: bundle has no name", g.Name))
				continue
			}
			dev := resourceapi.Device{
				Name:       g.BundleName,
				Attributes: BundleAttributes(g),
				Capacity:   BundleCapacity(g),
			}
			policy.apply(&dev)
			add(dev, publisher{group: g.Name})
			continue
		}
		for _, di := range sortedByPath(g.Devices) {
			d := &g.Devices[di]
			dev := resourceapi.Device{
				Name:       d.Name,
				Attributes: DeviceAttributes(d),
				Capacity:   DeviceCapacity(d),
			}
			policy.apply(&dev)
			add(dev, publisher{group: g.Name, path: d.Path})
		}
	}
	if len(errs) > 0 {
		return resourceslice.DriverResources{}, nil, fmt.Errorf("build resources for node %q: %w", nodeName, errors.Join(errs...))
	}

	known := make(map[string]bool, len(owner))
	for name := range owner {
		known[name] = true
	}
	devices = held.applyTaints(inv, devices, known)
	sl := splitIntoSlices(devices)
	sl = append(sl, plan.counterSlices()...)
	if len(sl) > MaxSlicesPerPool {
		return resourceslice.DriverResources{}, nil, fmt.Errorf("build resources for node %q: %d devices need %d ResourceSlices, more than the %d allowed; narrow the discovery groups or use a bundle",
			nodeName, len(devices), len(sl), MaxSlicesPerPool)
	}
	return resourceslice.DriverResources{
		Pools: map[string]resourceslice.Pool{
			nodeName: {Slices: sl},
		},
	}, plan.excluded, nil
}

// sortedByPath returns the indices of devs ordered by Path, then Name.
// Discovery already sorts by Path; sorting here again keeps the published
// order independent of the producer, at negligible cost.
func sortedByPath(devs []discovery.Device) []int {
	idx := make([]int, len(devs))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		return cmp.Or(cmp.Compare(devs[a].Path, devs[b].Path), cmp.Compare(devs[a].Name, devs[b].Name))
	})
	return idx
}

// splitIntoSlices cuts devices into ResourceSlices within the API limits,
// keeping their order. Devices that lower the per-slice limit go into slices
// of their own, after the others, those that consume fewer counters first:
// the scheduler takes the first fit, and a partition blocks only its disk
// where the disk blocks all its partitions. At least one (possibly empty)
// slice is returned.
func splitIntoSlices(devices []resourceapi.Device) []resourceslice.Slice {
	plain, advanced := devices, []resourceapi.Device(nil)
	if anyUsesAdvancedFeatures(devices) {
		plain = make([]resourceapi.Device, 0, len(devices))
		for i := range devices {
			if usesAdvancedFeatures(&devices[i]) {
				advanced = append(advanced, devices[i])
			} else {
				plain = append(plain, devices[i])
			}
		}
		slices.SortStableFunc(advanced, func(a, b resourceapi.Device) int {
			return cmp.Compare(countersConsumed(&a), countersConsumed(&b))
		})
	}
	out := make([]resourceslice.Slice, 0, len(plain)/resourceapi.ResourceSliceMaxDevices+len(advanced)/resourceapi.ResourceSliceMaxDevicesWithAdvancedFeatures+2)
	for chunk := range slices.Chunk(plain, resourceapi.ResourceSliceMaxDevices) {
		out = append(out, resourceslice.Slice{Devices: slices.Clip(chunk)})
	}
	for chunk := range slices.Chunk(advanced, resourceapi.ResourceSliceMaxDevicesWithAdvancedFeatures) {
		out = append(out, resourceslice.Slice{Devices: slices.Clip(chunk)})
	}
	if len(out) == 0 {
		out = append(out, resourceslice.Slice{})
	}
	return out
}

// deviceSharing is what a group's Sharing turns into on its devices.
type deviceSharing struct {
	shared       bool
	maxConsumers int64 // 0: unbounded
}

// sharingPolicy checks a group's Sharing. An empty mode is exclusive (the
// configuration default).
func sharingPolicy(s v1alpha1.Sharing) (deviceSharing, error) {
	switch s.Mode {
	case "", v1alpha1.SharingExclusive:
		if s.MaxConsumers != nil {
			return deviceSharing{}, fmt.Errorf("maxConsumers %d is only valid with sharing mode %q", *s.MaxConsumers, v1alpha1.SharingShared)
		}
		return deviceSharing{}, nil
	case v1alpha1.SharingShared:
		p := deviceSharing{shared: true}
		if s.MaxConsumers != nil {
			if *s.MaxConsumers < 1 {
				return deviceSharing{}, fmt.Errorf("maxConsumers must be at least 1, got %d", *s.MaxConsumers)
			}
			p.maxConsumers = int64(*s.MaxConsumers)
		}
		return p, nil
	default:
		return deviceSharing{}, fmt.Errorf("unknown sharing mode %q (want %q or %q)", s.Mode, v1alpha1.SharingExclusive, v1alpha1.SharingShared)
	}
}

// apply marks a device as shared and bounds its consumers.
//
// With AllowMultipleAllocations every capacity of the device is consumable,
// and an allocation that does not request a capacity consumes its
// requestPolicy.default, or the whole value when there is no policy. Without
// a policy the first claim would therefore take the whole "size" and a
// second claim would not fit. Hence:
//
//   - each existing capacity (size) gets default 0 and validRange {min: 0}:
//     a claim that does not mention it consumes nothing, and a claim that
//     requests an amount reserves that amount against the value (the
//     allocator rejects requests beyond what is left). Claims that only
//     want a minimum size should use a CEL selector instead, e.g.
//     device.capacity["power-dev-plugin.io"].size.compareTo(quantity("100Gi")) >= 0,
//     which consumes nothing;
//   - with MaxConsumers, "consumers" has value MaxConsumers and
//     default 1, validRange {min: 1, max: 1}: a claim without a request
//     consumes 1, a request below 1 is rounded up to min (1), a request
//     above 1 violates max and the device is not allocated for it. So every
//     allocation takes exactly one unit and the (MaxConsumers+1)-th does not
//     fit.
//
// Exclusive devices are left alone: no AllowMultipleAllocations (the API
// forbids a requestPolicy without it) and the scheduler allocates them once.
func (p deviceSharing) apply(dev *resourceapi.Device) {
	if !p.shared {
		return
	}
	dev.AllowMultipleAllocations = ptr.To(true)
	for name, c := range dev.Capacity {
		c.RequestPolicy = &resourceapi.CapacityRequestPolicy{
			Default:    resource.NewQuantity(0, c.Value.Format),
			ValidRange: &resourceapi.CapacityRequestPolicyRange{Min: resource.NewQuantity(0, c.Value.Format)},
		}
		dev.Capacity[name] = c
	}
	if p.maxConsumers > 0 {
		if dev.Capacity == nil {
			dev.Capacity = make(map[resourceapi.QualifiedName]resourceapi.DeviceCapacity, 1)
		}
		dev.Capacity[CapConsumers] = resourceapi.DeviceCapacity{
			Value: *resource.NewQuantity(p.maxConsumers, resource.DecimalSI),
			RequestPolicy: &resourceapi.CapacityRequestPolicy{
				Default: resource.NewQuantity(1, resource.DecimalSI),
				ValidRange: &resourceapi.CapacityRequestPolicyRange{
					Min: resource.NewQuantity(1, resource.DecimalSI),
					Max: resource.NewQuantity(1, resource.DecimalSI),
				},
			},
		}
	}
}
