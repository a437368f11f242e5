package discovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"k8s.io/klog/v2"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// Storage stacks without a mount (LVM, md, ZFS, Ceph, LUKS...), multipath
// paths and devices that are not set up yet. The host's udev database says
// first; without it the devices themselves are read, once per device
// (cached), and new devices wait a settle time. See docs/design.md.

// signatureReadTimeout bounds the wait for one device's read: a multipath
// map without paths (queue_if_no_path) or a suspended dm device blocks
// reads. The read goes on in the background and its result is used by a
// later scan.
const signatureReadTimeout = 5 * time.Second

// scanState is what discovery keeps from one scan to the next. A Watcher
// keeps one; Discover alone starts from an empty one without history.
type scanState struct {
	sigs map[sigKey]*sigRead
	// firstSeen is when each device was first seen, on hosts without a
	// usable udev; nil without history (Discover alone), where no device
	// counts as new.
	firstSeen map[devID]time.Time
	// nextSettle is the earliest time a device held back as new settles;
	// zero when none waits. Set by each scan.
	nextSettle time.Time
}

func newScanState(history bool) *scanState {
	st := &scanState{sigs: make(map[sigKey]*sigRead)}
	if history {
		st.firstSeen = make(map[devID]time.Time)
	}
	return st
}

// sigKey is what a cached signature stays valid for: the device number,
// its size and the kernel's disk sequence number, which changes when the
// medium does (a loop device re-bound, a disk replaced under the same
// number). Kernels before 5.15 have no diskseq.
type sigKey struct {
	dev     uint64
	size    uint64
	diskseq string
}

// devID tells a new device from one seen before.
type devID struct {
	dev     uint64
	diskseq string
}

type sigRead struct {
	done   chan struct{}
	fsType string
	err    error
}

// stackHit is a storage stack signature found on a device.
type stackHit struct {
	reason, pred string
}

// checkStacks looks at every block device the other rules have not already
// left out for good: its file system type (BlockInfo.FSType), a storage
// stack signature, which marks it in use in uses (and what it is stacked
// on, its disk), and whether it is to be held back for now. It returns the
// reasons to hold devices back and warnings about the host view.
func (h *hostFS) checkStacks(ctx context.Context, cfg *v1alpha1.DiscoveryConfig, set *blockSet,
	uses map[string]*use, s *settings) (map[string]string, []string) {
	st := s.state
	udev := h.readUdev()
	var warnings []string
	if udev.warning != "" {
		warnings = append(warnings, udev.warning)
	}
	now := s.clock.Now()
	st.nextSettle = time.Time{}
	settling := st.firstSeen != nil && !udev.usable && s.settle > 0
	if st.firstSeen != nil && !settling {
		// Whatever was seen while udev spoke is new again without it.
		clear(st.firstSeen)
	}
	var toRead map[string]bool
	if !udev.usable {
		toRead = readSet(cfg, set)
	}
	seenIDs := make(map[devID]bool)
	seenKeys := make(map[sigKey]bool)
	holds := make(map[string]string)
	stacks := make(map[string]stackHit)

	for _, d := range set.list {
		if d.info.SizeBytes == 0 || d.hidden || d.nodeProblem != "" {
			continue
		}
		k := d.info.KernelName
		why := "the host's udev database is not visible at " + h.real(udevRun)
		if udev.usable {
			e, found, err := h.udevLookup(d.sysMajor, d.sysMinor)
			switch {
			case err != nil:
				why = fmt.Sprintf("its entry in the host's udev database cannot be read (%v)", err)
			case !found:
				holds[k] = fmt.Sprintf("not ready: udev has not processed it yet (no entry b%d:%d in the host's "+
					"udev database); it is published once udev has. If this stays, run `udevadm info %s` on the host",
					d.sysMajor, d.sysMinor, d.path)
				continue
			default:
				d.info.FSType = e.fsType
				if !e.ids.empty() {
					ids := e.ids
					d.udev = &ids
				}
				if desc := stackOf(e.fsType, e.fsUsage); desc != "" {
					stacks[k] = newStackHit(desc, e.fsType, "from udev")
				}
				if r := e.holdReason(); r != "" {
					holds[k] = r
				}
				continue
			}
		}

		diskseq := h.diskseq(k)
		if settling {
			id := devID{dev: devKey(d.sysMajor, d.sysMinor), diskseq: diskseq}
			seenIDs[id] = true
			t0, ok := st.firstSeen[id]
			if !ok {
				t0 = now
				st.firstSeen[id] = t0
			}
			if until := t0.Add(s.settle); now.Before(until) {
				holds[k] = fmt.Sprintf("not ready: new device, published once it has been there for %v, unless a "+
					"storage stack or multipath map takes it first (without udev nothing says when it is set up)", s.settle)
				if st.nextSettle.IsZero() || until.Before(st.nextSettle) {
					st.nextSettle = until
				}
			}
		}
		// A ROM drive is read-only and opening it may close its tray.
		if !toRead[k] || uses[k] != nil || len(d.holders) > 0 || d.info.Kind == KindROM {
			continue
		}
		key := sigKey{dev: devKey(d.sysMajor, d.sysMinor), size: d.info.SizeBytes, diskseq: diskseq}
		seenKeys[key] = true
		fsType, err := st.signature(ctx, key, d.info.SizeBytes, func() (*os.File, error) {
			return s.opener(d.path, d.major, d.minor)
		})
		if err != nil {
			holds[k] = "unchecked: cannot tell whether it belongs to a storage stack (LVM, md RAID, ZFS, Ceph, LUKS): " +
				why + " and reading the device failed (" + err.Error() + "); mount the host's /run/udev read-only at " +
				h.real(udevRun) + ", or let the plugin open block devices read-only"
			klog.FromContext(ctx).V(4).Info("Cannot read device signature", "device", d.path, "err", err)
			continue
		}
		d.info.FSType = fsType
		if desc := stackOf(fsType, ""); desc != "" {
			stacks[k] = newStackHit(desc, fsType, "found on the device")
		}
	}
	for key := range st.sigs {
		if !seenKeys[key] {
			delete(st.sigs, key)
		}
	}
	for id := range st.firstSeen {
		if !seenIDs[id] {
			delete(st.firstSeen, id)
		}
	}

	// A disk is held back while one of its partitions is.
	for _, d := range set.list {
		r := holds[d.info.KernelName]
		if r == "" || d.info.Kind != KindPartition {
			continue
		}
		if p := set.byName[d.info.Parent]; p != nil && holds[p.info.KernelName] == "" && stacks[p.info.KernelName].reason == "" {
			holds[p.info.KernelName] = "partition " + d.info.KernelName + " is held back: " + r
		}
	}
	// A stack member with holders is reported as held by its stack's top.
	us := &useState{set: set, uses: uses}
	for _, d := range set.list {
		if hit, ok := stacks[d.info.KernelName]; ok && len(d.holders) == 0 {
			us.mark(d.info.KernelName, hit.reason, hit.pred, true)
		}
	}
	us.propagate()
	return holds, warnings
}

