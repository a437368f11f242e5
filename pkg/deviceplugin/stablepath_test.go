package deviceplugin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2/ktesting"
	v1beta1 "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

const (
	wwnX = "/dev/disk/by-id/wwn-0x5000c500000000aa"
	wwnY = "/dev/disk/by-id/wwn-0x5000c500000000bb"
	wwnZ = "/dev/disk/by-id/wwn-0x5000c500000000cc-part1"
)

// bootHost lays out one boot of a node through a fixture tree (udev's
// by-id links cannot be made here without udev): disks X and Y under the
// given kernel names (empty: absent), each with its wwn- link; disk Z
// (sdd) with partition sdd1; a bound loop device and /dev/fuse, which have
// no by-id link. Kernel names follow probe order, so a reboot may swap X
// and Y; the links follow the disks.
func bootHost(t *testing.T, xName, yName string) *inventoryHost {
	t.Helper()
	tr := discoverytest.New(t)
	nd := func(maj, min uint32) discoverytest.DevNum { return discoverytest.DevNum{Major: maj, Minor: min} }
	minor := map[string]uint32{"sdb": 16, "sdc": 32}
	if xName != "" {
		tr.AddBlock(discoverytest.Block{Name: xName, Dev: nd(8, minor[xName]), Size: 1 << 30, ByID: []string{filepath.Base(wwnX)}})
	}
	if yName != "" {
		tr.AddBlock(discoverytest.Block{Name: yName, Dev: nd(8, minor[yName]), Size: 1 << 30, ByID: []string{filepath.Base(wwnY)}})
	}
	tr.AddBlock(discoverytest.Block{Name: "sdd", Dev: nd(8, 48), Size: 1 << 30, ByID: []string{"wwn-0x5000c500000000cc"}})
	tr.AddBlock(discoverytest.Block{Name: "sdd1", Parent: "sdd", Dev: nd(8, 49), Size: 1 << 29, ByID: []string{filepath.Base(wwnZ)}})
	tr.AddBlock(discoverytest.Block{Name: "loop3", Dev: nd(7, 3), Size: 1 << 30, BackingFile: "/var/lib/images/a.img"})
	tr.CharNode("/dev/fuse", 10, 229)
	cfg := &v1alpha1.DiscoveryConfig{Groups: []v1alpha1.DeviceGroup{
		{Name: "dev", Include: []string{"/dev/sd*", "/dev/loop*"}},
		{Name: "fuse", Types: []v1alpha1.DeviceType{v1alpha1.DeviceTypeChar}, Include: []string{"/dev/fuse"}},
	}}
	v1alpha1.SetDefaults(cfg)
	_, ctx := ktesting.NewTestContext(t)
	inv, err := discovery.Discover(ctx, cfg, discovery.WithHostRoot(tr.Root), discovery.WithStat(tr.Stat()), discovery.WithBlockOpener(tr.Open))
	if err != nil {
		t.Fatal(err)
	}
	return &inventoryHost{tr: tr, inv: inv}
}

type inventoryHost struct {
	tr  *discoverytest.Tree
	inv *discovery.Inventory
}

// open is what the runtime does with a DeviceSpec's host path when it
// creates the container: containerd's CRI resolves a symbolic link
// (filepath.EvalSymlinks) and takes the numbers of the node it reaches; a
// path that does not exist fails the container.
func (h *inventoryHost) open(hostPath string) (major, minor uint32, err error) {
	real, err := filepath.EvalSymlinks(h.tr.Path(hostPath))
	if err != nil {
		return 0, 0, err
	}
	if stat := h.tr.Stat(); stat != nil {
		_, major, minor, err = stat(real)
		return major, minor, err
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return 0, 0, err
	}
	return unix.Major(st.Rdev), unix.Minor(st.Rdev), nil
}

// serve runs a manager on the host's inventory, as the plugin does after
// each boot (with an empty CDI directory: /var/run/cdi is a tmpfs).
func (h *inventoryHost) serve(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.src.send(t, h.inv)
	return e
}

