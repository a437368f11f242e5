package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/atomicfile"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// A prepared claim's CDI spec is written only for the devices as they are
// now: at its first Prepare, at every repeated Prepare, and by Restore
// after each new inventory (a reboot empties the CDI directory, and may
// give the claim's device another name and numbers). A claim whose device
// cannot be found by its identity gets no spec, its Prepare fails, and its
// devices are reported unhealthy; see docs/design.md.

// restoreRetryInterval is how often the driver runs Restore again while a
// claim cannot be restored, besides after every new inventory (a variable
// for tests).
var restoreRetryInterval = 30 * time.Second

// adviceNotRestored ends the error of a claim whose device is not found.
const adviceNotRestored = "The claim is not prepared, so that its pod never gets another device: bring the device " +
	"back (the plugin looks again at every device change), or delete the pod (and its claim, unless a template made it) " +
	"so that a device is allocated anew"

// claimProblem is why a recorded claim cannot be prepared now.
type claimProblem struct {
	devices []string
	msg     string
}

// setProblem records why a claim cannot be prepared; it reports whether
// that is news (not the reason already recorded), to log it once.
func (s *State) setProblem(pc *PreparedClaim, err error) bool {
	p := claimProblem{msg: err.Error()}
	for _, d := range pc.Devices {
		p.devices = append(p.devices, d.Device)
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	old, had := s.problems[pc.UID]
	s.problems[pc.UID] = p
	return !had || old.msg != p.msg
}

func (s *State) clearProblem(uid types.UID) {
	s.snapMu.Lock()
	delete(s.problems, uid)
	s.snapMu.Unlock()
}

// DeviceProblems returns, for every device of a prepared claim that cannot
// be prepared now (its device is gone or changed), why; as of the last call
// (no I/O). The driver reports these devices unhealthy.
func (s *State) DeviceProblems() map[string]string {
	s.snapMu.RLock()
	defer s.snapMu.RUnlock()
	out := map[string]string{}
	uids := make([]types.UID, 0, len(s.problems))
	for uid := range s.problems {
		uids = append(uids, uid)
	}
	sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })
	for _, uid := range uids {
		for _, d := range s.problems[uid].devices {
			if _, dup := out[d]; !dup && d != "" {
				out[d] = s.problems[uid].msg
			}
		}
	}
	return out
}

// recordRef names a recorded claim in messages.
func recordRef(pc *PreparedClaim) string {
	if pc.Recovered {
		return fmt.Sprintf("with UID %s (name unknown, recovered from its CDI spec)", pc.UID)
	}
	return pc.Namespace + "/" + pc.Name
}

// verify finds every node of a recorded claim by its identity among the
// devices discovered now, published or left out (a pod that put LVM on its
// disk gets it excluded, and still holds it). It returns the claim as it is
// now: nodes that moved carry their current path and numbers (the
// container path stays), identities of nodes recorded without one are
// adopted, and BootID is this boot. changed says whether that differs from
// pc. The first time in a boot, exclusive block nodes are also checked
// with the kernel, as at a first Prepare: nothing of the claim's pod runs
// yet after a restart, so whatever holds the device is the node's (a file
// system mounted from fstab, an LVM volume group activated at boot).
func (ss *session) verify(ctx context.Context, pc *PreparedClaim, idx *inventoryIndex) (*PreparedClaim, bool, error) {
	s := ss.s
	logger := klog.FromContext(ctx)
	ref := recordRef(pc)
	same := s.sameBoot(pc.BootID)
	si := idx.seen()
	out := pc.deepCopy()
	changed := out.BootID != s.boot.id
	var errs []error
	var probe []*discovery.Device
	probed := map[string]bool{}
	for di := range out.Devices {
		d := &out.Devices[di]
		excl := exclusiveNode(pc, d, idx)
		for ni := range d.Nodes {
			n := &d.Nodes[ni]
			l, why := si.find(n, same)
			if why != "" {
				errs = append(errs, fmt.Errorf("claim %s: device %q: %s", ref, d.Device, why))
				continue
			}
			if n.Identity != l.identity {
				n.Identity = l.identity
				changed = true
			}
			if n.HostPath != l.path || n.Major != l.major || n.Minor != l.minor {
				logger.Info("The device of a prepared claim has moved; the claim follows it", "claim", ref, "claimUID", pc.UID,
					"device", d.Device, "identity", l.identity, "was", n.describe(), "now", l.path+" ("+l.nodeKey()+")")
				n.HostPath, n.Major, n.Minor = l.path, l.major, l.minor
				changed = true
			}
			if !same && excl && n.Type == "b" && !l.inUseAllowed && !probed[l.nodeKey()] {
				probed[l.nodeKey()] = true
				probe = append(probe, &discovery.Device{Type: v1alpha1.DeviceTypeBlock, Path: l.path, Major: l.major, Minor: l.minor})
			}
		}
	}
	if len(errs) > 0 {
		return nil, false, fmt.Errorf("%w. %s", errors.Join(errs...), adviceNotRestored)
	}
	for _, dev := range probe {
		if err := s.probe(dev); err != nil {
			errs = append(errs, fmt.Errorf("claim %s: after the node restarted: %w", ref, err))
		}
	}
	if len(errs) > 0 {
		return nil, false, errors.Join(errs...)
	}
	out.BootID = s.boot.id
	return &out, changed, nil
}

