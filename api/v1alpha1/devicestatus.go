package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// DeviceStatusKind is the kind of DeviceStatusData.
const DeviceStatusKind = "DeviceStatus"

// DeviceStatusMaxBytes is the API server's limit on the encoded data of one
// ResourceClaim status.devices entry (10 KiB).
const DeviceStatusMaxBytes = 10 * 1024

// DeviceStatusData says which host device(s) a claim got: the driver writes
// it into the ResourceClaim's status.devices[].data and into the device
// metadata file mounted into the containers.
type DeviceStatusData struct {
	metav1.TypeMeta `json:",inline"`
	// Group is the configured group the device belongs to.
	Group string `json:"group,omitempty"`
	// Bundle is true when the device is a bundle of all nodes of its group.
	Bundle bool `json:"bundle,omitempty"`
	// SizeBytes is the size of a block device; for a bundle the sum of its
	// block devices' sizes. 0 for char devices.
	SizeBytes uint64 `json:"sizeBytes,omitempty"`
	// Nodes are the device nodes the containers get, sorted by host path.
	Nodes []DeviceStatusNode `json:"nodes"`
	// NodesOmitted counts the nodes left out of Nodes to keep the data
	// under DeviceStatusMaxBytes (large bundles).
	NodesOmitted int `json:"nodesOmitted,omitempty"`
}

// DeviceStatusNode is one device node of DeviceStatusData.
type DeviceStatusNode struct {
	// Path is where the node appears in the container.
	Path string `json:"path"`
	// HostPath is the node on the host when it was prepared.
	HostPath string `json:"hostPath"`
	// Identity names the device whatever its kernel name: serial, WWN,
	// dm UUID ("wwn:naa.5000c500a1b2c3d4", "dm-uuid:mpath-3600...").
	Identity string `json:"identity,omitempty"`
	// SizeBytes is the block device's size; 0 when unknown or char.
	SizeBytes uint64 `json:"sizeBytes,omitempty"`
}

// NewDeviceStatusData returns DeviceStatusData with its type set.
func NewDeviceStatusData() *DeviceStatusData {
	return &DeviceStatusData{TypeMeta: metav1.TypeMeta{APIVersion: APIVersion, Kind: DeviceStatusKind}}
}
