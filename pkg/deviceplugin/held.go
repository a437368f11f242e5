package deviceplugin

import (
	"errors"
	"fmt"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// checkNotHeld asks the kernel (discovery.CheckNotHeld) whether anything on
// the node holds a block device the IDs of an exclusive group grant; every
// node of a bundle is checked. The kubelet calls Allocate only when it
// admits a pod, for each container before any of them starts (an app
// container that reuses an init container's IDs is a second call then);
// container restarts, kubelet restarts and reboots reuse the recorded
// answer. So the pod's own containers never hold the device here. Shared
// groups are not checked: their consumers use a device at once by design,
// and one consumer's exclusive open would refuse every later one.
func (p *plugin) checkNotHeld(set *DeviceSet, ids []string) error {
	if set.Shared || p.probe == nil {
		return nil
	}
	var errs []error
	seen := map[string]bool{}
	for _, id := range ids {
		u, ok := set.Unit(id)
		if !ok {
			continue // ContainerResponse refused it already
		}
		for _, n := range u.Nodes {
			if n.Type != "b" || seen[n.Path] {
				continue
			}
			seen[n.Path] = true
			d := &discovery.Device{Path: n.Path, Type: v1alpha1.DeviceTypeBlock, Major: n.Major, Minor: n.Minor, InUseAllowed: n.InUseAllowed}
			if err := p.probe(d); err != nil {
				errs = append(errs, fmt.Errorf("%s: device ID %q: %w", set.Resource, id, err))
			}
		}
	}
	return errors.Join(errs...)
}
