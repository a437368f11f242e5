package discovery

import (
	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// Device is one host device node that passed the filters and safety rules.
type Device struct {
	// Name is a DNS label, unique on the node and stable across runs.
	Name string `json:"name"`
	// Group is the name of the configured group the node belongs to.
	Group string `json:"group"`
	// Path is the node's host path as the host names it (/dev/...).
	Path string `json:"path"`
	// Type is block or char.
	Type v1alpha1.DeviceType `json:"type"`
	// Major and Minor are read from the device node itself.
	Major uint32 `json:"major"`
	Minor uint32 `json:"minor"`
	// Identity says which device this is whatever its kernel name and
	// numbers: "wwn:naa.5000c500a1b2c3d4", "dm-uuid:mpath-3600...",
	// "loop:/var/lib/x.img:inode=1234", "path:/dev/fuse"; at most
	// MaxIdentityLen bytes. See IdentityIsStable.
	Identity string `json:"identity"`
	// Aliases are other host paths of the same node: /dev/mapper/<name> and
	// /dev/disk/by-id links. Sorted.
	Aliases []string `json:"aliases,omitempty"`
	// Block is set for block devices.
	Block *BlockInfo `json:"block,omitempty"`
	// InUseAllowed: one of the node's paths is listed in allowInUse, so no
	// in-use rule keeps it back, including CheckNotHeld at hand-out.
	InUseAllowed bool `json:"inUseAllowed,omitempty"`
	// NUMANodes and PCIeRoot say where the device's hardware sits (see
	// NUMANodes, PCIeRoot); empty when unknown.
	NUMANodes []int64 `json:"numaNodes,omitempty"`
	PCIeRoot  string  `json:"pcieRoot,omitempty"`
}

// BlockKind classifies a block device.
type BlockKind string

const (
	KindDisk      BlockKind = "disk"
	KindPartition BlockKind = "partition"
	KindDM        BlockKind = "dm"
	KindMpath     BlockKind = "mpath"
	KindLVM       BlockKind = "lvm"
	KindCrypt     BlockKind = "crypt"
	KindLoop      BlockKind = "loop"
	KindMD        BlockKind = "md"
	KindROM       BlockKind = "rom"
)

// BlockInfo holds what sysfs says about a block device.
type BlockInfo struct {
	KernelName string    `json:"kernelName"`
	Kind       BlockKind `json:"kind"`
	SizeBytes  uint64    `json:"size"`
	Model      string    `json:"model,omitempty"`
	Vendor     string    `json:"vendor,omitempty"`
	Serial     string    `json:"serial,omitempty"`
	WWN        string    `json:"wwn,omitempty"`
	Rotational bool      `json:"rotational"`
	Removable  bool      `json:"removable"`
	ReadOnly   bool      `json:"readOnly"`
	// Parent is the kernel name of the disk a partition lives on.
	Parent string `json:"parent,omitempty"`
	DMName string `json:"dmName,omitempty"`
	DMUUID string `json:"dmUUID,omitempty"`
	// ByID are the /dev/disk/by-id links that point at the device. Sorted.
	ByID []string `json:"byID,omitempty"`
	// Slaves are the kernel names this device is stacked on (dm, md).
	Slaves []string `json:"slaves,omitempty"`
	// Under are the kernel names of every device this one is built on,
	// through any number of layers (Parent, Slaves, their Parent and
	// Slaves...), published or not. Sorted. See Overlaps.
	Under []string `json:"under,omitempty"`
	// FSType is the file system or signature type on the device, as blkid
	// names it (ext4, xfs, btrfs, swap, ...), from the host's udev database
	// or read from the device; "" when none was found or the device was not
	// looked at.
	FSType string `json:"fsType,omitempty"`
}

// Group is a configured group with the nodes it matched.
type Group struct {
	Name        string               `json:"name"`
	Permissions v1alpha1.Permissions `json:"permissions"`
	Sharing     v1alpha1.Sharing     `json:"sharing"`
	Bundle      bool                 `json:"bundle,omitempty"`
	// BundleName is the DNS label of the one device a bundle group publishes.
	// Empty unless Bundle is set.
	BundleName string `json:"bundleName,omitempty"`
	// Devices are sorted by Path.
	Devices []Device `json:"devices"`
	// UnhealthyTaintEffect is the group's configured effect for devices
	// that a claim holds and that are gone or cannot be prepared; empty
	// means NoSchedule.
	UnhealthyTaintEffect v1alpha1.TaintEffect `json:"unhealthyTaintEffect,omitempty"`
}

// Exclusion is a device node that was left out, and why.
type Exclusion struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
	// Type, Major, Minor and Identity say what device the path is now, as
	// for a published Device (the numbers are sysfs's for block devices),
	// so that a claim that holds a device which is now left out (its own
	// pod put LVM on it) still finds it. Empty where discovery did not
	// look (BuildResources' withheld devices).
	Type     v1alpha1.DeviceType `json:"type,omitempty"`
	Major    uint32              `json:"major,omitempty"`
	Minor    uint32              `json:"minor,omitempty"`
	Identity string              `json:"identity,omitempty"`
}

// Inventory is the result of one discovery pass.
type Inventory struct {
	// Groups are in configuration order.
	Groups []Group `json:"groups"`
	// Excluded are sorted by Path.
	Excluded []Exclusion `json:"excluded"`
	// Warnings are problems with the host view that a person should fix,
	// e.g. a mount table that is a container's rather than the host's.
	Warnings []string `json:"warnings,omitempty"`
}