// restoreClaim checks a recorded claim against the devices as they are now
// and writes its spec for them. A claim that fails loses its spec file, if
// it had one: a container that restarts reads the spec without asking the
// plugin, and the recorded numbers may be another device's now.
func (ss *session) restoreClaim(ctx context.Context, pc *PreparedClaim, idx *inventoryIndex) (*PreparedClaim, bool, bool, error) {
	s := ss.s
	upd, changed, err := ss.verify(ctx, pc, idx)
	if err == nil && changed {
		// It may have moved onto numbers another claim holds.
		err = ss.checkExclusive(upd, recordRef(pc), idx)
	}
	if err != nil {
		if rmErr := s.cdi.RemoveSpec(pc.UID); rmErr != nil {
			err = fmt.Errorf("%w; removing its old CDI spec failed too: %v", err, rmErr)
		}
		if s.setProblem(pc, err) {
			klog.FromContext(ctx).Error(err, "A prepared claim cannot be restored; its Prepare fails and its devices are reported unhealthy until this is resolved",
				"claim", recordRef(pc), "claimUID", pc.UID)
		}
		return nil, false, false, err
	}
	written, err := s.cdi.WriteSpec(upd)
	if err != nil {
		if s.setProblem(pc, err) {
			klog.FromContext(ctx).Error(err, "Cannot write the CDI spec of a prepared claim; retrying", "claim", recordRef(pc), "claimUID", pc.UID)
		}
		return nil, false, false, err
	}
	if changed {
		ss.put(upd, idx)
	}
	s.clearProblem(pc.UID)
	return upd, changed, written, nil
}

// prepareAgain answers a repeated Prepare of a claim recorded with the same
// allocation: the recorded result, once its devices are found again.
func (ss *session) prepareAgain(ctx context.Context, claim *resourceapi.ResourceClaim, old *PreparedClaim) (*PreparedClaim, bool, error) {
	s := ss.s
	logger := klog.FromContext(ctx)
	inv := s.inventory()
	if inv == nil {
		return nil, false, fmt.Errorf("claim %s: the node's devices have not been discovered yet, so the devices the claim holds cannot be checked; the kubelet will retry", claimRef(claim))
	}
	pc, changed, written, err := ss.restoreClaim(ctx, old, s.index(inv))
	if err != nil {
		return nil, false, err
	}
	if written {
		logger.Info("Restored the CDI spec of a prepared claim", "claim", klog.KObj(claim), "claimUID", claim.UID, "file", s.cdi.Path(pc.SpecName))
	} else {
		logger.V(4).Info("Claim already prepared", "claim", klog.KObj(claim), "claimUID", claim.UID)
	}
	return pc, changed, nil
}

// Restore checks every prepared claim against the current inventory and
// writes its spec for its devices as they are now (see restoreClaim), then
// removes what Reconcile removes. It returns how many claims failed; their
// Prepare fails with the reason and DeviceProblems lists their devices.
// The driver calls it after every new inventory, and every 30 seconds
// while a claim fails.
func (s *State) Restore(ctx context.Context) (int, error) {
	if s.inventory() == nil {
		return 0, errors.New("restore prepared claims: the node's devices have not been discovered yet")
	}
	ss, err := s.begin(ctx, "Restore")
	if err != nil {
		return 0, fmt.Errorf("restore prepared claims: %w", err)
	}
	defer ss.end()
	idx := s.index(s.inventory())
	failed := 0
	for _, uid := range sortedUIDs(ss.cp.Claims) {
		pc := ss.cp.Claims[uid]
		_, _, written, err := ss.restoreClaim(ctx, pc, idx)
		switch {
		case err != nil:
			failed++
		case written:
			klog.FromContext(ctx).Info("Rewrote the CDI spec of a prepared claim", "claim", recordRef(pc), "claimUID", uid, "file", s.cdi.Path(pc.SpecName))
		}
	}
	_ = s.hit("restore:after-rewrite") // a crash point (test/faults), nothing to fail here
	errs := ss.removeStrays(ctx)
	if err := ss.save(); err != nil {
		errs = append(errs, err)
	}
	return failed, errors.Join(errs...)
}

func sortedUIDs(m map[types.UID]*PreparedClaim) []types.UID {
	uids := make([]types.UID, 0, len(m))
	for uid := range m {
		uids = append(uids, uid)
	}
	sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })
	return uids
}

