package discovery

import (
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// hostTree lays out a host with most kinds of block stacks and a few
// character devices:
//
//	sda      disk; sda1 mounted at /boot, sda2 LVM PV of dm-0 (vg-root,
//	         mounted at /), sda3 free
//	sdb sdc  multipath paths of dm-1 (mpatha)
//	sdd      sdd1 LVM PV of dm-2 (vg-data-lv), not mounted
//	sde      whole-disk swap
//	sdf      under dm-3 (luks-home, crypt), mounted at "/home dir"
//	sdg      btrfs mounted at /data (mountinfo says 0:45)
//	sdh      node numbers disagree with sysfs
//	sdi      no /dev node
//	sdj sdk  members of md0
//	nvme0n1  namespace with partition nvme0n1p1
//	loop0    bound (16 MiB); loop1 unbound
//	sr0      empty CD drive; zram0 unconfigured
//	cciss!c0d0  /dev/cciss/c0d0
func hostTree(t testing.TB, tr *discoverytest.Tree) {
	blocks := []discoverytest.Block{
		{Name: "sda", Dev: nd(8, 0), Size: 100 * gib, Model: "QEMU HARDDISK", Vendor: "ATA",
			VPDSerial: "SER-A  ", WWID: "naa.5000c500a1b2c3d4", Rotational: true,
			ByID: []string{"wwn-0x5000c500a1b2c3d4", "ata-QEMU_HARDDISK_SER-A"}},
		{Name: "sda1", Parent: "sda", Dev: nd(8, 1), Size: 1 * gib, ByID: []string{"ata-QEMU_HARDDISK_SER-A-part1"}},
		{Name: "sda2", Parent: "sda", Dev: nd(8, 2), Size: 50 * gib},
		{Name: "sda3", Parent: "sda", Dev: nd(8, 3), Size: 10 * gib},
		{Name: "dm-0", Dev: nd(253, 0), Size: 50 * gib, DMName: "vg-root", DMUUID: "LVM-abcdefROOT", Slaves: []string{"sda2"},
			ByID: []string{"dm-name-vg-root"}},

		{Name: "sdb", Dev: nd(8, 16), Size: 200 * gib, Model: "FlashSystem-9840", Vendor: "IBM", Serial: "P1",
			ByID: []string{"scsi-3600507681081818c1800000000000042"}},
		{Name: "sdc", Dev: nd(8, 32), Size: 200 * gib, Model: "FlashSystem-9840", Vendor: "IBM", Serial: "P2"},
		{Name: "dm-1", Dev: nd(253, 1), Size: 200 * gib, DMName: "mpatha", DMUUID: "mpath-3600507681081818c1800000000000042",
			Slaves: []string{"sdb", "sdc"}, ByID: []string{"dm-uuid-mpath-3600507681081818c1800000000000042"}},

		{Name: "sdd", Dev: nd(8, 48), Size: 20 * gib},
		{Name: "sdd1", Parent: "sdd", Dev: nd(8, 49), Size: 20 * gib},
		{Name: "dm-2", Dev: nd(253, 2), Size: 20 * gib, DMName: "vg-data-lv", DMUUID: "LVM-abcdefDATA", Slaves: []string{"sdd1"}},

		{Name: "sde", Dev: nd(8, 64), Size: 8 * gib},
		{Name: "sdf", Dev: nd(8, 80), Size: 30 * gib},
		{Name: "dm-3", Dev: nd(253, 3), Size: 30 * gib, DMName: "luks-home", DMUUID: "CRYPT-LUKS2-0123-luks-home", Slaves: []string{"sdf"}},
		{Name: "sdg", Dev: nd(8, 96), Size: 40 * gib},
		{Name: "sdh", Dev: nd(8, 112), Size: 1 * gib, NodeDev: ndp(8, 113)},
		{Name: "sdi", Dev: nd(8, 128), Size: 1 * gib, NoNode: true},
		{Name: "sdj", Dev: nd(8, 144), Size: 5 * gib},
		{Name: "sdk", Dev: nd(8, 160), Size: 5 * gib},
		{Name: "md0", Dev: nd(9, 0), Size: 5 * gib, Slaves: []string{"sdj", "sdk"}},

		{Name: "nvme0n1", Dev: nd(259, 0), Size: 512 * gib, Model: "Samsung SSD 970", Serial: "S4EWNX0R123456",
			Attrs: map[string]string{"wwid": "eui.0025388b91c7c3a1"}, ByID: []string{"nvme-eui.0025388b91c7c3a1"}},
		{Name: "nvme0n1p1", Parent: "nvme0n1", Dev: nd(259, 1), Size: 512 * gib},

		{Name: "loop0", Dev: nd(7, 0), Size: 16 * mib},
		{Name: "loop1", Dev: nd(7, 1), Size: 0},
		{Name: "sr0", Dev: nd(11, 0), Size: 0, Removable: true},
		{Name: "zram0", Dev: nd(252, 0), Size: 0},
		{Name: "cciss!c0d0", Dev: nd(104, 0), Size: 70 * gib},
	}
	for _, b := range blocks {
		tr.AddBlock(b)
	}
	tr.Mount("/dev/sda1", nd(8, 1), "/boot", "ext4")
	tr.Mount("/dev/mapper/vg-root", nd(253, 0), "/", "xfs")
	tr.Mount("/dev/mapper/luks-home", nd(253, 3), "/home dir", "ext4")
	tr.Mount("/dev/sdg", nd(0, 45), "/data", "btrfs")
	tr.Mount("proc", nd(0, 21), "/proc", "proc")
	tr.Swap("/dev/sde")
	tr.SwapFile("/swapfile")

	chars := []struct {
		path         string
		major, minor uint32
	}{
		{"/dev/mem", 1, 1}, {"/dev/kmem", 1, 2}, {"/dev/null", 1, 3}, {"/dev/port", 1, 4},
		{"/dev/kmsg", 1, 11}, {"/dev/fuse", 10, 229}, {"/dev/crypto/nx-gzip", 10, 121},
		{"/dev/ttyS0", 4, 64}, {"/dev/ttys0", 3, 48}, {"/dev/watchdog", 10, 130},
		{"/dev/watchdog0", 248, 0}, {"/dev/cpu/0/msr", 202, 0}, {"/dev/cpu/0/cpuid", 203, 0},
		{"/dev/loop-control", 10, 237}, {"/dev/mapper/control", 10, 236}, {"/dev/snapshot", 10, 231},
		// A kernel interface under a harmless name: caught by its numbers.
		{"/dev/sneaky", 1, 1},
		{"/dev/accel0", 240, 0},
	}
	for _, c := range chars {
		tr.CharNode(c.path, c.major, c.minor)
	}
	// Absolute link targets resolve inside the host root.
	tr.Symlink("/dev/accel/by-name/gzip", "/dev/accel0")
}
