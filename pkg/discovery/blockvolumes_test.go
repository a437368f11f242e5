package discovery

import (
	"strings"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// The kubelet's paths for a CSI block-mode volume of pod "pod-uid".
const (
	globalMap = "/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/pv-1/dev/pod-uid"
	podMap    = "/var/lib/kubelet/pods/pod-uid/volumeDevices/kubernetes.io~csi/pv-1"
	boundWhy  = " (the device node itself, as the kubelet does for a pod's block-mode volume)"
	loopWhy   = " (a loop device over a block device holds it open, as the kubelet does for a pod's block-mode volume)"
)

// TestDiscoverBlockModeVolume lays out what a node shows while a pod uses a
// block-mode PersistentVolume on /dev/sdc: the kubelet's bind mounts of the
// node (devtmpfs, the name only in the mount root) and its "fd lock" loop
// device over the bound path. A fixture, because a real kubelet does not
// run in unit tests; TestRealBindMountedNodeInUse binds a real node.
func TestDiscoverBlockModeVolume(t *testing.T) {
	treeModes(t, func(t *testing.T, newTree func(testing.TB) *discoverytest.Tree) {
		tr := newTree(t)
		tr.Mount("devtmpfs", discoverytest.DevtmpfsDev, "/dev", "devtmpfs")
		tr.AddBlock(discoverytest.Block{Name: "sdc", Dev: nd(8, 32), Size: gib})
		tr.AddBlock(discoverytest.Block{Name: "sdc1", Parent: "sdc", Dev: nd(8, 33), Size: gib})
		tr.AddBlock(discoverytest.Block{Name: "loop5", Dev: nd(7, 5), Size: gib, BackingFile: globalMap})
		tr.BindNode("/dev/sdc", globalMap)
		tr.BindNode("/dev/sdc", podMap)

		// A partition's node bound: its disk is in use too.
		tr.AddBlock(discoverytest.Block{Name: "sdd", Dev: nd(8, 48), Size: gib})
		tr.AddBlock(discoverytest.Block{Name: "sdd1", Parent: "sdd", Dev: nd(8, 49), Size: gib})
		tr.BindNode("/dev/sdd1", "/var/lib/kubelet/pods/p2/volumeDevices/kubernetes.io~csi/pv-2")
		// A dm device bound: what it is built on is in use.
		tr.AddBlock(discoverytest.Block{Name: "sde", Dev: nd(8, 64), Size: gib})
		tr.AddBlock(discoverytest.Block{Name: "dm-4", Dev: nd(253, 4), Size: gib, DMName: "vg-pv3",
			DMUUID: "LVM-pv3", Slaves: []string{"sde"}})
		tr.BindNode("/dev/dm-4", "/var/lib/kubelet/pods/p3/volumeDevices/kubernetes.io~csi/pv-3")
		// Node gone since: the kernel appends //deleted to the root.
		tr.AddBlock(discoverytest.Block{Name: "sdf", Dev: nd(8, 80), Size: gib})
		tr.MountRoot("udev", discoverytest.DevtmpfsDev, "/sdf//deleted", "/mnt/old", "devtmpfs")
		// Bound from a /dev that is a tmpfs, as in a kind node.
		tr.AddBlock(discoverytest.Block{Name: "sdg", Dev: nd(8, 96), Size: gib})
		tr.MountRoot("tmpfs", nd(0, 77), "/", "/kind/dev", "tmpfs")
		tr.MountRoot("tmpfs", nd(0, 77), "/", "/dev", "tmpfs")
		tr.MountRoot("tmpfs", nd(0, 77), "/sdg", "/var/lib/kubelet/pods/p4/x", "tmpfs")

		// Not device-node binds: /dev itself, a directory of /dev, a
		// character node, a file of another tmpfs.
		tr.AddBlock(discoverytest.Block{Name: "sdh", Dev: nd(8, 112), Size: gib})
		tr.MountRoot("devtmpfs", discoverytest.DevtmpfsDev, "/", "/chroot/dev", "devtmpfs")
		tr.Mkdir("/dev/disk")
		tr.MountRoot("devtmpfs", discoverytest.DevtmpfsDev, "/disk", "/chroot/disk", "devtmpfs")
		tr.CharNode("/dev/null", 1, 3)
		tr.BindNode("/dev/null", "/chroot/null")
		tr.MountRoot("tmpfs", nd(0, 78), "/sdh", "/run/x", "tmpfs")

		cfg := config(nil, v1alpha1.DeviceGroup{Name: "all", Include: []string{"/dev/sd*", "/dev/loop*", "/dev/dm-*"}})
		got := outcomes(discoverTree(t, tr, cfg))
		want := map[string]string{
			"/dev/sdc":   "in use: bind-mounted at " + globalMap + boundWhy,
			"/dev/sdc1":  "in use: on disk sdc which is bind-mounted at " + globalMap,
			"/dev/loop5": "in use: backed by " + globalMap + ", which is block device /dev/sdc" + loopWhy,
			"/dev/sdd":   "in use: partition sdd1 is bind-mounted at /var/lib/kubelet/pods/p2/volumeDevices/kubernetes.io~csi/pv-2",
			"/dev/sdd1":  "in use: bind-mounted at /var/lib/kubelet/pods/p2/volumeDevices/kubernetes.io~csi/pv-2" + boundWhy,
			"/dev/dm-4":  "in use: bind-mounted at /var/lib/kubelet/pods/p3/volumeDevices/kubernetes.io~csi/pv-3" + boundWhy,
			"/dev/sde":   "in use: under dm-4 (vg-pv3) which is bind-mounted at /var/lib/kubelet/pods/p3/volumeDevices/kubernetes.io~csi/pv-3",
			"/dev/sdf":   "in use: bind-mounted at /mnt/old" + boundWhy,
			"/dev/sdg":   "in use: bind-mounted at /var/lib/kubelet/pods/p4/x" + boundWhy,
		}
		for p, r := range want {
			if got[p].reason != r {
				t.Errorf("%s: got %+v\nwant %q", p, got[p], r)
			}
		}
		if got["/dev/sdh"].group != "all" {
			t.Errorf("/dev/sdh: %+v, want published", got["/dev/sdh"])
		}
	})
}

// TestDiscoverLoopBackingFile: a loop device over a block device node, or
// over a file in the kubelet's directory, is in use, and so is the block
// device behind it. A fixture for the kubelet's paths and for names that
// do not resolve; TestRealLoopOverLoopInUse uses real loop devices.
func TestDiscoverLoopBackingFile(t *testing.T) {
	treeModes(t, func(t *testing.T, newTree func(testing.TB) *discoverytest.Tree) {
		tr := newTree(t)
		tr.AddBlock(discoverytest.Block{Name: "sdg", Dev: nd(8, 96), Size: gib})
		tr.AddBlock(discoverytest.Block{Name: "sdh", Dev: nd(8, 112), Size: gib, ByID: []string{"scsi-sdh"}})
		tr.AddBlock(discoverytest.Block{Name: "sdi", Dev: nd(8, 128), Size: gib})
		tr.AddBlock(discoverytest.Block{Name: "sdi1", Parent: "sdi", Dev: nd(8, 129), Size: gib})
		kubeletFile := "/var/lib/kubelet/pods/p1/volumes/kubernetes.io~empty-dir/scratch/disk.img"
		loops := []discoverytest.Block{
			{Name: "loop6", Dev: nd(7, 6), Size: gib, BackingFile: "/dev/sdg"},
			{Name: "loop7", Dev: nd(7, 7), Size: gib, BackingFile: kubeletFile},
			{Name: "loop8", Dev: nd(7, 8), Size: gib, BackingFile: "/srv/images/disk.img"},
			{Name: "loop9", Dev: nd(7, 9), Size: gib, BackingFile: "/dev/sdz (deleted)"},
			{Name: "loop10", Dev: nd(7, 10), Size: gib, BackingFile: "/dev/disk/by-id/scsi-sdh"},
			{Name: "loop11", Dev: nd(7, 11), Size: gib, BackingFile: "/dev/sdi1"},
			{Name: "loop12", Dev: nd(7, 12), Size: gib, BackingFile: "/var/lib/kubelet/x (deleted)"},
			{Name: "loop13", Dev: nd(7, 13), Size: gib, BackingFile: "/var/snap/microk8s/common/var/lib/kubelet/pods/p/disk.img"},
		}
		for _, b := range loops {
			tr.AddBlock(b)
		}
		tr.File("/srv/images/disk.img", "")
		cfg := config(nil, v1alpha1.DeviceGroup{Name: "all", Include: []string{"/dev/sd*", "/dev/loop*"}})
		got := outcomes(discoverTree(t, tr, cfg))
		want := map[string]string{
			"/dev/loop6":  "in use: backed by block device /dev/sdg" + loopWhy,
			"/dev/sdg":    "in use: the backing device of loop device loop6",
			"/dev/loop7":  "in use: backed by " + kubeletFile + ", in the kubelet's directory (a pod's volume)",
			"/dev/loop9":  "in use: backed by device node /dev/sdz (deleted)",
			"/dev/loop10": "in use: backed by /dev/disk/by-id/scsi-sdh, which is block device /dev/sdh" + loopWhy,
			"/dev/sdh":    "in use: the backing device of loop device loop10",
			"/dev/loop11": "in use: backed by block device /dev/sdi1" + loopWhy,
			"/dev/sdi1":   "in use: the backing device of loop device loop11",
			"/dev/sdi":    "in use: partition sdi1 is the backing device of loop device loop11",
			"/dev/loop12": "in use: backed by /var/lib/kubelet/x (deleted), in the kubelet's directory (a pod's volume)",
			"/dev/loop13": "in use: backed by /var/snap/microk8s/common/var/lib/kubelet/pods/p/disk.img, in the kubelet's directory (a pod's volume)",
		}
		for p, r := range want {
			if got[p].reason != r {
				t.Errorf("%s: got %+v\nwant %q", p, got[p], r)
			}
		}
		if got["/dev/loop8"].group != "all" {
			t.Errorf("/dev/loop8 over a host file: %+v, want published", got["/dev/loop8"])
		}
	})
}

// TestDiscoverCharAliases: SCSI generic, bsg, NVMe controller and NVMe
// generic nodes take the state of the block devices they reach. A
// fixture: these machines have no SCSI or NVMe devices.
func TestDiscoverCharAliases(t *testing.T) {
	treeModes(t, func(t *testing.T, newTree func(testing.TB) *discoverytest.Tree) {
		tr := newTree(t)
		tr.AddBlock(discoverytest.Block{Name: "sda", Dev: nd(8, 0), Size: gib})
		tr.AddBlock(discoverytest.Block{Name: "sda1", Parent: "sda", Dev: nd(8, 1), Size: gib})
		tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: nd(8, 16), Size: gib})
		tr.AddBlock(discoverytest.Block{Name: "sdc", Dev: nd(8, 32), Size: gib})
		tr.AddBlock(discoverytest.Block{Name: "dm-1", Dev: nd(253, 1), Size: gib, DMName: "mpatha",
			DMUUID: "mpath-x", Slaves: []string{"sdc"}})
		tr.Mount("/dev/sda1", nd(8, 1), "/boot", "ext4")
		// nvme0: namespace 1 free, namespace 2 has a mounted partition.
		tr.AddBlock(discoverytest.Block{Name: "nvme0n1", Dev: nd(259, 0), Size: gib})
		tr.AddBlock(discoverytest.Block{Name: "nvme0n2", Dev: nd(259, 1), Size: gib})
		tr.AddBlock(discoverytest.Block{Name: "nvme0n2p1", Parent: "nvme0n2", Dev: nd(259, 2), Size: gib})
		tr.Mount("/dev/nvme0n2p1", nd(259, 2), "/var", "xfs")
		// nvme1: native multipath; the head is virtual, the controller
		// holds the hidden path device.
		ctrl1 := "/sys/devices/pci0000:00/0000:00:05.0/nvme/nvme1"
		tr.AddBlock(discoverytest.Block{Name: "nvme1n1", Dev: nd(259, 3), Size: gib,
			SysDir: "/sys/devices/virtual/nvme-subsystem/nvme-subsys1/nvme1n1"})
		tr.AddBlock(discoverytest.Block{Name: "nvme1c1n1", Dev: nd(259, 4), Size: gib, Hidden: true, NoNode: true,
			SysDir: ctrl1 + "/nvme1c1n1"})
		tr.Mount("/dev/nvme1n1", nd(259, 3), "/data", "xfs")

		chars := []discoverytest.Char{
			{Path: "/dev/sg0", Dev: nd(21, 0), Class: "scsi_generic", Name: "sg0", Of: "sda"},
			{Path: "/dev/sg1", Dev: nd(21, 1), Class: "scsi_generic", Name: "sg1", Of: "sdb"},
			{Path: "/dev/sg2", Dev: nd(21, 2), Class: "scsi_generic", Name: "sg2", Of: "sdc"},
			{Path: "/dev/bsg/1:0:0:0", Dev: nd(248, 0), Class: "bsg", Name: "1:0:0:0", Of: "sda"},
			{Path: "/dev/bsg/2:0:0:0", Dev: nd(248, 1), Class: "bsg", Name: "2:0:0:0", Of: "sdb"},
			{Path: "/dev/nvme0", Dev: nd(240, 0), Class: "nvme", Name: "nvme0", Of: "nvme0n1"},
			{Path: "/dev/ng0n1", Dev: nd(241, 0), Class: "nvme-generic", Name: "ng0n1", Of: "nvme0n1"},
			{Path: "/dev/ng0n2", Dev: nd(241, 1), Class: "nvme-generic", Name: "ng0n2", Of: "nvme0n2"},
			{Path: "/dev/nvme1", Dev: nd(240, 1), Class: "nvme", Name: "nvme1", SysDir: ctrl1},
			{Path: "/dev/ng1n1", Dev: nd(241, 2), Class: "nvme-generic", Name: "ng1n1", SysDir: ctrl1 + "/ng1n1"},
			// An enclosure's sg node reaches no block device.
			{Path: "/dev/sg3", Dev: nd(21, 3), Class: "scsi_generic", Name: "sg3",
				SysDir: "/sys/devices/pci0000:00/0000:00:10.0/host9/target9:0:0/9:0:0:0/scsi_generic/sg3"},
		}
		for _, c := range chars {
			tr.AddChar(c)
		}
		tr.CharNode("/dev/fuse", 10, 229)
		cfg := config(nil, v1alpha1.DeviceGroup{Name: "raw", Types: []v1alpha1.DeviceType{v1alpha1.DeviceTypeChar},
			Include: []string{"/dev/sg*", "/dev/bsg/*", "/dev/nvme*", "/dev/ng*", "/dev/fuse"}})
		inv := discoverTree(t, tr, cfg)
		got := outcomes(inv)
		want := map[string]string{
			"/dev/sg0":         "in use: SCSI generic node of sda; sda: in use: partition sda1 is mounted at /boot",
			"/dev/bsg/1:0:0:0": "in use: SCSI bsg node of sda; sda: in use: partition sda1 is mounted at /boot",
			"/dev/sg2":         "in use: SCSI generic node of sdc; sdc: held by dm-1 (mpatha)",
			"/dev/nvme0":       "in use: NVMe controller node of nvme0n2; nvme0n2: in use: partition nvme0n2p1 is mounted at /var",
			"/dev/ng0n2":       "in use: NVMe generic node of nvme0n2; nvme0n2: in use: partition nvme0n2p1 is mounted at /var",
			"/dev/nvme1":       "in use: NVMe controller node of nvme1n1; nvme1n1: in use: mounted at /data",
			"/dev/ng1n1":       "in use: NVMe generic node of nvme1n1; nvme1n1: in use: mounted at /data",
		}
		for p, r := range want {
			if got[p].reason != r {
				t.Errorf("%s: got %+v\nwant %q", p, got[p], r)
			}
		}
		for _, p := range []string{"/dev/sg1", "/dev/bsg/2:0:0:0", "/dev/ng0n1", "/dev/sg3", "/dev/fuse"} {
			if got[p].group != "raw" {
				t.Errorf("%s: %+v, want published", p, got[p])
			}
		}

		// Only the character node's own exact path lifts the rule.
		cfg.AllowInUse = []string{"/dev/sda", "/dev/sg2"}
		got = outcomes(discoverTree(t, tr, cfg))
		if got["/dev/sg0"].group != "" || got["/dev/sg2"].group != "raw" {
			t.Errorf("allowInUse: sg0 %+v (want kept back), sg2 %+v (want published)", got["/dev/sg0"], got["/dev/sg2"])
		}
	})
}

