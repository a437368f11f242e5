package discovery

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// These tests use the running kernel: loop devices, mkfs, mount, swapon.
// They skip when not root or when a tool is missing, and undo everything
// they set up in t.Cleanup, also when they fail.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to set up loop devices")
	}
}

func requireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not available: %v", name, err)
	}
	return p
}

// attachLoop backs a free loop device with a new file of the given size and
// detaches it at cleanup.
func attachLoop(t *testing.T, size int64) string {
	t.Helper()
	dev, _ := discoverytest.LoopDevice(t, size)
	return dev
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Skipf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

func realDiscover(t *testing.T, cfg *v1alpha1.DiscoveryConfig) *Inventory {
	t.Helper()
	inv, err := Discover(testContext(t), cfg, WithHostRoot("/"))
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	checkInvariants(t, cfg, inv)
	return inv
}

func TestRealLoopDevice(t *testing.T) {
	dev := attachLoop(t, 16*mib)
	inv := realDiscover(t, config(nil, v1alpha1.DeviceGroup{Name: "loops", Include: []string{"/dev/loop*"}}))
	d := findDevice(inv, dev)
	if d == nil {
		t.Fatalf("%s not published: %+v", dev, outcomes(inv)[dev])
	}
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	if maj, min := unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev)); d.Major != maj || d.Minor != min {
		t.Errorf("%s: %d:%d, node is %d:%d", dev, d.Major, d.Minor, maj, min)
	}
	if d.Block == nil || d.Block.SizeBytes != 16*mib || d.Block.Kind != KindLoop {
		t.Errorf("%s: block info %+v, want a 16 MiB loop device", dev, d.Block)
	}
	if d.Name != filepath.Base(dev) || d.Group != "loops" || d.Type != v1alpha1.DeviceTypeBlock {
		t.Errorf("%s: %+v", dev, *d)
	}
}

// rootDevice finds the device number of the file system mounted at "/".
func rootDevice(t *testing.T) (uint32, uint32) {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Skipf("no mountinfo: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var maj, min uint32
	found := false
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[4] == "/" {
			// The last mount at "/" is the visible one.
			if _, err := fmt.Sscanf(fields[2], "%d:%d", &maj, &min); err == nil {
				found = true
			}
		}
	}
	if !found || maj == 0 {
		t.Skip("the root file system is not on a block device")
	}
	return maj, min
}

func TestRealRootDiskInUse(t *testing.T) {
	maj, min := rootDevice(t)
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", maj, min))
	if err != nil {
		t.Skipf("root device %d:%d not in sysfs: %v", maj, min, err)
	}
	dev := devPathOf(filepath.Base(link))
	inv := realDiscover(t, v1alpha1.DefaultDiscoveryConfig())
	if o := outcomes(inv)[dev]; o.reason != "in use: mounted at /" {
		t.Errorf("root device %s (%d:%d): got %+v, want in use: mounted at /", dev, maj, min, o)
	}
	// Whatever the configuration says, it stays out.
	inv = realDiscover(t, config(nil, v1alpha1.DeviceGroup{Name: "all", Include: []string{"/dev/*", dev}}))
	if o := outcomes(inv)[dev]; o.group != "" || !strings.HasPrefix(o.reason, "in use: ") {
		t.Errorf("root device %s with include %s: got %+v", dev, dev, o)
	}
}

