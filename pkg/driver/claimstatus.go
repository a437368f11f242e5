package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	resourceac "k8s.io/client-go/applyconfigurations/resource/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// Backoff of the claim status writer between failed writes of one claim.
const (
	claimStatusBaseDelay = 500 * time.Millisecond
	claimStatusMaxDelay  = 5 * time.Minute
)

// claimKey names a claim to write the status of; the UID keeps a claim
// that was replaced under the same name from getting the old one's data.
type claimKey struct {
	Namespace, Name string
	UID             types.UID
}

// claimStatusWriter writes the status.devices entries of prepared claims
// in the background (docs/design.md, "Claim status"): Prepare only queues
// the claim; a claim queued again before its write ran is written once.
type claimStatusWriter struct {
	client   kubernetes.Interface
	queue    workqueue.TypedRateLimitingInterface[claimKey]
	prepared func(types.UID) (PreparedClaim, bool)
	inv      func() *discovery.Inventory
}

func newClaimStatusWriter(client kubernetes.Interface, prepared func(types.UID) (PreparedClaim, bool), inv func() *discovery.Inventory, base, maxDelay time.Duration) *claimStatusWriter {
	if base <= 0 || maxDelay <= 0 {
		base, maxDelay = claimStatusBaseDelay, claimStatusMaxDelay
	}
	return &claimStatusWriter{
		client: client,
		queue: workqueue.NewTypedRateLimitingQueue(
			workqueue.NewTypedItemExponentialFailureRateLimiter[claimKey](base, maxDelay)),
		prepared: prepared,
		inv:      inv,
	}
}

// enqueue never blocks: it is called on the Prepare path.
func (w *claimStatusWriter) enqueue(k claimKey) { w.queue.Add(k) }

// run writes queued claims until ctx ends.
func (w *claimStatusWriter) run(ctx context.Context) {
	go func() {
		<-ctx.Done()
		w.queue.ShutDown()
	}()
	for w.next(ctx) {
	}
}

func (w *claimStatusWriter) next(ctx context.Context) bool {
	k, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(k)
	logger := klog.FromContext(ctx).WithValues("claim", klog.KRef(k.Namespace, k.Name), "claimUID", k.UID)
	err := w.write(ctx, k)
	switch {
	case err == nil:
		w.queue.Forget(k)
	case apierrors.IsNotFound(err) || apierrors.IsConflict(err) || (apierrors.IsInvalid(err) && !deniedField(err)):
		// The claim is gone, replaced or deallocated: its status is
		// no longer this driver's to write.
		logger.V(2).Info("Not writing the claim's device status: the claim changed", "err", err)
		w.queue.Forget(k)
	default:
		if ctx.Err() != nil {
			return false
		}
		logger.Error(err, "Writing the claim's status.devices failed; retrying with backoff. If the error is Forbidden, give the plugin's service account patch on resourceclaims/status and associated-node:patch on resourceclaims/driver for "+DriverName+" (deploy/kustomize/base/rbac.yaml)", "retries", w.queue.NumRequeues(k))
		w.queue.AddRateLimited(k)
	}
	return true
}

// deniedField tells a status write refused for want of the per-driver
// permission, which the API server reports as an Invalid field
// (Forbidden), from one refused because the claim changed.
func deniedField(err error) bool {
	if status, ok := err.(apierrors.APIStatus); ok && status.Status().Details != nil {
		for _, c := range status.Status().Details.Causes {
			if c.Type == metav1.CauseType(field.ErrorTypeForbidden) {
				return true
			}
		}
	}
	return false
}

// write applies the claim's entries with this driver as field manager:
// server-side apply then touches only the entries this driver owns.
func (w *claimStatusWriter) write(ctx context.Context, k claimKey) error {
	pc, ok := w.prepared(k.UID)
	if !ok || pc.Namespace != k.Namespace || pc.Name != k.Name {
		return nil // unprepared meanwhile; the claim is being deallocated
	}
	entries, err := claimDeviceStatuses(&pc, w.inv())
	if err != nil {
		return err
	}
	status := resourceac.ResourceClaimStatus()
	for _, e := range entries {
		ac := resourceac.AllocatedDeviceStatus().WithDriver(e.Driver).WithPool(e.Pool).WithDevice(e.Device).WithData(*e.Data)
		if e.ShareID != nil {
			ac.WithShareID(*e.ShareID)
		}
		status.WithDevices(ac)
	}
	claim := resourceac.ResourceClaim(k.Name, k.Namespace).WithUID(k.UID).WithStatus(status)
	_, err = w.client.ResourceV1().ResourceClaims(k.Namespace).ApplyStatus(ctx, claim, metav1.ApplyOptions{FieldManager: DriverName, Force: true})
	return err
}

