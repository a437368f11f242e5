package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	// GroupName is the API group of every configuration type and the DRA
	// driver name.
	GroupName = "power-dev-plugin.io"
	// Version is the version of this package's types.
	Version = "v1alpha1"
	// APIVersion is the apiVersion string that documents carry.
	APIVersion = GroupName + "/" + Version

	// DiscoveryConfigKind is the kind of the node configuration.
	DiscoveryConfigKind = "DiscoveryConfig"
	// DeviceConfigKind is the kind of the opaque claim/class parameters.
	DeviceConfigKind = "DeviceConfig"

	// DefaultGroupName is the group used when no configuration file exists,
	// and the group a legacy config.json maps onto. With the legacy resource
	// prefix it gives the old resource name power-dev-plugin/dev.
	DefaultGroupName = "dev"
	// NXGzipPath is the Power NX-GZIP accelerator's device node.
	NXGzipPath = "/dev/crypto/nx-gzip"
	// DefaultPermissions are the cgroup permissions when none are given.
	DefaultPermissions Permissions = "rw"
)

// DeviceType filters device nodes by kind of special file.
type DeviceType string

const (
	DeviceTypeBlock DeviceType = "block"
	DeviceTypeChar  DeviceType = "char"
)

// Permissions are device cgroup permissions: a non-empty combination of
// r (read), w (write) and m (mknod), each at most once, e.g. "rw" or "rwm".
type Permissions string

// SharingMode says whether a device may be allocated to more than one claim.
type SharingMode string

const (
	// SharingExclusive allocates a device to at most one claim at a time.
	SharingExclusive SharingMode = "exclusive"
	// SharingShared lets several claims hold the device at once, up to
	// MaxConsumers when it is set.
	SharingShared SharingMode = "shared"
)

// TaintEffect is what a device that a claim holds gets in its slice when it
// vanishes or turns unhealthy (resource.k8s.io/v1 DeviceTaint effects).
type TaintEffect string

const (
	// TaintNoSchedule keeps new claims off the device; pods that use it stay.
	TaintNoSchedule TaintEffect = "NoSchedule"
	// TaintNoExecute also evicts the pods whose claims hold the device.
	TaintNoExecute TaintEffect = "NoExecute"
)

// DiscoveryConfig is the node configuration: which host device nodes the
// driver publishes and how they are grouped.
type DiscoveryConfig struct {
	metav1.TypeMeta `json:",inline"`

	// Groups are matched in order; a device node belongs to the first group
	// that includes it and is not excluded from it.
	Groups []DeviceGroup `json:"groups,omitempty"`

	// AllowInUse names exact host paths (no globs) that may be published even
	// though a safety rule (mounted, swap, held, kernel interface) would
	// otherwise keep them back. They must still be included by a group.
	AllowInUse []string `json:"allowInUse,omitempty"`
}

// DeviceGroup is a named set of device nodes.
type DeviceGroup struct {
	// Name is a DNS label; it becomes the "group" attribute, and in legacy
	// mode the resource name power-dev-plugin/<name>.
	Name string `json:"name"`

	// Include are glob patterns (path.Match syntax) over host paths such as
	// /dev/sd* or /dev/mapper/mpath*. A block device matches through its
	// kernel name, its /dev/mapper name and its /dev/disk/by-id links.
	Include []string `json:"include"`

	// Exclude are glob patterns; a node matched by any of them is left out
	// even when Include matches it. Exclude always wins.
	Exclude []string `json:"exclude,omitempty"`

	// Types restricts the group to block and/or char devices. Empty: both.
	Types []DeviceType `json:"types,omitempty"`

	// Permissions are the default cgroup permissions (r, w, m). Default rw.
	Permissions Permissions `json:"permissions,omitempty"`

	// Bundle makes all matched nodes one allocatable device: one request
	// grants every node of the group.
	Bundle bool `json:"bundle,omitempty"`

	// Sharing says how many claims may hold a device at once.
	// Default {mode: exclusive}.
	Sharing *Sharing `json:"sharing,omitempty"`

	// UnhealthyTaintEffect is the effect of the taint a device of this group
	// gets while a claim holds it and it is gone or cannot be prepared:
	// NoSchedule (default) or NoExecute, which evicts the pods using it.
	UnhealthyTaintEffect TaintEffect `json:"unhealthyTaintEffect,omitempty"`
}

// Sharing describes concurrent use of a device.
type Sharing struct {
	Mode SharingMode `json:"mode"`
	// MaxConsumers bounds the number of claims that hold a shared device at
	// once. Unset means unbounded. Only valid with mode shared.
	MaxConsumers *int32 `json:"maxConsumers,omitempty"`
}

// DeviceConfig is the opaque configuration a DeviceClass or ResourceClaim
// passes to the driver for the devices of a request.
type DeviceConfig struct {
	metav1.TypeMeta `json:",inline"`

	// Permissions override the group's default cgroup permissions.
	Permissions *Permissions `json:"permissions,omitempty"`

	// ContainerPath is where the node appears inside the container. Only
	// valid when the request resolves to exactly one device node; must be an
	// absolute, clean path under /dev.
	ContainerPath string `json:"containerPath,omitempty"`

	// UID and GID own the node inside the container. Unset: the container
	// runtime gives the node to the container's own user.
	UID *int64 `json:"uid,omitempty"`
	GID *int64 `json:"gid,omitempty"`

	// FileMode is the node's permission bits inside the container (e.g. 0660,
	// 432 in JSON).
	FileMode *uint32 `json:"fileMode,omitempty"`
}

// LegacyConfig is the old power-device-plugin's config.json, accepted as is.
// See MigrateLegacy for how it maps onto a DiscoveryConfig.
type LegacyConfig struct {
	NXGzip            bool     `json:"nx-gzip,omitempty"`
	Permissions       string   `json:"permissions,omitempty"`
	IncludeDevices    []string `json:"include-devices,omitempty"`
	ExcludeDevices    []string `json:"exclude-devices,omitempty"`
	DiscoveryStrategy string   `json:"discovery-strategy,omitempty"`
	ScanInterval      string   `json:"scan-interval,omitempty"`
	UpperLimit        *int64   `json:"upper-limit,omitempty"`
}
