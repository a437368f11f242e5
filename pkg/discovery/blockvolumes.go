package discovery

import (
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// For a pod's block-mode volume the kubelet bind-mounts the device node
// below its directory and attaches a loop device to the bound node to keep
// it open. Neither shows up as a mounted file system or in holders/; these
// rules find both. See docs/design.md.

// kubeletDir is the kubelet's default --root-dir: pods' volumes are
// mounted and bound below it.
const kubeletDir = "/var/lib/kubelet"

// isKubeletPath reports whether a host path lies in a kubelet's directory:
// below /var/lib/kubelet, or in the pods/ or plugins/ tree of a kubelet
// directory elsewhere (k0s, MicroK8s).
func isKubeletPath(p string) bool {
	return strings.HasPrefix(p, kubeletDir+"/") || strings.Contains(p, "/kubelet/pods/") ||
		strings.Contains(p, "/kubelet/plugins/")
}

// Phrases of the reasons these rules give; Advice recognises them.
const (
	phraseBound      = "bind-mounted at "
	phraseBackedBy   = "backed by "
	phraseBackingOf  = "the backing device of loop device "
	phraseKubeletDir = "in the kubelet's directory"
)

// devFileSystems returns the device numbers of the file systems that hold
// device nodes: devtmpfs wherever it is mounted, and whatever file system
// is mounted at /dev (a tmpfs on hosts without devtmpfs and in kind nodes).
func devFileSystems(mounts []mount) map[uint64]bool {
	out := make(map[uint64]bool)
	for _, m := range mounts {
		if m.fsType == "devtmpfs" || (m.mountPoint == "/dev" && m.root == "/") {
			out[devKey(m.major, m.minor)] = true
		}
	}
	return out
}

// nodeOfMount returns the host path of the device node a mount binds, or ""
// when it binds none. A bind mount of /dev/sdc shows devtmpfs's device
// number and the node's name only in the root field: "/sdc", or
// "/sdc//deleted" once the node is gone.
func nodeOfMount(m mount, devFS map[uint64]bool) string {
	if m.root == "/" || !devFS[devKey(m.major, m.minor)] {
		return ""
	}
	p := path.Join("/dev", strings.TrimSuffix(m.root, "//deleted"))
	if !strings.HasPrefix(p, "/dev/") {
		return ""
	}
	return p
}

// loopBackingFile reads a loop device's backing file as the kernel names
// it: the path in the mount namespace that attached it, with " (deleted)"
// appended when the file is gone.
func (h *hostFS) loopBackingFile(kname string) string {
	b, ok := h.readRawAt(unix.AT_FDCWD, h.real(sysClassBlock+"/"+kname+"/loop/backing_file"))
	if !ok {
		return ""
	}
	return cleanString(b)
}

// markLoops marks loop devices that hold a block device open, or that the
// kubelet attached for a pod's volume, and the block devices behind them.
// A loop device over a regular file elsewhere is the host's business: it
// is published as before unless something else uses it.
func (h *hostFS) markLoops(st *useState, mounts []mount, devFS map[uint64]bool) {
	var bound map[string]string // mount point -> device node it binds
	for _, d := range st.set.list {
		if d.info.Kind != KindLoop {
			continue
		}
		file := h.backingOf(d)
		if file == "" {
			continue
		}
		p := path.Clean(strings.TrimSuffix(file, " (deleted)"))
		kname := d.info.KernelName
		// The backing file is a device node when it is one under the
		// root, or is the mount point of a bind-mounted node (the
		// kubelet's path, which the plugin cannot open).
		node := ""
		if n, err := h.statPath(p); err == nil && isBlockMode(n.mode) {
			node = p
		} else {
			if bound == nil {
				bound = make(map[string]string)
				for _, m := range mounts {
					if n := nodeOfMount(m, devFS); n != "" {
						bound[m.mountPoint] = n
					}
				}
			}
			node = bound[p]
		}
		switch {
		case node != "":
			b := h.blockOf(st.set, node)
			if b != nil {
				node = b.path
			}
			what := phraseBackedBy + "block device " + node
			if node != p {
				what = phraseBackedBy + file + ", which is block device " + node
			}
			st.mark(kname, what+" (a loop device over a block device holds it open, as the kubelet does for a "+
				"pod's block-mode volume)", what, true)
			if b != nil && b != d {
				st.mark(b.info.KernelName, phraseBackingOf+kname, phraseBackingOf+kname, true)
			}
		case strings.HasPrefix(p, "/dev/"):
			// A node that no longer resolves: still no file of the host's.
			what := phraseBackedBy + "device node " + file
			st.mark(kname, what, what, true)
		case isKubeletPath(p):
			what := phraseBackedBy + file + ", " + phraseKubeletDir + " (a pod's volume)"
			st.mark(kname, what, what, true)
		}
	}
}
