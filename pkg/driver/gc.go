package driver

import (
	"context"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// The stale-claim collector unprepares checkpoint entries that the kubelet
// will never unprepare (its own state was lost, or the claim was
// force-deleted while this plugin was down): without it such an entry
// blocks its exclusive device for ever. docs/design.md says why it works
// the way it does.

const (
	// DefaultStaleClaimInterval is how often prepared claims are checked
	// against the API server.
	DefaultStaleClaimInterval = 5 * time.Minute
	// staleStartDelay is the grace after start before the first check:
	// the kubelet, which registers the plugin meanwhile, unprepares what it
	// knows first.
	staleStartDelay = time.Minute
	// staleConfirmAfter is how long an entry must be seen stale before it
	// is unprepared: the kubelet stops the containers of a pod that was
	// force-deleted from the API server within seconds, and unprepares its
	// claims itself.
	staleConfirmAfter = time.Minute
	// staleJitter spreads the checks of many nodes over time.
	staleJitter = 0.2
)

type staleCollector struct {
	state    *State
	api      ClaimReader
	nodeName string
	clock    clock.Clock
	interval time.Duration

	// suspects maps an entry seen stale to when it was first seen so.
	suspects map[types.UID]time.Time
	// told holds what was last logged about an entry that is kept, so
	// that the same reason is logged once, not every round.
	told map[types.UID]string
}

func newStaleCollector(state *State, api ClaimReader, nodeName string, clk clock.Clock, interval time.Duration) *staleCollector {
	return &staleCollector{
		state: state, api: api, nodeName: nodeName, clock: clk, interval: interval,
		suspects: map[types.UID]time.Time{}, told: map[types.UID]string{},
	}
}

// run checks once after a grace period, then every interval (sooner while
// an entry waits for its second look), until ctx ends.
func (c *staleCollector) run(ctx context.Context) {
	next := wait.Jitter(min(staleStartDelay, c.interval), staleJitter)
	for {
		t := c.clock.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		next = wait.Jitter(c.interval, staleJitter)
		if c.collect(ctx) {
			next = min(next, wait.Jitter(min(staleConfirmAfter, c.interval), staleJitter))
		}
	}
}

// collect is one round: a GET per prepared claim and, only when one of them
// looks stale, one LIST of this node's pods. An entry is unprepared when it
// was stale at two rounds at least staleConfirmAfter apart and no pod on
// this node that has not ended references its claim. Any answer of the API
// server other than the object or NotFound ends the round without removing
// anything. It returns whether an entry waits for its second look.
func (c *staleCollector) collect(ctx context.Context) (pending bool) {
	logger := klog.FromContext(ctx).WithName("stale-claims")
	entries, err := c.state.loadEntries(ctx)
	if err != nil {
		logger.Error(err, "Cannot read the prepared claims; checking again later")
		return len(c.suspects) > 0
	}
	uids := make([]types.UID, 0, len(entries))
	for uid := range entries {
		uids = append(uids, uid)
	}
	sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })

	type candidate struct {
		pc     *PreparedClaim
		reason string
	}
	var cands []candidate
	for _, uid := range uids {
		pc := entries[uid]
		if pc.Recovered {
			c.tell(logger, uid, "recovered", "Not checking a prepared claim recovered from its CDI spec file: its name is unknown, so the API server cannot be asked. It is kept until the kubelet unprepares it; see docs/troubleshooting.md if it blocks a device for good",
				"claimUID", uid, "devices", claimDeviceNames(pc))
			continue
		}
		claim, err := c.api.GetClaim(ctx, pc.Namespace, pc.Name)
		reason, err := claimGoneReason(pc, claim, err, c.nodeName)
		if err != nil {
			logger.Error(err, "Cannot ask the API server about a prepared claim; removing nothing in this round, checking again later",
				"claim", klog.KRef(pc.Namespace, pc.Name), "claimUID", uid)
			return len(c.suspects) > 0
		}
		if reason == "" {
			delete(c.suspects, uid)
			delete(c.told, uid)
			continue
		}
		cands = append(cands, candidate{pc, reason})
	}
	for uid := range c.suspects {
		if entries[uid] == nil {
			delete(c.suspects, uid)
		}
	}
	for uid := range c.told {
		if entries[uid] == nil {
			delete(c.told, uid)
		}
	}
	if len(cands) == 0 {
		return false
	}

	pods, err := c.api.ListNodePods(ctx)
	if err != nil {
		logger.Error(err, "Cannot list the pods of this node; removing nothing in this round, checking again later", "staleClaims", len(cands))
		return len(c.suspects) > 0
	}
	now := c.clock.Now()
	for _, cand := range cands {
		pc, ref := cand.pc, klog.KRef(cand.pc.Namespace, cand.pc.Name)
		if p := podReferencingClaim(pods, pc.Namespace, pc.Name); p != nil {
			// A claim force-deleted under a running pod: its containers
			// still use the device.
			delete(c.suspects, pc.UID)
			c.tell(logger, pc.UID, "pod "+string(p.UID), "Keeping a stale claim prepared while a pod on this node still references it",
				"claim", ref, "claimUID", pc.UID, "reason", cand.reason, "pod", klog.KObj(p), "podUID", p.UID)
			continue
		}
		first, seen := c.suspects[pc.UID]
		if !seen {
			c.suspects[pc.UID] = now
			pending = true
			logger.Info("Prepared claim looks stale; unpreparing it at the next check if it still is",
				"claim", ref, "claimUID", pc.UID, "reason", cand.reason)
			continue
		}
		if now.Sub(first) < staleConfirmAfter {
			pending = true
			continue
		}
		delete(c.suspects, pc.UID)
		removed, err := c.state.unprepareStale(ctx, pc)
		if removed {
			c.state.metrics.StaleClaimCollected()
			logger.Info("Unprepared a stale claim: its devices are free again", "claim", ref, "claimUID", pc.UID,
				"reason", cand.reason, "devices", claimDeviceNames(pc))
		}
		if err != nil {
			logger.Error(err, "Unpreparing a stale claim failed; it stays prepared, trying again at the next check", "claim", ref, "claimUID", pc.UID)
		}
	}
	return pending
}