func TestRealMountedLoopInUse(t *testing.T) {
	mkfs := requireTool(t, "mkfs.ext4")
	dev := attachLoop(t, 16*mib)
	run(t, mkfs, "-q", "-F", dev)
	dir := t.TempDir()
	if err := unix.Mount(dev, dir, "ext4", 0, ""); err != nil {
		t.Skipf("cannot mount %s: %v", dev, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	cfg := config(nil, v1alpha1.DeviceGroup{Name: "loops", Include: []string{"/dev/loop*"}})
	inv := realDiscover(t, cfg)
	if o, want := outcomes(inv)[dev], "in use: mounted at "+dir; o.reason != want {
		t.Errorf("%s: got %+v, want %q", dev, o, want)
	}
	// Lifted by its exact path.
	cfg.AllowInUse = []string{dev}
	if inv := realDiscover(t, cfg); findDevice(inv, dev) == nil {
		t.Errorf("%s not published with allowInUse: %+v", dev, outcomes(inv)[dev])
	}
}

func TestRealSwapLoopInUse(t *testing.T) {
	mkswap := requireTool(t, "mkswap")
	swapon := requireTool(t, "swapon")
	swapoff := requireTool(t, "swapoff")
	dev := attachLoop(t, 16*mib)
	run(t, mkswap, dev)
	run(t, swapon, dev)
	t.Cleanup(func() {
		if out, err := exec.Command(swapoff, dev).CombinedOutput(); err != nil {
			t.Errorf("swapoff %s: %v: %s", dev, err, out)
		}
	})
	inv := realDiscover(t, config(nil, v1alpha1.DeviceGroup{Name: "loops", Include: []string{"/dev/loop*"}}))
	if o := outcomes(inv)[dev]; o.reason != "in use: swap" {
		t.Errorf("%s: got %+v, want in use: swap", dev, o)
	}
}

// loopWith binds a loop device of size bytes and writes chunks into it
// through the device node, as the tools that lay out these signatures do.
func loopWith(t *testing.T, size int64, chunks []chunk) string {
	t.Helper()
	dev := attachLoop(t, size)
	writeChunks(t, dev, chunks)
	return dev
}

func writeChunks(t *testing.T, dev string, chunks []chunk) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range chunks {
		if _, err := f.WriteAt(c.data, c.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
}

// blkidType asks util-linux's blkid (low-level probe, no cache) what dev
// carries, to check that the test's signatures are what blkid, and so udev,
// would see on a real host. "" when blkid is not installed.
func blkidType(t *testing.T, dev string) (string, bool) {
	t.Helper()
	blkid, err := exec.LookPath("blkid")
	if err != nil {
		return "", false
	}
	out, _ := exec.Command(blkid, "-p", "-o", "value", "-s", "TYPE", dev).Output()
	return strings.TrimSpace(string(out)), true
}

// TestRealStackSignatures: loop devices carrying a real LVM label, md 1.2
// superblock, LUKS header and ZFS labels have no mount and no holder, and
// the host has no udev; discovery reads the signatures from the devices and
// keeps them back.
func TestRealStackSignatures(t *testing.T) {
	requireRoot(t)
	const size = 128 << 20
	cases := []struct {
		fsType string
		chunks []chunk
	}{
		{"LVM2_member", lvm2Label()},
		{"linux_raid_member", mdSuper1(4096)},
		{"crypto_LUKS", luks1Header()},
		{"zfs_member", zfsLabels(size)},
		{"", nil},
	}
	devs := make([]string, len(cases))
	for i, tc := range cases {
		devs[i] = loopWith(t, size, tc.chunks)
		if got, ok := blkidType(t, devs[i]); ok && got != tc.fsType {
			t.Errorf("%s: blkid says %q, the test meant %q", devs[i], got, tc.fsType)
		}
	}
	inv := realDiscover(t, config(nil, v1alpha1.DeviceGroup{Name: "loops", Include: []string{"/dev/loop*"}}))
	for i, tc := range cases {
		if tc.fsType == "" {
			expectPublished(t, inv, devs[i], "")
			continue
		}
		expectReason(t, inv, devs[i], "in use: carries "+stackOf(tc.fsType, "")+" signature ("+tc.fsType+", found on the device)")
	}
}

// TestRealFilesystemsPublished: a file system that is not mounted, or swap
// that is not on, does not make a device in use; it is published with its
// type.
func TestRealFilesystemsPublished(t *testing.T) {
	mkfs := requireTool(t, "mkfs.ext4")
	mkswap := requireTool(t, "mkswap")
	ext4 := attachLoop(t, 16*mib)
	run(t, mkfs, "-q", "-F", ext4)
	swap := attachLoop(t, 16*mib)
	run(t, mkswap, swap)
	inv := realDiscover(t, config(nil, v1alpha1.DeviceGroup{Name: "loops", Include: []string{"/dev/loop*"}}))
	expectPublished(t, inv, ext4, "ext4")
	expectPublished(t, inv, swap, "swap")
}

// TestRealSignaturesMatchBlkid checks the signature probes against
// util-linux's blkid, which udev runs, on real loop devices carrying each
// test signature: wherever blkid names a storage stack discovery must
// name the same, and the reverse. (File systems are only an attribute;
// a few test superblocks are too bare for blkid's checks of xfs.)
func TestRealSignaturesMatchBlkid(t *testing.T) {
	requireRoot(t)
	if _, ok := blkidType(t, "/dev/null"); !ok {
		t.Skip("blkid not installed")
	}
	for _, tc := range sigCases() {
		dev, detach := discoverytest.LoopDevice(t, tc.size)
		writeChunks(t, dev, tc.chunks)
		got, _ := blkidType(t, dev)
		detach()
		switch {
		case stackOf(got, "") != "" || stackOf(tc.name, "") != "":
			if got != tc.name {
				t.Errorf("%d chunks at %v: blkid says %q, discovery %q", len(tc.chunks), offsets(tc.chunks), got, tc.name)
			}
		case got != tc.name:
			t.Logf("file system %q: blkid says %q", tc.name, got)
		}
	}
}

func offsets(chunks []chunk) []int64 {
	var out []int64
	for _, c := range chunks {
		out = append(out, c.off)
	}
	return out
}
