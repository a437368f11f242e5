package discovery

import (
	"strings"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

func TestContainerMountTable(t *testing.T) {
	tests := []struct {
		name      string
		mountinfo string
		container bool
	}{
		{"host root on a disk", "27 1 254:0 / / rw - ext4 /dev/vda rw\n", false},
		{"host root on btrfs", "27 1 0:45 / / rw - btrfs /dev/sda2 rw\n", false},
		{"container root on overlay", "600 500 0:88 / / rw - overlay overlay rw,lowerdir=/x\n", true},
		{"pod: runtime file mounts", "600 500 0:88 / / rw - xfs /dev/dm-7 rw\n" +
			"610 600 254:0 /var/lib/kubelet/pods/x/etc-hosts /etc/hosts rw - ext4 /dev/vda rw\n", true},
		{"container root on fuse-overlayfs", "600 500 0:88 / / rw - fuse-overlayfs fuse-overlayfs rw\n", true},
		{"ostree/bootc host: composefs overlay", "27 1 0:32 / / ro - overlay composefs ro,lowerdir=/x\n", false},
		{"overlayroot host", "27 1 0:32 / / rw - overlay overlayroot rw,lowerdir=/media/root-ro\n", false},
		{"a later mount over / wins", "1 0 0:88 / / rw - overlay overlay rw\n2 1 8:1 / / rw - xfs /dev/sda1 rw\n", false},
		{"no root mount at all", "2 1 8:1 / /data rw - xfs /dev/sda1 rw\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := containerMountTable(parseMountinfo([]byte(tc.mountinfo)))
			if (got != "") != tc.container {
				t.Fatalf("got %q, want a container's: %v", got, tc.container)
			}
		})
	}
}

// TestDiscoverFailsClosed: when the host's mount table or swap list cannot
// be read, or is a container's own, no block device is published, each
// says why, and the warning says how to mount the right files. Character
// devices that are no alias of a block device are unaffected.
func TestDiscoverFailsClosed(t *testing.T) {
	const unreadable = "unknown whether in use: the host's mount table "
	const container = "unknown whether in use: the mount table "
	tests := []struct {
		name  string
		setup func(tr *discoverytest.Tree)
		want  string // reason prefix of every block device; "" publishes
	}{{
		name:  "no mount table",
		setup: func(tr *discoverytest.Tree) { tr.Remove("/proc/1/mountinfo") },
		want:  unreadable,
	}, {
		name: "only the reader's own mount table: no fallback",
		setup: func(tr *discoverytest.Tree) {
			tr.Remove("/proc/1/mountinfo")
			tr.File("/proc/self/mountinfo", "20 1 8:0 / / rw - ext4 /dev/sdx rw\n")
		},
		want: unreadable,
	}, {
		name: "mount table unreadable",
		setup: func(tr *discoverytest.Tree) {
			tr.Remove("/proc/1/mountinfo")
			tr.Mkdir("/proc/1/mountinfo") // reading a directory fails
		},
		want: unreadable,
	}, {
		name:  "a container's overlay root",
		setup: func(tr *discoverytest.Tree) { tr.Mount("overlay", nd(0, 88), "/", "overlay") },
		want:  container,
	}, {
		name: "a pod's mount table",
		setup: func(tr *discoverytest.Tree) {
			tr.Mount("/dev/sdy", nd(8, 32), "/", "xfs")
			tr.Mount("/dev/sdy", nd(8, 32), "/etc/resolv.conf", "xfs")
		},
		want: container,
	}, {
		name: "no swap list although the kernel has swap",
		setup: func(tr *discoverytest.Tree) {
			tr.Remove("/proc/swaps")
			tr.Mkdir("/sys/kernel/mm/swap")
		},
		want: "unknown whether in use: the host's swap list ",
	}, {
		name: "swap list unreadable",
		setup: func(tr *discoverytest.Tree) {
			tr.Remove("/proc/swaps")
			tr.Mkdir("/proc/swaps")
		},
		want: "unknown whether in use: the host's swap list ",
	}, {
		name:  "kernel without swap: no swap list, no /sys/kernel/mm/swap",
		setup: func(tr *discoverytest.Tree) { tr.Remove("/proc/swaps") },
	}, {
		name:  "composefs root is a host's",
		setup: func(tr *discoverytest.Tree) { tr.Mount("composefs", nd(0, 32), "/", "overlay") },
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := discoverytest.NewFake(t)
			tr.AddBlock(discoverytest.Block{Name: "sdx", Dev: nd(8, 0), Size: gib})
			tr.AddBlock(discoverytest.Block{Name: "sdx1", Parent: "sdx", Dev: nd(8, 1), Size: gib})
			tr.AddChar(discoverytest.Char{Path: "/dev/sg0", Dev: nd(21, 0), Class: "scsi_generic", Name: "sg0", Of: "sdx"})
			tr.CharNode("/dev/fuse", 10, 229)
			tc.setup(tr)
			// allowInUse cannot lift what is not known.
			cfg := config([]string{"/dev/sdx", "/dev/sg0"},
				v1alpha1.DeviceGroup{Name: "all", Include: []string{"/dev/sd*", "/dev/sg*", "/dev/fuse"}})
			inv := discoverTree(t, tr, cfg)
			got := outcomes(inv)
			if got["/dev/fuse"].group != "all" {
				t.Errorf("/dev/fuse: %+v, want published", got["/dev/fuse"])
			}
			if tc.want == "" {
				for _, p := range []string{"/dev/sdx", "/dev/sdx1", "/dev/sg0"} {
					if got[p].group != "all" {
						t.Errorf("%s: %+v, want published", p, got[p])
					}
				}
				if len(inv.Warnings) != 0 {
					t.Errorf("warnings %q", inv.Warnings)
				}
				return
			}
			for _, p := range []string{"/dev/sdx", "/dev/sdx1"} {
				if !strings.HasPrefix(got[p].reason, tc.want) {
					t.Errorf("%s: %+v, want reason %q...", p, got[p], tc.want)
				}
			}
			if r := got["/dev/sg0"].reason; !strings.HasPrefix(r, "unknown whether in use: SCSI generic node of sdx; ") {
				t.Errorf("/dev/sg0: %+v, want unknown whether in use", got["/dev/sg0"])
			}
			fix := "mount the host's /proc/1/mountinfo and /proc/swaps read-only at " + tr.Root + "/proc/1/mountinfo"
			if len(inv.Warnings) != 1 || !strings.Contains(inv.Warnings[0], fix) ||
				!strings.Contains(inv.Warnings[0], "no block device is published") {
				t.Errorf("warnings %q, want one that says %q", inv.Warnings, fix)
			}
		})
	}
}
