package discovery

import (
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// These tests use fixture trees: this machine has no udev daemon, no
// device-mapper and no md, so udev database entries and multipath paths
// can only be laid out as files. realkernel_test.go reads real signatures
// from loop devices.

var allBlocks = v1alpha1.DeviceGroup{Name: "all", Include: []string{"/dev/*"}}

func expectReason(t *testing.T, inv *Inventory, p string, parts ...string) {
	t.Helper()
	o := outcomes(inv)[p]
	if o.group != "" {
		t.Errorf("%s published in group %q; want it left out (%s)", p, o.group, strings.Join(parts, " ... "))
		return
	}
	for _, part := range parts {
		if !strings.Contains(o.reason, part) {
			t.Errorf("%s: reason %q does not say %q", p, o.reason, part)
		}
	}
}

func expectPublished(t *testing.T, inv *Inventory, p, fsType string) {
	t.Helper()
	d := findDevice(inv, p)
	if d == nil {
		t.Errorf("%s not published: %q", p, outcomes(inv)[p].reason)
		return
	}
	if d.Block.FSType != fsType {
		t.Errorf("%s: fsType %q, want %q", p, d.Block.FSType, fsType)
	}
}

// TestUdevStackMembersInUse: devices udev found a storage stack signature
// on have no mount and no holder, yet the host's LVM, md, ZFS, Ceph or
// cryptsetup may take them up at any time. A plain file system does not
// make a device in use: it is published with its type.
func TestUdevStackMembersInUse(t *testing.T) {
	tr := discoverytest.New(t)
	add := func(name string, minor uint32, props map[string]string) {
		tr.AddBlock(discoverytest.Block{Name: name, Dev: nd(8, minor), Size: gib, Udev: props})
	}
	add("sdb", 16, map[string]string{"ID_FS_TYPE": "zfs_member", "ID_FS_USAGE": "filesystem"})
	add("sdc", 32, map[string]string{"ID_FS_TYPE": "LVM2_member", "ID_FS_USAGE": "raid"})
	add("sdd", 48, map[string]string{"ID_FS_TYPE": "linux_raid_member", "ID_FS_USAGE": "raid"})
	add("sde", 64, map[string]string{"ID_FS_TYPE": "crypto_LUKS", "ID_FS_USAGE": "crypto"})
	add("sdf", 80, map[string]string{"ID_FS_TYPE": "ceph_bluestore", "ID_FS_USAGE": "other"})
	add("sdg", 96, map[string]string{"ID_FS_TYPE": "isw_raid_member", "ID_FS_USAGE": "raid"})
	add("sdh", 112, nil)
	tr.AddBlock(discoverytest.Block{Name: "sdh1", Parent: "sdh", Dev: nd(8, 113), Size: gib / 2,
		Udev: map[string]string{"ID_FS_TYPE": "LVM2_member", "ID_FS_USAGE": "raid"}})
	tr.AddBlock(discoverytest.Block{Name: "sdh2", Parent: "sdh", Dev: nd(8, 114), Size: gib / 2})
	add("sdi", 128, map[string]string{"ID_FS_TYPE": "ext4", "ID_FS_USAGE": "filesystem"})
	add("sdj", 144, map[string]string{"ID_FS_TYPE": "swap", "ID_FS_USAGE": "other"})
	add("sdk", 160, nil)
	// A LUKS volume on an LV: the LV is in use, and so is what it is built
	// on, as under a mounted LV.
	add("sdl", 176, map[string]string{"ID_FS_TYPE": "LVM2_member", "ID_FS_USAGE": "raid"})
	tr.AddBlock(discoverytest.Block{Name: "dm-4", Dev: nd(253, 4), Size: gib, DMName: "vg-secret",
		DMUUID: "LVM-xyz", Slaves: []string{"sdl"}, Udev: map[string]string{"ID_FS_TYPE": "crypto_LUKS"}})

	cfg := config([]string{"/dev/sdc"}, allBlocks)
	inv := discoverTree(t, tr, cfg)

	expectReason(t, inv, "/dev/sdb", "in use: carries a ZFS pool member signature (zfs_member, from udev)", "allowInUse", "wipefs")
	expectReason(t, inv, "/dev/sdd", "in use: carries an md RAID member signature (linux_raid_member")
	expectReason(t, inv, "/dev/sde", "in use: carries a LUKS encrypted volume signature (crypto_LUKS")
	expectReason(t, inv, "/dev/sdf", "in use: carries a Ceph BlueStore OSD signature (ceph_bluestore")
	expectReason(t, inv, "/dev/sdg", "in use: carries a firmware RAID member signature (isw_raid_member")
	expectReason(t, inv, "/dev/sdh1", "in use: carries an LVM physical volume signature (LVM2_member")
	// The disk of a PV partition, and its other partitions, are not free.
	expectReason(t, inv, "/dev/sdh", "in use: partition sdh1 is an LVM physical volume (LVM2_member)")
	expectPublished(t, inv, "/dev/sdh2", "")
	expectReason(t, inv, "/dev/dm-4", "in use: carries a LUKS encrypted volume signature")
	expectReason(t, inv, "/dev/sdl", "in use: under dm-4 (vg-secret) which is a LUKS encrypted volume (crypto_LUKS)")
	// allowInUse lifts it for this device alone, which then says what it is.
	expectPublished(t, inv, "/dev/sdc", "LVM2_member")

	expectPublished(t, inv, "/dev/sdi", "ext4")
	expectPublished(t, inv, "/dev/sdj", "swap")
	expectPublished(t, inv, "/dev/sdk", "")
}

// TestUdevMultipathAndNotReady: udev's word on multipath paths and devices
// not ready holds them back before any map or holder exists; a device udev
// has not processed yet waits for it.
func TestUdevMultipathAndNotReady(t *testing.T) {
	tr := discoverytest.New(t)
	tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: nd(8, 16), Size: gib,
		Udev: map[string]string{"DM_MULTIPATH_DEVICE_PATH": "1", "SYSTEMD_READY": "0"}})
	tr.AddBlock(discoverytest.Block{Name: "sdc", Dev: nd(8, 32), Size: gib,
		Udev: map[string]string{"DM_MULTIPATH_DEVICE_PATH": "2"}})
	tr.AddBlock(discoverytest.Block{Name: "sdd", Dev: nd(8, 48), Size: gib,
		Udev: map[string]string{"DM_MULTIPATH_DEVICE_PATH": "0"}})
	tr.AddBlock(discoverytest.Block{Name: "md1", Dev: nd(9, 1), Size: gib,
		Udev: map[string]string{"SYSTEMD_READY": "0"}})
	tr.AddBlock(discoverytest.Block{Name: "sde", Dev: nd(8, 64), Size: gib, NoUdev: true})
	tr.AddBlock(discoverytest.Block{Name: "sdf", Dev: nd(8, 80), Size: gib})
	tr.AddBlock(discoverytest.Block{Name: "sdf1", Parent: "sdf", Dev: nd(8, 81), Size: gib, NoUdev: true})

	cfg := config([]string{"/dev/sdd"}, allBlocks)
	inv := discoverTree(t, tr, cfg)
	expectReason(t, inv, "/dev/sdb", "held for multipath:", "DM_MULTIPATH_DEVICE_PATH=1", "/dev/mapper")
	expectReason(t, inv, "/dev/sdc", "held for multipath:", "still deciding", "DM_MULTIPATH_DEVICE_PATH=2")
	expectPublished(t, inv, "/dev/sdd", "")
	expectReason(t, inv, "/dev/md1", "not ready: udev marks it not ready", "SYSTEMD_READY=0")
	expectReason(t, inv, "/dev/sde", "not ready: udev has not processed it yet", "b8:64", "udevadm info /dev/sde")
	expectReason(t, inv, "/dev/sdf1", "not ready: udev has not processed it yet")
	expectReason(t, inv, "/dev/sdf", "partition sdf1 is held back: not ready: udev has not processed it yet")

	// allowInUse names a multipath path: the admin's word.
	cfg.AllowInUse = []string{"/dev/sdb"}
	expectPublished(t, discoverTree(t, tr, cfg), "/dev/sdb", "")
}

