package driver

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/klog/v2"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// checkNotHeld asks the kernel, through discovery.CheckNotHeld, whether
// anything on the node holds a block device that pc is about to get: the
// last check against uses that discovery cannot see, such as a filesystem
// mounted in another mount namespace. It runs only here, at the first
// Prepare of a claim, never in the periodic scan: the probe holds the
// device for an instant, and a host mount at that moment would fail.
//
// What is not checked:
//   - nodes that prev, the claim's own earlier record (recovered from its
//     spec file, or of an older allocation) of this boot, already gave the
//     claim: its containers may hold them. A repeated Prepare of a claim as
//     it is recorded never gets here (restore.go checks it).
//   - devices of shared groups: several claims use them at once by design,
//     and one consumer's exclusive open (a filesystem it mounted) would make
//     every later claim of the device fail.
//   - admin access, which is for inspecting devices that are in use.
func (ss *session) checkNotHeld(ctx context.Context, pc, prev *PreparedClaim, ref string, idx *inventoryIndex) error {
	own := map[string]bool{}
	if prev != nil {
		for _, d := range prev.Devices {
			for i := range d.Nodes {
				own[d.Nodes[i].nodeKey()] = true
			}
		}
	}
	logger := klog.FromContext(ctx)
	var errs []error
	for _, d := range pc.Devices {
		if !d.Exclusive || d.AdminAccess {
			continue
		}
		e, ok := idx.byName[d.Device]
		if !ok {
			continue // planClaim refuses a device that is not published
		}
		devs := e.group.Devices
		if e.dev != nil {
			devs = []discovery.Device{*e.dev}
		}
		for i := range devs {
			dev := &devs[i]
			key := fmt.Sprintf("%s %d:%d", cdiType(dev.Type), dev.Major, dev.Minor)
			if dev.Type != v1alpha1.DeviceTypeBlock || own[key] {
				continue
			}
			if err := ss.s.probe(dev); err != nil {
				errs = append(errs, fmt.Errorf("claim %s: device %q: %w", ref, d.Device, err))
				continue
			}
			logger.V(4).Info("Nothing holds the block device", "path", dev.Path, "device", d.Device)
		}
	}
	return errors.Join(errs...)
}
