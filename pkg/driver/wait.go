package driver

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// When a pod ends and the next pod's claim gets the same exclusive device,
// the kubelet often asks to prepare the new claim before it unprepares the
// old one. Refusing made the new pod wait in the kubelet's back-off (about
// a minute); instead Prepare waits, for a bounded time and outside the
// state lock, for the old claim's Unprepare, but only when the API server
// says that claim is on its way out. docs/design.md has the reasoning.

const (
	// DefaultReleaseWait bounds that wait. The kubelet gives a
	// NodePrepareResources call 45 s (defaultClientCallTimeout in
	// k8s.io/kubernetes pkg/kubelet/cm/dra/plugin); the helper's GETs of the
	// claims and the retry after the wait must fit in the rest.
	DefaultReleaseWait = 25 * time.Second
	// releaseWaitMargin is kept free before the deadline of the call.
	releaseWaitMargin = 5 * time.Second
)

// heldError is Prepare's refusal of a device node that another prepared
// claim (holder) holds.
type heldError struct {
	holder types.UID
	msg    string
}

func (e *heldError) Error() string { return e.msg }

// holdersOf returns the claims holding the devices err refuses, or false
// when err is anything else too (then waiting cannot help).
func holdersOf(err error) ([]types.UID, bool) {
	switch e := err.(type) {
	case *heldError:
		return []types.UID{e.holder}, true
	case interface{ Unwrap() []error }:
		var uids []types.UID
		for _, x := range e.Unwrap() {
			u, ok := holdersOf(x)
			if !ok {
				return nil, false
			}
			uids = append(uids, u...)
		}
		return uids, len(uids) > 0
	case interface{ Unwrap() error }:
		return holdersOf(e.Unwrap())
	}
	return nil, false
}

type releaseWaiter struct {
	state    *State
	api      ClaimReader
	nodeName string
	clock    clock.Clock
	bound    time.Duration
}

// holderVerdict is what the API server says about a holding claim.
type holderVerdict struct {
	ref     string
	release string // why it is being released; "" when it is not
}

// prepare is State.Prepare, plus the wait for holders that are being
// released. Claims refused for any other reason, or by a holder that is in
// use, fail at once with Prepare's message.
func (w *releaseWaiter) prepare(ctx context.Context, claims []*resourceapi.ResourceClaim) map[types.UID]kubeletplugin.PrepareResult {
	res := w.state.Prepare(ctx, claims)
	for _, c := range claims {
		if c == nil {
			continue
		}
		if _, held := holdersOf(res[c.UID].Err); held {
			w.state.metrics.ExclusivityConflict()
		}
	}
	if w.bound <= 0 {
		return res
	}
	logger := klog.FromContext(ctx)
	bound := w.bound
	if dl, ok := ctx.Deadline(); ok {
		bound = min(bound, time.Until(dl)-releaseWaitMargin) // the kubelet's deadline is in real time
	}
	start := w.clock.Now()
	deadline := start.Add(bound)
	verdicts := map[types.UID]holderVerdict{}
	var pods []corev1.Pod
	podsListed := false
	waited := map[types.UID][]types.UID{} // claim -> holders it waited for
	for {
		var again []*resourceapi.ResourceClaim
		waitFor := map[types.UID]bool{}
		for _, c := range claims {
			if c == nil {
				continue
			}
			holders, ok := holdersOf(res[c.UID].Err)
			if !ok {
				continue
			}
			all := true
			for _, h := range holders {
				v, done := verdicts[h]
				if !done {
					v = w.verdict(ctx, h, &pods, &podsListed)
					verdicts[h] = v
					if v.release != "" {
						logger.Info("Waiting for a claim that is being released to be unprepared, to prepare the claim that gets its device",
							"claim", klog.KObj(c), "holder", v.ref, "holderUID", h, "reason", v.release, "atMost", deadline.Sub(start).Round(time.Second))
					}
				}
				all = all && v.release != ""
			}
			if all {
				again = append(again, c)
				for _, h := range holders {
					waitFor[h] = true
				}
				waited[c.UID] = holders
			}
		}
		if len(again) == 0 {
			break
		}
		if !w.clock.Now().Before(deadline) || ctx.Err() != nil {
			for _, c := range again {
				r := res[c.UID]
				r.Err = w.gaveUp(r.Err, waited[c.UID], verdicts, w.clock.Since(start))
				res[c.UID] = r
				w.state.metrics.ExclusivityWait(false)
			}
			return res
		}
		w.waitUnprepared(ctx, waitFor, deadline)
		// The last try comes after the deadline too: it re-reads the
		// checkpoint, which another plugin instance may have changed
		// without waking this one.
		for uid, r := range w.state.Prepare(ctx, again) {
			res[uid] = r
		}
	}
	for _, c := range claims {
		if c != nil && waited[c.UID] != nil {
			w.state.metrics.ExclusivityWait(res[c.UID].Err == nil)
		}
		if c != nil && waited[c.UID] != nil && res[c.UID].Err == nil {
			logger.Info("Prepared a claim after its device was released", "claim", klog.KObj(c), "claimUID", c.UID,
				"waited", w.clock.Since(start).Round(time.Millisecond))
		}
	}
	return res
}

