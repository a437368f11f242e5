package discovery

import (
	"context"
	"fmt"
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

// reasonUnknownUse starts the reason of every block device (and character
// alias of one) while the host's mount table or swap list cannot be read.
const reasonUnknownUse = "unknown whether in use: "

// inUse works out which block devices back a mounted file system or swap,
// directly or through a stack (dm, md, partitions, loop devices), or are
// bound by a bind mount of their node. The result maps kernel names to
// reasons. When the host's mount table or swap list cannot be read, or is
// plainly a container's, nothing can be known: uses is nil and unknown
// says why, for every block device.
func (h *hostFS) inUse(ctx context.Context, s *blockSet) (uses map[string]*use, unknown string) {
	logger := klog.FromContext(ctx)
	mounts, err := h.readMounts()
	var cause string
	if err != nil {
		cause = err.Error()
	} else if why := containerMountTable(mounts); why != "" {
		cause = fmt.Sprintf("the mount table %s is a container's own, not the host's (%s)", h.real(hostMountinfo), why)
	}
	var swaps []swap
	if cause == "" {
		if swaps, err = h.readSwaps(); err != nil {
			cause = err.Error()
		}
	}
	if cause != "" {
		h.warning = cause + "; no block device is published until the host's mount table and swap list can be read: " +
			mountTableFix(h.root)
		return nil, reasonUnknownUse + cause
	}
	logger.V(5).Info("Read mount table", "path", hostMountinfo, "mounts", len(mounts))

	// Mount points per device, by device number and by source node; bind
	// mounts of device nodes per device.
	points := make(map[*blockDev][]string)
	binds := make(map[*blockDev][]string)
	sources := make(map[string]*blockDev)
	devFS := devFileSystems(mounts)
	for _, m := range mounts {
		if d := s.byDev[devKey(m.major, m.minor)]; d != nil {
			points[d] = append(points[d], m.mountPoint)
		}
		if node := nodeOfMount(m, devFS); node != "" {
			if d := h.blockOf(s, node); d != nil {
				binds[d] = append(binds[d], m.mountPoint)
			}
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
	for _, d := range s.list {
		if mp := binds[d]; len(mp) > 0 {
			sort.Strings(mp)
			st.mark(d.info.KernelName, phraseBound+mp[0]+" (the device node itself, as the kubelet does for a pod's "+
				"block-mode volume)", phraseBound+mp[0], true)
		}
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
	h.markLoops(st, mounts, devFS)
	st.propagate()
	return st.uses, ""
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
// control, hibernation images, watchdogs), into firmware and the service
// processor (IPMI, TPM, flash, Power's RTAS and OPAL interfaces), or into
// the node's consoles and input. They are never published. Numbers are
// listed where the kernel fixes them; paths catch the dynamic ones.
var kernelCharDevs = map[uint64]bool{
	devKey(1, 1):    true, // mem
	devKey(1, 2):    true, // kmem
	devKey(1, 4):    true, // port
	devKey(1, 11):   true, // kmsg
	devKey(5, 0):    true, // tty (the controlling terminal)
	devKey(5, 1):    true, // console
	devKey(10, 130): true, // watchdog
	devKey(10, 144): true, // nvram
	devKey(10, 223): true, // uinput
	devKey(10, 224): true, // tpm0 (misc minor)
	devKey(10, 227): true, // mcelog
	devKey(10, 231): true, // snapshot
	devKey(10, 234): true, // btrfs-control
	devKey(10, 236): true, // mapper/control
	devKey(10, 237): true, // loop-control
}

var kernelCharMajors = map[uint32]bool{
	7:   true, // vcs, vcsa, vcsu: virtual console memory
	90:  true, // mtd<n>, mtd<n>ro: raw flash
	202: true, // cpu/<n>/msr
	203: true, // cpu/<n>/cpuid
}

// Major 4 minors 0-63 are the virtual terminals tty0-tty63; serial ports
// (ttyS*) start at 64.
const ttyMajor, firstSerialMinor = 4, 64

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
	"/dev/ipmi*",
	"/dev/ipmidev/*",
	"/dev/tpm*", // tpm<n> and tpmrm<n>
	"/dev/mtd*",
	"/dev/uinput",
	"/dev/input/uinput",
	"/dev/console",
	"/dev/tty",
	"/dev/tty[0-9]*",
	"/dev/vcs*",
	"/dev/papr-*", // papr-vpd, papr-sysparm, papr-indices, papr-platform-dump, ...
	"/dev/opal-prd",
	"/dev/nvme-fabrics", // connects the host to NVMe-oF targets, like loop-control
}

const reasonKernel = "kernel interface: never published"

// isKernelInterface reports whether a character device is a kernel
// interface, by number or by any of its paths.
func isKernelInterface(major, minor uint32, paths []string) bool {
	if kernelCharDevs[devKey(major, minor)] || kernelCharMajors[major] ||
		(major == ttyMajor && minor < firstSerialMinor) {
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

// mtdBlockMajor is the block view of raw flash (mtdblock<n>): the same
// firmware flash as /dev/mtd<n>.
const mtdBlockMajor = 31

// isKernelBlock reports whether a block device is a kernel interface.
func isKernelBlock(d *blockDev) bool {
	return strings.HasPrefix(d.info.KernelName, "mtdblock") || (d.sysDevOK && d.sysMajor == mtdBlockMajor)
}
