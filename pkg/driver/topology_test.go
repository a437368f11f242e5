package driver

import (
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/utils/ptr"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

func TestTopologyAttributes(t *testing.T) {
	for _, tc := range []struct {
		name       string
		numa       []int64
		root       string
		wantNUMA   int64 // -1: absent
		wantRootOK bool
	}{
		{"nothing known", nil, "", -1, false},
		{"one NUMA node, a PCIe root", []int64{1}, "pci0000:80", 1, true},
		{"several NUMA nodes: none published", []int64{0, 1}, "", -1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := diskForTest("nvme0n1", "/dev/nvme0n1", 1<<30)
			d.NUMANodes, d.PCIeRoot = tc.numa, tc.root
			a := DeviceAttributes(&d)
			n, ok := a[AttrNUMANode]
			switch {
			case tc.wantNUMA < 0 && ok:
				t.Errorf("numaNode %v published, want none", *n.IntValue)
			case tc.wantNUMA >= 0 && (!ok || n.IntValue == nil || *n.IntValue != tc.wantNUMA):
				t.Errorf("numaNode %+v, want %d", n, tc.wantNUMA)
			}
			r, ok := a[AttrPCIeRoot]
			if ok != tc.wantRootOK || ok && *r.StringValue != tc.root {
				t.Errorf("pcieRoot %+v (present %v), want %q", r, ok, tc.root)
			}
			// The driver's own attributes stay uniform.
			for _, name := range []resourceapi.QualifiedName{AttrGroup, AttrSerial, AttrKind} {
				if _, ok := a[name]; !ok {
					t.Errorf("attribute %s missing", name)
				}
			}
		})
	}
	b := bundleGroupForTest("b", "bundle", diskForTest("nvme0n1", "/dev/nvme0n1", 1<<30))
	b.Devices[0].PCIeRoot, b.Devices[0].NUMANodes = "pci0000:00", []int64{0}
	if a := BundleAttributes(&b); a[AttrPCIeRoot].StringValue != nil || a[AttrNUMANode].IntValue != nil {
		t.Errorf("a bundle publishes topology: %v", a)
	}
}

// TestAllocTopologyOptionalCEL: with the real allocator, a selector that
// reads the optional standard attribute with CEL's .? works on devices with
// and without it, and a matchAttribute constraint on pcieRoot puts two
// devices on one root. A plain read fails on a device without the
// attribute, which is why the docs and the example use .?.
func TestAllocTopologyOptionalCEL(t *testing.T) {
	disk := func(name string, root string) discovery.Device {
		d := diskForTest(name, "/dev/"+name, 1<<30)
		d.PCIeRoot = root
		return d
	}
	inv := inventoryForTest(groupForTest("disks",
		disk("loop0", ""), disk("nvme0n1", "pci0000:00"), disk("nvme1n1", "pci0000:80"), disk("nvme2n1", "pci0000:80")))
	const optional = `device.attributes["resource.kubernetes.io"].?pcieRoot.orValue("") == "pci0000:80"`
	got := allocateForTest(t, "node-1", inv, nil, claimForTest("c", exactRequestForTest("r", allocTestClassName, optional)))
	if d := allocatedDeviceNames(got[0]); len(d) != 1 || d[0] != "nvme1n1" {
		t.Errorf("optional selector: allocated %v, want nvme1n1", d)
	}

	const plain = `device.attributes["resource.kubernetes.io"].pcieRoot == "pci0000:80"`
	if got, err := tryAllocateForTest(t, "node-1", inv, nil, claimForTest("c", exactRequestForTest("r", allocTestClassName, plain))); err == nil {
		t.Errorf("a plain read of the optional attribute on loop0 (no pcieRoot) did not fail: %v", got)
	}

	// Two disks on one PCIe root: the first (nvme0n1) has no partner there.
	claim := claimForTest("pair", exactRequestForTest("a", allocTestClassName), exactRequestForTest("b", allocTestClassName))
	claim.Spec.Devices.Constraints = []resourceapi.DeviceConstraint{{Requests: []string{"a", "b"}, MatchAttribute: ptr.To(resourceapi.FullyQualifiedName(AttrPCIeRoot))}}
	got = allocateForTest(t, "node-1", inv, nil, claim)
	if d := allocatedDeviceNames(got[0]); len(d) != 2 || d[0] != "nvme1n1" || d[1] != "nvme2n1" {
		t.Errorf("matchAttribute pcieRoot: allocated %v, want nvme1n1 and nvme2n1", d)
	}
}
