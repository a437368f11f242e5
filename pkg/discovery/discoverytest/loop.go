package discoverytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// LoopDevice backs a free loop device of the running kernel with a new
// file of size bytes and returns its path and a detach function, which is
// also run when the test ends (calling it twice is fine). It skips the test
// when it is not root or loop devices cannot be set up.
func LoopDevice(t testing.TB, size int64) (dev string, detach func()) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	return AttachLoop(t, img, "")
}

// AttachLoop backs a loop device of the running kernel with the existing
// file img: the first free one when dev is "", else dev (which the test
// must have freed itself; never a fixed number). It returns the device and
// a detach function, which is also run when the test ends (calling it
// twice is fine). It skips the test when it is not root or the loop device
// cannot be set up.
func AttachLoop(t testing.TB, img, dev string) (string, func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a real loop device needs root")
	}
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Skipf("losetup not available: %v", err)
	}
	args := []string{"-f", "--show", img}
	if dev != "" {
		args = []string{dev, img}
	}
	out, err := exec.Command(losetup, args...).CombinedOutput()
	if err != nil {
		t.Skipf("cannot set up a loop device: %v: %s", err, out)
	}
	if dev == "" {
		dev = strings.TrimSpace(string(out))
	}
	var once sync.Once
	detach := func() {
		once.Do(func() {
			if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
				t.Errorf("losetup -d %s: %v: %s", dev, err, out)
			}
		})
	}
	t.Cleanup(detach)
	return dev, detach
}
