package driver

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// Tests of what a claim gets after a reboot or a renumbering: the device
// it had, found by its identity, or nothing.

var (
	ptBoot1 = &bootInfo{id: "11111111-1111-1111-1111-111111111111", time: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	ptBoot2 = &bootInfo{id: "22222222-2222-2222-2222-222222222222", time: time.Now().Add(time.Second)}
)

// ptInjected returns the device nodes the container runtime gives a
// container for the CDI devices of a prepared claim, as CDI's
// InjectDevices (what containerd and CRI-O run) computes them.
func ptInjected(t *testing.T, cdiDir string, res kubeletplugin.PrepareResult) []oci.LinuxDevice {
	t.Helper()
	cache, err := cdi.NewCache(cdi.WithSpecDirs(cdiDir), cdi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range res.Devices {
		ids = append(ids, d.CDIDeviceIDs...)
	}
	spec := &oci.Spec{Process: &oci.Process{}, Linux: &oci.Linux{}}
	if unresolved, err := cache.InjectDevices(spec, ids...); err != nil {
		t.Fatalf("InjectDevices: %v (unresolved %v)", err, unresolved)
	}
	return spec.Linux.Devices
}

// ptDiscover runs discovery with one exclusive group of the given paths,
// under root (a fixture tree's, with its stat) or on this machine.
func ptDiscover(t *testing.T, tr *discoverytest.Tree, paths ...string) *discovery.Inventory {
	t.Helper()
	cfg := &v1alpha1.DiscoveryConfig{Groups: []v1alpha1.DeviceGroup{{Name: "disks", Include: paths, Permissions: "rw"}}}
	v1alpha1.SetDefaults(cfg)
	var opts []discovery.Option
	if tr != nil {
		opts = append(opts, discovery.WithHostRoot(tr.Root), discovery.WithStat(tr.Stat()), discovery.WithBlockOpener(tr.Open))
	}
	inv, err := discovery.Discover(ptCtx(t), cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// ptPublished returns the published device at path.
func ptPublished(t *testing.T, inv *discovery.Inventory, path string) discovery.Device {
	t.Helper()
	for _, g := range inv.Groups {
		for _, d := range g.Devices {
			if d.Path == path {
				return d
			}
		}
	}
	t.Fatalf("%s is not published: %+v", path, inv.Excluded)
	return discovery.Device{}
}

// ptReboot starts a plugin instance after a simulated reboot: a new boot
// ID, the CDI directory (tmpfs) emptied. It checks that nothing is written
// before the first inventory, then runs Restore with inv and returns the
// instance and how many claims failed.
func ptReboot(t *testing.T, ctx context.Context, env *ptEnv, inv *discovery.Inventory) (*State, int) {
	t.Helper()
	env.boot = ptBoot2
	if err := os.RemoveAll(env.cdiDir); err != nil {
		t.Fatal(err)
	}
	env.setInventory(nil)
	s := env.newState(t)
	if err := s.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if files, _ := filepath.Glob(filepath.Join(env.cdiDir, "*")); len(files) > 0 {
		t.Fatalf("specs written before the first inventory: %q", files)
	}
	env.setInventory(inv)
	failed, err := s.Restore(ctx)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	return s, failed
}

// The review's reboot scenario on the real kernel: a claim holds the loop
// device of one file; after a "reboot" the loop devices come back in the
// other order, so the claim's old number is now the other file's. The
// claim gets its own file's device, under its new number, and the other
// file's device stays free for others.
func TestStateRebootRenumberedLoopDevices(t *testing.T) {
	dir := t.TempDir()
	imgA, imgB := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
	for _, img := range []string{imgA, imgB} {
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 8<<20); err != nil {
			t.Fatal(err)
		}
	}
	devA, detachA := discoverytest.AttachLoop(t, imgA, "")
	devB, detachB := discoverytest.AttachLoop(t, imgB, "")
	ctx := ptCtx(t)
	env := newPtEnv(t)
	env.boot = ptBoot1
	env.realProbe = true
	inv1 := ptDiscover(t, nil, devA, devB)
	a1 := ptPublished(t, inv1, devA)
	env.setInventory(inv1)
	s := env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", a1.Name)))
	first := mustPrepare(t, ctx, s, foo)[foo.UID]

	// The reboot: both detached, b.img back first, under a.img's old number.
	detachA()
	detachB()
	devB2, _ := discoverytest.AttachLoop(t, imgB, devA)
	devA2, _ := discoverytest.AttachLoop(t, imgA, "")
	inv2 := ptDiscover(t, nil, devA, devA2)
	a2, b2 := ptPublished(t, inv2, devA2), ptPublished(t, inv2, devB2)
	if a2.Identity != a1.Identity || b2.Path != a1.Path {
		t.Fatalf("setup: a.img was %s (%s), is %s (%s); b.img is %s", a1.Path, a1.Identity, a2.Path, a2.Identity, b2.Path)
	}
	s, failed := ptReboot(t, ctx, env, inv2)
	if failed != 0 {
		t.Fatalf("%d claims not restored: %q", failed, s.DeviceProblems())
	}
	// The spec Restore wrote, and the repeated Prepare, give the
	// container a.img's device under the path it had.
	for _, when := range []string{"restored", "prepared again"} {
		devs := ptInjected(t, env.cdiDir, first)
		if len(devs) != 1 || devs[0].Path != devA || devs[0].Major != int64(a2.Major) || devs[0].Minor != int64(a2.Minor) {
			t.Errorf("%s: the container gets %+v, want %s as %d:%d (a.img's device %s)", when, devs, devA, a2.Major, a2.Minor, a2.Path)
		}
		if again := mustPrepare(t, ctx, s, foo)[foo.UID]; !reflect.DeepEqual(again, first) {
			t.Errorf("result changed: %+v", again)
		}
	}
	n := env.checkpoint(t).Claims[foo.UID].Devices[0].Nodes[0]
	if n.HostPath != a2.Path || n.Major != a2.Major || n.Minor != a2.Minor || n.Identity != a1.Identity {
		t.Errorf("recorded node %+v, want a.img's device %s %d:%d", n, a2.Path, a2.Major, a2.Minor)
	}
	// The name the claim was allocated now names b.img's device, which
	// is free; a.img's device, whatever its name, is the claim's.
	mustPrepare(t, ctx, s, ptClaim("bar", ptResults(ptResult("disk", b2.Name))))
	err := prepareErr(t, ctx, s, ptClaim("baz", ptResults(ptResult("disk", a2.Name))))
	if !strings.Contains(err.Error(), "is already prepared for claim default/foo") {
		t.Errorf("a.img's device for another claim: %v", err)
	}
}

// ptIdentified is ptInventory with an identity on every device, as
// discovery gives: "serial:<name>".
func ptIdentified() *discovery.Inventory {
	inv := ptInventory()
	for gi := range inv.Groups {
		for di := range inv.Groups[gi].Devices {
			d := &inv.Groups[gi].Devices[di]
			d.Identity = "serial:" + d.Name
		}
	}
	return inv
}

// ptDisk is a disk of a fixture tree, told apart by its WWN.
type ptDisk struct {
	name string
	dev  discoverytest.DevNum
	wwid string
	udev map[string]string
}

// ptDiskTree lays out disks on a host whose root is on vda1.
func ptDiskTree(t *testing.T, disks ...ptDisk) *discoverytest.Tree {
	t.Helper()
	tr := discoverytest.NewFake(t)
	for _, d := range disks {
		tr.AddBlock(discoverytest.Block{Name: d.name, Dev: d.dev, Size: 1 << 30, WWID: d.wwid, Udev: d.udev})
	}
	tr.Mount("/dev/vda1", discoverytest.DevNum{Major: 252, Minor: 1}, "/", "ext4")
	return tr
}

const (
	ptWWN1 = "naa.5000c500a1b2c301"
	ptWWN2 = "naa.5000c500a1b2c302"
)

var (
	ptSDB = discoverytest.DevNum{Major: 8, Minor: 16}
	ptSDC = discoverytest.DevNum{Major: 8, Minor: 32}
)

// The same on fixture trees with disks: sdb and sdc swap their names and
// numbers across the reboot (SCSI scan order).
func TestStateRebootRenumberedDisks(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	env.boot = ptBoot1
	inv1 := ptDiscover(t, ptDiskTree(t, ptDisk{"sdb", ptSDB, ptWWN1, nil}, ptDisk{"sdc", ptSDC, ptWWN2, nil}), "/dev/sdb", "/dev/sdc")
	env.setInventory(inv1)
	s := env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", "sdb")))
	first := mustPrepare(t, ctx, s, foo)[foo.UID]
	env.takeProbed()

	inv2 := ptDiscover(t, ptDiskTree(t, ptDisk{"sdb", ptSDB, ptWWN2, nil}, ptDisk{"sdc", ptSDC, ptWWN1, nil}), "/dev/sdb", "/dev/sdc")
	s, failed := ptReboot(t, ctx, env, inv2)
	if failed != 0 {
		t.Fatalf("%d claims not restored: %q", failed, s.DeviceProblems())
	}
	devs := ptInjected(t, env.cdiDir, first)
	if len(devs) != 1 || devs[0].Path != "/dev/sdb" || devs[0].Major != 8 || devs[0].Minor != 32 {
		t.Errorf("the container gets %+v, want /dev/sdb as 8:32 (the disk with WWN %s, now sdc)", devs, ptWWN1)
	}
	// After a restart nothing of the claim's pod runs yet: the kernel is
	// asked whether the node holds the disk, once.
	if got := env.takeProbed(); !reflect.DeepEqual(got, []string{"/dev/sdc"}) {
		t.Errorf("probed %q, want the disk at its new path once", got)
	}
	mustPrepare(t, ctx, s, foo)
	if got := env.takeProbed(); len(got) != 0 {
		t.Errorf("a repeated Prepare in the same boot probed %q", got)
	}
	mustPrepare(t, ctx, s, ptClaim("bar", ptResults(ptResult("disk", "sdb"))))
	if err := prepareErr(t, ctx, s, ptClaim("baz", ptResults(ptResult("disk", "sdc")))); !strings.Contains(err.Error(), "already prepared for claim default/foo") {
		t.Errorf("the claim's disk, now sdc, for another claim: %v", err)
	}
}

// After a reboot, a claim whose disk is gone, or cannot be told apart, or
// is held by the node, gets no spec and fails with a message that names
// the device and what changed; its devices are unhealthy; the other claims
// work, and all can be unprepared.
func TestStateRebootDeviceGoneOrChanged(t *testing.T) {
	type tc struct {
		name  string
		disks []ptDisk
		held  map[string]error
		want  string
	}
	for _, c := range []tc{{
		name:  "gone, its name now another disk's",
		disks: []ptDisk{{"sdb", ptSDB, ptWWN2, nil}},
		want: `claim default/foo: device "sdb": the claim got /dev/sdb (b 8:16), identity wwn:naa.5000c500a1b2c301, and no device ` +
			`on the node has that identity now; /dev/sdb (b 8:16) is now /dev/sdb (b 8:16, identity wwn:naa.5000c500a1b2c302). The claim is not prepared`,
	}, {
		name:  "two disks with its identity",
		disks: []ptDisk{{"sdb", ptSDB, ptWWN1, nil}, {"sdd", discoverytest.DevNum{Major: 8, Minor: 48}, ptWWN1, nil}},
		want:  `claim default/foo: device "sdb": the claim got /dev/sdb (b 8:16), identity wwn:naa.5000c500a1b2c301, and 2 devices have that identity now (/dev/sdb, /dev/sdd)`,
	}, {
		name:  "held by the node",
		disks: []ptDisk{{"sdb", ptSDB, ptWWN1, nil}},
		held:  map[string]error{"/dev/sdb": os.ErrPermission},
		want:  `claim default/foo: after the node restarted: permission denied`,
	}} {
		t.Run(c.name, func(t *testing.T) {
			ctx := ptCtx(t)
			env := newPtEnv(t)
			env.boot = ptBoot1
			inv := ptDiscover(t, ptDiskTree(t, ptDisk{"sdb", ptSDB, ptWWN1, nil}), "/dev/sdb")
			inv.Groups = append(inv.Groups, ptIdentified().Groups...)
			env.setInventory(inv)
			s := env.state(t, ctx)
			foo := ptClaim("foo", ptResults(ptResult("disk", "sdb")))
			bar := ptClaim("bar", ptResults(ptResult("disk", "loop0")))
			mustPrepare(t, ctx, s, foo, bar)

			inv = ptDiscover(t, ptDiskTree(t, c.disks...), "/dev/sd*")
			inv.Groups = append(inv.Groups, ptIdentified().Groups...)
			env.held = c.held
			s, failed := ptReboot(t, ctx, env, inv)
			if failed != 1 {
				t.Errorf("%d claims not restored, want 1", failed)
			}
			if ptExists(env.specPath(foo.UID)) {
				t.Error("a spec was written for the claim")
			}
			if !ptExists(env.specPath(bar.UID)) {
				t.Error("the other claim's spec was not restored")
			}
			err := prepareErr(t, ctx, s, foo)
			if !strings.HasPrefix(err.Error(), c.want) {
				t.Errorf("Prepare:\n got %q\nwant %q...", err, c.want)
			}
			if got := s.DeviceProblems(); got["sdb"] != err.Error() || len(got) != 1 {
				t.Errorf("DeviceProblems = %q, want sdb with the error", got)
			}
			// What the kubelet hears, also when the name sdb is now
			// another disk's.
			d := &Driver{state: s}
			d.opts.nodeName = ptNode
			for _, h := range d.healthReport(inv, time.Now()).Devices {
				unhealthy := h.Health == kubeletplugin.HealthStatusUnhealthy
				if (h.DeviceName == "sdb") != unhealthy || (unhealthy && !strings.HasPrefix(err.Error(), h.Message)) {
					t.Errorf("health of %s: %s %q", h.DeviceName, h.Health, h.Message)
				}
			}
			mustPrepare(t, ctx, s, bar)
			mustUnprepare(t, ctx, s, ptRef(foo), ptRef(bar))
			if got := s.DeviceProblems(); len(got) != 0 {
				t.Errorf("DeviceProblems after Unprepare = %q", got)
			}
		})
	}
}

// A claim's own disk may be left out by now, because its pod uses it (here
// it put LVM on it): a repeated Prepare finds it anyway. After a reboot
// too, once the kernel says that the node does not hold it.
func TestStatePrepareAgainWhenOwnDeviceIsExcluded(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	env.boot = ptBoot1
	env.setInventory(ptDiscover(t, ptDiskTree(t, ptDisk{"sdb", ptSDB, ptWWN1, nil}), "/dev/sdb"))
	s := env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", "sdb")))
	first := mustPrepare(t, ctx, s, foo)[foo.UID]
	env.takeProbed()

	inv := ptDiscover(t, ptDiskTree(t, ptDisk{"sdb", ptSDB, ptWWN1, map[string]string{"ID_FS_TYPE": "LVM2_member", "ID_FS_USAGE": "raid"}}), "/dev/sdb")
	if len(inv.Groups[0].Devices) != 0 {
		t.Fatalf("setup: sdb is published: %+v", inv.Groups[0].Devices)
	}
	env.setInventory(inv)
	if again := mustPrepare(t, ctx, s, foo)[foo.UID]; !reflect.DeepEqual(again, first) {
		t.Errorf("result changed: %+v", again)
	}
	s, failed := ptReboot(t, ctx, env, inv)
	if failed != 0 {
		t.Fatalf("not restored: %q", s.DeviceProblems())
	}
	mustPrepare(t, ctx, s, foo)
	if got := env.takeProbed(); !reflect.DeepEqual(got, []string{"/dev/sdb"}) {
		t.Errorf("probed %q", got)
	}
}

// A disk without a WWN, serial or UUID is known by its kernel name for one
// boot only: after a reboot its claim fails closed.
func TestStateRebootDeviceWithoutStableIdentity(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	env.boot = ptBoot1
	inv := ptDiscover(t, ptDiskTree(t, ptDisk{"sdb", ptSDB, "", nil}), "/dev/sdb")
	if id := inv.Groups[0].Devices[0].Identity; id != "kname:sdb" {
		t.Fatalf("setup: identity %q", id)
	}
	env.setInventory(inv)
	s := env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", "sdb")))
	mustPrepare(t, ctx, s, foo)
	mustPrepare(t, ctx, s, foo) // same boot: fine
	s, failed := ptReboot(t, ctx, env, inv)
	if failed != 1 {
		t.Errorf("%d claims not restored, want 1", failed)
	}
	err := prepareErr(t, ctx, s, foo)
	if want := `claim default/foo: device "sdb": the claim got /dev/sdb (b 8:16), which has nothing stable to tell it by (identity kname:sdb: no WWN, serial, UUID or udev path), and the node restarted since`; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("err:\n got %q\nwant %q...", err, want)
	}
}

// The checkpoint the release before wrote (v1, no identities) is read.
// Written in this boot, its claims are adopted by path and numbers; written
// before this boot began, they fail closed. Either way they can be
// unprepared, and the file is rewritten in the current format.
func TestStateReadsCheckpointV1(t *testing.T) {
	sample, err := os.ReadFile("testdata/checkpoint-v1.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, thisBoot := range []bool{true, false} {
		name := "written before this boot"
		if thisBoot {
			name = "written in this boot"
		}
		t.Run(name, func(t *testing.T) {
			ctx := ptCtx(t)
			env := newPtEnv(t)
			env.boot = ptBoot1
			env.setInventory(ptIdentified())
			cpPath := filepath.Join(env.dataDir, CheckpointFileName)
			if err := os.MkdirAll(env.dataDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(cpPath, sample, 0o600); err != nil {
				t.Fatal(err)
			}
			mtime := ptBoot1.time.Add(-time.Hour)
			if thisBoot {
				mtime = ptBoot1.time.Add(time.Hour)
			}
			if err := os.Chtimes(cpPath, mtime, mtime); err != nil {
				t.Fatal(err)
			}
			s := env.state(t, ctx)
			foo := ptClaim("foo", ptResults(ptResult("disk", "loop0"), ptResult("all", "mp-all")))
			bar := ptClaim("bar", ptResults(ptResult("fs", "fuse")))

			b, _ := os.ReadFile(cpPath)
			if !strings.HasPrefix(string(b), `{"version":"v2",`) {
				t.Errorf("checkpoint not rewritten as v2: %.40s", b)
			}
			cp := env.checkpoint(t)
			if len(cp.Claims) != 2 {
				t.Fatalf("claims %v", cp.Claims)
			}
			if thisBoot {
				res := mustPrepare(t, ctx, s, foo, bar)
				if got := res[foo.UID].Devices; len(got) != 2 || got[0].CDIDeviceIDs[0] != "power-dev-plugin.io/claim=uid-foo_loop0" {
					t.Errorf("result %+v", got)
				}
				for _, d := range env.checkpoint(t).Claims[foo.UID].Devices {
					for _, n := range d.Nodes {
						if want := "serial:" + strings.TrimPrefix(n.HostPath, "/dev/mapper/"); d.Device == "loop0" && n.Identity != "serial:loop0" ||
							d.Device == "mp-all" && n.Identity != want {
							t.Errorf("node %s: identity %q not adopted", n.HostPath, n.Identity)
						}
					}
				}
				if err := prepareErr(t, ctx, s, ptClaim("baz", ptResults(ptResult("disk", "loop0")))); !strings.Contains(err.Error(), "already prepared for claim default/foo") {
					t.Errorf("the adopted claim's device for another claim: %v", err)
				}
			} else {
				for _, c := range []*resourceapi.ResourceClaim{foo, bar} {
					err := prepareErr(t, ctx, s, c)
					if !strings.Contains(err.Error(), "before the node restarted, and the record does not say which device that was") {
						t.Errorf("%s: %v", c.Name, err)
					}
					if ptExists(env.specPath(c.UID)) {
						t.Errorf("%s: spec written", c.Name)
					}
				}
			}
			mustUnprepare(t, ctx, s, ptRef(foo), ptRef(bar))
			if len(env.checkpoint(t).Claims) != 0 {
				t.Error("claims left after Unprepare")
			}
		})
	}
}
