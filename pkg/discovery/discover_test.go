package discovery

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// hash6 is the name suffix the spec asks for: 6 hex digits of sha256(path).
func hash6(p string) string {
	s := sha256.Sum256([]byte(p))
	return hex.EncodeToString(s[:])[:6]
}

// treeModes runs f on a tree with real device nodes (when the test may
// mknod) and on one with recorded nodes behind WithStat.
func treeModes(t *testing.T, f func(t *testing.T, newTree func(testing.TB) *discoverytest.Tree)) {
	t.Run("real-nodes", func(t *testing.T) {
		if tr := discoverytest.New(t); tr.Fake() {
			t.Skip("mknod needs CAP_MKNOD; the fake-nodes variant covers the logic")
		}
		f(t, discoverytest.New)
	})
	t.Run("fake-nodes", func(t *testing.T) { f(t, discoverytest.NewFake) })
}

// Exclusion reasons of the host tree that do not depend on the groups.
var hostSafety = map[string]string{
	"/dev/sda":   "in use: partition sda1 is mounted at /boot",
	"/dev/sda1":  "in use: mounted at /boot",
	"/dev/sda2":  "in use: under dm-0 (vg-root) which is mounted at /",
	"/dev/dm-0":  "in use: mounted at /",
	"/dev/sdb":   "held by dm-1 (mpatha)",
	"/dev/sdc":   "held by dm-1 (mpatha)",
	"/dev/sdd":   "partition sdd1 is held by dm-2 (vg-data-lv)",
	"/dev/sdd1":  "held by dm-2 (vg-data-lv)",
	"/dev/sde":   "in use: swap",
	"/dev/sdf":   "in use: under dm-3 (luks-home) which is mounted at /home dir",
	"/dev/dm-3":  "in use: mounted at /home dir",
	"/dev/sdg":   "in use: mounted at /data",
	"/dev/sdh":   "device node /dev/sdh is 8:113 but sysfs says 8:112",
	"/dev/sdi":   "no block device node at /dev/sdi",
	"/dev/sdj":   "held by md0",
	"/dev/sdk":   "held by md0",
	"/dev/loop1": "empty: size 0 (loop device with no backing file)",
	"/dev/sr0":   "empty: size 0 (no medium)",
	"/dev/zram0": "empty: size 0 (zram device not set up)",
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

const kernelIface = "kernel interface: never published"

func TestDiscoverHostTree(t *testing.T) {
	allDev := []string{"/dev/*", "/dev/mapper/*", "/dev/cpu/*/*", "/dev/accel/by-name/*", "/dev/cciss/*"}
	kernelAll := map[string]string{
		"/dev/mem": kernelIface, "/dev/kmem": kernelIface, "/dev/port": kernelIface,
		"/dev/kmsg": kernelIface, "/dev/watchdog": kernelIface, "/dev/watchdog0": kernelIface,
		"/dev/cpu/0/msr": kernelIface, "/dev/cpu/0/cpuid": kernelIface, "/dev/loop-control": kernelIface,
		"/dev/mapper/control": kernelIface, "/dev/snapshot": kernelIface, "/dev/sneaky": kernelIface,
	}
	// What "all" publishes when nothing is lifted.
	inAll := func(extra ...string) map[string]string {
		m := map[string]string{}
		for _, p := range append([]string{
			"/dev/sda3", "/dev/dm-1", "/dev/dm-2", "/dev/loop0", "/dev/md0", "/dev/nvme0n1",
			"/dev/nvme0n1p1", "/dev/cciss/c0d0", "/dev/null", "/dev/fuse", "/dev/ttyS0", "/dev/ttys0",
			"/dev/accel0",
		}, extra...) {
			m[p] = "all"
		}
		return m
	}
	tests := []struct {
		name      string
		cfg       *v1alpha1.DiscoveryConfig
		published map[string]string // path -> group
		excluded  map[string]string // path -> reason
		absent    []string
	}{{
		name: "default config",
		cfg:  v1alpha1.DefaultDiscoveryConfig(),
		published: map[string]string{
			"/dev/sda3": "dev", "/dev/dm-1": "dev", "/dev/dm-2": "dev", "/dev/loop0": "dev",
			"/dev/md0": "dev", "/dev/nvme0n1": "dev", "/dev/nvme0n1p1": "dev",
			// Named exactly: taken although the group is block only.
			"/dev/crypto/nx-gzip": "dev",
		},
		excluded: merge(hostSafety, map[string]string{
			// "*" does not cross "/".
			"/dev/cciss/c0d0": "not included by any group",
		}),
		// Block-only globs never look at character devices.
		absent: []string{"/dev/mem", "/dev/fuse", "/dev/null", "/dev/mapper/control", "/dev/accel0"},
	}, {
		name:      "every node, no types filter",
		cfg:       config(nil, v1alpha1.DeviceGroup{Name: "all", Include: allDev}),
		published: inAll(),
		excluded:  merge(hostSafety, kernelAll),
		absent:    []string{"/dev/crypto/nx-gzip", "/dev/accel/by-name/gzip", "/dev/mapper/mpatha"},
	}, {
		name: "allowInUse lifts each rule for exact paths only",
		cfg: config([]string{
			"/dev/sda1", // mounted
			"/dev/disk/by-id/scsi-3600507681081818c1800000000000042", // held sdb, by alias
			"/dev/mem",              // kernel interface
			"/dev/mapper/luks-home", // mounted dm-3, by its mapper name
			"/dev/sd*",              // not a pattern: lifts nothing
			"/dev/sdh",              // node problems are not safety rules
			"/dev/loop1",            // nor is emptiness
		}, v1alpha1.DeviceGroup{Name: "all", Include: allDev}),
		published: inAll("/dev/sda1", "/dev/sdb", "/dev/mem", "/dev/dm-3"),
		excluded: merge(hostSafety, kernelAll, map[string]string{
			"/dev/sda1": "", "/dev/sdb": "", "/dev/mem": "", "/dev/dm-3": "",
		}),
	}, {
		name: "allowInUse does not include",
		cfg: config([]string{"/dev/sda1", "/dev/sdb"},
			v1alpha1.DeviceGroup{Name: "loops", Include: []string{"/dev/loop*"}}),
		published: map[string]string{"/dev/loop0": "loops"},
		excluded: map[string]string{
			"/dev/sda1": "not included by any group",
			"/dev/sdb":  "not included by any group",
			// Safety reasons win over "not included": the root disk says
			// why it could never be published.
			"/dev/dm-0": "in use: mounted at /",
			"/dev/sda":  "in use: partition sda1 is mounted at /boot",
		},
	}, {
		name: "exclude beats include",
		cfg: config(nil, v1alpha1.DeviceGroup{
			Name: "disks", Include: []string{"/dev/sd*", "/dev/sda3"}, Exclude: []string{"/dev/sda*"},
		}),
		excluded: merge(hostSafety, map[string]string{
			"/dev/sda3": `excluded from group "disks" by pattern "/dev/sda*"`,
			"/dev/dm-1": "not included by any group",
		}),
	}, {
		name: "first group that takes a node wins",
		cfg: config(nil,
			v1alpha1.DeviceGroup{Name: "a", Include: []string{"/dev/loop*", "/dev/nvme*", "/dev/md*"},
				Exclude: []string{"/dev/loop0", "/dev/md0"}},
			v1alpha1.DeviceGroup{Name: "b", Include: []string{"/dev/loop*", "/dev/sda3", "/dev/nvme0n1"}},
			v1alpha1.DeviceGroup{Name: "c", Include: []string{"/dev/*"}, Exclude: []string{"/dev/md*"}},
		),
		published: map[string]string{
			"/dev/loop0": "b", "/dev/nvme0n1": "a", "/dev/nvme0n1p1": "a", "/dev/sda3": "b",
			"/dev/dm-1": "c", "/dev/dm-2": "c", "/dev/null": "c", "/dev/fuse": "c", "/dev/ttyS0": "c",
			"/dev/ttys0": "c", "/dev/accel0": "c",
		},
		excluded: merge(hostSafety, map[string]string{
			"/dev/md0": `excluded from group "a" by pattern "/dev/md0"`,
		}),
	}, {
		name: "types filter applies to globs, not exact paths",
		cfg: config(nil,
			v1alpha1.DeviceGroup{Name: "blk", Types: []v1alpha1.DeviceType{v1alpha1.DeviceTypeBlock},
				Include: []string{"/dev/loop*", "/dev/fuse", "/dev/f*"}},
			v1alpha1.DeviceGroup{Name: "chr", Types: []v1alpha1.DeviceType{v1alpha1.DeviceTypeChar},
				Include: []string{"/dev/n*", "/dev/sda3", "/dev/mapper/*"}},
		),
		published: map[string]string{
			"/dev/loop0": "blk", "/dev/fuse": "blk", "/dev/sda3": "chr", "/dev/null": "chr",
		},
		excluded: map[string]string{
			"/dev/nvme0n1":        "not included by any group",
			"/dev/dm-1":           "not included by any group",
			"/dev/mapper/control": kernelIface,
		},
	}, {
		name: "aliases: mapper names and by-id links",
		cfg: config(nil,
			v1alpha1.DeviceGroup{Name: "mpath", Include: []string{"/dev/mapper/mpath*"}},
			v1alpha1.DeviceGroup{Name: "lvm", Include: []string{"/dev/mapper/vg-*"}},
			v1alpha1.DeviceGroup{Name: "byid", Include: []string{"/dev/disk/by-id/nvme-*"},
				Exclude: []string{"/dev/nvme0n1p*"}},
			v1alpha1.DeviceGroup{Name: "cciss", Include: []string{"/dev/cciss/*"}},
		),
		published: map[string]string{
			"/dev/dm-1": "mpath", "/dev/dm-2": "lvm", "/dev/nvme0n1": "byid", "/dev/cciss/c0d0": "cciss",
		},
		excluded: merge(hostSafety, map[string]string{
			"/dev/nvme0n1p1": "not included by any group",
		}),
	}}
	treeModes(t, func(t *testing.T, newTree func(testing.TB) *discoverytest.Tree) {
		tr := newTree(t)
		hostTree(t, tr)
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				inv := discoverTree(t, tr, tc.cfg)
				got := outcomes(inv)
				for p, g := range tc.published {
					if got[p].group != g {
						t.Errorf("%s: got %+v, want published in %q", p, got[p], g)
					}
				}
				for p, r := range tc.excluded {
					if r == "" {
						continue // published, checked above
					}
					if got[p].reason != r {
						t.Errorf("%s: got %+v, want excluded: %q", p, got[p], r)
					}
				}
				for _, p := range tc.absent {
					if o, ok := got[p]; ok {
						t.Errorf("%s: got %+v, want no entry", p, o)
					}
				}
				// Nothing published that the case does not name.
				for p, o := range got {
					if o.group != "" && tc.published[p] == "" {
						t.Errorf("%s published in %q unexpectedly", p, o.group)
					}
				}
			})
		}
	})
}

