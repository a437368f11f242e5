package discovery

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// Topology: where a device's hardware sits, read from sysfs under the host
// root. Both modes use it: the device plugin reports NUMA nodes to the
// kubelet, the DRA driver publishes the standard numaNode and pcieRoot
// attributes. See docs/design.md, "Topology".

// sysfsDir is the sysfs directory of a device node (a link into
// /sys/devices): /sys/class/block/<kernel name> for a block device,
// /sys/dev/{block,char}/<major>:<minor> otherwise.
func sysfsDir(hostRoot string, d *Device) string {
	if d.Type == v1alpha1.DeviceTypeBlock {
		if d.Block != nil && d.Block.KernelName != "" {
			return filepath.Join(hostRoot, "sys", "class", "block", d.Block.KernelName)
		}
		return filepath.Join(hostRoot, "sys", "dev", "block", fmt.Sprintf("%d:%d", d.Major, d.Minor))
	}
	return filepath.Join(hostRoot, "sys", "dev", "char", fmt.Sprintf("%d:%d", d.Major, d.Minor))
}

// NUMANodes reads a device's NUMA nodes: the numa_node attribute of the
// nearest ancestor of its sysfs directory that has one (the PCI function a
// disk or controller sits on). A device with none, such as a device-mapper,
// md or loop device, takes the NUMA nodes of the devices it is built on
// (slaves/). The kernel's -1 (no NUMA affinity, as on most single-socket
// machines and VMs) is unknown. Sorted, no duplicates; nil when unknown.
func NUMANodes(hostRoot string, d *Device) []int64 {
	if hostRoot == "" {
		hostRoot = "/"
	}
	return UnionNUMA(numaOf(filepath.Join(hostRoot, "sys", "devices"), sysfsDir(hostRoot, d), 0)...)
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

// UnionNUMA merges NUMA node lists: sorted, no duplicates, no negatives.
func UnionNUMA(lists ...[]int64) []int64 {
	var out []int64
	for _, l := range lists {
		for _, n := range l {
			if n >= 0 && !slices.Contains(out, n) {
				out = append(out, n)
			}
		}
	}
	slices.Sort(out)
	return out
}

// pciFunction is a PCI address in extended BDF notation, as sysfs names the
// directory of a PCI function.
var pciFunction = regexp.MustCompile(`^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$`)

// PCIeRoot returns the PCIe root complex ("pci0000:00") of the PCI function
// nearest to the device in the sysfs hierarchy (an NVMe controller, the HBA
// of a SCSI disk), as the standard resource.kubernetes.io/pcieRoot attribute
// has it; "" for a device on no PCI function (device-mapper, md, loop,
// virtual devices) or where sysfs does not say. The root itself comes from
// deviceattribute, which reads /sys/bus/pci/devices under the host root.
func PCIeRoot(hostRoot string, d *Device) string {
	if hostRoot == "" {
		hostRoot = "/"
	}
	sysDevices := filepath.Join(hostRoot, "sys", "devices")
	real, err := filepath.EvalSymlinks(sysfsDir(hostRoot, d))
	if err != nil || !strings.HasPrefix(real, sysDevices+string(filepath.Separator)) {
		return ""
	}
	for p := real; p != sysDevices && strings.HasPrefix(p, sysDevices); p = filepath.Dir(p) {
		bdf := filepath.Base(p)
		if !pciFunction.MatchString(bdf) {
			continue
		}
		return pcieRootOf(hostRoot, bdf)
	}
	return ""
}

// fillTopology sets the topology of every device in inv.
func fillTopology(hostRoot string, inv *Inventory) {
	for gi := range inv.Groups {
		for di := range inv.Groups[gi].Devices {
			d := &inv.Groups[gi].Devices[di]
			d.NUMANodes = NUMANodes(hostRoot, d)
			d.PCIeRoot = PCIeRoot(hostRoot, d)
		}
	}
}