func newStackHit(desc, fsType, source string) stackHit {
	return stackHit{
		reason: fmt.Sprintf("carries %s signature (%s, %s): the host may take it up at any time, also with nothing "+
			"active now; to hand it out anyway name its exact path in allowInUse, or wipe the signature on the host "+
			"(wipefs) once that stack is gone", desc, fsType, source),
		pred: desc + " (" + fsType + ")",
	}
}

// readSet names the devices worth reading: those a group includes, and the
// partitions of those (a partition's stack makes its disk in use).
func readSet(cfg *v1alpha1.DiscoveryConfig, set *blockSet) map[string]bool {
	out := make(map[string]bool)
	for _, d := range set.list {
		if gi, _ := matchGroup(cfg, append([]string{d.path}, d.aliases...), v1alpha1.DeviceTypeBlock); gi < 0 {
			continue
		}
		out[d.info.KernelName] = true
		for _, p := range d.partitions {
			out[p] = true
		}
	}
	return out
}

// diskseq reads the kernel's disk sequence number ("" before Linux 5.15).
func (h *hostFS) diskseq(kname string) string {
	sd := h.openSysDir(h.real(sysClassBlock + "/" + kname))
	defer sd.close()
	v, _ := sd.attr("diskseq")
	return v
}

// signature returns the signature type found on a device, from the cache
// when the key is known. A read that has not finished within
// signatureReadTimeout is an error now and is picked up by a later scan; a
// failed read is tried again next scan.
func (st *scanState) signature(ctx context.Context, key sigKey, size uint64, open func() (*os.File, error)) (string, error) {
	r := st.sigs[key]
	if r == nil {
		r = &sigRead{done: make(chan struct{})}
		st.sigs[key] = r
		go func() {
			defer close(r.done)
			f, err := open()
			if err != nil {
				r.err = err
				return
			}
			defer f.Close()
			v, err := readSigView(f, size)
			if err != nil {
				r.err = fmt.Errorf("read %s: %w", f.Name(), err)
				return
			}
			r.fsType = probeSignature(v)
		}()
		t := time.NewTimer(signatureReadTimeout)
		defer t.Stop()
		select {
		case <-r.done:
		case <-t.C:
		case <-ctx.Done():
		}
	}
	select {
	case <-r.done:
		if r.err != nil {
			delete(st.sigs, key)
		}
		return r.fsType, r.err
	default:
		return "", errors.New("reading it has not finished after " + signatureReadTimeout.String() +
			" (a multipath map without paths, or a suspended device-mapper map?)")
	}
}