// TestUdevPresence: the host runs udev when it has udev's control socket or
// a database with entries. An empty /run/udev, which a hostPath volume of
// type DirectoryOrCreate leaves behind on a host without udev, is no udev:
// devices are then read, not waited for.
func TestUdevPresence(t *testing.T) {
	for _, tc := range []struct {
		name   string
		layout func(*discoverytest.Tree)
		udev   bool
	}{
		{"control socket", func(tr *discoverytest.Tree) {}, true},
		{"database only", func(tr *discoverytest.Tree) {
			tr.Remove("/run/udev/control")
			tr.File("/run/udev/data/b7:0", "E:ID_FS_TYPE=\n")
		}, true},
		{"empty /run/udev", func(tr *discoverytest.Tree) {
			tr.NoUdev()
			tr.Mkdir("/run/udev")
		}, false},
		{"empty database directory", func(tr *discoverytest.Tree) {
			tr.NoUdev()
			tr.Mkdir("/run/udev/data")
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := discoverytest.New(t)
			tc.layout(tr)
			tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: nd(8, 16), Size: gib, NoUdev: true})
			tr.WriteDevice("sdb", 0, []byte("XFSB"))
			inv := discoverTree(t, tr, config(nil, allBlocks))
			if tc.udev {
				expectReason(t, inv, "/dev/sdb", "not ready: udev has not processed it yet")
			} else {
				expectPublished(t, inv, "/dev/sdb", "xfs")
			}
		})
	}
}