func TestDiscoverDeviceDetails(t *testing.T) {
	treeModes(t, func(t *testing.T, newTree func(testing.TB) *discoverytest.Tree) {
		tr := newTree(t)
		hostTree(t, tr)
		cfg := config([]string{"/dev/sda", "/dev/sdb"}, v1alpha1.DeviceGroup{
			Name: "all", Include: []string{"/dev/*", "/dev/cciss/*", "/dev/accel/by-name/*"},
			Permissions: "rwm",
		})
		inv := discoverTree(t, tr, cfg)
		mpathID := "/dev/disk/by-id/dm-uuid-mpath-3600507681081818c1800000000000042"
		want := []Device{{
			Name: "sda", Group: "all", Path: "/dev/sda", Type: v1alpha1.DeviceTypeBlock, Major: 8, Minor: 0, Identity: "wwn:naa.5000c500a1b2c3d4",
			Aliases: []string{"/dev/disk/by-id/ata-QEMU_HARDDISK_SER-A", "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"},
			Block: &BlockInfo{KernelName: "sda", Kind: KindDisk, SizeBytes: 100 * gib, Model: "QEMU HARDDISK",
				Vendor: "ATA", Serial: "SER-A", WWN: "naa.5000c500a1b2c3d4", Rotational: true,
				ByID: []string{"/dev/disk/by-id/ata-QEMU_HARDDISK_SER-A", "/dev/disk/by-id/wwn-0x5000c500a1b2c3d4"}},
			InUseAllowed: true, // listed in allowInUse
		}, {
			Name: "sda3", Group: "all", Path: "/dev/sda3", Type: v1alpha1.DeviceTypeBlock, Major: 8, Minor: 3, Identity: "wwn:naa.5000c500a1b2c3d4-part3",
			Block: &BlockInfo{KernelName: "sda3", Kind: KindPartition, SizeBytes: 10 * gib, Model: "QEMU HARDDISK",
				Vendor: "ATA", Rotational: true, Parent: "sda", Under: []string{"sda"}},
		}, {
			Name: "sdb", Group: "all", Path: "/dev/sdb", Type: v1alpha1.DeviceTypeBlock, Major: 8, Minor: 16, Identity: "serial:P1",
			Aliases: []string{"/dev/disk/by-id/scsi-3600507681081818c1800000000000042"},
			Block: &BlockInfo{KernelName: "sdb", Kind: KindDisk, SizeBytes: 200 * gib, Model: "FlashSystem-9840",
				Vendor: "IBM", Serial: "P1",
				ByID: []string{"/dev/disk/by-id/scsi-3600507681081818c1800000000000042"}},
			InUseAllowed: true,
		}, {
			Name: "dm-1", Group: "all", Path: "/dev/dm-1", Type: v1alpha1.DeviceTypeBlock, Major: 253, Minor: 1, Identity: "dm-uuid:mpath-3600507681081818c1800000000000042",
			Aliases: []string{mpathID, "/dev/mapper/mpatha"},
			Block: &BlockInfo{KernelName: "dm-1", Kind: KindMpath, SizeBytes: 200 * gib, DMName: "mpatha",
				DMUUID: "mpath-3600507681081818c1800000000000042", ByID: []string{mpathID},
				Slaves: []string{"sdb", "sdc"}, Under: []string{"sdb", "sdc"}},
		}, {
			Name: "dm-2", Group: "all", Path: "/dev/dm-2", Type: v1alpha1.DeviceTypeBlock, Major: 253, Minor: 2, Identity: "dm-uuid:LVM-abcdefDATA",
			Aliases: []string{"/dev/mapper/vg-data-lv"},
			Block: &BlockInfo{KernelName: "dm-2", Kind: KindLVM, SizeBytes: 20 * gib, DMName: "vg-data-lv",
				DMUUID: "LVM-abcdefDATA", Slaves: []string{"sdd1"}, Under: []string{"sdd", "sdd1"}},
		}, {
			Name: "md0", Group: "all", Path: "/dev/md0", Type: v1alpha1.DeviceTypeBlock, Major: 9, Minor: 0, Identity: "kname:md0",
			Block: &BlockInfo{KernelName: "md0", Kind: KindMD, SizeBytes: 5 * gib, Slaves: []string{"sdj", "sdk"}, Under: []string{"sdj", "sdk"}},
		}, {
			Name: "nvme0n1", Group: "all", Path: "/dev/nvme0n1", Type: v1alpha1.DeviceTypeBlock, Major: 259, Minor: 0, Identity: "wwn:eui.0025388b91c7c3a1",
			Aliases: []string{"/dev/disk/by-id/nvme-eui.0025388b91c7c3a1"},
			Block: &BlockInfo{KernelName: "nvme0n1", Kind: KindDisk, SizeBytes: 512 * gib, Model: "Samsung SSD 970",
				Serial: "S4EWNX0R123456", WWN: "eui.0025388b91c7c3a1",
				ByID: []string{"/dev/disk/by-id/nvme-eui.0025388b91c7c3a1"}},
		}, {
			Name: "nvme0n1p1", Group: "all", Path: "/dev/nvme0n1p1", Type: v1alpha1.DeviceTypeBlock, Major: 259, Minor: 1, Identity: "wwn:eui.0025388b91c7c3a1-part1",
			Block: &BlockInfo{KernelName: "nvme0n1p1", Kind: KindPartition, SizeBytes: 512 * gib,
				Model: "Samsung SSD 970", Parent: "nvme0n1", Under: []string{"nvme0n1"}},
		}, {
			Name: "loop0", Group: "all", Path: "/dev/loop0", Type: v1alpha1.DeviceTypeBlock, Major: 7, Minor: 0, Identity: "kname:loop0",
			Block: &BlockInfo{KernelName: "loop0", Kind: KindLoop, SizeBytes: 16 * mib},
		}, {
			Name: "cciss-c0d0", Group: "all", Path: "/dev/cciss/c0d0", Type: v1alpha1.DeviceTypeBlock, Major: 104, Minor: 0, Identity: "kname:cciss!c0d0",
			Block: &BlockInfo{KernelName: "cciss!c0d0", Kind: KindDisk, SizeBytes: 70 * gib},
		}, {
			Name: "accel0", Group: "all", Path: "/dev/accel0", Type: v1alpha1.DeviceTypeChar, Major: 240, Minor: 0, Identity: "path:/dev/accel0",
			Aliases: []string{"/dev/accel/by-name/gzip"},
		}, {
			Name: "ttys0", Group: "all", Path: "/dev/ttys0", Type: v1alpha1.DeviceTypeChar, Major: 3, Minor: 48, Identity: "path:/dev/ttys0",
		}, {
			Name: "ttys0-" + hash6("/dev/ttyS0"), Group: "all", Path: "/dev/ttyS0", Type: v1alpha1.DeviceTypeChar,
			Major: 4, Minor: 64, Identity: "path:/dev/ttyS0",
		}}
		for _, w := range want {
			got := findDevice(inv, w.Path)
			if got == nil {
				t.Errorf("%s not published; inventory %+v", w.Path, outcomes(inv)[w.Path])
				continue
			}
			if !reflect.DeepEqual(*got, w) {
				t.Errorf("%s:\n got %+v %+v\nwant %+v %+v", w.Path, *got, got.Block, w, w.Block)
			}
		}
		g := inv.Groups[0]
		if g.Permissions != "rwm" || g.Sharing.Mode != v1alpha1.SharingExclusive || g.Bundle || g.BundleName != "" {
			t.Errorf("group header %+v", g)
		}
	})
}

