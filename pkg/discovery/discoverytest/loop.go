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
	if os.Geteuid() != 0 {
		t.Skip("a real loop device needs root")
	}
	losetup, err := exec.LookPath("losetup")
	if err != nil {
		t.Skipf("losetup not available: %v", err)
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, "-f", "--show", img).CombinedOutput()
	if err != nil {
		t.Skipf("cannot set up a loop device: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	var once sync.Once
	detach = func() {
		once.Do(func() {
			if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
				t.Errorf("losetup -d %s: %v: %s", dev, err, out)
			}
		})
	}
	t.Cleanup(detach)
	return dev, detach
}