// tell logs msg for an entry unless the same key was logged for it last.
func (c *staleCollector) tell(logger klog.Logger, uid types.UID, key, msg string, kv ...any) {
	if c.told[uid] == key {
		return
	}
	c.told[uid] = key
	logger.Info(msg, kv...)
}

func claimDeviceNames(pc *PreparedClaim) []string {
	names := make([]string, 0, len(pc.Devices))
	for _, d := range pc.Devices {
		names = append(names, d.Device)
	}
	return names
}

// loadEntries reads the checkpoint under the locks, as every call does.
func (s *State) loadEntries(ctx context.Context) (map[types.UID]*PreparedClaim, error) {
	ss, err := s.begin(ctx, "the stale-claim check")
	if err != nil {
		return nil, err
	}
	defer ss.end()
	out := make(map[types.UID]*PreparedClaim, len(ss.cp.Claims))
	for uid, pc := range ss.cp.Claims {
		out[uid] = pc
	}
	return out, nil
}

// unprepareStale does what Unprepare does for pc (checkpoint entry, CDI
// spec, and with them its holds on device nodes; all or nothing), but only
// if the entry is still the one the collector looked at: the lock was not
// held while it asked the API server.
func (s *State) unprepareStale(ctx context.Context, pc *PreparedClaim) (bool, error) {
	ss, err := s.begin(ctx, "the stale-claim unprepare")
	if err != nil {
		return false, err
	}
	defer ss.end()
	cur := ss.cp.Claims[pc.UID]
	if cur == nil || cur.Recovered || cur.Allocation != pc.Allocation || cur.SpecName != pc.SpecName {
		return false, nil
	}
	obj := kubeletplugin.NamespacedObject{UID: pc.UID}
	obj.Namespace, obj.Name = pc.Namespace, pc.Name
	err = ss.unprepare(ctx, []kubeletplugin.NamespacedObject{obj})[pc.UID]
	return err == nil, err
}

// WithStaleClaimInterval sets how often prepared claims are checked against
// the API server and stale ones unprepared; 0 or less turns that off.
// Default: DefaultStaleClaimInterval.
func WithStaleClaimInterval(d time.Duration) Option { return func(o *options) { o.staleInterval = d } }

// WithClaimReader replaces the API reads of the stale-claim check and the
// release wait (tests). Default: NewClaimReader over the Kubernetes client.
func WithClaimReader(r ClaimReader) Option { return func(o *options) { o.claims = r } }

// WithClock replaces the real clock of those two (tests).
func WithClock(c clock.Clock) Option { return func(o *options) { o.clock = c } }
