package discovery

import (
	"context"
	"strings"
	"testing"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

func TestContainerMountTableWarning(t *testing.T) {
	tests := []struct {
		name      string
		mountinfo string
		warn      bool
	}{
		{"host root on a disk", "27 1 254:0 / / rw - ext4 /dev/vda rw\n", false},
		{"host root on btrfs", "27 1 0:45 / / rw - btrfs /dev/sda2 rw\n", false},
		{"container root on overlay", "600 500 0:88 / / rw - overlay overlay rw,lowerdir=/x\n" +
			"610 600 254:0 /var/lib/kubelet/pods/x/etc-hosts /etc/hosts rw - ext4 /dev/vda rw\n", true},
		{"a later mount over / wins", "1 0 0:88 / / rw - overlay overlay rw\n2 1 8:1 / / rw - xfs /dev/sda1 rw\n", false},
		{"no root mount at all", "2 1 8:1 / /data rw - xfs /dev/sda1 rw\n", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := containerMountTableWarning(parseMountinfo([]byte(tc.mountinfo)), "/proc/1/mountinfo")
			if (got != "") != tc.warn {
				t.Fatalf("warning %q, want warning: %v", got, tc.warn)
			}
			if tc.warn && (!strings.Contains(got, "/proc/1/mountinfo") || !strings.Contains(got, "hostPID")) {
				t.Errorf("warning does not say what to do: %q", got)
			}
		})
	}
}

func TestDiscoverWarnsOnContainerMountTable(t *testing.T) {
	tr := discoverytest.NewFake(t)
	tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: discoverytest.DevNum{Major: 8, Minor: 16}, Size: 1 << 20})
	tr.Mount("overlay", discoverytest.DevNum{Major: 0, Minor: 88}, "/", "overlay")
	inv, err := Discover(context.Background(), nil, WithHostRoot(tr.Root), WithStat(tr.Stat()))
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.Warnings) != 1 || !strings.Contains(inv.Warnings[0], "looks like a container's") {
		t.Errorf("warnings %q", inv.Warnings)
	}
}
