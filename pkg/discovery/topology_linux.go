package discovery

import (
	"path/filepath"

	"k8s.io/dynamic-resource-allocation/deviceattribute"
)

// pcieRootOf asks deviceattribute for the PCIe root of the PCI function
// bdf, in the sysfs under the host root; "" when it cannot tell.
func pcieRootOf(hostRoot, bdf string) string {
	attr, err := deviceattribute.GetPCIeRootAttributeByPCIBusID(bdf, deviceattribute.WithFSFromRoot(filepath.Join(hostRoot, "sys")))
	if err != nil || attr.Value.StringValue == nil {
		return ""
	}
	return *attr.Value.StringValue
}
