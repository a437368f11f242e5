package discovery

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// Real-kernel tests of the in-use rules for block-mode volumes, loop
// devices over block devices, the never-published console nodes and the
// fail-closed mount table. Like realkernel_test.go they skip when not root
// and undo what they set up in t.Cleanup.

var loopGroup = v1alpha1.DeviceGroup{Name: "loops", Include: []string{"/dev/loop*"}}

// bindMount binds src at a new file or directory under dir and unmounts it
// at cleanup.
func bindMount(t *testing.T, src, target string) {
	t.Helper()
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("cannot bind %s at %s: %v", src, target, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", target, err)
		}
	})
}

// hostMountinfoHas reports whether PID 1's mount table has a mount with
// root and mount point, that is, whether the test runs in the host's mount
// namespace.
func hostMountinfoHas(t *testing.T, root, mountPoint string) bool {
	t.Helper()
	f, err := os.Open("/proc/1/mountinfo")
	if err != nil {
		t.Skipf("cannot read /proc/1/mountinfo: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) > 4 && unescapeOctal(fl[3]) == root && unescapeOctal(fl[4]) == mountPoint {
			return true
		}
	}
	return false
}

// TestRealBindMountedNodeInUse binds a real loop device's node as the
// kubelet binds a block-mode volume: /proc/1/mountinfo then shows devtmpfs
// with /loopN as the root, and the loop device is in use.
func TestRealBindMountedNodeInUse(t *testing.T) {
	dev := attachLoop(t, 16*mib)
	target := filepath.Join(t.TempDir(), "node")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	bindMount(t, dev, target)
	if !hostMountinfoHas(t, "/"+filepath.Base(dev), target) {
		t.Skipf("the bind mount of %s is not in /proc/1/mountinfo: not the host's mount namespace", dev)
	}
	inv := realDiscover(t, config(nil, loopGroup))
	want := "in use: bind-mounted at " + target +
		" (the device node itself, as the kubelet does for a pod's block-mode volume)"
	if o := outcomes(inv)[dev]; o.reason != want {
		t.Errorf("%s: got %+v, want %q", dev, o, want)
	}
}

// TestRealLoopOverLoopInUse attaches a loop device over another loop
// device's node, as the kubelet's "fd lock" does over a volume's device:
// both are in use.
func TestRealLoopOverLoopInUse(t *testing.T) {
	losetup := requireTool(t, "losetup")
	lower := attachLoop(t, 16*mib)
	out, err := exec.Command(losetup, "-f", "--show", lower).CombinedOutput()
	if err != nil {
		t.Skipf("losetup -f --show %s: %v: %s", lower, err, out)
	}
	upper := strings.TrimSpace(string(out))
	t.Cleanup(func() { // runs before lower's detach
		if out, err := exec.Command(losetup, "-d", upper).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", upper, err, out)
		}
	})
	inv := realDiscover(t, config(nil, loopGroup))
	got := outcomes(inv)
	wantUpper := "in use: backed by block device " + lower +
		" (a loop device over a block device holds it open, as the kubelet does for a pod's block-mode volume)"
	if got[upper].reason != wantUpper {
		t.Errorf("%s: got %+v, want %q", upper, got[upper], wantUpper)
	}
	if want := "in use: the backing device of loop device " + filepath.Base(upper); got[lower].reason != want {
		t.Errorf("%s: got %+v, want %q", lower, got[lower], want)
	}
}

// TestRealConsoleNeverPublished: the running kernel's console and virtual
// terminal nodes are kernel interfaces.
func TestRealConsoleNeverPublished(t *testing.T) {
	var nodes []string
	for _, p := range []string{"/dev/console", "/dev/tty", "/dev/tty0", "/dev/tty1", "/dev/vcs", "/dev/uinput"} {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR {
			nodes = append(nodes, p)
		}
	}
	if len(nodes) == 0 {
		t.Skip("no console nodes on this machine")
	}
	inv := realDiscover(t, config(nil, v1alpha1.DeviceGroup{Name: "ttys", Include: nodes}))
	for _, p := range nodes {
		if o := outcomes(inv)[p]; o.reason != reasonKernel {
			t.Errorf("%s: got %+v, want %q", p, o, reasonKernel)
		}
	}
}

// TestRealHostRootWithoutMountTable builds a host root as the DaemonSet
// does, with the real /dev and /sys bound in: without the host's
// mountinfo and swaps no block device is published; with them the free
// loop device is.
func TestRealHostRootWithoutMountTable(t *testing.T) {
	dev := attachLoop(t, 16*mib)
	root := t.TempDir()
	for _, d := range []string{"dev", "sys", "proc/1"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bindMount(t, "/dev", filepath.Join(root, "dev"))
	bindMount(t, "/sys", filepath.Join(root, "sys"))
	discover := func() *Inventory {
		cfg := config(nil, loopGroup)
		inv, err := Discover(testContext(t), cfg, WithHostRoot(root))
		if err != nil {
			t.Fatalf("Discover: %v", err)
		}
		checkInvariants(t, cfg, inv)
		return inv
	}

	inv := discover()
	if o := outcomes(inv)[dev]; !strings.HasPrefix(o.reason, "unknown whether in use: the host's mount table "+root) {
		t.Errorf("%s without a mount table: got %+v", dev, o)
	}
	if len(inv.Warnings) != 1 || !strings.Contains(inv.Warnings[0], "read-only at "+root+"/proc/1/mountinfo") {
		t.Errorf("warnings %q", inv.Warnings)
	}

	for _, f := range []string{"proc/1/mountinfo", "proc/swaps"} {
		p := filepath.Join(root, f)
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		bindMount(t, "/"+f, p)
	}
	inv = discover()
	if d := findDevice(inv, dev); d == nil {
		t.Errorf("%s not published with the host's mount table: %+v", dev, outcomes(inv)[dev])
	}
}
