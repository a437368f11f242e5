package discovery_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

func TestOpenBlockDeviceChecksNumbersAndExclusivity(t *testing.T) {
	dev, _ := discoverytest.LoopDevice(t, 1<<20)
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)

	f, err := discovery.OpenBlockDevice("/", dev, maj, min, true)
	if err != nil {
		t.Fatalf("exclusive open of an unused loop device: %v", err)
	}
	// While we hold it exclusively, a second exclusive open is refused by the kernel.
	_, err = discovery.OpenBlockDevice("/", dev, maj, min, true)
	if !discovery.IsBusy(err) {
		t.Errorf("second exclusive open: got %v, want EBUSY", err)
	}
	// A plain open still works: O_EXCL only excludes exclusive holders.
	g, err := discovery.OpenBlockDevice("/", dev, maj, min, false)
	if err != nil {
		t.Errorf("shared open while held exclusively: %v", err)
	} else {
		g.Close()
	}
	f.Close()

	_, err = discovery.OpenBlockDevice("/", dev, maj, min+1, false)
	if err == nil || !strings.Contains(err.Error(), "renumbered") {
		t.Errorf("open with other numbers: got %v, want a renumbered error", err)
	}
	_, err = discovery.OpenBlockDevice("/", "/dev/null", 1, 3, false)
	if err == nil || !strings.Contains(err.Error(), "no longer a block device") {
		t.Errorf("open of a char device: got %v", err)
	}
	if _, err := os.Stat(dev); err != nil {
		t.Fatal(err)
	}
}

func blockDeviceOf(t *testing.T, path string) *discovery.Device {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return &discovery.Device{Name: "d", Path: path, Type: v1alpha1.DeviceTypeBlock,
		Major: unix.Major(uint64(st.Rdev)), Minor: unix.Minor(uint64(st.Rdev))}
}

// A filesystem mounted in a private mount namespace does not show in the
// host's mount table, so discovery publishes the device; the kernel's
// exclusive open still sees it held.
func TestCheckNotHeldPrivateMount(t *testing.T) {
	dev, _ := discoverytest.LoopDevice(t, 16<<20)
	if err := discovery.CheckNotHeld("/", blockDeviceOf(t, dev)); err != nil {
		t.Fatalf("free loop device: %v", err)
	}
	release := discoverytest.HoldInPrivateMount(t, dev)

	cfg := &v1alpha1.DiscoveryConfig{Groups: []v1alpha1.DeviceGroup{{
		Name: "loops", Include: []string{dev}, Types: []v1alpha1.DeviceType{v1alpha1.DeviceTypeBlock},
	}}}
	v1alpha1.SetDefaults(cfg)
	inv, err := discovery.Discover(context.Background(), cfg, discovery.WithHostRoot("/"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Groups[0].Devices) != 1 {
		t.Fatalf("discovery did not publish %s (the setup needs it to): excluded %v", dev, inv.Excluded)
	}
	d := &inv.Groups[0].Devices[0]

	err = discovery.CheckNotHeld("/", d)
	if !discovery.IsBusy(err) {
		t.Fatalf("CheckNotHeld of a device mounted in a private namespace: %v, want EBUSY", err)
	}
	want := fmt.Sprintf("block device %s (%d:%d) is in use on the node", dev, d.Major, d.Minor)
	for _, s := range []string{want, "PrivateMounts=", fmt.Sprintf("grep -l ' %d:%d ' /proc/[0-9]*/mountinfo", d.Major, d.Minor), "exclude"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message %q does not contain %q", err, s)
		}
	}

	// allowInUse is the admin's word that the use is known: no check.
	allowed := *d
	allowed.InUseAllowed = true
	if err := discovery.CheckNotHeld("/", &allowed); err != nil {
		t.Errorf("device listed in allowInUse: %v", err)
	}

	release()
	if err := discovery.CheckNotHeld("/", d); err != nil {
		t.Errorf("after the private mount ended: %v", err)
	}
}

// Every failure other than EBUSY refuses too, with what to do.
func TestCheckNotHeldFailsClosed(t *testing.T) {
	tr := discoverytest.New(t)
	tr.Mkdir("/dev")
	blk := func(path string, major, minor uint32) *discovery.Device {
		return &discovery.Device{Name: "d", Path: path, Type: v1alpha1.DeviceTypeBlock, Major: major, Minor: minor}
	}
	check := func(name string, err error, want ...string) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: no error", name)
			return
		}
		if discovery.IsBusy(err) {
			t.Errorf("%s: %v is not a busy device", name, err)
		}
		for _, s := range want {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: message %q does not contain %q", name, err, s)
			}
		}
	}
	check("missing node", discovery.CheckNotHeld(tr.Root, blk("/dev/sdx", 8, 16)),
		"block device /dev/sdx (8:16) is gone from the node", "recreate the pod")
	// A char node (a regular file without root) where a block node was.
	tr.CharNode("/dev/sdy", 1, 3)
	check("not a block node", discovery.CheckNotHeld(tr.Root, blk("/dev/sdy", 8, 32)),
		"/dev/sdy is no longer a block device node", "devices changed after the plugin's last scan")

	// Char devices are never opened.
	if err := discovery.CheckNotHeld(tr.Root, &discovery.Device{Path: "/dev/none", Type: v1alpha1.DeviceTypeChar, Major: 1, Minor: 3}); err != nil {
		t.Errorf("char device: %v", err)
	}
	if tr.Fake() {
		t.Log("not root: renumbered and denied opens need real device nodes")
		return
	}
	loop, _ := discoverytest.LoopDevice(t, 1<<20)
	ldev := blockDeviceOf(t, loop)
	// Renumbered: the node is now another device than the one discovered.
	tr.BlockNode("/dev/sdz", ldev.Major, ldev.Minor)
	check("renumbered", discovery.CheckNotHeld(tr.Root, blk("/dev/sdz", ldev.Major, ldev.Minor+1000)),
		fmt.Sprintf("/dev/sdz is now device %d:%d, not %d:%d as discovered", ldev.Major, ldev.Minor, ldev.Major, ldev.Minor+1000),
		"recreate the pod")

	// Denied: a root without device access (nodev here; a container's
	// device cgroup says EPERM) cannot check, and so refuses.
	nodev := filepath.Join(t.TempDir(), "nodev")
	if err := os.Mkdir(nodev, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", nodev, "tmpfs", unix.MS_NODEV, "size=1m"); err != nil {
		t.Skipf("cannot mount a nodev tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(nodev, unix.MNT_DETACH) })
	tr2 := discoverytest.NewAt(t, nodev)
	tr2.Mkdir("/dev")
	tr2.BlockNode("/dev/sdb", ldev.Major, ldev.Minor)
	check("denied", discovery.CheckNotHeld(nodev, blk("/dev/sdb", ldev.Major, ldev.Minor)),
		"cannot check that block device /dev/sdb", "permission denied", "run it privileged")
}
