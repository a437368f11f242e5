//go:build faults

package faults

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// openKill kills the plugin at an exact point no timer can hit: when it opens (creates, for a temporary file)
// the n-th file in a directory whose name matches a pattern. fanotify's permission event stops the opening
// thread inside open(2), after the file was created and before anything is written to it; the suite sends
// SIGKILL, then lets the open go on. That is a kill -9 at that instant, on the release binary, with no test
// code in it.
type openKill struct {
	f       *os.File
	pattern string
	nth     int
	onlyNew bool
	old     map[string]bool
	seen    atomic.Int32
	fired   chan string
	done    chan struct{}
}

// killOnOpen arms an openKill on the file system mounted at dir (the suite's tmpfs mounts), so that files in
// subdirectories count too. Opens by the suite's own process are let through. With onlyNew, only files created
// after it was armed count (a write's new temporary file, whatever the writer names it; not a stray one the
// plugin looks at).
func killOnOpen(dir, pattern string, nth int, onlyNew bool) (*openKill, error) {
	old := map[string]bool{}
	if onlyNew {
		err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
			old[p] = true
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_CONTENT|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fanotify_init: %w", err)
	}
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_MOUNT, unix.FAN_OPEN_PERM, unix.AT_FDCWD, dir); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("fanotify_mark %s: %w", dir, err)
	}
	k := &openKill{f: os.NewFile(uintptr(fd), "fanotify"), pattern: pattern, nth: nth, onlyNew: onlyNew, old: old,
		fired: make(chan string, 1), done: make(chan struct{})}
	go k.loop()
	return k, nil
}

func (k *openKill) loop() {
	defer close(k.done)
	buf := make([]byte, 64*1024)
	meta := int(unsafe.Sizeof(unix.FanotifyEventMetadata{}))
	self := int32(os.Getpid())
	for {
		n, err := k.f.Read(buf)
		if err != nil {
			return
		}
		for off := 0; off+meta <= n; {
			m := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[off]))
			if m.Vers != unix.FANOTIFY_METADATA_VERSION || m.Event_len < uint32(meta) {
				return
			}
			if m.Fd >= 0 {
				name, _ := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", m.Fd))
				// a file counts once, at its first open (a writer may read its temporary file back)
				if ok, _ := filepath.Match(k.pattern, filepath.Base(name)); ok && m.Pid != self && !k.old[name] {
					k.old[name] = k.onlyNew
					if int(k.seen.Add(1)) == k.nth {
						_ = unix.Kill(int(m.Pid), unix.SIGKILL)
						k.fired <- name
					}
				}
				var resp [8]byte
				binary.NativeEndian.PutUint32(resp[0:], uint32(m.Fd))
				binary.NativeEndian.PutUint32(resp[4:], unix.FAN_ALLOW)
				_, _ = k.f.Write(resp[:])
				unix.Close(int(m.Fd))
			}
			off += int(m.Event_len)
		}
	}
}

// close disarms it; pending opens are let through.
func (k *openKill) close() {
	_ = k.f.Close()
	<-k.done
}
