package driver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// taintCheckInterval is how often Run checks whether the taints of held
// devices changed without being told (the stale-claim collector's
// unprepares, restore retries); prepares and unprepares tell it at once.
const taintCheckInterval = healthResendInterval

// taintState is what Run remembers between publications for the taints;
// only Run's goroutine touches it.
type taintState struct {
	// last are the devices last published, untainted.
	last map[string]resourceapi.Device
	// sig are the taints last published (taintSignature).
	sig string
}

// pokeTaints asks Run to check the taints of held devices (after a claim
// was prepared or released).
func (d *Driver) pokeTaints() {
	select {
	case d.taintPoke <- struct{}{}:
	default: // one pending check covers this one
	}
}

// taintsDroppedByAPIServer: the API server dropped the taints (feature gate
// DRADeviceTaints off, the default before Kubernetes 1.36). A held device
// that is gone would then stay in the slice untainted, free for the
// scheduler to hand out; so the driver stops keeping such devices and
// publishes as if it had no taints, and says so once.
func (d *Driver) taintsDroppedByAPIServer(ctx context.Context) {
	if d.taintsDropped.Swap(true) {
		return
	}
	klog.FromContext(ctx).Info("The API server dropped the device taints that keep the scheduler off devices which prepared claims hold and which are gone or cannot be prepared (feature gate DRADeviceTaints is off, the default before Kubernetes 1.36): such devices are now left out of the ResourceSlices instead, and are only reported unhealthy to the kubelet. Turn the feature gate on in the API server and the scheduler, then restart this plugin's pods to publish the taints.")
	d.pokeTaints()
}

func (d *Driver) heldDevices() HeldDevices {
	if d.taintsDropped.Load() {
		return HeldDevices{}
	}
	recorded := map[string]PlannedDevice{}
	for _, pc := range d.state.Prepared() {
		for _, dev := range pc.Devices {
			if dev.Pool == d.opts.nodeName && dev.Device != "" {
				recorded[dev.Device] = dev.PlannedDevice
			}
		}
	}
	return HeldDevices{
		Names:    d.state.PreparedDeviceNames(),
		Problems: d.state.DeviceProblems(),
		Last:     d.taints.last,
		Recorded: recorded,
	}
}

// buildForPublish builds the slices of inv with the taints of held devices.
func (d *Driver) buildForPublish(inv *discovery.Inventory) (resourceslice.DriverResources, []discovery.Exclusion, error) {
	return BuildResourcesHeld(d.opts.nodeName, inv, d.heldDevices())
}

// published records what a successful publication holds.
func (d *Driver) recordPublished(res resourceslice.DriverResources) {
	d.taints.last = untainted(res)
	d.taints.sig = taintSignature(res)
}

// checkTaints republishes the latest inventory when the taints it gets now
// differ from those published: a held device went away or came back, or its
// last claim was released.
func (d *Driver) checkTaints(ctx context.Context) {
	inv := d.inventory()
	if inv == nil || !d.published.Load() {
		return
	}
	if d.taints.sig == "" && len(d.state.DeviceProblems()) == 0 && allPresent(d.state.PreparedDeviceNames(), d.taints.last) {
		return // nothing tainted, nothing to taint: spare the rebuild
	}
	res, _, err := d.buildForPublish(inv)
	if err != nil || taintSignature(res) == d.taints.sig {
		return // a build error is reported by the publication of inv
	}
	klog.FromContext(ctx).V(2).Info("Taints of held devices changed; republishing", "taints", taintSignature(res))
	if err := d.publish(ctx, inv); err != nil {
		klog.FromContext(ctx).Error(err, "Not republishing the devices with their new taints")
	}
}

// allPresent reports whether every name is among the devices last published.
func allPresent(names []string, published map[string]resourceapi.Device) bool {
	for _, n := range names {
		if _, ok := published[n]; !ok {
			return false
		}
	}
	return true
}

// taintSignature lists the tainted devices of res, sorted, to compare
// publications.
func taintSignature(res resourceslice.DriverResources) string {
	var out []string
	for _, p := range res.Pools {
		for _, s := range p.Slices {
			for _, dev := range s.Devices {
				for _, t := range dev.Taints {
					out = append(out, fmt.Sprintf("%s:%s=%s:%s", dev.Name, t.Key, t.Value, t.Effect))
				}
			}
		}
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func newTaintTicker() *time.Ticker { return time.NewTicker(taintCheckInterval) }
