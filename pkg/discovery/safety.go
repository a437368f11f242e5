package discovery

import (
	"context"
	"path"
	"sort"
	"strings"

	"k8s.io/klog/v2"
)

// use records why a block device is in use.
type use struct {
	// reason follows "in use: ".
	reason string
	// pred continues "... which is " for devices stacked on this one.
	pred string
	// whole is set when all of the device is in use (not only one of its
	// partitions): its partitions are then in use as well.
	whole bool
}

// inUse works out which block devices back a mounted file system or swap,
// directly or through a stack (dm, md, partitions). The result maps kernel
// names to reasons.
func (h *hostFS) inUse(ctx context.Context, s *blockSet) (map[string]*use, error) {
	logger := klog.FromContext(ctx)
	mounts, from, err := h.readMounts()
	if err != nil {
		return nil, err
	}
	logger.V(5).Info("Read mount table", "path", from, "mounts", len(mounts))
	h.warning = containerMountTableWarning(mounts, from)
	swaps, err := h.readSwaps()
	if err != nil {
		return nil, err
	}

	// Mount points per device, by device number and by source node.
	points := make(map[*blockDev][]string)
	sources := make(map[string]*blockDev)
	for _, m := range mounts {
		if d := s.byDev[devKey(m.major, m.minor)]; d != nil {
			points[d] = append(points[d], m.mountPoint)
		}
		if !strings.HasPrefix(m.source, "/dev/") {
			continue
		}
		d, seen := sources[m.source]
		if !seen {
			d = h.blockOf(s, m.source)
			sources[m.source] = d
		}
		if d != nil {
			points[d] = append(points[d], m.mountPoint)
		}
	}

	st := &useState{set: s, uses: make(map[string]*use)}
	for _, d := range s.list {
		mp := points[d]
		if len(mp) == 0 {
			continue
		}
		sort.Strings(mp)
		what := "mounted at " + mp[0]
		st.mark(d.info.KernelName, what, what, true)
	}
	for _, sw := range swaps {
		if sw.kind != "partition" {
			// A swap file lives on a mounted file system, which is in use
			// already.
			continue
		}
		if d := h.blockOf(s, path.Clean(sw.path)); d != nil {
			st.mark(d.info.KernelName, "swap", "used as swap", true)
		}
	}
	members := h.btrfsMembers()
	for _, d := range s.list {
		if fsid, ok := members[d.info.KernelName]; ok {
			what := "member of mounted btrfs file system " + fsid
			st.mark(d.info.KernelName, what, what, true)
		}
	}
	st.propagate()
	return st.uses, nil
}

// blockOf finds the block device a /dev path leads to.
func (h *hostFS) blockOf(s *blockSet, p string) *blockDev {
	if d := s.byPath[p]; d != nil {
		return d
	}
	n, err := h.statPath(p)
	if err != nil || !isBlockMode(n.mode) {
		return nil
	}
	return s.byDev[devKey(n.major, n.minor)]
}

type useState struct {
	set   *blockSet
	uses  map[string]*use
	queue []string
}

// mark records a use; the first reason a device gets is kept.
func (st *useState) mark(kname, reason, pred string, whole bool) {
	if st.set.byName[kname] == nil {
		return
	}
	u := st.uses[kname]
	switch {
	case u == nil:
		st.uses[kname] = &use{reason: reason, pred: pred, whole: whole}
	case whole && !u.whole:
		u.whole = true
	default:
		return
	}
	st.queue = append(st.queue, kname)
}

// propagate spreads uses down the stack: what a used device is built on is
// used too (slaves, recursively); the disk of a used partition is used; the
// partitions of a wholly used disk are used.
func (st *useState) propagate() {
	for len(st.queue) > 0 {
		kname := st.queue[0]
		st.queue = st.queue[1:]
		d := st.set.byName[kname]
		u := st.uses[kname]
		for _, sl := range d.info.Slaves {
			what := "under " + d.label() + " which is " + u.pred
			st.mark(sl, what, what, true)
		}
		if u.whole {
			for _, p := range d.partitions {
				what := "on disk " + d.label() + " which is " + u.pred
				st.mark(p, what, what, true)
			}
		}
		if d.info.Kind == KindPartition && d.info.Parent != "" {
			st.mark(d.info.Parent,
				"partition "+kname+" is "+u.pred,
				"the disk of partition "+kname+" which is "+u.pred,
				false)
		}
	}
}

// held maps kernel names of devices other devices are stacked on (dm, md,
// bcache...) to a reason. A disk one of whose partitions is held is held
// too.
func held(s *blockSet) map[string]string {
	out := make(map[string]string)
	for _, d := range s.list {
		if len(d.holders) == 0 {
			continue
		}
		labels := make([]string, len(d.holders))
		for i, k := range d.holders {
			if hd := s.byName[k]; hd != nil {
				labels[i] = hd.label()
			} else {
				labels[i] = k
			}
		}
		out[d.info.KernelName] = "held by " + strings.Join(labels, ", ")
	}
	for _, d := range s.list {
		r, ok := out[d.info.KernelName]
		if !ok || d.info.Kind != KindPartition || d.info.Parent == "" {
			continue
		}
		if _, done := out[d.info.Parent]; !done && s.byName[d.info.Parent] != nil {
			out[d.info.Parent] = "partition " + d.info.KernelName + " is " + r
		}
	}
	return out
}

// Kernel interfaces: character devices that reach into the kernel itself
// (memory, I/O ports, CPU registers, the log, device-mapper and loop
// control, hibernation images, watchdogs). They are never published.
var kernelCharDevs = map[uint64]bool{
	devKey(1, 1):    true, // mem
	devKey(1, 2):    true, // kmem
	devKey(1, 4):    true, // port
	devKey(1, 11):   true, // kmsg
	devKey(10, 130): true, // watchdog
	devKey(10, 144): true, // nvram
	devKey(10, 227): true, // mcelog
	devKey(10, 231): true, // snapshot
	devKey(10, 234): true, // btrfs-control
	devKey(10, 236): true, // mapper/control
	devKey(10, 237): true, // loop-control
}

var kernelCharMajors = map[uint32]bool{
	202: true, // cpu/<n>/msr
	203: true, // cpu/<n>/cpuid
}

var kernelPathPatterns = []string{
	"/dev/mem",
	"/dev/kmem",
	"/dev/port",
	"/dev/kmsg",
	"/dev/watchdog*",
	"/dev/cpu/*/msr",
	"/dev/cpu/*/cpuid",
	"/dev/mapper/control",
	"/dev/loop-control",
	"/dev/snapshot",
	"/dev/btrfs-control",
	"/dev/nvram",
	"/dev/mcelog",
}

const reasonKernel = "kernel interface: never published"

// isKernelInterface reports whether a character device is a kernel
// interface, by number or by any of its paths.
func isKernelInterface(major, minor uint32, paths []string) bool {
	if kernelCharDevs[devKey(major, minor)] || kernelCharMajors[major] {
		return true
	}
	for _, p := range paths {
		for _, pat := range kernelPathPatterns {
			if ok, _ := path.Match(pat, p); ok {
				return true
			}
		}
	}
	return false
}