func allocate(t *testing.T, e *env, resource string, ids ...string) *v1beta1.ContainerAllocateResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.plugin(t, resource).Allocate(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	return resp.ContainerResponses[0]
}

// inject is what the runtime does with the CDI names of an allocation:
// resolve them in the CDI directory and apply their nodes.
func inject(t *testing.T, cdiDir string, c *v1beta1.ContainerAllocateResponse) ([]oci.LinuxDevice, error) {
	t.Helper()
	cache, err := cdi.NewCache(cdi.WithSpecDirs(cdiDir), cdi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	spec := &oci.Spec{Process: &oci.Process{User: oci.User{UID: 1000, GID: 1000}}, Linux: &oci.Linux{}}
	_, err = cache.InjectDevices(spec, cdiNames(c)...)
	return spec.Linux.Devices, err
}

// The kubelet keeps an allocation (DeviceSpecs and CDI names) in its
// checkpoint and, after a reboot, starts the pod's containers with it
// without calling Allocate again. Block devices with a by-id link are
// therefore named by it: when the reboot renumbers the disks, the reused
// allocation reaches the same disk, or does not start; it never reaches
// the disk that now has the old kernel name. Loop and character devices
// have no such link and are granted as before.
func TestAllocationReusedAfterReboot(t *testing.T) {
	boot1 := bootHost(t, "sdb", "sdc")
	e1 := boot1.serve(t)
	waitIDs(t, e1.plugin(t, "power-dev-plugin/dev"), "sdb", "sdc", "sdd1", "loop3")
	disk := allocate(t, e1, "power-dev-plugin/dev", "sdb")
	part := allocate(t, e1, "power-dev-plugin/dev", "sdd1")
	loop := allocate(t, e1, "power-dev-plugin/dev", "loop3")
	fuse := allocate(t, e1, "power-dev-plugin/fuse", "fuse")

	// Container paths stay the kernel paths; host paths are the links.
	for _, tc := range []struct {
		c                  *v1beta1.ContainerAllocateResponse
		paths              []string
		cdiName            string
		qualifiedCDIDevice bool
	}{
		{disk, []string{"/dev/sdb <- " + wwnX}, "power-dev-plugin.io/device=sdb.", true},
		{part, []string{"/dev/sdd1 <- " + wwnZ}, "power-dev-plugin.io/device=sdd1.", true},
		{loop, []string{"/dev/loop3"}, "power-dev-plugin.io/device=loop3", false},
		{fuse, []string{"/dev/fuse"}, "power-dev-plugin.io/device=fuse", false},
	} {
		if got := specPaths(tc.c); !equal(got, tc.paths) {
			t.Errorf("DeviceSpecs %v, want %v", got, tc.paths)
		}
		names := cdiNames(tc.c)
		if len(names) != 1 || !strings.HasPrefix(names[0], tc.cdiName) || (!tc.qualifiedCDIDevice && names[0] != tc.cdiName) {
			t.Errorf("CDI names %v, want one %s", names, tc.cdiName)
		}
	}
	// Before any reboot the allocation gives the disk it names.
	if maj, min, err := boot1.open(disk.Devices[0].HostPath); err != nil || maj != 8 || min != 16 {
		t.Errorf("boot 1: %s opens %d:%d (%v), want sdb 8:16", disk.Devices[0].HostPath, maj, min, err)
	}
	if devs, err := inject(t, e1.cdiDir, disk); err != nil || len(devs) != 1 || devs[0].Path != "/dev/sdb" || devs[0].Minor != 16 {
		t.Errorf("boot 1: CDI gives %+v (%v), want /dev/sdb 8:16", devs, err)
	}
	e1.stop()

	t.Run("disks renumbered", func(t *testing.T) {
		boot2 := bootHost(t, "sdc", "sdb") // X is sdc 8:32 now, Y took sdb 8:16
		e2 := boot2.serve(t)
		waitIDs(t, e2.plugin(t, "power-dev-plugin/dev"), "sdb", "sdc", "sdd1", "loop3")
		if maj, min, err := boot2.open(disk.Devices[0].HostPath); err != nil || maj != 8 || min != 32 {
			t.Errorf("the reused DeviceSpec %s opens %d:%d (%v), want disk X, now sdc 8:32 (never Y, now sdb 8:16)", disk.Devices[0].HostPath, maj, min, err)
		}
		devs, err := inject(t, e2.cdiDir, disk)
		if err == nil {
			t.Errorf("the reused CDI names %v resolve to %+v, want them undefined (sdb is another disk now)", cdiNames(disk), devs)
		}
		// What did not move is reused as it was.
		if maj, min, err := boot2.open(part.Devices[0].HostPath); err != nil || maj != 8 || min != 49 {
			t.Errorf("partition: %s opens %d:%d (%v), want sdd1 8:49", part.Devices[0].HostPath, maj, min, err)
		}
		for _, c := range []*v1beta1.ContainerAllocateResponse{part, loop, fuse} {
			if devs, err := inject(t, e2.cdiDir, c); err != nil || len(devs) != 1 || devs[0].Path != c.Devices[0].ContainerPath {
				t.Errorf("%v: CDI gives %+v (%v), want %s as before", cdiNames(c), devs, err, c.Devices[0].ContainerPath)
			}
		}
		if maj, min, err := boot2.open(loop.Devices[0].HostPath); err != nil || maj != 7 || min != 3 {
			t.Errorf("loop: %s opens %d:%d (%v), want loop3 7:3", loop.Devices[0].HostPath, maj, min, err)
		}
	})

	t.Run("disk gone", func(t *testing.T) {
		boot3 := bootHost(t, "", "sdb") // X removed, Y is sdb
		e3 := boot3.serve(t)
		waitIDs(t, e3.plugin(t, "power-dev-plugin/dev"), "sdb", "sdd1", "loop3")
		if maj, min, err := boot3.open(disk.Devices[0].HostPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the reused DeviceSpec %s opens %d:%d (%v), want it missing so the container does not start", disk.Devices[0].HostPath, maj, min, err)
		}
		if devs, err := inject(t, e3.cdiDir, disk); err == nil {
			t.Errorf("the reused CDI names %v resolve to %+v, want them undefined", cdiNames(disk), devs)
		}
	})
}

// A release before stable names called the CDI device of sdb "sdb", and
// the kubelet keeps that name for pods allocated then. Within the same
// boot (the spec such a release wrote is still in the CDI directory) the
// plain name stays defined so their containers can restart; a new
// allocation gets the qualified name; the plain name goes with its device
// and is never defined after a reboot (an empty CDI directory).
func TestCDIPlainNamesOfAnEarlierRelease(t *testing.T) {
	boot := bootHost(t, "sdb", "sdc")
	base := shortDir(t)
	cdiDir := filepath.Join(base, "cdi")
	if err := os.MkdirAll(cdiDir, 0o755); err != nil {
		t.Fatal(err)
	}
	old := `{"cdiVersion":"0.5.0","kind":"power-dev-plugin.io/device","devices":[` +
		`{"name":"sdb","containerEdits":{"deviceNodes":[{"path":"/dev/sdb","hostPath":"/dev/sdb","type":"b","major":8,"minor":16,"permissions":"rw"}]}}]}`
	if err := os.WriteFile(filepath.Join(cdiDir, CDISpecFile), []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, WithCDIDir(cdiDir))
	e.cdiDir = cdiDir
	e.src.send(t, boot.inv)
	waitIDs(t, e.plugin(t, "power-dev-plugin/dev"), "sdb", "sdc", "sdd1", "loop3")

	before := &v1beta1.ContainerAllocateResponse{CdiDevices: []*v1beta1.CDIDevice{{Name: "power-dev-plugin.io/device=sdb"}}}
	if devs, err := inject(t, cdiDir, before); err != nil || len(devs) != 1 || devs[0].Minor != 16 {
		t.Errorf("the earlier release's name: %+v (%v), want /dev/sdb 8:16", devs, err)
	}
	now := allocate(t, e, "power-dev-plugin/dev", "sdb")
	if n := cdiNames(now); len(n) != 1 || !strings.HasPrefix(n[0], "power-dev-plugin.io/device=sdb.") {
		t.Errorf("a new allocation names %v, want the qualified name", n)
	}
	// sdc had no plain name in the old spec, so it gets none.
	cache, err := cdi.NewCache(cdi.WithSpecDirs(cdiDir), cdi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if cache.GetDevice("power-dev-plugin.io/device=sdc") != nil {
		t.Error("sdc is defined under its plain name")
	}

	// sdb goes: its plain name goes with it and does not come back.
	gone := bootHost(t, "", "sdc")
	e.src.send(t, gone.inv)
	waitIDs(t, e.plugin(t, "power-dev-plugin/dev"), "sdc", "sdd1", "loop3")
	e.src.send(t, boot.inv)
	waitIDs(t, e.plugin(t, "power-dev-plugin/dev"), "sdb", "sdc", "sdd1", "loop3")
	eventually(t, 5*time.Second, "the spec written again with sdb", func() bool {
		c, err := cdi.NewCache(cdi.WithSpecDirs(cdiDir), cdi.WithAutoRefresh(false))
		return err == nil && len(c.ListDevices()) == 5 // sdb., sdc., sdd1., loop3, fuse
	})
	if _, err := inject(t, cdiDir, before); err == nil {
		t.Error("the plain name sdb is defined again after its device went away")
	}

	// After a reboot the CDI directory is empty: no plain name at all.
	e2 := boot.serve(t)
	waitIDs(t, e2.plugin(t, "power-dev-plugin/dev"), "sdb", "sdc", "sdd1", "loop3")
	if _, err := inject(t, e2.cdiDir, before); err == nil {
		t.Error("the plain name sdb is defined after a reboot")
	}
}

// A device handed out under its plain CDI name before udev made its by-id
// link (a new device can be published a moment before) keeps that name
// while it stays, next to the qualified one new allocations get.
func TestCDIPlainNameKeptWhenTheLinkAppears(t *testing.T) {
	e := newEnv(t)
	inv := func(links ...string) *discovery.Inventory {
		d := blockDev("dev", "sdb", 8, 16, "")
		d.Aliases = links
		return &discovery.Inventory{Groups: []discovery.Group{{Name: "dev", Permissions: "rw", Sharing: exclusive(), Devices: []discovery.Device{d}}}}
	}
	e.src.send(t, inv())
	waitIDs(t, e.plugin(t, "power-dev-plugin/dev"), "sdb")
	early := allocate(t, e, "power-dev-plugin/dev", "sdb")
	if got := specPaths(early); !equal(got, []string{"/dev/sdb"}) || !equal(cdiNames(early), []string{"power-dev-plugin.io/device=sdb"}) {
		t.Fatalf("without a link: %v %v", got, cdiNames(early))
	}
	e.src.send(t, inv(wwnX))
	var late *v1beta1.ContainerAllocateResponse
	eventually(t, 5*time.Second, "Allocate names the by-id link", func() bool {
		late = allocate(t, e, "power-dev-plugin/dev", "sdb")
		return late.Devices[0].HostPath == wwnX
	})
	for _, c := range []*v1beta1.ContainerAllocateResponse{early, late} {
		if devs, err := inject(t, e.cdiDir, c); err != nil || len(devs) != 1 || devs[0].Path != "/dev/sdb" || devs[0].Minor != 16 {
			t.Errorf("%v: %+v (%v), want /dev/sdb 8:16", cdiNames(c), devs, err)
		}
	}
	if n := cdiNames(late); len(n) != 1 || !strings.HasPrefix(n[0], "power-dev-plugin.io/device=sdb.") {
		t.Errorf("a new allocation names %v, want the qualified name", n)
	}
}
