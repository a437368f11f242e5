// Package fsfault gives tests real filesystem faults: a full filesystem (a
// size-limited tmpfs) and a read-only one (a read-only bind mount). Both
// need root; without it the tests that use them are skipped.
package fsfault

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// NeedRoot skips the test unless it runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: mounts a tmpfs or a read-only bind mount")
	}
}

// Tmpfs mounts a tmpfs of size bytes on dir (created if missing), unmounted
// when the test ends.
func Tmpfs(t testing.TB, dir string, size int) {
	t.Helper()
	NeedRoot(t)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+strconv.Itoa(size)); err != nil {
		t.Skipf("cannot mount a tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unmount(t, dir) })
}

// Fill fills the filesystem of dir until no byte is left, with a file it
// returns; removing it frees the space again.
func Fill(t testing.TB, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "filler")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			// A page may be left partly used; fill it byte by byte.
			for {
				if _, err := f.Write(buf[:1]); err != nil {
					return p
				}
			}
		}
	}
}

// ReadOnly makes dir read-only (a read-only bind mount of itself) and
// returns a function that makes it writable again; that also runs when
// the test ends.
func ReadOnly(t testing.TB, dir string) (writable func()) {
	t.Helper()
	NeedRoot(t)
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("cannot bind-mount %s: %v", dir, err)
	}
	if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		unmount(t, dir)
		t.Skipf("cannot remount %s read-only: %v", dir, err)
	}
	done := false
	writable = func() {
		if !done {
			done = true
			unmount(t, dir)
		}
	}
	t.Cleanup(writable)
	return writable
}

func unmount(t testing.TB, dir string) {
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
		t.Errorf("unmount %s: %v", dir, err)
	}
}
