package driver

import (
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// A multipath map is handed over at /dev/dm-N and at its /dev/mapper name;
// by-id links are not recreated in the container.
func TestPlanClaimMapperAlias(t *testing.T) {
	mp := diskForTest("dm-0", "/dev/dm-0", 1<<30)
	mp.Major, mp.Minor = 253, 0
	mp.Block.Kind, mp.Block.DMName = discovery.KindMpath, "mpatha"
	mp.Aliases = []string{"/dev/disk/by-id/dm-name-mpatha", "/dev/mapper/mpatha"}
	inv := inventoryForTest(groupForTest("mpath", mp))
	class := driverClassForTest("pdp")
	claim := allocateForTest(t, "node-1", inv, []*resourceapi.DeviceClass{class},
		claimForTest("c", exactRequestForTest("r", "pdp")))[0]

	plan, err := PlanClaim(claim, "node-1", inv)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, n := range plan.Devices[0].Nodes {
		if n.HostPath != "/dev/dm-0" || n.Major != 253 || n.Minor != 0 {
			t.Errorf("node %+v", n)
		}
		paths = append(paths, n.ContainerPath)
	}
	if len(paths) != 2 || paths[0] != "/dev/dm-0" || paths[1] != "/dev/mapper/mpatha" {
		t.Errorf("container paths %v, want [/dev/dm-0 /dev/mapper/mpatha]", paths)
	}

	// With a containerPath the node goes only there.
	withPath := claim.DeepCopy()
	withPath.Status.Allocation.Devices.Config = []resourceapi.DeviceAllocationConfiguration{{
		Source: resourceapi.AllocationConfigSourceClaim,
		DeviceConfiguration: resourceapi.DeviceConfiguration{Opaque: &resourceapi.OpaqueDeviceConfiguration{
			Driver:     DriverName,
			Parameters: runtime.RawExtension{Raw: []byte(`{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig","containerPath":"/dev/data"}`)},
		}},
	}}
	plan, err = PlanClaim(withPath, "node-1", inv)
	if err != nil {
		t.Fatal(err)
	}
	if n := plan.Devices[0].Nodes; len(n) != 1 || n[0].ContainerPath != "/dev/data" {
		t.Errorf("with containerPath: %+v", n)
	}
}
