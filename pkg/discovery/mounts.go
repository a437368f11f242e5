package discovery

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strings"
)

// mount is one line of mountinfo that matters here.
type mount struct {
	major, minor uint32
	// root is the path inside the mounted file system that is mounted:
	// "/" for a whole file system, the node's path inside devtmpfs for a
	// bind mount of a device node (/sdc).
	root       string
	mountPoint string
	fsType     string
	source     string
}

// hostMountinfo is the one mount table discovery trusts: that of the
// host's PID 1. There is no fallback to /proc/self (see docs/design.md).
const hostMountinfo = "/proc/1/mountinfo"

// readMounts parses the host's mount table.
func (h *hostFS) readMounts() ([]mount, error) {
	data, err := h.readFile(hostMountinfo)
	if err != nil {
		return nil, fmt.Errorf("the host's mount table %s cannot be read (%w)", h.real(hostMountinfo), pathErrCause(err))
	}
	return parseMountinfo(data), nil
}

// parseMountinfo reads proc_pid_mountinfo(5) lines:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Fields 3, 4 and 5 are the device number, the root and the mount point;
// after the "-" separator come the file system type and the source.
func parseMountinfo(data []byte) []mount {
	var out []mount
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		f := strings.Fields(string(line))
		if len(f) < 7 {
			continue
		}
		maj, min, err := parseDevNum(f[2])
		if err != nil {
			continue
		}
		m := mount{major: maj, minor: min, root: unescapeOctal(f[3]), mountPoint: unescapeOctal(f[4])}
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				if i+1 < len(f) {
					m.fsType = f[i+1]
				}
				if i+2 < len(f) {
					m.source = unescapeOctal(f[i+2])
				}
				break
			}
		}
		out = append(out, m)
	}
	return out
}

// pathErrCause drops the path from an error that repeats it.
func pathErrCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// swap is one active swap area.
type swap struct {
	path string
	kind string // "partition" or "file"
}

// readSwaps parses /proc/swaps. A kernel without swap support has no such
// file and no /sys/kernel/mm/swap either: no swap then. When the kernel has
// swap but the file is missing under the root, it was not mounted there,
// and that is an error like any other.
func (h *hostFS) readSwaps() ([]swap, error) {
	data, err := h.readFile("/proc/swaps")
	if errors.Is(err, fs.ErrNotExist) && !h.exists("/sys/kernel/mm/swap") {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the host's swap list %s cannot be read (%w)", h.real("/proc/swaps"), pathErrCause(err))
	}
	return parseSwaps(data), nil
}

// parseSwaps reads /proc/swaps:
//
//	Filename        Type       Size     Used  Priority
//	/dev/dm-1       partition  8388604  0     -2
func parseSwaps(data []byte) []swap {
	var out []swap
	first := true
	for len(data) > 0 {
		var line []byte
		line, data, _ = bytes.Cut(data, []byte{'\n'})
		if first {
			first = false
			if bytes.HasPrefix(line, []byte("Filename")) {
				continue
			}
		}
		f := strings.Fields(string(line))
		if len(f) < 2 {
			continue
		}
		out = append(out, swap{path: unescapeOctal(f[0]), kind: f[1]})
	}
	return out
}

// unescapeOctal decodes the \ooo escapes the kernel writes for space, tab,
// newline and backslash in mount points and sources.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			v := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			b.WriteByte(v)
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// btrfsMembers lists the kernel names of the devices of every mounted btrfs
// file system: /sys/fs/btrfs/<fsid>/devices/<kname>. mountinfo names only
// one of them, with a 0:NN device number.
func (h *hostFS) btrfsMembers() map[string]string {
	out := make(map[string]string)
	const dir = "/sys/fs/btrfs"
	for _, fsid := range h.list(dir) {
		for _, kname := range h.list(dir + "/" + fsid + "/devices") {
			if _, ok := out[kname]; !ok {
				out[kname] = fsid
			}
		}
	}
	return out
}

// containerRuntimeFiles are files every container runtime (Docker,
// containerd, CRI-O, Podman) and the kubelet bind-mount into a container
// and a host never has as mount points.
var containerRuntimeFiles = map[string]bool{
	"/etc/hostname": true, "/etc/hosts": true, "/etc/resolv.conf": true, "/dev/termination-log": true,
}

// containerMountTable says why a mount table is plainly a container's own
// rather than the host's, or "" when it looks like a host's. The signs are
// the runtime's file bind mounts, and a "/" on aufs, fuse-overlayfs or an
// overlay whose source is "overlay", as container runtimes name it. An
// overlay "/" with another source (composefs on ostree and bootc hosts,
// overlayroot, live media) is a host's.
func containerMountTable(mounts []mount) string {
	var root *mount
	for i, m := range mounts {
		if m.mountPoint == "/" {
			root = &mounts[i] // the last mount on "/" is the visible one
		}
	}
	if root != nil {
		switch {
		case root.fsType == "aufs" || root.fsType == "fuse-overlayfs":
			return "its / is " + root.fsType
		case root.fsType == "overlay" && root.source == "overlay":
			return "its / is an overlay named \"overlay\", as container runtimes mount it"
		}
	}
	for _, m := range mounts {
		if containerRuntimeFiles[m.mountPoint] {
			return "it has a file mounted at " + m.mountPoint + ", as container runtimes do"
		}
	}
	return ""
}

// mountTableFix says how to give discovery the host's mount table and swap
// list.
func mountTableFix(root string) string {
	if root == "/" {
		return "run it on the host (not in a container) as root, or in a pod with hostPID, " +
			"or mount the host's /proc/1/mountinfo and /proc/swaps read-only into the pod and point --host-root at them"
	}
	return fmt.Sprintf("mount the host's /proc/1/mountinfo and /proc/swaps read-only at %s/proc/1/mountinfo and "+
		"%s/proc/swaps (the shipped DaemonSet does)", root, root)
}