// TestDiscoverKernelInterfacesExtended: firmware, service processor,
// console and input nodes are never published, by number and by path. A
// fixture for the nodes this machine lacks; TestRealConsoleNeverPublished
// uses the real console nodes.
func TestDiscoverKernelInterfacesExtended(t *testing.T) {
	treeModes(t, func(t *testing.T, newTree func(testing.TB) *discoverytest.Tree) {
		tr := newTree(t)
		never := []struct {
			path         string
			major, minor uint32
		}{
			{"/dev/ipmi0", 239, 0}, {"/dev/ipmidev/0", 239, 1}, {"/dev/tpm0", 10, 224}, {"/dev/tpmrm0", 252, 65536},
			{"/dev/mtd0", 90, 0}, {"/dev/mtd0ro", 90, 1}, {"/dev/uinput", 10, 223}, {"/dev/console", 5, 1},
			{"/dev/tty", 5, 0}, {"/dev/tty0", 4, 0}, {"/dev/tty12", 4, 12}, {"/dev/vcs", 7, 0}, {"/dev/vcsa1", 7, 129},
			{"/dev/papr-vpd", 10, 122}, {"/dev/papr-sysparm", 10, 123}, {"/dev/opal-prd", 10, 124},
			{"/dev/nvme-fabrics", 10, 125},
			// The same numbers under harmless names.
			{"/dev/x-console", 5, 1}, {"/dev/x-uinput", 10, 223}, {"/dev/x-vcs", 7, 3}, {"/dev/x-mtd", 90, 2},
			{"/dev/x-tty5", 4, 5}, {"/dev/x-tpm", 10, 224},
		}
		for _, c := range never {
			tr.CharNode(c.path, c.major, c.minor)
		}
		tr.CharNode("/dev/ttyS0", 4, 64)
		tr.CharNode("/dev/fuse", 10, 229)
		tr.AddBlock(discoverytest.Block{Name: "mtdblock0", Dev: nd(31, 0), Size: 64 * mib})
		cfg := config(nil, v1alpha1.DeviceGroup{Name: "all", Include: []string{"/dev/*", "/dev/ipmidev/*"}})
		got := outcomes(discoverTree(t, tr, cfg))
		for _, c := range never {
			if got[c.path].reason != kernelIface {
				t.Errorf("%s (%d:%d): %+v, want %q", c.path, c.major, c.minor, got[c.path], kernelIface)
			}
		}
		if got["/dev/mtdblock0"].reason != kernelIface {
			t.Errorf("/dev/mtdblock0: %+v, want %q", got["/dev/mtdblock0"], kernelIface)
		}
		for _, p := range []string{"/dev/ttyS0", "/dev/fuse"} {
			if got[p].group != "all" {
				t.Errorf("%s: %+v, want published", p, got[p])
			}
		}
	})
}

func TestAdviceForNewReasons(t *testing.T) {
	for _, reason := range []string{
		"unknown whether in use: the host's mount table /host/proc/1/mountinfo cannot be read (no such file or directory)",
		"in use: bind-mounted at " + globalMap + boundWhy,
		"in use: on disk sdc which is bind-mounted at " + globalMap,
		"in use: backed by block device /dev/sdg" + loopWhy,
		"in use: the backing device of loop device loop6",
		"in use: backed by /var/lib/kubelet/x, in the kubelet's directory (a pod's volume)",
		"in use: SCSI generic node of sda; sda: in use: mounted at /",
		"in use: NVMe controller node of nvme0n2; nvme0n2: held by md0",
		kernelIface,
	} {
		a := Advice(reason)
		if a == "" || strings.HasPrefix(a, "The node uses it as the reason says") {
			t.Errorf("Advice(%q) = %q, want specific advice", reason, a)
		}
	}
}