func TestDiscoverKinds(t *testing.T) {
	tr := discoverytest.NewFake(t)
	hostTree(t, tr)
	h := newHostFS(tr.Root, tr.Stat())
	set, err := h.scanBlock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]BlockKind{
		"sda": KindDisk, "sda1": KindPartition, "dm-0": KindLVM, "dm-1": KindMpath, "dm-3": KindCrypt,
		"md0": KindMD, "sr0": KindROM, "loop0": KindLoop, "nvme0n1": KindDisk, "nvme0n1p1": KindPartition,
		"cciss!c0d0": KindDisk, "zram0": KindDisk,
	}
	for k, kind := range want {
		d := set.byName[k]
		if d == nil {
			t.Errorf("%s not found", k)
			continue
		}
		if d.info.Kind != kind {
			t.Errorf("%s: kind %s, want %s", k, d.info.Kind, kind)
		}
	}
	tr.AddBlock(discoverytest.Block{Name: "dm-9", Dev: nd(253, 9), Size: mib, DMName: "plain", DMUUID: "part1-mpath-x"})
	set, _ = newHostFS(tr.Root, tr.Stat()).scanBlock(context.Background())
	if k := set.byName["dm-9"].info.Kind; k != KindDM {
		t.Errorf("dm-9: kind %s, want dm", k)
	}
}