// Reconcile prepares the CDI directory at start, before serving the
// kubelet and before any inventory: it creates a missing directory,
// removes the specs of claims whose numbers were recorded in another boot
// (Restore writes them again once the devices are found), this driver's
// specs of claims that are not prepared, and temp files that crashed writes
// left. Files of other vendors and classes are never touched. A corrupt
// checkpoint is recovered as described on State. It writes no spec: that
// needs an inventory (Restore).
func (s *State) Reconcile(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	if err := os.MkdirAll(s.cdi.Dir(), 0o755); err != nil {
		return fmt.Errorf("create the CDI directory: %w", atomicfile.WithAdvice(err, filepath.Dir(s.cdi.Dir())))
	}
	ss, err := s.begin(ctx, "Reconcile")
	if err != nil {
		return err
	}
	defer ss.end()

	if s.bootErr != nil {
		logger.Error(s.bootErr, "Cannot read which boot this is: every prepared claim is checked as after a restart", "bootID", s.boot.id)
	}
	var errs []error
	for _, uid := range sortedUIDs(ss.cp.Claims) {
		pc := ss.cp.Claims[uid]
		if s.sameBoot(pc.BootID) || pc.SpecName == "" || !fileExists(s.cdi.Path(pc.SpecName)) {
			continue
		}
		if err := s.cdi.RemoveSpec(uid); err != nil {
			errs = append(errs, err)
			continue
		}
		logger.Info("Removed the CDI spec of a prepared claim written before the node restarted; it is written again once its devices are found",
			"claim", recordRef(pc), "claimUID", uid, "file", s.cdi.Path(pc.SpecName))
	}
	errs = append(errs, ss.removeStrays(ctx)...)
	// Make sure the file exists from now on: a missing checkpoint next to
	// spec files then means it was lost.
	if err := ss.save(); err != nil {
		errs = append(errs, err)
	}
	logger.Info("Reconciled prepared claims", "claims", len(ss.cp.Claims), "cdiDir", s.cdi.Dir(), "checkpoint", s.checkpointPath)
	return errors.Join(errs...)
}

// removeStrays removes this driver's specs of claims that are not prepared,
// and temp files that crashed writes left (only this plugin's: another
// writer's are never touched).
func (ss *session) removeStrays(ctx context.Context) []error {
	s := ss.s
	logger := klog.FromContext(ctx)
	var errs []error
	files, err := s.cdi.listSpecs()
	if err != nil {
		errs = append(errs, err)
	}
	for _, f := range files {
		if pc := ss.cp.Claims[f.ClaimUID]; pc != nil && pc.SpecName == f.Name {
			continue
		}
		if err := s.cdi.removeFile(f.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		logger.Info("Removed the CDI spec of a claim that is not prepared", "claimUID", f.ClaimUID, "file", s.cdi.Path(f.Name))
	}
	errs = append(errs, ss.removeTemps(ctx)...)
	return errs
}

// removeTemps removes the temporary files that crashed writes of this
// driver's specs and of the checkpoint left (atomicfile.RemoveTemps).
func (ss *session) removeTemps(ctx context.Context) []error {
	s := ss.s
	logger := klog.FromContext(ctx)
	var errs []error
	cdiTemps, err := s.cdi.removeTemps()
	if err != nil {
		errs = append(errs, err)
	}
	cpTemps, err := atomicfile.RemoveTemps(s.dataDir, CheckpointFileName)
	if err != nil {
		errs = append(errs, err)
	}
	// The release before named the checkpoint's temp files so; the data
	// directory is this plugin's alone.
	old, _ := filepath.Glob(s.checkpointPath + ".tmp*")
	for _, p := range old {
		if err := os.Remove(p); err == nil {
			cpTemps = append(cpTemps, p)
		}
	}
	for _, p := range append(cdiTemps, cpTemps...) {
		logger.Info("Removed a temporary file left by an interrupted write", "file", p)
	}
	return errs
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// restoreLoop runs Restore after every new inventory, and again every
// restoreRetryInterval while a claim cannot be restored, until ctx ends.
func (d *Driver) restoreLoop(ctx context.Context) {
	logger := klog.FromContext(ctx)
	var retry <-chan time.Time
	for {
		inv, changed := d.inventoryAndSignal()
		if inv != nil {
			failed, err := d.state.Restore(ctx)
			if err != nil && ctx.Err() == nil {
				logger.Error(err, "Restoring prepared claims failed; retrying")
			}
			retry = nil
			if failed > 0 || err != nil {
				retry = time.After(restoreRetryInterval)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-retry:
		}
	}
}

// maxHealthMessage is the kubelet's limit for a health message.
const maxHealthMessage = 1024

// markProblems reports the devices of claims that cannot be restored as
// unhealthy, with the reason (cut to maxHealthMessage bytes).
func markProblems(devs []kubeletplugin.DeviceHealth, problems map[string]string) {
	for i := range devs {
		msg, ok := problems[devs[i].DeviceName]
		if !ok {
			continue
		}
		if len(msg) > maxHealthMessage {
			msg = strings.ToValidUTF8(msg[:maxHealthMessage], "")
		}
		devs[i].Health = kubeletplugin.HealthStatusUnhealthy
		devs[i].Message = msg
	}
}
