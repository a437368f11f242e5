package driver

import (
	"fmt"
	"maps"
	"slices"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/dynamic-resource-allocation/resourceslice"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// TaintKey is the key of the taint a device gets while a prepared claim
// holds it and it is gone from the node or cannot be prepared (see
// docs/design.md, "Device taints").
const TaintKey = DriverName + "/unhealthy"

// Taint values: why the device is tainted.
const (
	// TaintGone: the device is no longer on the node.
	TaintGone = "gone"
	// TaintUnpreparable: the device is there but a claim that holds it
	// cannot be prepared (State.DeviceProblems).
	TaintUnpreparable = "unpreparable"
)

// HeldDevices is what the prepared claims hold, for BuildResourcesHeld.
type HeldDevices struct {
	// Names are the DRA device names prepared claims hold
	// (State.PreparedDeviceNames).
	Names []string
	// Problems are held devices that cannot be prepared now, with why
	// (State.DeviceProblems).
	Problems map[string]string
	// Last are the devices as last published, without taints: a held device
	// that is gone stays in the slice as it was.
	Last map[string]resourceapi.Device
	// Recorded are the held devices as the checkpoint has them, for a gone
	// device that this process never published (it was gone at start).
	Recorded map[string]PlannedDevice
}

// BuildResourcesHeld is BuildResourcesWithheld that also keeps in the slices
// the held devices that are gone and taints them and the held devices that
// cannot be prepared (see applyTaints).
func BuildResourcesHeld(nodeName string, inv *discovery.Inventory, held HeldDevices) (res resourceslice.DriverResources, withheld []discovery.Exclusion, err error) {
	return buildResources(nodeName, inv, &held)
}

// taintEffect is a group's configured effect; NoSchedule by default.
func taintEffect(inv *discovery.Inventory, group string) resourceapi.DeviceTaintEffect {
	if inv != nil {
		for i := range inv.Groups {
			if inv.Groups[i].Name == group && inv.Groups[i].UnhealthyTaintEffect == v1alpha1.TaintNoExecute {
				return resourceapi.DeviceTaintEffectNoExecute
			}
		}
	}
	return resourceapi.DeviceTaintEffectNoSchedule
}

func deviceGroup(d *resourceapi.Device) string {
	if a, ok := d.Attributes[AttrGroup]; ok && a.StringValue != nil {
		return *a.StringValue
	}
	return ""
}

// applyTaints taints the published devices that a claim holds and that
// cannot be prepared, and appends the held devices that are gone (not in
// known, the names discovery still has) as last published, tainted. A gone
// device keeps no counters: its counter set may be gone with it, and the
// taint already keeps new claims off it. The scheduler stops allocating a
// tainted device to claims that do not tolerate it; the taint goes with the
// last claim that holds the device.
func (h *HeldDevices) applyTaints(inv *discovery.Inventory, devices []resourceapi.Device, known map[string]bool) []resourceapi.Device {
	if h == nil || len(h.Names) == 0 {
		return devices
	}
	held := make(map[string]bool, len(h.Names))
	for _, n := range h.Names {
		held[n] = true
	}
	taint := func(d *resourceapi.Device, value string) {
		d.Taints = append(slices.Clip(d.Taints), resourceapi.DeviceTaint{Key: TaintKey, Value: value, Effect: taintEffect(inv, deviceGroup(d))})
	}
	for i := range devices {
		if _, bad := h.Problems[devices[i].Name]; bad && held[devices[i].Name] {
			taint(&devices[i], TaintUnpreparable)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(held)) {
		if known[name] {
			continue
		}
		last, ok := h.Last[name]
		if !ok {
			rec, recorded := h.Recorded[name]
			if !recorded {
				continue
			}
			last = recordedDevice(&rec)
		}
		dev := *last.DeepCopy()
		dev.ConsumesCounters = nil
		dev.Taints = nil
		taint(&dev, TaintGone)
		devices = append(devices, dev)
	}
	return devices
}

// recordedDevice rebuilds a device from what a prepared claim recorded of
// it: the attributes of its one node (or of a bundle of its nodes), with
// every attribute present as on a published device, so that selectors do
// not fail on it; sizes are unknown (0).
func recordedDevice(p *PlannedDevice) resourceapi.Device {
	if len(p.Nodes) != 1 {
		g := discovery.Group{Name: p.Group, Devices: make([]discovery.Device, len(p.Nodes))}
		return resourceapi.Device{Name: p.Device, Attributes: BundleAttributes(&g), Capacity: BundleCapacity(&g)}
	}
	n := p.Nodes[0]
	typ := v1alpha1.DeviceTypeChar
	if n.Type == "b" {
		typ = v1alpha1.DeviceTypeBlock
	}
	d := discovery.Device{Name: p.Device, Group: p.Group, Path: n.HostPath, Type: typ, Major: n.Major, Minor: n.Minor, Identity: n.Identity}
	return resourceapi.Device{Name: p.Device, Attributes: DeviceAttributes(&d), Capacity: DeviceCapacity(&d)}
}

// untainted returns the devices of res by name without the taints this
// driver adds, for HeldDevices.Last of the next publication.
func untainted(res resourceslice.DriverResources) map[string]resourceapi.Device {
	out := map[string]resourceapi.Device{}
	for _, p := range res.Pools {
		for _, s := range p.Slices {
			for _, d := range s.Devices {
				d = *d.DeepCopy()
				d.Taints = nil
				out[d.Name] = d
			}
		}
	}
	return out
}

// taintProblems checks a device's taints as the API server does: a label
// name as key, a label value, a known effect.
func taintProblems(t resourceapi.DeviceTaint) []string {
	var probs []string
	for _, msg := range validation.IsQualifiedName(t.Key) {
		probs = append(probs, "key: "+msg)
	}
	for _, msg := range validation.IsValidLabelValue(t.Value) {
		probs = append(probs, "value: "+msg)
	}
	switch t.Effect {
	case resourceapi.DeviceTaintEffectNone, resourceapi.DeviceTaintEffectNoSchedule, resourceapi.DeviceTaintEffectNoExecute:
	default:
		probs = append(probs, fmt.Sprintf("effect: %q is not one of None, NoSchedule, NoExecute", t.Effect))
	}
	return probs
}
