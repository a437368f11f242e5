package deviceplugin

import (
	"fmt"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

func TestSysfsNUMA(t *testing.T) {
	tr := discoverytest.New(t)
	nd := func(maj, min uint32) discoverytest.DevNum { return discoverytest.DevNum{Major: maj, Minor: min} }
	// sda sits on PCI function 0000:00:10.0, which is on NUMA node 1.
	tr.AddBlock(discoverytest.Block{Name: "sda", Dev: nd(8, 0), Size: 1 << 30})
	tr.AddBlock(discoverytest.Block{Name: "sda1", Parent: "sda", Dev: nd(8, 1), Size: 1 << 29})
	tr.File("/sys/devices/pci0000:00/0000:00:10.0/numa_node", "1\n")
	// dm-0 is built on sda1.
	tr.AddBlock(discoverytest.Block{Name: "dm-0", Dev: nd(253, 0), Size: 1 << 29, DMName: "vg-lv", Slaves: []string{"sda1"}})
	// The NVMe controller's function has no NUMA affinity.
	tr.AddBlock(discoverytest.Block{Name: "nvme0n1", Dev: nd(259, 0), Size: 1 << 30})
	tr.File("/sys/devices/pci0000:00/0000:00:04.0/numa_node", "-1\n")
	// A loop device has neither.
	tr.AddBlock(discoverytest.Block{Name: "loop0", Dev: nd(7, 0), Size: 1 << 20})
	// A character device on a PCI function of NUMA node 0.
	tr.File("/sys/devices/pci0000:00/0000:00:06.0/numa_node", "0\n")
	tr.Mkdir("/sys/devices/pci0000:00/0000:00:06.0/accel/accel0")
	tr.Symlink("/sys/dev/char/240:0", "../../devices/pci0000:00/0000:00:06.0/accel/accel0")

	numa := SysfsNUMA(tr.Root)
	block := func(kname string) *discovery.Device {
		return &discovery.Device{Name: kname, Type: "block", Block: &discovery.BlockInfo{KernelName: kname}}
	}
	for _, tc := range []struct {
		dev  *discovery.Device
		want string
	}{
		{block("sda"), "[1]"},
		{block("sda1"), "[1]"},
		{block("dm-0"), "[1]"},
		{block("nvme0n1"), "[]"},
		{block("loop0"), "[]"},
		{block("sdz"), "[]"},
		{&discovery.Device{Name: "accel0", Type: "char", Major: 240, Minor: 0}, "[0]"},
		{&discovery.Device{Name: "fuse", Type: "char", Major: 10, Minor: 229}, "[]"},
	} {
		got := numa(tc.dev)
		if s := fmt.Sprint(got); s != tc.want && (tc.want != "[]" || len(got) != 0) {
			t.Errorf("%s: NUMA %v, want %s", tc.dev.Name, got, tc.want)
		}
	}
}
