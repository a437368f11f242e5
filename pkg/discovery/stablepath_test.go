package discovery

import (
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// StableHostPath picks the most specific /dev/disk/by-id link discovery
// found for a device, through a fixture tree (udev's links cannot be made
// here without udev), and keeps the kernel path for devices without one.
func TestStableHostPath(t *testing.T) {
	tr := discoverytest.New(t)
	tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: nd(8, 16), Size: gib,
		ByID: []string{"scsi-35000c500a1b2c3d4", "ata-ST1000_Z1D2", "wwn-0x5000c500a1b2c3d4"}})
	tr.AddBlock(discoverytest.Block{Name: "sdc", Dev: nd(8, 32), Size: gib, ByID: []string{"wwn-0x5000c500a1b2c3d5"}})
	tr.AddBlock(discoverytest.Block{Name: "sdc1", Parent: "sdc", Dev: nd(8, 33), Size: gib / 2,
		ByID: []string{"wwn-0x5000c500a1b2c3d5-part1", "lvm-pv-uuid-Abc123"}})
	tr.AddBlock(discoverytest.Block{Name: "nvme0n1", Dev: nd(259, 0), Size: gib,
		ByID: []string{"nvme-Vendor_SSD_S123", "nvme-eui.0025388b71b0ba1f", "nvme-uuid.6a3f2b1c-0000-0000-0000-000000000001"}})
	tr.AddBlock(discoverytest.Block{Name: "sdd", Dev: nd(8, 48), Size: gib})
	tr.AddBlock(discoverytest.Block{Name: "sde", Dev: nd(8, 64), Size: gib})
	tr.AddBlock(discoverytest.Block{Name: "dm-1", Dev: nd(253, 1), Size: gib, DMName: "mpatha", DMUUID: "mpath-3600a0b80",
		Slaves: []string{"sdd", "sde"}, ByID: []string{"dm-name-mpatha", "dm-uuid-mpath-3600a0b80"}})
	// Loop devices get no by-id link from udev, and a node without udev
	// (the cluster suite's) none at all.
	tr.AddBlock(discoverytest.Block{Name: "loop3", Dev: nd(7, 3), Size: gib, BackingFile: "/var/lib/images/a.img"})
	tr.AddBlock(discoverytest.Block{Name: "sdf", Dev: nd(8, 80), Size: gib})
	tr.CharNode("/dev/fuse", 10, 229)

	cfg := config(nil,
		v1alpha1.DeviceGroup{Name: "disks", Include: []string{"/dev/sd*", "/dev/nvme*", "/dev/dm-*", "/dev/loop*"}},
		v1alpha1.DeviceGroup{Name: "fuse", Types: []v1alpha1.DeviceType{v1alpha1.DeviceTypeChar}, Include: []string{"/dev/fuse"}})
	inv := discoverTree(t, tr, cfg)
	want := map[string]string{
		"/dev/sdb":     "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4",
		"/dev/sdc1":    "/dev/disk/by-id/wwn-0x5000c500a1b2c3d5-part1",
		"/dev/nvme0n1": "/dev/disk/by-id/nvme-eui.0025388b71b0ba1f",
		"/dev/dm-1":    "/dev/disk/by-id/dm-uuid-mpath-3600a0b80",
		"/dev/loop3":   "/dev/loop3",
		"/dev/sdf":     "/dev/sdf",
		"/dev/fuse":    "/dev/fuse",
	}
	got := map[string]string{}
	for _, g := range inv.Groups {
		for i := range g.Devices {
			got[g.Devices[i].Path] = g.Devices[i].StableHostPath()
		}
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: stable host path %q, want %q (published: %v)", p, got[p], w, got)
		}
	}
}

// The ranking alone, for links discovery would attach to one device.
func TestStableHostPathRanking(t *testing.T) {
	dev := func(typ v1alpha1.DeviceType, aliases ...string) *Device {
		return &Device{Path: "/dev/x", Type: typ, Aliases: aliases}
	}
	for _, tc := range []struct {
		d    *Device
		want string
	}{
		{dev(v1alpha1.DeviceTypeBlock, "/dev/disk/by-id/lvm-pv-uuid-A", "/dev/disk/by-id/virtio-SERIAL1"), "/dev/disk/by-id/virtio-SERIAL1"},
		{dev(v1alpha1.DeviceTypeBlock, "/dev/disk/by-id/md-name-host:0", "/dev/disk/by-id/md-uuid-1a2b"), "/dev/disk/by-id/md-uuid-1a2b"},
		{dev(v1alpha1.DeviceTypeBlock, "/dev/disk/by-id/dm-name-vg-lv", "/dev/mapper/vg-lv"), "/dev/disk/by-id/dm-name-vg-lv"},
		{dev(v1alpha1.DeviceTypeBlock, "/dev/mapper/vg-lv"), "/dev/x"},
		{dev(v1alpha1.DeviceTypeBlock), "/dev/x"},
		{dev(v1alpha1.DeviceTypeChar, "/dev/disk/by-id/wwn-0x1"), "/dev/x"},
	} {
		if got := tc.d.StableHostPath(); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.d.Aliases, got, tc.want)
		}
	}
}
