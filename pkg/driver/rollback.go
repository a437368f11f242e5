package driver

import (
	"context"
	"fmt"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"
)

// A Prepare or Unprepare that fails at any step leaves what it found: no
// spec file, no checkpoint entry and no hold of its own, for a claim it
// could not prepare; the claim still prepared as it was, for one it could
// not unprepare. The order of the steps stays the one that keeps a crash
// safe (State); this file undoes the steps that were done when a later one
// fails. docs/design.md has the reasoning.

// specUndo is how to undo a spec write of this call.
type specUndo struct {
	name string
	// prev is the content to put back; nil removes the file.
	prev []byte
}

// noteSpec records how to undo the spec write of a claim: a claim that was
// not recorded loses its spec file (without an entry it is garbage, even
// one an earlier crashed call left); a recorded one (a new allocation
// under the same UID) gets back what the file held, if this call changed
// it.
func (ss *session) noteSpec(pc *PreparedClaim, recorded, written bool, prev []byte) {
	if pc.SpecName == "" || (recorded && !written) {
		return
	}
	u := specUndo{name: pc.SpecName}
	if recorded {
		u.prev = prev
	}
	ss.undo[pc.UID] = u
}

// undoPrepare undoes this call's spec write of claim after a step failed
// with err, and returns the claim's error: what failed and what became of
// its spec. A claim restored as it was recorded (restore.go) keeps the spec
// for its devices as they are now: that is the recorded claim's.
func (ss *session) undoPrepare(ctx context.Context, claim *resourceapi.ResourceClaim, err error) error {
	s := ss.s
	ref := claimRef(claim)
	u, ok := ss.undo[claim.UID]
	if !ok {
		return fmt.Errorf("prepare claim %s: %w; the kubelet retries", ref, err)
	}
	delete(ss.undo, claim.UID)
	path := s.cdi.Path(u.name)
	logger := klog.FromContext(ctx).WithValues("claim", klog.KObj(claim), "claimUID", claim.UID, "file", path)
	if u.prev != nil {
		putErr := s.cdi.putBack(u.name, u.prev)
		if putErr == nil {
			logger.Info("Put the CDI spec of a claim whose Prepare failed back as it was")
			return fmt.Errorf("prepare claim %s: %w. Its CDI spec %s was put back as it was, and the claim stays prepared as before; the kubelet retries", ref, err, path)
		}
		// Fail closed: no spec is better than one that no entry holds.
		err = fmt.Errorf("%w; %v", err, putErr)
	}
	if rmErr := s.cdi.removeFile(u.name); rmErr != nil {
		logger.Error(rmErr, "Cannot remove the CDI spec of a claim whose Prepare failed; the plugin removes it when it next restores claims or starts")
		return fmt.Errorf("prepare claim %s: %w; removing its CDI spec failed too (%v): the plugin removes it when it next restores claims or starts; the kubelet retries", ref, err, rmErr)
	}
	logger.Info("Removed the CDI spec of a claim whose Prepare failed")
	s.dropDeviceMetadata(ctx, claim.Namespace, claim.Name, claim.UID)
	return fmt.Errorf("prepare claim %s: %w. Nothing of the claim was kept (its CDI spec %s was removed); the kubelet retries", ref, err, path)
}

// unprepare removes the claims' checkpoint entries, then their spec files:
// a crash in between leaves only a spec without an entry, which is garbage
// (State). A claim whose spec file cannot be removed gets its entry back,
// so that a failed Unprepare leaves it prepared as it was: its devices stay
// held while a spec for them exists, and the kubelet's retry finds it. A
// claim's problem (restore.go) goes only with its entry.
func (ss *session) unprepare(ctx context.Context, claims []kubeletplugin.NamespacedObject) map[types.UID]error {
	s := ss.s
	out := make(map[types.UID]error, len(claims))
	removed := map[types.UID]*PreparedClaim{}
	for _, c := range claims {
		if c.UID == "" {
			out[c.UID] = fmt.Errorf("unprepare claim %s: no UID", c.NamespacedName)
			continue
		}
		if pc := ss.cp.Claims[c.UID]; pc != nil {
			removed[c.UID] = pc
			delete(ss.cp.Claims, c.UID)
		}
	}
	if len(removed) > 0 {
		err := s.hit("unprepare:before-checkpoint")
		if err == nil {
			err = ss.save()
		}
		if err != nil {
			ss.logger.Error(err, "Removing unprepared claims from the checkpoint failed; they stay prepared, the kubelet will retry")
			for uid, pc := range removed {
				ss.cp.Claims[uid] = pc
				out[uid] = fmt.Errorf("remove it from the checkpoint: %w. The claim stays prepared; the kubelet retries", err)
			}
			// The claims that were not recorded still lose their specs.
			removed = map[types.UID]*PreparedClaim{}
		}
	}
	stepErr := s.hit("unprepare:after-checkpoint")
	var back []types.UID
	for _, c := range claims {
		if _, done := out[c.UID]; done {
			continue
		}
		pc := removed[c.UID]
		err := stepErr
		if err == nil {
			err = s.removeSpecFiles(c.UID, pc)
		}
		switch {
		case err == nil:
			s.clearProblem(c.UID)
			s.dropDeviceMetadata(ctx, c.Namespace, c.Name, c.UID)
			if pc != nil {
				ss.logger.Info("Unprepared claim", "claim", c.NamespacedName, "claimUID", c.UID)
			} else {
				ss.logger.V(4).Info("Claim was not prepared", "claim", c.NamespacedName, "claimUID", c.UID)
			}
		case pc == nil:
			err = fmt.Errorf("%w; the kubelet retries", err)
		default:
			ss.cp.Claims[c.UID] = pc
			back = append(back, c.UID)
		}
		out[c.UID] = err
	}
	if len(back) > 0 {
		saveErr := ss.save()
		for _, uid := range back {
			if saveErr == nil {
				out[uid] = fmt.Errorf("%w. The claim stays prepared; the kubelet retries", out[uid])
				continue
			}
			out[uid] = fmt.Errorf("%w; recording the claim as prepared again failed too (%v), so its devices are free; "+
				"its CDI spec is removed by the kubelet's retry, or when the plugin next restores claims or starts", out[uid], saveErr)
		}
		if saveErr != nil {
			ss.logger.Error(saveErr, "Cannot record claims whose CDI spec could not be removed as prepared again", "claims", back)
		}
	}
	for _, c := range claims {
		if out[c.UID] != nil {
			out[c.UID] = fmt.Errorf("unprepare claim %s: %w", c.NamespacedName, out[c.UID])
		}
	}
	return out
}

// removeSpecFiles removes the spec files of a claim: by its UID, so that
// an Unprepare of a claim that is not recorded (a crash after its entry
// went) still finds them, and the one its entry names.
func (s *State) removeSpecFiles(uid types.UID, pc *PreparedClaim) error {
	err := s.cdi.RemoveSpec(uid)
	if err == nil && pc != nil && pc.SpecName != "" {
		if _, ok := claimUIDFromSpecName(pc.SpecName); ok {
			err = s.cdi.removeFile(pc.SpecName)
		}
	}
	return err
}
