package discovery

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
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
