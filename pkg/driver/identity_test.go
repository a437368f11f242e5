package driver

import (
	"os"
	"strings"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/utils/ptr"

	"golang.org/x/sys/unix"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// Every device carries its identity as an attribute, so a claim can ask for
// one physical disk whatever it is called; the scheduler's own allocator
// picks it. A bundle is no one device: its identity is "".
func TestIdentityAttributeSelectsThePhysicalDevice(t *testing.T) {
	inv := ptDiscover(t, ptDiskTree(t, ptDisk{"sdb", ptSDB, ptWWN2, nil}, ptDisk{"sdc", ptSDC, ptWWN1, nil}), "/dev/sdb", "/dev/sdc")
	claim := allocateForTest(t, ptNode, inv, []*resourceapi.DeviceClass{driverClassForTest("pdp")},
		claimForTest("c", exactRequestForTest("r", "pdp", `device.attributes["power-dev-plugin.io"].identity == "wwn:`+ptWWN1+`"`)))[0]
	if got := allocatedDeviceNames(claim); len(got) != 1 || got[0] != "sdc" {
		t.Errorf("allocated %q, want sdc (the disk with WWN %s)", got, ptWWN1)
	}

	bundle := bundleGroupForTest("mp", "mp-all", diskForTest("mpatha", "/dev/mapper/mpatha", 1<<30))
	bundle.Devices[0].Identity = "dm-uuid:mpath-1"
	res, err := BuildResources(ptNode, inventoryForTest(bundle))
	if err != nil {
		t.Fatal(err)
	}
	dev := findDevice(t, res, "mp-all")
	if a := dev.Attributes[AttrIdentity]; ptr.Deref(a.StringValue, "<unset>") != "" {
		t.Errorf("bundle identity %q, want \"\"", ptr.Deref(a.StringValue, "<unset>"))
	}
	for _, d := range []discovery.Device{{Identity: "path:/dev/fuse"}, {}} {
		if a := DeviceAttributes(&d)[AttrIdentity]; ptr.Deref(a.StringValue, "<unset>") != d.Identity {
			t.Errorf("identity attribute %q, want %q", ptr.Deref(a.StringValue, "<unset>"), d.Identity)
		}
	}
}

// The boot the plugin runs in comes from the kernel: its boot ID, and the
// boot time that tells files of this boot from older ones.
func TestReadBoot(t *testing.T) {
	b, err := readBoot()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(bootIDPath)
	if err != nil {
		t.Skipf("no boot ID here: %v", err)
	}
	if b.id != strings.TrimSpace(string(want)) || len(b.id) != 36 {
		t.Errorf("boot ID %q, want %q", b.id, want)
	}
	var info unix.Sysinfo_t
	if err := unix.Sysinfo(&info); err != nil {
		t.Fatal(err)
	}
	booted := time.Now().Add(-time.Duration(info.Uptime) * time.Second)
	if d := b.time.Sub(booted); d < -5*time.Second || d > 5*time.Second {
		t.Errorf("boot time %v, but the uptime says %v", b.time, booted)
	}
	s := &State{boot: b}
	if s.bootOfFile(time.Now()) != b.id || s.bootOfFile(b.time.Add(-time.Minute)) != "" {
		t.Error("bootOfFile: a file changed since the boot is of this boot, one older is of none known")
	}
}