// claimDeviceStatuses builds the status.devices entries of a prepared
// claim, one per allocated device of this driver. inv (may be nil) gives
// the sizes.
func claimDeviceStatuses(pc *PreparedClaim, inv *discovery.Inventory) ([]resourceapi.AllocatedDeviceStatus, error) {
	var out []resourceapi.AllocatedDeviceStatus
	seen := map[string]bool{}
	for i := range pc.Devices {
		d := &pc.Devices[i]
		key := d.Pool + "/" + d.Device
		if d.ShareID != nil {
			key += "/" + string(*d.ShareID)
		}
		if seen[key] {
			continue // the same device for two requests: one entry
		}
		seen[key] = true
		raw, err := json.Marshal(DeviceStatus(&d.PlannedDevice, inv))
		if err != nil {
			return nil, fmt.Errorf("encode the status of device %s: %w", d.Device, err)
		}
		e := resourceapi.AllocatedDeviceStatus{Driver: DriverName, Pool: d.Pool, Device: d.Device, Data: &runtime.RawExtension{Raw: raw}}
		if d.ShareID != nil {
			id := string(*d.ShareID)
			e.ShareID = &id
		}
		out = append(out, e)
	}
	return out, nil
}

// DeviceStatus says which host device(s) d is: what the claim status and
// the device metadata file show. Nodes beyond the API's 10 KiB limit are
// counted in NodesOmitted.
func DeviceStatus(d *PlannedDevice, inv *discovery.Inventory) *v1alpha1.DeviceStatusData {
	sizes := nodeSizes(inv)
	s := v1alpha1.NewDeviceStatusData()
	s.Group = d.Group
	s.Bundle = len(d.Nodes) > 1 || isBundle(inv, d.Group)
	nodes := make([]v1alpha1.DeviceStatusNode, 0, len(d.Nodes))
	for _, n := range d.Nodes {
		size := sizes[n.Identity]
		if size == 0 {
			size = sizes[n.HostPath]
		}
		s.SizeBytes += size
		nodes = append(nodes, v1alpha1.DeviceStatusNode{Path: n.ContainerPath, HostPath: n.HostPath, Identity: n.Identity, SizeBytes: size})
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].HostPath < nodes[j].HostPath })
	// Leave room for the envelope; each node's size is known exactly.
	budget := v1alpha1.DeviceStatusMaxBytes - 512
	for i, n := range nodes {
		b, _ := json.Marshal(n)
		budget -= len(b) + 1
		if budget < 0 {
			s.NodesOmitted = len(nodes) - i
			nodes = nodes[:i]
			break
		}
	}
	s.Nodes = nodes
	return s
}

// nodeSizes maps identities and host paths of inv's block devices to
// their sizes.
func nodeSizes(inv *discovery.Inventory) map[string]uint64 {
	out := map[string]uint64{}
	if inv == nil {
		return out
	}
	for _, g := range inv.Groups {
		for _, dev := range g.Devices {
			if dev.Block == nil {
				continue
			}
			if dev.Identity != "" {
				out[dev.Identity] = dev.Block.SizeBytes
			}
			out[dev.Path] = dev.Block.SizeBytes
		}
	}
	return out
}

func isBundle(inv *discovery.Inventory, group string) bool {
	if inv == nil {
		return false
	}
	for _, g := range inv.Groups {
		if g.Name == group {
			return g.Bundle
		}
	}
	return false
}

// preparedClaim returns one prepared claim as of the last call (no I/O).
func (s *State) preparedClaim(uid types.UID) (PreparedClaim, bool) {
	s.snapMu.RLock()
	defer s.snapMu.RUnlock()
	pc, ok := s.snap[uid]
	if !ok {
		return PreparedClaim{}, false
	}
	return pc.deepCopy(), true
}

// WithClaimStatusBackoff sets the first and the longest delay between
// retries of a claim's status write (tests shorten them).
func WithClaimStatusBackoff(base, maxDelay time.Duration) Option {
	return func(o *options) { o.statusBase, o.statusMax = base, maxDelay }
}

// runClaimStatus writes claim status until ctx ends. It starts once the
// first inventory is in (sizes come from it) and first queues the claims
// already prepared: a write that a restart cut off is done now.
func (d *Driver) runClaimStatus(ctx context.Context) {
	for {
		inv, changed := d.inventoryAndSignal()
		if inv != nil {
			break
		}
		select {
		case <-ctx.Done():
			d.status.queue.ShutDown()
			return
		case <-changed:
		}
	}
	for uid, pc := range d.state.Prepared() {
		if !pc.Recovered && pc.Name != "" && len(pc.Devices) > 0 {
			d.status.enqueue(claimKey{Namespace: pc.Namespace, Name: pc.Name, UID: uid})
		}
	}
	d.status.run(ctx)
}

// tellPrepared adds the metadata file's data to the results and queues
// the claims' status writes.
func (d *Driver) tellPrepared(claims []*resourceapi.ResourceClaim, res map[types.UID]kubeletplugin.PrepareResult) map[types.UID]kubeletplugin.PrepareResult {
	d.addDeviceMetadata(claims, res)
	d.queueClaimStatus(claims, res)
	return res
}

// queueClaimStatus queues the status write of each claim prepared without
// error; it does not wait for the API server.
func (d *Driver) queueClaimStatus(claims []*resourceapi.ResourceClaim, res map[types.UID]kubeletplugin.PrepareResult) {
	for _, c := range claims {
		if r, ok := res[c.UID]; ok && r.Err == nil && len(r.Devices) > 0 {
			d.status.enqueue(claimKey{Namespace: c.Namespace, Name: c.Name, UID: c.UID})
		}
	}
}