func TestDiscoverNames(t *testing.T) {
	long := "/dev/" + strings.Repeat("verylongname", 6) // 72 characters after /dev/
	treeModes(t, func(t *testing.T, newTree func(testing.TB) *discoverytest.Tree) {
		tr := newTree(t)
		tr.CharNode("/dev/ttyS0", 4, 64)
		tr.CharNode("/dev/ttys0", 3, 48)
		tr.CharNode(long, 240, 1)
		tr.CharNode("/dev/a-b", 240, 2)
		tr.CharNode("/dev/a/b", 240, 3)
		tr.CharNode("/dev/A_B", 240, 4)
		tr.CharNode("/dev/gz", 240, 5)
		tr.CharNode("/dev/accel/gz", 240, 6)
		cfg := config(nil,
			v1alpha1.DeviceGroup{Name: "tty", Include: []string{"/dev/tty*"}},
			v1alpha1.DeviceGroup{Name: "misc", Include: []string{"/dev/*", "/dev/a/*"}},
			// A bundle's name is never changed; nodes that meet it are.
			v1alpha1.DeviceGroup{Name: "accel-gz", Bundle: true, Include: []string{"/dev/accel/gz"}},
		)
		inv := discoverTree(t, tr, cfg)
		want := map[string]string{
			"/dev/ttys0":    "ttys0",
			"/dev/ttyS0":    "ttys0-" + hash6("/dev/ttyS0"),
			long:            strings.Repeat("verylongname", 5)[:56] + "-" + hash6(long),
			"/dev/a-b":      "a-b",
			"/dev/a/b":      "a-b-" + hash6("/dev/a/b"),
			"/dev/A_B":      "a-b-" + hash6("/dev/A_B"),
			"/dev/gz":       "gz",
			"/dev/accel/gz": "accel-gz-" + hash6("/dev/accel/gz"),
		}
		for p, n := range want {
			d := findDevice(inv, p)
			if d == nil {
				t.Errorf("%s not published", p)
				continue
			}
			if d.Name != n {
				t.Errorf("%s: name %q, want %q", p, d.Name, n)
			}
		}
		if g := inv.Groups[2]; g.BundleName != "accel-gz" {
			t.Errorf("bundle name %q", g.BundleName)
		}
	})
}