// verdict asks the API server whether holder is being released: its claim
// deleted, created again, deallocated or moved off this node, no consumer
// left, or every pod that uses it ended or being deleted (the kubelet
// unprepares a claim after its last pod's containers stopped). Anything it
// cannot tell (a recovered entry without a name, an API error, a consumer
// that is no pod) counts as in use: the claim then fails at once, as before.
func (w *releaseWaiter) verdict(ctx context.Context, holder types.UID, pods *[]corev1.Pod, listed *bool) holderVerdict {
	logger := klog.FromContext(ctx)
	ns, name, recovered, ok := w.state.preparedRef(holder)
	v := holderVerdict{ref: ns + "/" + name}
	if !ok || recovered {
		return v
	}
	claim, err := w.api.GetClaim(ctx, ns, name)
	reason, err := claimGoneReason(&PreparedClaim{UID: holder}, claim, err, w.nodeName)
	if err != nil {
		logger.Error(err, "Cannot ask the API server whether the claim holding a device is being released; not waiting for it", "holder", v.ref, "holderUID", holder)
		return v
	}
	if reason != "" {
		v.release = reason
		return v
	}
	if len(claim.Status.ReservedFor) == 0 {
		v.release = "no pod uses the ResourceClaim any more"
		return v
	}
	if !*listed {
		if *pods, err = w.api.ListNodePods(ctx); err != nil {
			logger.Error(err, "Cannot list the pods of this node to tell whether the claim holding a device is being released; not waiting for it", "holder", v.ref, "holderUID", holder)
			return v
		}
		*listed = true
	}
	var ended []string
	for _, r := range claim.Status.ReservedFor {
		if r.APIGroup != "" || r.Resource != "pods" {
			return v
		}
		p := podByUID(*pods, r.UID)
		switch {
		case p == nil:
			ended = append(ended, "pod "+r.Name+" is gone")
		case podTerminal(p):
			ended = append(ended, "pod "+r.Name+" has ended")
		case p.DeletionTimestamp != nil:
			ended = append(ended, "pod "+r.Name+" is being deleted")
		default:
			return v
		}
	}
	v.release = strings.Join(ended, ", ")
	return v
}

func podByUID(pods []corev1.Pod, uid types.UID) *corev1.Pod {
	for i := range pods {
		if pods[i].UID == uid {
			return &pods[i]
		}
	}
	return nil
}

// waitUnprepared returns when none of holders is prepared any more, at the
// deadline, or when ctx ends. Every change of the checkpoint wakes it.
func (w *releaseWaiter) waitUnprepared(ctx context.Context, holders map[types.UID]bool, deadline time.Time) {
	for {
		changed := w.state.snapshotChanged()
		if !w.state.holdsAny(holders) {
			return
		}
		d := deadline.Sub(w.clock.Now())
		if d <= 0 {
			return
		}
		t := w.clock.NewTimer(d)
		select {
		case <-changed:
			t.Stop()
		case <-t.C():
			return
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// gaveUp adds to Prepare's refusal what was waited for.
func (w *releaseWaiter) gaveUp(err error, holders []types.UID, verdicts map[types.UID]holderVerdict, waited time.Duration) error {
	var why []string
	for _, h := range holders {
		v := verdicts[h]
		why = append(why, fmt.Sprintf("claim %s (UID %s): %s", v.ref, h, v.release))
	}
	return fmt.Errorf("%w; waited %s for the kubelet to unprepare the claim holding it, which is being released (%s), but it did not; the kubelet will retry",
		err, waited.Round(time.Second), strings.Join(why, "; "))
}

// preparedRef returns the name of a prepared claim as of the last call.
func (s *State) preparedRef(uid types.UID) (namespace, name string, recovered, ok bool) {
	s.snapMu.RLock()
	defer s.snapMu.RUnlock()
	pc := s.snap[uid]
	if pc == nil {
		return "", "", false, false
	}
	return pc.Namespace, pc.Name, pc.Recovered, true
}

// holdsAny reports whether any of uids is prepared as of the last call.
func (s *State) holdsAny(uids map[types.UID]bool) bool {
	s.snapMu.RLock()
	defer s.snapMu.RUnlock()
	for uid := range uids {
		if s.snap[uid] != nil {
			return true
		}
	}
	return false
}

// snapshotChanged returns a channel that is closed at the next change of
// the snapshot (every call of the state, an Unprepare among them).
func (s *State) snapshotChanged() <-chan struct{} {
	s.snapMu.RLock()
	defer s.snapMu.RUnlock()
	return s.snapSignal
}

// WithReleaseWait bounds how long Prepare waits for the claim holding a
// device to be unprepared when that claim is being released; 0 refuses at
// once. Default: DefaultReleaseWait. The deadline of the kubelet's call
// always bounds it too.
func WithReleaseWait(d time.Duration) Option { return func(o *options) { o.releaseWait = d } }