// TestDeviceSignaturesWithoutUdev: on a host without udev every stack
// signature is read from the device itself.
func TestDeviceSignaturesWithoutUdev(t *testing.T) {
	tr := discoverytest.New(t)
	tr.NoUdev()
	want := map[string]string{}
	for i, tc := range sigCases() {
		name := "vd" + string(rune('a'+i))
		tr.AddBlock(discoverytest.Block{Name: name, Dev: nd(252, uint32(i)), Size: uint64(tc.size)})
		for _, c := range tc.chunks {
			tr.WriteDevice(name, c.off, c.data)
		}
		want["/dev/"+name] = tc.name
	}
	inv := discoverTree(t, tr, config(nil, allBlocks))
	for p, fsType := range want {
		desc := stackOf(fsType, "")
		switch {
		case desc != "":
			expectReason(t, inv, p, "in use: carries "+desc+" signature ("+fsType+", found on the device)")
		default:
			expectPublished(t, inv, p, fsType)
		}
	}
	if len(inv.Warnings) != 0 {
		t.Errorf("warnings on a host without udev: %q", inv.Warnings)
	}
}

// TestUnreadableDeviceFailsClosed: without udev's database and without
// access to the device nothing tells a free disk from an LVM PV: it is
// left out, saying how to fix the deployment.
func TestUnreadableDeviceFailsClosed(t *testing.T) {
	tr := discoverytest.New(t)
	tr.NoUdev()
	tr.Symlink("/dev/disk/by-id/wwn-0x1", "../../sdb") // udev made these; its database is not mounted
	tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: nd(8, 16), Size: gib})
	tr.AddBlock(discoverytest.Block{Name: "sdc", Dev: nd(8, 32), Size: gib})
	tr.AddBlock(discoverytest.Block{Name: "sdc1", Parent: "sdc", Dev: nd(8, 33), Size: gib})
	tr.AddBlock(discoverytest.Block{Name: "sdd", Dev: nd(8, 48), Size: gib})
	tr.Unreadable("/dev/sdb")
	tr.Unreadable("/dev/sdc1")
	tr.Unreadable("/dev/sdd")

	cfg := config([]string{"/dev/sdd"}, allBlocks)
	inv := discoverTree(t, tr, cfg)
	expectReason(t, inv, "/dev/sdb", "unchecked: cannot tell whether it belongs to a storage stack",
		"udev database is not visible at "+tr.Root+"/run/udev", "permission denied",
		"mount the host's /run/udev read-only at "+tr.Root+"/run/udev", "open block devices read-only")
	expectReason(t, inv, "/dev/sdc1", "unchecked:")
	expectReason(t, inv, "/dev/sdc", "partition sdc1 is held back: unchecked:")
	expectPublished(t, inv, "/dev/sdd", "") // allowInUse: the admin's word
	if len(inv.Warnings) != 1 || !strings.Contains(inv.Warnings[0], "seems to run udev") {
		t.Errorf("warnings %q, want one that udev's database is not mounted", inv.Warnings)
	}
	// A device no group takes is not read at all.
	tr.AddBlock(discoverytest.Block{Name: "sde", Dev: nd(8, 64), Size: gib})
	tr.Unreadable("/dev/sde")
	cfg = config(nil, v1alpha1.DeviceGroup{Name: "some", Include: []string{"/dev/sdd"}})
	if o := outcomes(discoverTree(t, tr, cfg))["/dev/sde"]; o.reason != reasonNotIncluded {
		t.Errorf("/dev/sde: %+v, want %q", o, reasonNotIncluded)
	}
}