func TestAssignNamesOrderIndependent(t *testing.T) {
	paths := []string{"/dev/ttyS0", "/dev/ttys0", "/dev/a/b", "/dev/a-b", "/dev/A-B", "/dev/x", "/dev/X", "/dev/__"}
	want := assignNames(paths, []string{"x"})
	for i := range paths {
		rot := append(append([]string{}, paths[i:]...), paths[:i]...)
		if got := assignNames(rot, []string{"x"}); !reflect.DeepEqual(got, want) {
			t.Errorf("rotation %d: %v, want %v", i, got, want)
		}
	}
	if want["/dev/x"] == "x" || want["/dev/X"] == "x" {
		t.Errorf("reserved name given away: %v", want)
	}
	if want["/dev/__"] != "dev-"+hash6("/dev/__") {
		t.Errorf("/dev/__: %q", want["/dev/__"])
	}
}

func TestDiscoverMountinfoEscapesAndSources(t *testing.T) {
	tests := []struct {
		name  string
		setup func(tr *discoverytest.Tree)
		path  string
		want  string
	}{{
		name: "octal escapes decoded",
		setup: func(tr *discoverytest.Tree) {
			tr.Mount("/dev/sdx", nd(8, 0), "/mnt/my disk\tx", "ext4")
		},
		path: "/dev/sdx", want: "in use: mounted at /mnt/my disk\tx",
	}, {
		name: "btrfs 0:NN matched through the source",
		setup: func(tr *discoverytest.Tree) {
			tr.Mount("/dev/disk/by-id/sdx-id", nd(0, 51), "/srv", "btrfs")
		},
		path: "/dev/sdx", want: "in use: mounted at /srv",
	}, {
		name: "btrfs member listed in /sys/fs/btrfs",
		setup: func(tr *discoverytest.Tree) {
			tr.Symlink("/sys/fs/btrfs/0f1e/devices/sdx", "../../../../devices/whatever")
		},
		path: "/dev/sdx", want: "in use: member of mounted btrfs file system 0f1e",
	}, {
		name: "source that is no block device",
		setup: func(tr *discoverytest.Tree) {
			tr.Mount("/dev/null", nd(0, 51), "/srv", "btrfs")
		},
		path: "/dev/sdx", want: "",
	}, {
		name: "mount of the whole disk: partitions are in use too",
		setup: func(tr *discoverytest.Tree) {
			tr.Mount("/dev/sdx", nd(8, 0), "/a", "ext4")
			tr.Mount("/dev/sdx", nd(8, 0), "/", "ext4")
		},
		path: "/dev/sdx1", want: "in use: on disk sdx which is mounted at /",
	}, {
		name: "swap on a partition",
		setup: func(tr *discoverytest.Tree) {
			tr.Swap("/dev/sdx1")
		},
		path: "/dev/sdx", want: "in use: partition sdx1 is used as swap",
	}, {
		name: "swap file ignored",
		setup: func(tr *discoverytest.Tree) {
			tr.SwapFile("/dev/sdx1")
		},
		path: "/dev/sdx1", want: "",
	}, {
		name: "swap through a by-id link",
		setup: func(tr *discoverytest.Tree) {
			tr.Swap("/dev/disk/by-id/sdx-id")
		},
		path: "/dev/sdx", want: "in use: swap",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := discoverytest.NewFake(t)
			tr.AddBlock(discoverytest.Block{Name: "sdx", Dev: nd(8, 0), Size: gib, ByID: []string{"sdx-id"}})
			tr.AddBlock(discoverytest.Block{Name: "sdx1", Parent: "sdx", Dev: nd(8, 1), Size: gib})
			tr.CharNode("/dev/null", 1, 3)
			tc.setup(tr)
			inv := discoverTree(t, tr, config(nil, v1alpha1.DeviceGroup{Name: "sd", Include: []string{"/dev/sd*"}}))
			o := outcomes(inv)[tc.path]
			if tc.want == "" {
				if o.group != "sd" {
					t.Errorf("%s: %+v, want published", tc.path, o)
				}
			} else if o.reason != tc.want {
				t.Errorf("%s: %+v, want %q", tc.path, o, tc.want)
			}
		})
	}
}

