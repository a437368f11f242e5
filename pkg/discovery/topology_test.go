package discovery

import (
	"fmt"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// TestTopology runs discovery over a fixture tree (no second PCIe root
// complex or NUMA node exists on this machine): two NVMe disks on the PCI
// functions of two root complexes, a SCSI disk behind an HBA, its
// partition, a device-mapper device over disks of both NUMA nodes and a
// loop device. The PCIe root is read by deviceattribute from
// /sys/bus/pci/devices under the host root, as on a real host.
func TestTopology(t *testing.T) {
	tr := discoverytest.New(t)
	pciFn := func(root, bdf, numa string) {
		dir := "/sys/devices/" + root + "/" + bdf
		tr.Mkdir(dir)
		if numa != "" {
			tr.File(dir+"/numa_node", numa+"\n")
		}
		tr.Symlink("/sys/bus/pci/devices/"+bdf, "../../../devices/"+root+"/"+bdf)
	}
	pciFn("pci0000:00", "0000:00:04.0", "0")  // the fixture's NVMe controller
	pciFn("pci0000:00", "0000:00:10.0", "-1") // the fixture's HBA: no affinity
	pciFn("pci0000:80", "0000:80:02.0", "1")
	tr.AddBlock(discoverytest.Block{Name: "nvme0n1", Dev: nd(259, 0), Size: gib})
	tr.AddBlock(discoverytest.Block{Name: "nvme1n1", Dev: nd(259, 1), Size: gib,
		SysDir: "/sys/devices/pci0000:80/0000:80:02.0/nvme/nvme1/nvme1n1"})
	tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: nd(8, 16), Size: gib})
	tr.AddBlock(discoverytest.Block{Name: "sdb1", Parent: "sdb", Dev: nd(8, 17), Size: gib / 2})
	tr.AddBlock(discoverytest.Block{Name: "dm-0", Dev: nd(253, 0), Size: gib, DMName: "both", Slaves: []string{"nvme0n1", "nvme1n1"}})
	tr.AddBlock(discoverytest.Block{Name: "loop0", Dev: nd(7, 0), Size: gib})
	cfg := config([]string{"/dev/nvme0n1", "/dev/nvme1n1"}, v1alpha1.DeviceGroup{Name: "disks", Include: []string{"/dev/nvme*", "/dev/sdb", "/dev/sdb1", "/dev/dm-0", "/dev/loop0"}})
	inv := discoverTree(t, tr, cfg)

	for _, tc := range []struct{ path, numa, root string }{
		{"/dev/nvme0n1", "[0]", "pci0000:00"},
		{"/dev/nvme1n1", "[1]", "pci0000:80"},
		{"/dev/sdb", "[]", "pci0000:00"},
		{"/dev/sdb1", "[]", "pci0000:00"},
		{"/dev/dm-0", "[0 1]", ""},
		{"/dev/loop0", "[]", ""},
	} {
		d := findDevice(inv, tc.path)
		if d == nil {
			t.Errorf("%s not published: %v", tc.path, inv.Excluded)
			continue
		}
		numa := fmt.Sprint(d.NUMANodes)
		if numa != tc.numa || d.PCIeRoot != tc.root {
			t.Errorf("%s: NUMA %s, PCIe root %q; want %s, %q", tc.path, numa, d.PCIeRoot, tc.numa, tc.root)
		}
	}
}
