package atomicfile

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Explain says what a node admin does about a filesystem error in dir, for
// the causes that are the node's (full, read-only, not permitted, broken);
// "" for others.
func Explain(err error, dir string) string {
	switch {
	case errors.Is(err, unix.ENOSPC):
		return fmt.Sprintf("The filesystem of %s is full (ENOSPC): free space on it", dir)
	case errors.Is(err, unix.EDQUOT):
		return fmt.Sprintf("The disk quota of the filesystem of %s is used up (EDQUOT): free space or raise the quota", dir)
	case errors.Is(err, unix.EROFS):
		return fmt.Sprintf("%s is on a read-only filesystem (EROFS): the plugin must be able to write there; "+
			"check the hostPath volume of the plugin's pod (not readOnly) and that the host mounts the directory read-write", dir)
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return fmt.Sprintf("The plugin may not write in %s (%s): it must be writable by the plugin, which runs as root; "+
			"check the directory's owner and mode, an immutable attribute (lsattr), and SELinux or AppArmor denials in the host's audit log",
			dir, errnoName(err))
	case errors.Is(err, unix.EIO):
		return fmt.Sprintf("An I/O error on the filesystem of %s (EIO): check the disk and the kernel log (dmesg)", dir)
	}
	return ""
}

func errnoName(err error) string {
	if errors.Is(err, unix.EPERM) {
		return "EPERM"
	}
	return "EACCES"
}

// WithAdvice appends Explain's advice to err, which stays unwrappable.
func WithAdvice(err error, dir string) error {
	if a := Explain(err, dir); a != "" {
		return fmt.Errorf("%w. %s", err, a)
	}
	return err
}
