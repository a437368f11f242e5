package driver

import (
	"unicode/utf8"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// DriverName is the DRA driver name and the domain of every attribute.
const DriverName = v1alpha1.GroupName

// Attribute and capacity names, in the driver's domain. A DeviceClass or
// claim selects on them with CEL, e.g.
// device.attributes["power-dev-plugin.io"].serial == "S3Z1NB0K".
const (
	AttrGroup      resourceapi.QualifiedName = "group"
	AttrPath       resourceapi.QualifiedName = "path"
	AttrType       resourceapi.QualifiedName = "type"
	AttrMajor      resourceapi.QualifiedName = "major"
	AttrMinor      resourceapi.QualifiedName = "minor"
	AttrKind       resourceapi.QualifiedName = "kind"
	AttrModel      resourceapi.QualifiedName = "model"
	AttrVendor     resourceapi.QualifiedName = "vendor"
	AttrSerial     resourceapi.QualifiedName = "serial"
	AttrWWN        resourceapi.QualifiedName = "wwn"
	AttrRotational resourceapi.QualifiedName = "rotational"
	AttrRemovable  resourceapi.QualifiedName = "removable"
	AttrReadOnly   resourceapi.QualifiedName = "readOnly"
	AttrDMName     resourceapi.QualifiedName = "dmName"
	AttrDMUUID     resourceapi.QualifiedName = "dmUUID"
	AttrParent     resourceapi.QualifiedName = "parent"
	// AttrBundle is true on the one device a bundle group publishes;
	// AttrNodes is how many device nodes that device carries.
	AttrBundle resourceapi.QualifiedName = "bundle"
	AttrNodes  resourceapi.QualifiedName = "nodes"

	// CapSize is the size of a block device in bytes (for a bundle: the sum).
	CapSize resourceapi.QualifiedName = "size"
)

// truncate cuts s to the API's attribute value limit without splitting a
// UTF-8 sequence. Long serials and device-mapper UUIDs exist; a device must
// never be rejected for one.
func truncate(s string) string {
	if len(s) <= resourceapi.DeviceAttributeMaxValueLength {
		return s
	}
	s = s[:resourceapi.DeviceAttributeMaxValueLength]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func strAttr(s string) resourceapi.DeviceAttribute {
	s = truncate(s)
	return resourceapi.DeviceAttribute{StringValue: &s}
}

func intAttr(i int64) resourceapi.DeviceAttribute {
	return resourceapi.DeviceAttribute{IntValue: &i}
}

func boolAttr(b bool) resourceapi.DeviceAttribute {
	return resourceapi.DeviceAttribute{BoolValue: &b}
}

// DeviceAttributes returns the attributes a single device node is published
// with. Empty strings are left out so that CEL's has() tells "unknown" apart.
func DeviceAttributes(d *discovery.Device) map[resourceapi.QualifiedName]resourceapi.DeviceAttribute {
	a := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		AttrGroup: strAttr(d.Group),
		AttrPath:  strAttr(d.Path),
		AttrType:  strAttr(string(d.Type)),
		AttrMajor: intAttr(int64(d.Major)),
		AttrMinor: intAttr(int64(d.Minor)),
	}
	if b := d.Block; b != nil {
		a[AttrKind] = strAttr(string(b.Kind))
		a[AttrRotational] = boolAttr(b.Rotational)
		a[AttrRemovable] = boolAttr(b.Removable)
		a[AttrReadOnly] = boolAttr(b.ReadOnly)
		for name, v := range map[resourceapi.QualifiedName]string{
			AttrModel:  b.Model,
			AttrVendor: b.Vendor,
			AttrSerial: b.Serial,
			AttrWWN:    b.WWN,
			AttrDMName: b.DMName,
			AttrDMUUID: b.DMUUID,
			AttrParent: b.Parent,
		} {
			if v != "" {
				a[name] = strAttr(v)
			}
		}
	}
	return a
}

// DeviceCapacity returns the capacities of a single device node.
func DeviceCapacity(d *discovery.Device) map[resourceapi.QualifiedName]resourceapi.DeviceCapacity {
	if d.Block == nil {
		return nil
	}
	return map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
		CapSize: {Value: *resource.NewQuantity(int64(d.Block.SizeBytes), resource.BinarySI)},
	}
}

// BundleAttributes returns the attributes of the one device a bundle group
// publishes: the group, how many nodes it carries, and the node type when all
// nodes share one.
func BundleAttributes(g *discovery.Group) map[resourceapi.QualifiedName]resourceapi.DeviceAttribute {
	a := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		AttrGroup:  strAttr(g.Name),
		AttrBundle: boolAttr(true),
		AttrNodes:  intAttr(int64(len(g.Devices))),
	}
	var typ v1alpha1.DeviceType
	for i, d := range g.Devices {
		if i == 0 {
			typ = d.Type
		} else if d.Type != typ {
			typ = ""
			break
		}
	}
	if typ != "" {
		a[AttrType] = strAttr(string(typ))
	}
	return a
}

// BundleCapacity is the sum of the sizes of a bundle's block devices.
func BundleCapacity(g *discovery.Group) map[resourceapi.QualifiedName]resourceapi.DeviceCapacity {
	var total int64
	for _, d := range g.Devices {
		if d.Block != nil {
			total += int64(d.Block.SizeBytes)
		}
	}
	return map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
		CapSize: {Value: *resource.NewQuantity(total, resource.BinarySI)},
	}
}
