package discovery

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// OpenBlockDevice opens the host's block device node hostPath (e.g. /dev/sdb)
// under root read-only and checks that it is still the device the inventory
// named: a block device with the same major:minor. With exclusive set the
// open carries O_EXCL, which the kernel refuses with EBUSY while anything
// holds the device exclusively (a mount in any mount namespace, swap, dm, md).
// The caller closes the file; nothing is ever written through it.
func OpenBlockDevice(root, hostPath string, major, minor uint32, exclusive bool) (*os.File, error) {
	flags := unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW
	if exclusive {
		flags |= unix.O_EXCL
	}
	real := newHostFS(root, nil).real(hostPath)
	fd, err := unix.Open(real, flags, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: hostPath, Err: err}
	}
	f := os.NewFile(uintptr(fd), hostPath)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "stat", Path: hostPath, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		f.Close()
		return nil, fmt.Errorf("%s is no longer a block device node", hostPath)
	}
	if gotMaj, gotMin := unix.Major(st.Rdev), unix.Minor(st.Rdev); gotMaj != major || gotMin != minor {
		f.Close()
		return nil, fmt.Errorf("%s is now device %d:%d, not %d:%d as discovered: it was renumbered",
			hostPath, gotMaj, gotMin, major, minor)
	}
	return f, nil
}

// IsBusy reports whether err is the kernel's refusal of an exclusive open.
func IsBusy(err error) bool { return errors.Is(err, unix.EBUSY) }

// CheckNotHeld is the last check before the block device d is handed to a
// container: it opens the node under root with O_EXCL and closes it at
// once. The kernel refuses (EBUSY) while anything holds the device
// exclusively, also what the host's mount table and sysfs do not show: a
// filesystem mounted in another mount namespace, swap, dm, md. Char
// devices and devices the admin listed in allowInUse are not checked. Any
// error refuses the device and is a sentence for the node admin; IsBusy
// tells the kernel's refusal from a check that could not be made.
//
// Callers probe only at the first hand-out: a device already given to a
// container may be held by that container, and a periodic probe would make
// the host's own mounts fail while it holds the device.
func CheckNotHeld(root string, d *Device) error {
	if d.Type != v1alpha1.DeviceTypeBlock || d.InUseAllowed {
		return nil
	}
	f, err := OpenBlockDevice(root, d.Path, d.Major, d.Minor, true)
	if err == nil {
		_ = f.Close()
		return nil
	}
	name := fmt.Sprintf("block device %s (%d:%d)", d.Path, d.Major, d.Minor)
	var pathErr *os.PathError
	if errors.As(err, &pathErr) {
		err = pathErr.Err // the message names the path already
	}
	switch {
	case pathErr == nil:
		// Opened, but it is not the device discovery found.
		return fmt.Errorf("%s is not handed out: %w. The node's devices changed after the plugin's last scan, which publishes them as they are now; "+
			"recreate the pod so that it gets a device by its current number", name, err)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%s is in use on the node: the kernel refused to open it exclusively (%w). "+
			"Something holds it: a filesystem mounted in any mount namespace, also one the host's mount table does not show "+
			"(a systemd service with PrivateMounts=, a container without mount propagation), swap, or a device-mapper, md or bcache device on it. "+
			"Find the holder on the node with `grep -l ' %d:%d ' /proc/[0-9]*/mountinfo`, `cat /proc/swaps` and `ls /sys/dev/block/%d:%d/holders`; "+
			"stop that use, or leave the device out of the plugin's configuration (a group's exclude pattern)",
			name, err, d.Major, d.Minor, d.Major, d.Minor)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Errorf("cannot check that %s is not in use, so it is not handed out: the plugin may not open it (%w). "+
			"The plugin's container needs access to the host's block devices for this check: run it privileged, "+
			"as the DaemonSet in deploy/ does (see deploy/README.md)", name, err)
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENXIO), errors.Is(err, unix.ENODEV), errors.Is(err, unix.ENOMEDIUM):
		return fmt.Errorf("%s is gone from the node (%w): it was removed after the plugin's last scan, which stops publishing it; "+
			"recreate the pod so that it gets a device that exists", name, err)
	default:
		return fmt.Errorf("cannot check that %s is not in use, so it is not handed out: %w; "+
			"the device is refused until the check succeeds", name, err)
	}
}
