package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// ptRefusedLeavesNothing checks that a refused claim has no spec file and
// no checkpoint entry.
func ptRefusedLeavesNothing(t *testing.T, env *ptEnv, claim *resourceapi.ResourceClaim) {
	t.Helper()
	if ptExists(env.specPath(claim.UID)) {
		t.Errorf("refused claim %s got a spec file", claim.Name)
	}
	if _, ok := env.checkpoint(t).Claims[claim.UID]; ok {
		t.Errorf("refused claim %s is in the checkpoint", claim.Name)
	}
}

// The real kernel: a loop device mounted in a private mount namespace is
// not in the host's mount table, so discovery publishes it; Prepare asks
// the kernel and refuses it. A claim that is already prepared is not
// probed again: its own container may hold the device.
func TestStatePrepareRefusesDeviceHeldInPrivateMount(t *testing.T) {
	dev, _ := discoverytest.LoopDevice(t, 16<<20)
	loop, _ := ptRealNode(t, "loop", dev)
	loop.Group = "disks"
	ctx := ptCtx(t)
	env := newPtEnv(t)
	env.realProbe = true
	env.setInventory(&discovery.Inventory{Groups: []discovery.Group{{
		Name: "disks", Permissions: "rw", Sharing: v1alpha1.Sharing{Mode: v1alpha1.SharingExclusive},
		Devices: []discovery.Device{loop},
	}}})
	s := env.state(t, ctx)

	first := ptClaim("first", ptResults(ptResult("d", "loop")))
	mustPrepare(t, ctx, s, first)
	discoverytest.HoldInPrivateMount(t, dev) // e.g. the first claim's pod mounted it
	// The kubelet prepares a claim again (another pod of it, a kubelet
	// restart): the device is held, by that claim's own pod.
	mustPrepare(t, ctx, s, first)
	mustUnprepare(t, ctx, s, ptRef(first))

	// The device is still held, now by something no claim accounts for.
	second := ptClaim("second", ptResults(ptResult("d", "loop")))
	err := prepareErr(t, ctx, s, second)
	if !discovery.IsBusy(err) {
		t.Errorf("err %v, want the kernel's EBUSY", err)
	}
	want := fmt.Sprintf(`claim default/second: device "loop": block device %s (%d:%d) is in use on the node`, dev, loop.Major, loop.Minor)
	if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "mount namespace") {
		t.Errorf("err:\n got %q\nwant it to contain %q and say why", err, want)
	}
	ptRefusedLeavesNothing(t, env, second)
}

// Which devices Prepare asks the kernel about (a fake probe stands for it:
// the inventory is made up).
func TestStatePrepareChecksNotHeld(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	inv := ptInventory()
	inv.Groups = append(inv.Groups, discovery.Group{
		Name: "shared-disks", Permissions: "rw", Sharing: v1alpha1.Sharing{Mode: v1alpha1.SharingShared},
		Devices: []discovery.Device{{Name: "sdf", Group: "shared-disks", Path: "/dev/sdf", Type: v1alpha1.DeviceTypeBlock, Major: 8, Minor: 80}},
	}, discovery.Group{
		Name: "allowed", Permissions: "rw", Sharing: v1alpha1.Sharing{Mode: v1alpha1.SharingExclusive},
		Devices: []discovery.Device{{Name: "sdg", Group: "allowed", Path: "/dev/sdg", Type: v1alpha1.DeviceTypeBlock, Major: 8, Minor: 96, InUseAllowed: true}},
	})
	env.setInventory(inv)
	env.held = map[string]error{}
	s := env.state(t, ctx)
	probed := func(what string, want ...string) {
		t.Helper()
		got := env.takeProbed()
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: probed %q, want %q", what, got, want)
		}
	}

	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0"), ptResult("fs", "fuse")))
	mustPrepare(t, ctx, s, foo)
	probed("exclusive block device and a char device", "/dev/loop0")
	mustPrepare(t, ctx, s, foo)
	probed("repeated Prepare")

	mustPrepare(t, ctx, s, ptClaim("bundle", ptResults(ptResult("all", "mp-all"))))
	probed("bundle", "/dev/mapper/mpatha", "/dev/mapper/mpathb", "/dev/mapper/mpathc")

	r := ptResult("d", "sdf")
	r.ShareID = ptr.To(types.UID("00000000-0000-0000-0000-000000000001"))
	mustPrepare(t, ctx, s, ptClaim("shared", ptResults(r)))
	probed("shared group")
	mustPrepare(t, ctx, s, ptClaim("allowed", ptResults(ptResult("d", "sdg"))))
	probed("listed in allowInUse (the probe sees it, CheckNotHeld skips it)", "/dev/sdg")

	admin := ptResult("d", "loop0")
	admin.AdminAccess = ptr.To(true)
	adminClaim := ptClaim("admin", ptResults(admin))
	mustPrepare(t, ctx, s, adminClaim)
	probed("admin access")
	mustUnprepare(t, ctx, s, ptRef(adminClaim))

	// A refusal names the claim and device and leaves nothing behind; the
	// other claims of the batch are prepared.
	env.held["/dev/loop1"] = errors.New("block device /dev/loop1 (7:1) is in use on the node")
	bar, baz := ptClaim("bar", ptResults(ptResult("d", "loop1"))), ptClaim("baz", ptResults(ptResult("d", "zero")))
	res := s.Prepare(ctx, []*resourceapi.ResourceClaim{bar, baz})
	if err := res[bar.UID].Err; err == nil || err.Error() != `claim default/bar: device "loop1": block device /dev/loop1 (7:1) is in use on the node` {
		t.Errorf("held device: %v", err)
	}
	if res[baz.UID].Err != nil {
		t.Errorf("other claim of the batch: %v", res[baz.UID].Err)
	}
	ptRefusedLeavesNothing(t, env, bar)
	probed("batch", "/dev/loop1")

	// A claim recovered from its spec file (the checkpoint was lost) is
	// planned afresh, but its pod may hold its device: not probed.
	mustUnprepare(t, ctx, s, ptRef(foo))
	env.takeProbed()
	mustPrepare(t, ctx, s, foo)
	probed("prepare again after unprepare", "/dev/loop0")
	if err := os.RemoveAll(env.dataDir); err != nil {
		t.Fatal(err)
	}
	env.held["/dev/loop0"] = errors.New("held by foo's own pod")
	s = env.state(t, ctx)
	if e := env.checkpoint(t).Claims[foo.UID]; e == nil || !e.Recovered {
		t.Fatalf("claim not recovered: %+v", e)
	}
	mustPrepare(t, ctx, s, foo)
	probed("recovered claim")
}

