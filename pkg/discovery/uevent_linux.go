package discovery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// listenUevents subscribes to the kernel's device events (the netlink
// group udev listens to) and calls poke for each one about a device node.
// The socket is closed when ctx ends; wg tracks the goroutines.
func listenUevents(ctx context.Context, wg *sync.WaitGroup, poke func(string)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK,
		unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return fmt.Errorf("uevent socket: %w", err)
	}
	// Group 1 carries the kernel's own messages.
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("uevent bind: %w", err)
	}
	// Best effort: a burst (hundreds of paths appearing) should not
	// overflow; when it does, the read reports ENOBUFS and we rescan.
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 1<<20)

	// Non-blocking, so the runtime poller serves reads and Close wakes a
	// blocked Read.
	f := os.NewFile(uintptr(fd), "uevent")
	logger := klog.FromContext(ctx)
	wg.Add(2)
	go func() {
		defer wg.Done()
		<-ctx.Done()
		f.Close()
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 64<<10)
		for {
			n, err := f.Read(buf)
			switch {
			case err == nil:
				if isDeviceUevent(buf[:n]) {
					poke("uevent")
				}
			case errors.Is(err, unix.ENOBUFS):
				poke("uevent overflow")
			case errors.Is(err, os.ErrClosed):
				return
			default:
				logger.Error(err, "Reading kernel uevents failed; relying on file watches and rescans")
				return
			}
		}
	}()
	return nil
}

// isDeviceUevent reports whether a uevent message ("action@devpath" then
// NUL-separated KEY=value pairs) is about a block device or a device node.
func isDeviceUevent(msg []byte) bool {
	if bytes.HasPrefix(msg, []byte("libudev")) {
		return false
	}
	return bytes.Contains(msg, []byte("\x00SUBSYSTEM=block\x00")) ||
		bytes.Contains(msg, []byte("\x00DEVNAME="))
}
