package deviceplugin

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// SysfsNUMA reads a device's NUMA node from sysfs under the host root: the
// numa_node attribute of the nearest ancestor of the device's directory
// (/sys/class/block/<kernel name>, or /sys/dev/char/<major>:<minor>) that
// has one (the PCI function a disk or controller sits on). A device
// with none, such as a device-mapper, md or loop device, takes the NUMA
// nodes of the devices it is built on (slaves/). The kernel's -1 (no NUMA
// affinity, as on most single-socket machines and VMs) is unknown.
//
// Discovery does not carry NUMA nodes (yet), so the device plugin reads
// them itself; it only ever reads sysfs.
func SysfsNUMA(hostRoot string) NUMAFunc {
	if hostRoot == "" {
		hostRoot = "/"
	}
	sysDevices := filepath.Join(hostRoot, "sys", "devices")
	return func(d *discovery.Device) []int64 {
		link := filepath.Join(hostRoot, "sys", "dev", "char", fmt.Sprintf("%d:%d", d.Major, d.Minor))
		if d.Type == v1alpha1.DeviceTypeBlock {
			link = filepath.Join(hostRoot, "sys", "dev", "block", fmt.Sprintf("%d:%d", d.Major, d.Minor))
			if d.Block != nil && d.Block.KernelName != "" {
				link = filepath.Join(hostRoot, "sys", "class", "block", d.Block.KernelName)
			}
		}
		return unionNUMA(numaOf(sysDevices, link, 0)...)
	}
}

// numaOf walks up from the sysfs directory dir (a link is resolved first)
// and returns the first numa_node found, or the NUMA nodes of the slaves.
func numaOf(sysDevices, dir string, depth int) [][]int64 {
	if depth > 8 {
		return nil
	}
	real, err := filepath.EvalSymlinks(dir)
	if err != nil || !strings.HasPrefix(real, sysDevices+string(filepath.Separator)) {
		return nil
	}
	for p := real; p != sysDevices && strings.HasPrefix(p, sysDevices); p = filepath.Dir(p) {
		data, err := os.ReadFile(filepath.Join(p, "numa_node"))
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil || n < 0 {
			break // the kernel knows the device and says: no affinity
		}
		return [][]int64{{n}}
	}
	entries, err := os.ReadDir(filepath.Join(real, "slaves"))
	if err != nil {
		return nil
	}
	var out [][]int64
	for _, e := range entries {
		out = append(out, numaOf(sysDevices, filepath.Join(real, "slaves", e.Name()), depth+1)...)
	}
	return out
}