// The checks that cannot be made fail closed, through the real
// CheckNotHeld on a fixture host root: a node that is gone, a node that is
// now another device.
func TestStatePrepareFailsClosedWhenTheCheckCannotBeMade(t *testing.T) {
	ctx := ptCtx(t)
	tr := discoverytest.New(t)
	tr.Mkdir("/dev/mapper")
	tr.CharNode("/dev/loop0", 1, 3) // not the block device 7:0 any more
	env := newPtEnv(t)
	env.realProbe = true
	s, err := NewState(WithStateNodeName(ptNode), WithStateCDIDir(env.cdiDir), WithStateDataDir(env.dataDir),
		WithStateInventory(env.inventory), WithStateHostRoot(tr.Root))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		claim *resourceapi.ResourceClaim
		want  string
	}{
		{ptClaim("renumbered", ptResults(ptResult("d", "loop0"))),
			`claim default/renumbered: device "loop0": block device /dev/loop0 (7:0) is not handed out: /dev/loop0 is no longer a block device node. The node's devices changed`},
		{ptClaim("gone", ptResults(ptResult("d", "loop1"))),
			`claim default/gone: device "loop1": block device /dev/loop1 (7:1) is gone from the node (no such file or directory)`},
	} {
		err := prepareErr(t, ctx, s, tc.claim)
		if !strings.Contains(err.Error(), tc.want) || discovery.IsBusy(err) {
			t.Errorf("%s:\n got %q\nwant %q", tc.claim.Name, err, tc.want)
		}
		ptRefusedLeavesNothing(t, env, tc.claim)
	}
}

// The driver checks under its host root (the plugin's --host-root).
func TestDriverChecksUnderHostRoot(t *testing.T) {
	ctx := ptCtx(t)
	tr := discoverytest.New(t)
	tr.CharNode("/dev/sdq", 1, 3) // under the host root: no longer the block device
	base, err := os.MkdirTemp("", "pdp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	d, err := Start(ctx, WithKubeClient(newFakeClient()), WithNodeName(ptNode), WithCDIDir(filepath.Join(base, "cdi")),
		WithRegistrarDir(filepath.Join(base, "reg")), WithPluginDataDir(filepath.Join(base, "data")), WithHostRoot(tr.Root))
	if err != nil {
		t.Fatal(err)
	}
	defer d.helper.Stop()
	d.setInventory(inventoryForTest(groupForTest("disks", discovery.Device{
		Name: "sdq", Path: "/dev/sdq", Type: v1alpha1.DeviceTypeBlock, Major: 65, Minor: 0})))
	claim := ptClaim("c", ptResults(ptResult("d", "sdq")))
	res, err := d.PrepareResourceClaims(ctx, []*resourceapi.ResourceClaim{claim})
	if err != nil {
		t.Fatal(err)
	}
	if err := res[claim.UID].Err; err == nil || !strings.Contains(err.Error(), "/dev/sdq is no longer a block device node") {
		t.Errorf("Prepare: %v, want the check under the host root %s", err, tr.Root)
	}
}
