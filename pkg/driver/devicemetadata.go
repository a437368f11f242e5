package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	metadatav1beta1 "k8s.io/dynamic-resource-allocation/api/metadata/v1beta1"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// The kubeletplugin helper (EnableDeviceMetadata) writes one metadata file
// per request under the plugin data directory and a CDI spec that mounts it
// read-only at /var/run/kubernetes.io/dra-device-attributes/... in the
// containers. It removes both after NodeUnprepareResources only; the
// driver's own unprepares (stale-claim collection, rollback) remove them
// with removeDeviceMetadata, which follows the helper's layout
// (kubeletplugin/metadata.go in k8s.io/dynamic-resource-allocation v0.37.2).
const metadataSubDir = "dra-device-metadata"

// WithDeviceMetadata turns the device metadata file on (the default) or
// off: the helper writes two files with fsync per request in each
// NodePrepareResources (docs/benchmarks.md).
func WithDeviceMetadata(on bool) Option { return func(o *options) { o.noMetadata = !on } }

// metadataOptions are the helper's options for the metadata files.
func (d *Driver) metadataOptions() []kubeletplugin.Option {
	if d.opts.noMetadata {
		return nil
	}
	return []kubeletplugin.Option{deviceMetadataOption()}
}

// deviceMetadataOption turns the helper's metadata files on. The version is
// named here, not taken from the helper, so that an update of the package
// does not silently change what consumers read.
func deviceMetadataOption() kubeletplugin.Option {
	return kubeletplugin.EnableDeviceMetadata(true, []schema.GroupVersion{metadatav1beta1.SchemeGroupVersion})
}

// addDeviceMetadata gives each prepared device the attributes its
// metadata file shows: the same data as the claim's status.devices entry.
func (d *Driver) addDeviceMetadata(claims []*resourceapi.ResourceClaim, res map[types.UID]kubeletplugin.PrepareResult) {
	inv := d.inventory()
	for _, c := range claims {
		r, ok := res[c.UID]
		if !ok || r.Err != nil {
			continue
		}
		pc, ok := d.state.preparedClaim(c.UID)
		if !ok {
			continue
		}
		for i := range r.Devices {
			if pd := findPrepared(&pc, &r.Devices[i]); pd != nil {
				r.Devices[i].Metadata = &kubeletplugin.DeviceMetadata{Attributes: metadataAttributes(DeviceStatus(&pd.PlannedDevice, inv))}
			}
		}
	}
}

func findPrepared(pc *PreparedClaim, kd *kubeletplugin.Device) *PreparedDevice {
	for i := range pc.Devices {
		pd := &pc.Devices[i]
		if pd.Pool == kd.PoolName && pd.Device == kd.DeviceName && ptr.Equal(pd.ShareID, kd.ShareID) {
			return pd
		}
	}
	return nil
}

// metadataAttributes flattens DeviceStatusData into attributes: the
// group, the total size, the number of nodes and, for a single node, its
// paths and identity; the whole object, a bundle's nodes too, is in
// "status" as JSON.
func metadataAttributes(s *v1alpha1.DeviceStatusData) map[string]resourceapi.DeviceAttribute {
	raw, _ := json.Marshal(s) // plain strings and numbers: cannot fail
	attrs := map[string]resourceapi.DeviceAttribute{
		"status":    {StringValue: ptr.To(string(raw))},
		"group":     {StringValue: ptr.To(s.Group)},
		"bundle":    {BoolValue: ptr.To(s.Bundle)},
		"sizeBytes": {IntValue: ptr.To(int64(min(s.SizeBytes, math.MaxInt64)))},
		"nodes":     {IntValue: ptr.To(int64(len(s.Nodes) + s.NodesOmitted))},
	}
	if len(s.Nodes) == 1 && s.NodesOmitted == 0 {
		n := s.Nodes[0]
		attrs["path"] = resourceapi.DeviceAttribute{StringValue: ptr.To(n.Path)}
		attrs["hostPath"] = resourceapi.DeviceAttribute{StringValue: ptr.To(n.HostPath)}
		if n.Identity != "" {
			attrs["identity"] = resourceapi.DeviceAttribute{StringValue: ptr.To(n.Identity)}
		}
	}
	return attrs
}

// removeDeviceMetadata removes the metadata files and their CDI specs of a
// claim the driver unprepared itself. Missing files are fine.
func (s *State) removeDeviceMetadata(namespace, name string, uid types.UID) error {
	var errs []error
	if namespace != "" && name != "" {
		dir := filepath.Join(s.dataDir, metadataSubDir, namespace+"_"+name)
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	specs, err := filepath.Glob(filepath.Join(s.cdi.Dir(), fmt.Sprintf("%s_metadata_%s_*.json", DriverName, uid)))
	errs = append(errs, err)
	for _, f := range specs {
		if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// dropDeviceMetadata is removeDeviceMetadata for the driver's own
// unprepares: a failure is logged, not returned, because the claim's
// devices are released either way and the files only describe them.
func (s *State) dropDeviceMetadata(ctx context.Context, namespace, name string, uid types.UID) {
	if err := s.removeDeviceMetadata(namespace, name, uid); err != nil {
		klog.FromContext(ctx).Error(err, "Cannot remove the device metadata files of an unprepared claim; remove them by hand",
			"claim", klog.KRef(namespace, name), "claimUID", uid, "dir", filepath.Join(s.dataDir, metadataSubDir))
	}
}
