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
	mountPoint   string
	fsType       string
	source       string
}

// readMounts parses the host's mount table: PID 1's (the host mount
// namespace when the host's /proc is visible) or else the reader's own.
func (h *hostFS) readMounts() ([]mount, string, error) {
	var errs []error
	for _, p := range []string{"/proc/1/mountinfo", "/proc/self/mountinfo"} {
		data, err := h.readFile(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return parseMountinfo(data), p, nil
	}
	return nil, "", fmt.Errorf("cannot tell which devices are mounted: %w", errors.Join(errs...))
}

// parseMountinfo reads proc_pid_mountinfo(5) lines:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Fields 3 and 5 are the device number and the mount point; after the "-"
// separator come the file system type and the source.
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
		m := mount{major: maj, minor: min, mountPoint: unescapeOctal(f[4])}
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

// swap is one active swap area.
type swap struct {
	path string
	kind string // "partition" or "file"
}

// readSwaps parses /proc/swaps. A kernel without swap support has no such
// file: no swap then.
func (h *hostFS) readSwaps() ([]swap, error) {
	data, err := h.readFile("/proc/swaps")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cannot tell which devices are swap: %w", err)
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

// containerRootFSTypes are file systems a container's "/" lives on and a
// host's normally does not.
var containerRootFSTypes = map[string]bool{"overlay": true, "aufs": true, "fuse-overlayfs": true}

// containerMountTableWarning says when the mount table read looks like a
// container's own rather than the host's: its "/" is an overlay. Then the
// host's mounted disks are not all visible, and the in-use rule cannot
// protect them. It returns "" when the table looks like a host's.
func containerMountTableWarning(mounts []mount, from string) string {
	root := ""
	for _, m := range mounts {
		if m.mountPoint == "/" {
			root = m.fsType // the last mount on "/" is the visible one
		}
	}
	if !containerRootFSTypes[root] {
		return ""
	}
	return fmt.Sprintf("the mount table %s looks like a container's (its / is %s), not the host's: disks the host "+
		"has mounted may not be recognised as in use; give the plugin the host's /proc/1/mountinfo and /proc/swaps "+
		"under --host-root (the shipped DaemonSet does), or run it with hostPID", from, root)
}
