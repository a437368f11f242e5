package driver

import (
	"math"
	"strings"
	"unicode"
	"unicode/utf8"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/dynamic-resource-allocation/deviceattribute"

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
	// AttrIdentity is discovery.Device.Identity: which device this is,
	// whatever its kernel name ("wwn:naa.5000c500a1b2c3d4"); "" on a
	// bundle, which is no one device.
	AttrIdentity resourceapi.QualifiedName = "identity"
	// AttrFSType is the file system (or other signature) blkid finds on a
	// block device: ext4, xfs, btrfs, swap...; "" for none, so a class can
	// select blank disks with fsType == "".
	AttrFSType resourceapi.QualifiedName = "fsType"
	// AttrBundle is true on the one device a bundle group publishes;
	// AttrNodes is how many device nodes that device carries.
	AttrBundle resourceapi.QualifiedName = "bundle"
	AttrNodes  resourceapi.QualifiedName = "nodes"

	// AttrNUMANode and AttrPCIeRoot are the standard topology attributes
	// (resource.kubernetes.io/...), published only where known.
	AttrNUMANode = deviceattribute.StandardDeviceAttributeNUMANode
	AttrPCIeRoot = deviceattribute.StandardDeviceAttributePCIeRoot

	// CapSize is the size of a block device in bytes (for a bundle: the sum).
	CapSize resourceapi.QualifiedName = "size"
)

// truncate makes s an attribute value the API server accepts as is: invalid
// UTF-8 becomes U+FFFD and non-printable runes are dropped first (JSON would
// turn each bad byte into three, and a 64-byte serial into 192, so that the
// whole slice is rejected), then s is cut to the API's limit without
// splitting a UTF-8 sequence. Long and odd serials and device-mapper UUIDs
// exist; a device must never be rejected for one.
func truncate(s string) string {
	s = strings.ToValidUTF8(s, string(utf8.RuneError))
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
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
// with. Every device carries every attribute (empty string or false when
// unknown or not applicable, e.g. the serial of a char device), so that a
// selector such as device.attributes["power-dev-plugin.io"].serial == "X"
// is simply false for a device without one instead of a CEL "no such key"
// error, which would fail the claim's scheduling altogether.
func DeviceAttributes(d *discovery.Device) map[resourceapi.QualifiedName]resourceapi.DeviceAttribute {
	var b discovery.BlockInfo
	if d.Block != nil {
		b = *d.Block
	}
	a := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{
		AttrGroup:      strAttr(d.Group),
		AttrPath:       strAttr(d.Path),
		AttrType:       strAttr(string(d.Type)),
		AttrMajor:      intAttr(int64(d.Major)),
		AttrMinor:      intAttr(int64(d.Minor)),
		AttrKind:       strAttr(string(b.Kind)),
		AttrModel:      strAttr(b.Model),
		AttrVendor:     strAttr(b.Vendor),
		AttrSerial:     strAttr(b.Serial),
		AttrWWN:        strAttr(b.WWN),
		AttrDMName:     strAttr(b.DMName),
		AttrDMUUID:     strAttr(b.DMUUID),
		AttrParent:     strAttr(b.Parent),
		AttrIdentity:   strAttr(d.Identity),
		AttrFSType:     strAttr(b.FSType),
		AttrRotational: boolAttr(b.Rotational),
		AttrRemovable:  boolAttr(b.Removable),
		AttrReadOnly:   boolAttr(b.ReadOnly),
		AttrBundle:     boolAttr(false),
		AttrNodes:      intAttr(1),
	}
	addTopology(a, d)
	return a
}

// addTopology adds the standard topology attributes where they are known,
// and only there, as the standard asks: a made-up value would match other
// devices under matchAttribute. A selector reads them with CEL's optional
// syntax, device.attributes["resource.kubernetes.io"].?pcieRoot.orValue(""),
// since a plain read fails on a device without one. A device on several
// NUMA nodes (a device-mapper device over disks of both) has no one node.
func addTopology(a map[resourceapi.QualifiedName]resourceapi.DeviceAttribute, d *discovery.Device) {
	if len(d.NUMANodes) == 1 {
		a[AttrNUMANode] = intAttr(d.NUMANodes[0])
	}
	if d.PCIeRoot != "" {
		a[AttrPCIeRoot] = strAttr(d.PCIeRoot)
	}
}

// DeviceCapacity returns the capacities of a single device node: the size
// in bytes (0 for char devices, so size selectors work on every device).
func DeviceCapacity(d *discovery.Device) map[resourceapi.QualifiedName]resourceapi.DeviceCapacity {
	var size uint64
	if d.Block != nil {
		size = d.Block.SizeBytes
	}
	if size > math.MaxInt64 {
		size = math.MaxInt64
	}
	return map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{
		CapSize: {Value: *resource.NewQuantity(int64(size), resource.BinarySI)},
	}
}

// BundleAttributes returns the attributes of the one device a bundle group
// publishes: the group, how many nodes it carries, and the node type when all
// nodes share one.
func BundleAttributes(g *discovery.Group) map[resourceapi.QualifiedName]resourceapi.DeviceAttribute {
	// Start from the same full set every node device has (all empty), so
	// that selectors written for single devices are false on a bundle,
	// never a CEL "no such key" error.
	a := DeviceAttributes(&discovery.Device{Group: g.Name})
	delete(a, AttrMajor)
	delete(a, AttrMinor)
	a[AttrBundle] = boolAttr(true)
	a[AttrNodes] = intAttr(int64(len(g.Devices)))
	var typ v1alpha1.DeviceType
	for i, d := range g.Devices {
		if i == 0 {
			typ = d.Type
		} else if d.Type != typ {
			typ = ""
			break
		}
	}
	a[AttrType] = strAttr(string(typ))
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
