package driver

import (
	"strings"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// A disk and its partition are separate devices, but they share blocks:
// two claims must not hold them at once. Sharing a device is not sharing
// the devices that overlap it, so this holds in a shared group too (the
// scheduler's counters say the same).
func TestStateRefusesOverlappingDiskAndPartition(t *testing.T) {
	for _, mode := range []v1alpha1.SharingMode{v1alpha1.SharingExclusive, v1alpha1.SharingShared} {
		t.Run(string(mode), func(t *testing.T) {
			ctx := ptCtx(t)
			env := newPtEnv(t)
			env.setInventory(&discovery.Inventory{Groups: []discovery.Group{{
				Name: "disks", Permissions: "rw", Sharing: v1alpha1.Sharing{Mode: mode},
				Devices: []discovery.Device{
					{Name: "sdd", Group: "disks", Path: "/dev/sdd", Type: v1alpha1.DeviceTypeBlock, Major: 8, Minor: 48,
						Block: &discovery.BlockInfo{KernelName: "sdd", Kind: discovery.KindDisk}},
					{Name: "sdd1", Group: "disks", Path: "/dev/sdd1", Type: v1alpha1.DeviceTypeBlock, Major: 8, Minor: 49,
						Block: &discovery.BlockInfo{KernelName: "sdd1", Kind: discovery.KindPartition, Parent: "sdd"}},
					{Name: "sde", Group: "disks", Path: "/dev/sde", Type: v1alpha1.DeviceTypeBlock, Major: 8, Minor: 64,
						Block: &discovery.BlockInfo{KernelName: "sde", Kind: discovery.KindDisk}},
				},
			}}})
			s := env.state(t, ctx)
			whole := ptClaim("whole", ptResults(ptResult("d", "sdd")))
			mustPrepare(t, ctx, s, whole)

			part := ptClaim("part", ptResults(ptResult("d", "sdd1")))
			err := prepareErr(t, ctx, s, part)
			if err == nil || !strings.Contains(err.Error(), `device node /dev/sdd1 (b 8:49) shares blocks with /dev/sdd, which is prepared for claim default/whole`) {
				t.Fatalf("partition of a prepared disk: %v", err)
			}
			// Another disk is fine.
			mustPrepare(t, ctx, s, ptClaim("other", ptResults(ptResult("d", "sde"))))

			// Once the disk's claim is gone, the partition can be
			// prepared, and one claim may hold a disk and its partition.
			mustUnprepare(t, ctx, s, ptRef(whole))
			mustPrepare(t, ctx, s, part)
			mustUnprepare(t, ctx, s, ptRef(part))
			mustPrepare(t, ctx, s, ptClaim("both", ptResults(ptResult("a", "sdd"), ptResult("b", "sdd1"))))
		})
	}
}

// A device-mapper device and a disk it is built on through a layer that is
// not published (an LV on a crypt device on the disk's partition) share
// blocks too: Prepare knows it from discovery's BlockInfo.Under.
func TestStateRefusesOverlappingStackedDevice(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	env.setInventory(&discovery.Inventory{Groups: []discovery.Group{{
		Name: "disks", Permissions: "rw",
		Devices: []discovery.Device{
			{Name: "dm-2", Group: "disks", Path: "/dev/dm-2", Type: v1alpha1.DeviceTypeBlock, Major: 253, Minor: 2,
				Block: &discovery.BlockInfo{KernelName: "dm-2", Kind: discovery.KindLVM, Slaves: []string{"dm-1"}, Under: []string{"dm-1", "sde", "sde1"}}},
			{Name: "sde", Group: "disks", Path: "/dev/sde", Type: v1alpha1.DeviceTypeBlock, Major: 8, Minor: 64,
				Block: &discovery.BlockInfo{KernelName: "sde", Kind: discovery.KindDisk}},
		},
	}}})
	s := env.state(t, ctx)
	mustPrepare(t, ctx, s, ptClaim("lv", ptResults(ptResult("d", "dm-2"))))
	err := prepareErr(t, ctx, s, ptClaim("disk", ptResults(ptResult("d", "sde"))))
	if err == nil || !strings.Contains(err.Error(), `device node /dev/sde (b 8:64) shares blocks with /dev/dm-2, which is prepared for claim default/lv`) {
		t.Fatalf("disk under a prepared LV: %v", err)
	}
}
