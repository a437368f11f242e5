package driver

import (
	"context"
	"errors"
	"slices"

	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2"
)

// expectedDrop reports whether err is only the API server dropping fields
// whose feature gate is off by default on older clusters (counters, taints).
// Those are said once, with what they mean, instead of an error for every
// slice on every update, and do not stop the plugin.
func (d *Driver) expectedDrop(ctx context.Context, err error) bool {
	var dropped *resourceslice.DroppedFieldsError
	if !errors.As(err, &dropped) {
		return false
	}
	disabled := dropped.DisabledFeatures()
	expected := 0
	if slices.Contains(disabled, "DRADeviceTaints") {
		d.taintsDroppedByAPIServer(ctx)
		expected++
	}
	if slices.Contains(disabled, "DRAPartitionableDevices") {
		// Expected on 1.34 and 1.35: say once what it means, instead of
		// an error for every slice on every update.
		if !d.countersDropped.Swap(true) {
			klog.FromContext(ctx).Info("The API server dropped the counters that tell the scheduler which devices share blocks (feature gate DRAPartitionableDevices is off, the default before Kubernetes 1.36): the scheduler may now allocate a disk and one of its partitions to two claims, and Prepare refuses the second one, whose pod then waits until the first claim is freed. Turn the feature gate on in the API server and the scheduler, then restart this plugin's pods to publish the counters again.")
		}
		expected++
	}
	return expected > 0 && expected == len(disabled)
}