// countingOpener counts the opens of each device.
type countingOpener struct {
	mu    sync.Mutex
	open  OpenFunc
	count map[string]int
}

func (c *countingOpener) Open(p string, major, minor uint32) (*os.File, error) {
	c.mu.Lock()
	c.count[p]++
	c.mu.Unlock()
	return c.open(p, major, minor)
}

// TestSignatureCache: a device is read once, not at every rescan, and read
// again when its size or disk sequence number changes (a new medium).
func TestSignatureCache(t *testing.T) {
	tr := discoverytest.NewFake(t)
	tr.NoUdev()
	tr.AddBlock(discoverytest.Block{Name: "loop3", Dev: nd(7, 3), Size: 64 * mib, DiskSeq: 40})
	tr.AddBlock(discoverytest.Block{Name: "vdb", Dev: nd(252, 16), Size: 64 * mib})
	opener := &countingOpener{open: tr.Open, count: map[string]int{}}
	s := newSettings([]Option{WithHostRoot(tr.Root), WithStat(tr.Stat()), WithBlockOpener(opener.Open)})
	s.state = newScanState(false)
	cfg := config(nil, allBlocks)
	scan := func() *Inventory {
		t.Helper()
		inv, err := discover(testContext(t), cfg, s)
		if err != nil {
			t.Fatal(err)
		}
		return inv
	}
	for range 3 {
		scan()
	}
	if opener.count["/dev/loop3"] != 1 || opener.count["/dev/vdb"] != 1 {
		t.Errorf("opens after 3 scans: %v, want one each", opener.count)
	}

	// Re-bound to a file with an LVM label: a new diskseq.
	for _, c := range lvm2Label() {
		tr.WriteDevice("loop3", c.off, c.data)
	}
	tr.File(tr.SysDir("loop3")+"/diskseq", "41\n")
	expectReason(t, scan(), "/dev/loop3", "in use: carries an LVM physical volume signature")
	// A disk that grew (no diskseq on this kernel) is read again.
	for _, c := range lvm2Label() {
		tr.WriteDevice("vdb", c.off, c.data)
	}
	tr.Resize("vdb", 128*mib)
	expectReason(t, scan(), "/dev/vdb", "in use: carries an LVM physical volume signature")
	if opener.count["/dev/loop3"] != 2 || opener.count["/dev/vdb"] != 2 {
		t.Errorf("opens: %v, want two each", opener.count)
	}
	// A failed read is not cached.
	tr.Unreadable("/dev/vdb")
	tr.Resize("vdb", 64*mib)
	expectReason(t, scan(), "/dev/vdb", "unchecked:")
	expectReason(t, scan(), "/dev/vdb", "unchecked:")
	if opener.count["/dev/vdb"] != 4 {
		t.Errorf("opens of an unreadable device: %d, want one per scan", opener.count["/dev/vdb"]-2)
	}
}
