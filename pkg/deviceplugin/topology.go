package deviceplugin

import (
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// SysfsNUMA reads a device's NUMA nodes from sysfs under the host root at
// each call (discovery.NUMANodes, the one rule both modes use), so that the
// device plugin reports what sysfs says now.
func SysfsNUMA(hostRoot string) NUMAFunc {
	return func(d *discovery.Device) []int64 { return discovery.NUMANodes(hostRoot, d) }
}
