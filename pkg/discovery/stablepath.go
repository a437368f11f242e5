package discovery

import (
	"sort"
	"strings"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// ByIDDir is where udev keeps the links that name a block device by what
// it is rather than by the order the kernel found it in.
const ByIDDir = "/dev/disk/by-id/"

// byIDRank orders /dev/disk/by-id links from the most to the least specific
// identity (lower is better). Hardware and device-mapper identities come
// first; lvm-pv-uuid- names what is written on the device, which a
// workload may overwrite, so it comes last. A partition's links are its
// disk's with -partN appended and rank the same.
func byIDRank(name string) int {
	for i, p := range []string{"wwn-", "nvme-eui.", "nvme-uuid.", "dm-uuid-", "md-uuid-"} {
		if strings.HasPrefix(name, p) {
			return i
		}
	}
	if strings.HasPrefix(name, "lvm-pv-uuid-") {
		return 7
	}
	return 6
}

// StableHostPath is the host path that names this very device across
// reboots and renumbering: its most specific /dev/disk/by-id link (wwn-,
// nvme-eui., nvme-uuid., dm-uuid-, md-uuid-, then the others by name). A
// runtime that opens it after a reboot gets the same device, or nothing
// when the device is gone. Devices without such a link (loop devices,
// character devices, hosts without udev) keep Path.
func (d *Device) StableHostPath() string {
	if d.Type != v1alpha1.DeviceTypeBlock {
		return d.Path
	}
	var links []string
	for _, a := range d.Aliases {
		if strings.HasPrefix(a, ByIDDir) && len(a) > len(ByIDDir) {
			links = append(links, a)
		}
	}
	if len(links) == 0 {
		return d.Path
	}
	sort.SliceStable(links, func(i, j int) bool {
		ri, rj := byIDRank(links[i][len(ByIDDir):]), byIDRank(links[j][len(ByIDDir):])
		if ri != rj {
			return ri < rj
		}
		return links[i] < links[j]
	})
	return links[0]
}