func TestDiscoverErrors(t *testing.T) {
	t.Run("cancelled", func(t *testing.T) {
		tr := discoverytest.NewFake(t)
		ctx, cancel := context.WithCancel(testContext(t))
		cancel()
		_, err := Discover(ctx, nil, WithHostRoot(tr.Root), WithStat(tr.Stat()))
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
	})
}

func TestDiscoverDeterministic(t *testing.T) {
	cfg := config(nil, v1alpha1.DeviceGroup{Name: "all", Include: []string{"/dev/*", "/dev/cciss/*"}})
	var invs []*Inventory
	for i := 0; i < 2; i++ {
		tr := discoverytest.NewFake(t)
		hostTree(t, tr)
		invs = append(invs, discoverTree(t, tr, cfg), discoverTree(t, tr, cfg))
	}
	if tr := discoverytest.New(t); !tr.Fake() {
		hostTree(t, tr)
		invs = append(invs, discoverTree(t, tr, cfg))
	}
	for i := 1; i < len(invs); i++ {
		if !reflect.DeepEqual(invs[0], invs[i]) {
			t.Errorf("inventory %d differs from inventory 0", i)
		}
	}
}

func TestParseVPD80(t *testing.T) {
	tests := []struct {
		in   []byte
		want string
	}{
		{[]byte("\x00\x80\x00\x0a  ABC123  "), "ABC123"},
		{[]byte("\x00\x80\x00\x06ABC\x00\x00\x00"), "ABC"},
		{[]byte("\x00\x80\x00\x20short"), "short"},
		{[]byte("\x00\x83\x00\x03abc"), ""},
		{[]byte("\x00\x80"), ""},
	}
	for _, tc := range tests {
		if got := parseVPD80(tc.in); got != tc.want {
			t.Errorf("parseVPD80(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestUnescapeOctal(t *testing.T) {
	tests := map[string]string{
		`/mnt/a\040b`:      "/mnt/a b",
		`/x\011y\012z\134`: "/x\ty\nz\\",
		`/plain`:           "/plain",
		`/bad\04`:          `/bad\04`,
		`/bad\0a9`:         `/bad\0a9`,
	}
	for in, want := range tests {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}
