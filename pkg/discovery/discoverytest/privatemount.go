package discoverytest

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// HoldInPrivateMount puts an ext4 filesystem on the block device dev (one
// of LoopDevice's) and mounts it in a new private mount namespace in which
// only a child process lives: the host's /proc/1/mountinfo never shows the
// mount, yet the kernel holds the device exclusively, as for a systemd
// PrivateMounts= service or a container without mount propagation. release
// kills the child and waits until the kernel lets the device go; it also
// runs when the test ends. Skips the test when mkfs.ext4 or unshare is
// missing.
func HoldInPrivateMount(t testing.TB, dev string) (release func()) {
	t.Helper()
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skipf("mkfs.ext4 not available: %v", err)
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skipf("unshare not available: %v", err)
	}
	if out, err := exec.Command(mkfs, "-q", "-F", dev).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %s: %v: %s", dev, err, out)
	}
	mnt := t.TempDir()
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "sh", "-c",
		`mount "$1" "$2" && echo mounted && exec sleep 3600`, "sh", dev, mnt)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start unshare: %v", err)
	}
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	var once sync.Once
	release = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			// The namespace, and with it the mount, goes when its last
			// process has exited; the kernel may finish that a little later.
			deadline := time.Now().Add(10 * time.Second)
			for {
				fd, err := unix.Open(dev, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
				if err == nil {
					_ = unix.Close(fd)
					return
				}
				if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
					t.Errorf("%s still held after the private mount namespace ended: %v", dev, err)
					return
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	t.Cleanup(release)
	if strings.TrimSpace(line) != "mounted" {
		release()
		t.Skipf("cannot mount %s in a private mount namespace: %s", dev, stderr.String())
	}
	if b, err := os.ReadFile("/proc/1/mountinfo"); err == nil && strings.Contains(string(b), mnt) {
		t.Fatalf("the private mount of %s on %s shows in the host's mountinfo", dev, mnt)
	}
	return release
}
