package discovery

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// Which identity each kind of device gets, from sysfs and the udev
// database. A fixture tree: there is no udev daemon, device-mapper or md
// here.
func TestDiscoverIdentity(t *testing.T) {
	const ataWWID = "t10.ATA     WDC WD10EZEX-08WN4A0                    WD-WCC6Y4XXXXXX"
	treeModes(t, func(t *testing.T, newTree func(testing.TB) *discoverytest.Tree) {
		tr := newTree(t)
		tr.File("/var/lib/images/a.img", "")
		blocks := []discoverytest.Block{
			{Name: "sda", Dev: nd(8, 0), Size: gib, WWID: "naa.5000c500a1b2c3d4", Serial: "S1"},
			{Name: "sda1", Parent: "sda", Dev: nd(8, 1), Size: gib,
				Udev: map[string]string{"ID_PART_ENTRY_UUID": "0f0e0d0c-aaaa-bbbb-cccc-000000000001"}},
			{Name: "sdb", Dev: nd(8, 16), Size: gib,
				Udev: map[string]string{"ID_WWN": "0x5000c500a1b2c3d5", "ID_WWN_WITH_EXTENSION": "0x5000c500a1b2c3d5ext", "ID_SERIAL_SHORT": "S2"}},
			{Name: "sdc", Dev: nd(8, 32), Size: gib, Udev: map[string]string{"ID_SERIAL_SHORT": "S3"}},
			{Name: "sdd", Dev: nd(8, 48), Size: gib, WWID: ataWWID},
			{Name: "sde", Dev: nd(8, 64), Size: gib, WWID: strings.Replace(ataWWID, "XXXXXX", "YYYYYY", 1)},
			{Name: "sdf", Dev: nd(8, 80), Size: gib, VPDSerial: "SER\xff\x01X"},
			{Name: "vda", Dev: nd(252, 0), Size: gib, Attrs: map[string]string{"serial": "virtio-serial-1"}},
			{Name: "vdb", Dev: nd(252, 16), Size: gib, Udev: map[string]string{"ID_PATH": "pci-0000:00:05.0"}},
			{Name: "vdb1", Parent: "vdb", Dev: nd(252, 17), Size: gib},
			{Name: "vdc", Dev: nd(252, 32), Size: gib, DiskSeq: 7},
			{Name: "vdc1", Parent: "vdc", Dev: nd(252, 33), Size: gib,
				Udev: map[string]string{"ID_PART_ENTRY_UUID": "0f0e0d0c-aaaa-bbbb-cccc-000000000002"}},
			{Name: "vdc2", Parent: "vdc", Dev: nd(252, 34), Size: gib},
			{Name: "dm-0", Dev: nd(253, 0), Size: gib, DMName: "plain"},
			{Name: "dm-1", Dev: nd(253, 1), Size: gib, DMName: "vg-lv",
				DMUUID: "LVM-Xk2rX0c7L2dEYvAXp1G2tJ3dQ0ZfSyZ3m6c4aMkxW2Bq9cbn0N0S7hXKcJ2ExYcb"},
			{Name: "md0", Dev: nd(9, 0), Size: gib, Udev: map[string]string{"MD_UUID": "a1b2c3d4:e5f60718:293a4b5c:6d7e8f90"}},
			{Name: "md1", Dev: nd(9, 1), Size: gib, Attrs: map[string]string{"md/uuid": "11111111-2222-3333-4444-555555555555"},
				Udev: map[string]string{"MD_UUID": "11111111:22223333:44445555:55555555"}},
			{Name: "loop2", Dev: nd(7, 2), Size: mib, BackingFile: "/var/lib/images/a.img"},
			{Name: "loop3", Dev: nd(7, 3), Size: mib, BackingFile: "/elsewhere/b.img"},
			{Name: "loop4", Dev: nd(7, 4), Size: mib, BackingFile: "/var/lib/images/a.img",
				Attrs: map[string]string{"loop/offset": "1048576"}},
			{Name: "loop5", Dev: nd(7, 5), Size: 0, DiskSeq: 12},
			{Name: "nvme1n1", Dev: nd(259, 10), Size: gib, Attrs: map[string]string{"wwid": "eui.00000000000000010000000000000001"}},
			{Name: "nvme1c1n1", Dev: nd(259, 11), Size: gib, Hidden: true, NoNode: true,
				Attrs: map[string]string{"wwid": "eui.00000000000000010000000000000001"}},
			{Name: "sdh", Dev: nd(8, 112), Size: gib, Serial: "S8", NodeDev: ndp(8, 113)},
			{Name: "sdi", Dev: nd(8, 128), Size: gib, Serial: "S9"},
		}
		for _, b := range blocks {
			tr.AddBlock(b)
		}
		tr.Mount("/dev/sdi", nd(8, 128), "/data", "xfs")
		var st syscall.Stat_t
		if err := syscall.Stat(tr.Path("/var/lib/images/a.img"), &st); err != nil {
			t.Fatal(err)
		}
		inode := fmt.Sprint(st.Ino)

		inv := discoverTree(t, tr, config(nil, v1alpha1.DeviceGroup{Name: "all", Include: []string{"/dev/*"}}))
		ids := map[string]string{}
		for _, d := range inv.Groups[0].Devices {
			ids[d.Path] = d.Identity
		}
		for _, e := range inv.Excluded {
			ids[e.Path] = e.Identity
		}
		want := map[string]string{
			"/dev/sda":       "wwn:naa.5000c500a1b2c3d4",
			"/dev/sda1":      "wwn:naa.5000c500a1b2c3d4-part1", // the disk's, not the partition UUID
			"/dev/sdb":       "wwn:0x5000c500a1b2c3d5ext",
			"/dev/sdc":       "serial:S3",
			"/dev/vda":       "serial:virtio-serial-1",
			"/dev/vdb":       "path-id:pci-0000:00:05.0",
			"/dev/vdb1":      "path-id:pci-0000:00:05.0-part1",
			"/dev/vdc":       "kname:vdc:diskseq=7",
			"/dev/vdc1":      "partuuid:0f0e0d0c-aaaa-bbbb-cccc-000000000002",
			"/dev/vdc2":      "kname:vdc:diskseq=7-part2",
			"/dev/dm-0":      "dm-name:plain",
			"/dev/md0":       "md-uuid:a1b2c3d4:e5f60718:293a4b5c:6d7e8f90",
			"/dev/md1":       "md-uuid:11111111-2222-3333-4444-555555555555",
			"/dev/loop2":     "loop:/var/lib/images/a.img:inode=" + inode,
			"/dev/loop3":     "loop:/elsewhere/b.img", // not under the host root: the path alone
			"/dev/loop4":     "loop:/var/lib/images/a.img:inode=" + inode + ":offset=1048576",
			"/dev/loop5":     "kname:loop5:diskseq=12",
			"/dev/sdh":       "serial:S8",
			"/dev/nvme1n1":   "wwn:eui.00000000000000010000000000000001",
			"/dev/nvme1c1n1": "kname:nvme1c1n1", // a hidden path: not the namespace's identity
			"/dev/sdi":       "serial:S9",
		}
		for p, w := range want {
			if ids[p] != w {
				t.Errorf("%s: identity %q, want %q", p, ids[p], w)
			}
		}

		// Too long, or with blanks and other bytes: the kind, the end,
		// and a hash of the whole.
		hashed := func(p, kind, tail string) string {
			t.Helper()
			id := ids[p]
			if len(id) != MaxIdentityLen || !strings.HasPrefix(id, kind+"..") || !strings.HasSuffix(id[:MaxIdentityLen-17], tail) || id[MaxIdentityLen-17] != '~' {
				t.Errorf("%s: identity %q (%d bytes), want %d bytes: %q, \"..\", ...%q, \"~\" and a hash", p, id, len(id), MaxIdentityLen, kind, tail)
			}
			return id
		}
		d, e := hashed("/dev/sdd", "wwn:", "_WD-WCC6Y4XXXXXX"), hashed("/dev/sde", "wwn:", "_WD-WCC6Y4YYYYYY")
		if d == e {
			t.Errorf("two disks with different WWIDs have one identity %q", d)
		}
		if id := ids["/dev/sdf"]; !strings.HasPrefix(id, "serial:SER_X~") || len(id) != len("serial:SER_X~")+16 {
			t.Errorf("/dev/sdf: identity %q, want the serial's bytes outside printable ASCII as \"_\" and a hash", id)
		}
		hashed("/dev/dm-1", "dm-uuid:", "6c4aMkxW2Bq9cbn0N0S7hXKcJ2ExYcb")
		if !IdentityIsStable(ids["/dev/sda"]) || IdentityIsStable(ids["/dev/vdc"]) || IdentityIsStable(ids["/dev/vdc2"]) || IdentityIsStable("") {
			t.Error("IdentityIsStable: only kernel-name identities (and none) hold for one boot only")
		}

		// A device left out carries its identity and its kernel numbers
		// too: a claim may hold it.
		for _, c := range []struct {
			path         string
			major, minor uint32
		}{{"/dev/sdh", 8, 112}, {"/dev/sdi", 8, 128}, {"/dev/loop5", 7, 5}} {
			found := false
			for _, e := range inv.Excluded {
				if e.Path == c.path {
					found = true
					if e.Type != v1alpha1.DeviceTypeBlock || e.Major != c.major || e.Minor != c.minor {
						t.Errorf("%s excluded as %s %d:%d, want block %d:%d (%s)", c.path, e.Type, e.Major, e.Minor, c.major, c.minor, e.Reason)
					}
				}
			}
			if !found {
				t.Errorf("%s is not excluded", c.path)
			}
		}
	})
}

// The real kernel: a bound loop device is its backing file and inode.
func TestDiscoverIdentityOfRealLoopDevice(t *testing.T) {
	dev, _ := discoverytest.LoopDevice(t, 4<<20)
	inv, err := Discover(testContext(t), config(nil, v1alpha1.DeviceGroup{Name: "loop", Include: []string{dev}}))
	if err != nil {
		t.Fatal(err)
	}
	kname := strings.TrimPrefix(dev, "/dev/")
	file, err := os.ReadFile("/sys/class/block/" + kname + "/loop/backing_file")
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(strings.TrimSpace(string(file)), &st); err != nil {
		t.Fatal(err)
	}
	want := shortIdentity(fmt.Sprintf("loop:%s:inode=%d", strings.TrimSpace(string(file)), st.Ino))
	got := ""
	for _, d := range inv.Groups[0].Devices {
		if d.Path == dev {
			got = d.Identity
		}
	}
	for _, e := range inv.Excluded {
		if e.Path == dev {
			got = e.Identity
		}
	}
	if got != want {
		t.Errorf("%s: identity %q, want %q", dev, got, want)
	}
}
