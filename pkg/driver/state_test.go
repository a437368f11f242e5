package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	"k8s.io/utils/ptr"

	"golang.org/x/sys/unix"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// ptEnv is a node: a CDI dir, a data dir and a swappable inventory.
type ptEnv struct {
	cdiDir, dataDir string
	mu              sync.Mutex
	inv             *discovery.Inventory
	// realProbe keeps discovery.CheckNotHeld on the host's /dev; else
	// fakeProbe stands for it (ptInventory's devices are made up).
	realProbe bool
	probed    []string         // paths fakeProbe was asked about
	held      map[string]error // fakeProbe's answer by path
	// boot, when set, is the boot the plugin instances run in (else the
	// machine's): a test changes it to simulate a reboot.
	boot *bootInfo
}

func newPtEnv(t testing.TB) *ptEnv {
	dir := t.TempDir()
	return &ptEnv{cdiDir: filepath.Join(dir, "cdi"), dataDir: filepath.Join(dir, "data"), inv: ptInventory()}
}

func (e *ptEnv) inventory() *discovery.Inventory {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.inv
}

// fakeProbe records the block devices Prepare checks and answers from held.
func (e *ptEnv) fakeProbe(d *discovery.Device) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.probed = append(e.probed, d.Path)
	return e.held[d.Path]
}

// takeProbed returns the paths probed since the last call.
func (e *ptEnv) takeProbed() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.probed
	e.probed = nil
	return p
}

func (e *ptEnv) setInventory(inv *discovery.Inventory) {
	e.mu.Lock()
	e.inv = inv
	e.mu.Unlock()
}

var ptClockTime = time.Date(2026, 11, 30, 4, 5, 6, 7, time.UTC)

// state starts a plugin instance on the node, as at process start:
// NewState then Reconcile, and Restore once there is an inventory, as the
// driver does when the first one arrives.
func (e *ptEnv) state(t testing.TB, ctx context.Context) *State {
	t.Helper()
	s := e.newState(t)
	if err := s.Reconcile(ctx); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if e.inventory() != nil {
		if _, err := s.Restore(ctx); err != nil {
			t.Fatalf("Restore: %v", err)
		}
	}
	return s
}

// newState makes a plugin instance without touching anything on disk.
func (e *ptEnv) newState(t testing.TB) *State {
	t.Helper()
	opts := []StateOption{WithStateNodeName(ptNode), WithStateCDIDir(e.cdiDir), WithStateDataDir(e.dataDir),
		WithStateInventory(e.inventory), WithStateClock(func() time.Time { return ptClockTime })}
	if e.boot != nil {
		opts = append(opts, WithStateBoot(e.boot.id, e.boot.time))
	}
	s, err := NewState(opts...)
	if err != nil {
		t.Fatal(err)
	}
	if !e.realProbe {
		s.probe = e.fakeProbe
	}
	return s
}

func (e *ptEnv) specPath(uid types.UID) string { return filepath.Join(e.cdiDir, CDISpecName(uid)) }

func (e *ptEnv) checkpoint(t testing.TB) *Checkpoint {
	t.Helper()
	cp, _, err := LoadCheckpoint(filepath.Join(e.dataDir, CheckpointFileName))
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func ptExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func mustPrepare(t testing.TB, ctx context.Context, s *State, claims ...*resourceapi.ResourceClaim) map[types.UID]kubeletplugin.PrepareResult {
	t.Helper()
	res := s.Prepare(ctx, claims)
	for _, c := range claims {
		r, ok := res[c.UID]
		if !ok {
			t.Fatalf("no result for claim %s", c.Name)
		}
		if r.Err != nil {
			t.Fatalf("prepare %s: %v", c.Name, r.Err)
		}
	}
	return res
}

func prepareErr(t testing.TB, ctx context.Context, s *State, claim *resourceapi.ResourceClaim) error {
	t.Helper()
	r, ok := s.Prepare(ctx, []*resourceapi.ResourceClaim{claim})[claim.UID]
	if !ok {
		t.Fatalf("no result for claim %s", claim.Name)
	}
	if r.Err == nil {
		t.Fatalf("prepare %s succeeded: %+v", claim.Name, r.Devices)
	}
	return r.Err
}

func ptRef(c *resourceapi.ResourceClaim) kubeletplugin.NamespacedObject {
	return kubeletplugin.NamespacedObject{NamespacedName: types.NamespacedName{Namespace: c.Namespace, Name: c.Name}, UID: c.UID}
}

func mustUnprepare(t testing.TB, ctx context.Context, s *State, refs ...kubeletplugin.NamespacedObject) {
	t.Helper()
	res := s.Unprepare(ctx, refs)
	for _, r := range refs {
		if err, ok := res[r.UID]; !ok || err != nil {
			t.Fatalf("unprepare %s: present %v, err %v", r, ok, err)
		}
	}
}

type ptCrash struct{ point string }

// crashAt runs fn and simulates the process dying at point: the panic
// unwinds like an exit (file locks are released) and nothing after the
// point runs.
func crashAt(t testing.TB, s *State, point string, fn func()) {
	t.Helper()
	s.fault = func(p string) {
		if p == point {
			panic(ptCrash{p})
		}
	}
	defer func() { s.fault = nil }()
	crashed := false
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(ptCrash); !ok {
					panic(r)
				}
				crashed = true
			}
		}()
		fn()
	}()
	if !crashed {
		t.Fatalf("never reached crash point %q", point)
	}
}

func TestNewStateOptions(t *testing.T) {
	inv := func() *discovery.Inventory { return nil }
	if _, err := NewState(WithStateInventory(inv)); err == nil || !strings.Contains(err.Error(), "node name is required") {
		t.Errorf("without node name: %v", err)
	}
	if _, err := NewState(WithStateNodeName("n")); err == nil || !strings.Contains(err.Error(), "inventory source is required") {
		t.Errorf("without inventory: %v", err)
	}
	s, err := NewState(WithStateNodeName("n"), WithStateInventory(inv), WithStateCDIDir(""), WithStateDataDir(""))
	if err != nil {
		t.Fatal(err)
	}
	if s.CDIDir() != "/var/run/cdi" || s.CheckpointPath() != "/var/lib/kubelet/plugins/power-dev-plugin.io/checkpoint.json" {
		t.Errorf("defaults: %s %s", s.CDIDir(), s.CheckpointPath())
	}
}

func TestStatePrepareIsIdempotent(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	claim := ptClaim("foo", ptResults(ptResult("disk", "loop0"), ptResult("all", "mp-all")))
	first := mustPrepare(t, ctx, s, claim)[claim.UID]
	want := kubeletplugin.PrepareResult{Devices: []kubeletplugin.Device{
		{Requests: []string{"disk"}, PoolName: ptNode, DeviceName: "loop0", CDIDeviceIDs: []string{"power-dev-plugin.io/claim=uid-foo_loop0"}},
		{Requests: []string{"all"}, PoolName: ptNode, DeviceName: "mp-all", CDIDeviceIDs: []string{"power-dev-plugin.io/claim=uid-foo_mp-all"}},
	}}
	if !reflect.DeepEqual(first, want) {
		t.Fatalf("result:\n got %+v\nwant %+v", first, want)
	}
	spec, cpPath := env.specPath(claim.UID), s.CheckpointPath()
	specID, cpID := ptFileID(t, spec), ptFileID(t, cpPath)

	// Same call again, and again from a restarted plugin: same result,
	// nothing rewritten.
	for i, st := range []*State{s, env.state(t, ctx)} {
		again := mustPrepare(t, ctx, st, claim)[claim.UID]
		if !reflect.DeepEqual(again, first) {
			t.Errorf("call %d: result changed:\n got %+v\nwant %+v", i+2, again, first)
		}
		if id := ptFileID(t, spec); id != specID {
			t.Errorf("call %d: spec rewritten (%s -> %s)", i+2, specID, id)
		}
		if id := ptFileID(t, cpPath); id != cpID {
			t.Errorf("call %d: checkpoint rewritten (%s -> %s)", i+2, cpID, id)
		}
	}
	if got := s.PreparedDeviceNames(); !reflect.DeepEqual(got, []string{"loop0", "mp-all"}) {
		t.Errorf("PreparedDeviceNames = %q", got)
	}
	p := s.Prepared()
	if len(p) != 1 || p[claim.UID].Name != "foo" || len(p[claim.UID].Devices) != 2 {
		t.Errorf("Prepared = %+v", p)
	}
}

// A prepared claim whose device leaves the node: its recorded numbers are
// handed to nobody, neither to a repeat of it (another device may get
// them) nor to a new claim; once the device is back, the claim is answered
// as before.
func TestStatePrepareWhenDeviceLaterGoes(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	first := mustPrepare(t, ctx, s, foo)[foo.UID]
	spec, _ := os.ReadFile(env.specPath(foo.UID))
	env.setInventory(&discovery.Inventory{})
	err := prepareErr(t, ctx, s, foo)
	if want := `claim default/foo: device "loop0": the claim got /dev/loop0 (b 7:0), which is gone from the node; nothing is at /dev/loop0 (b 7:0) now. The claim is not prepared`; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("repeat:\n got %q\nwant %q...", err, want)
	}
	if ptExists(env.specPath(foo.UID)) {
		t.Error("the spec with numbers that are nobody's now was kept (a container restart would use it)")
	}
	if _, ok := env.checkpoint(t).Claims[foo.UID]; !ok {
		t.Error("the claim is no longer recorded: Unprepare could not undo it")
	}
	if got := s.DeviceProblems(); !strings.Contains(got["loop0"], "gone from the node") {
		t.Errorf("DeviceProblems = %q", got)
	}
	err = prepareErr(t, ctx, s, ptClaim("bar", ptResults(ptResult("disk", "loop0"))))
	if want := `device "loop0" allocated to claim default/bar is no longer on this node`; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	// Before the first discovery nothing can be checked: nothing is answered.
	env.setInventory(nil)
	if err := prepareErr(t, ctx, s, foo); !strings.Contains(err.Error(), "have not been discovered yet") {
		t.Errorf("repeat before discovery: %v", err)
	}
	err = prepareErr(t, ctx, s, ptClaim("bar", ptResults(ptResult("disk", "loop0"))))
	if want := "claim default/bar: the node's devices have not been discovered yet; the kubelet will retry"; err.Error() != want {
		t.Errorf("err = %q, want %q", err, want)
	}
	// The device is back: the repeat answers as before, with its spec.
	env.setInventory(ptInventory())
	if again := mustPrepare(t, ctx, s, foo)[foo.UID]; !reflect.DeepEqual(again, first) {
		t.Errorf("result changed: %+v", again)
	}
	if got, _ := os.ReadFile(env.specPath(foo.UID)); string(got) != string(spec) {
		t.Errorf("spec:\n got %s\nwant %s", got, spec)
	}
	if got := s.DeviceProblems(); len(got) != 0 {
		t.Errorf("DeviceProblems = %q", got)
	}
}

func TestStatePrepareReplansChangedAllocation(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	mustPrepare(t, ctx, s, foo)
	// Deallocated and allocated anew under the same UID, without an
	// Unprepare in between: the new allocation wins and loop0 is free.
	foo2 := ptClaim("foo", ptResults(ptResult("disk", "loop1")))
	res := mustPrepare(t, ctx, s, foo2)[foo.UID]
	if len(res.Devices) != 1 || res.Devices[0].DeviceName != "loop1" {
		t.Errorf("result = %+v", res)
	}
	b, _ := os.ReadFile(env.specPath(foo.UID))
	if !strings.Contains(string(b), `"/dev/loop1"`) || strings.Contains(string(b), `"/dev/loop0"`) {
		t.Errorf("spec not updated: %s", b)
	}
	mustPrepare(t, ctx, s, ptClaim("bar", ptResults(ptResult("disk", "loop0"))))
}

func TestStateUnprepare(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	// Unknown claims succeed, before and after anything was prepared.
	mustUnprepare(t, ctx, s, ptRef(ptClaim("never", nil)))

	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	bar := ptClaim("bar", ptResults(ptResult("fs", "fuse")))
	mustPrepare(t, ctx, s, foo, bar)
	if !ptExists(env.specPath(foo.UID)) || !ptExists(env.specPath(bar.UID)) {
		t.Fatal("spec files missing after prepare")
	}
	mustUnprepare(t, ctx, s, ptRef(foo), ptRef(ptClaim("never", nil)))
	if ptExists(env.specPath(foo.UID)) {
		t.Error("spec of foo left behind")
	}
	if !ptExists(env.specPath(bar.UID)) {
		t.Error("spec of bar removed")
	}
	cp := env.checkpoint(t)
	if _, ok := cp.Claims[foo.UID]; ok || cp.Claims[bar.UID] == nil {
		t.Errorf("checkpoint claims = %v", cp.Claims)
	}
	if _, ok := s.Prepared()[foo.UID]; ok {
		t.Error("Prepared still lists foo")
	}
	// Again: still fine.
	mustUnprepare(t, ctx, s, ptRef(foo))
	// loop0 is free again.
	mustPrepare(t, ctx, s, ptClaim("baz", ptResults(ptResult("disk", "loop0"))))
}

func TestStateExclusiveDevices(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0"), ptResult("all", "mp-all")))
	mustPrepare(t, ctx, s, foo)

	bar := ptClaim("bar", ptResults(ptResult("d", "loop0")))
	err := prepareErr(t, ctx, s, bar)
	want := `claim default/bar: device "loop0": device node /dev/loop0 (b 7:0) is already prepared for claim default/foo (UID uid-foo, device "loop0") and group "disks" is exclusive; it is freed when that claim is unprepared`
	if err.Error() != want {
		t.Errorf("err:\n got %q\nwant %q", err, want)
	}
	if ptExists(env.specPath(bar.UID)) {
		t.Error("refused claim got a spec file")
	}
	if _, ok := env.checkpoint(t).Claims[bar.UID]; ok {
		t.Error("refused claim is in the checkpoint")
	}
	// A bundle is exclusive as a whole.
	err = prepareErr(t, ctx, s, ptClaim("baz", ptResults(ptResult("all", "mp-all"))))
	if !strings.Contains(err.Error(), `device "mp-all": device node /dev/mapper/mpatha (b 253:0) is already prepared for claim default/foo`) {
		t.Errorf("bundle err = %v", err)
	}
	// Admin access may look at a device in use.
	admin := ptResult("d", "loop0")
	admin.AdminAccess = ptr.To(true)
	mustPrepare(t, ctx, s, ptClaim("admin", ptResults(admin)))
	// In one batch, the second of two claims for one device is refused.
	a, b := ptClaim("a", ptResults(ptResult("d", "loop1"))), ptClaim("b", ptResults(ptResult("d", "loop1")))
	res := s.Prepare(ctx, []*resourceapi.ResourceClaim{a, b})
	if res[a.UID].Err != nil || res[b.UID].Err == nil || !strings.Contains(res[b.UID].Err.Error(), "already prepared for claim default/a") {
		t.Errorf("batch: a %v, b %v", res[a.UID].Err, res[b.UID].Err)
	}
}

func TestStateSharedDevices(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	var claims []*resourceapi.ResourceClaim
	for i := 0; i < 3; i++ {
		r := ptResult("fs", "fuse")
		r.ShareID = ptr.To(types.UID(fmt.Sprintf("00000000-0000-0000-0000-00000000000%d", i)))
		claims = append(claims, ptClaim(fmt.Sprintf("c%d", i), ptResults(r)))
	}
	mustPrepare(t, ctx, s, claims[0])
	mustPrepare(t, ctx, s, claims[1:]...)
	if n := len(env.checkpoint(t).Claims); n != 3 {
		t.Errorf("%d claims in the checkpoint, want 3", n)
	}
}

// TestStateCrashBetweenSpecAndCheckpoint kills Prepare after the spec file
// is written and before the checkpoint records the claim.
func TestStateCrashBetweenSpecAndCheckpoint(t *testing.T) {
	for _, point := range []string{"prepare:after-spec", "prepare:before-checkpoint"} {
		for _, restart := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s restart=%v", point, restart), func(t *testing.T) {
				ctx := ptCtx(t)
				env := newPtEnv(t)
				s := env.state(t, ctx)
				foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
				crashAt(t, s, point, func() { s.Prepare(ctx, []*resourceapi.ResourceClaim{foo}) })
				if !ptExists(env.specPath(foo.UID)) {
					t.Fatal("crash point is after the spec write, but there is no spec")
				}
				if _, ok := env.checkpoint(t).Claims[foo.UID]; ok {
					t.Fatal("claim recorded although the checkpoint was never written")
				}
				if restart {
					// The plugin restarts: the spec nobody was told about is garbage.
					s = env.state(t, ctx)
					if ptExists(env.specPath(foo.UID)) {
						t.Error("Reconcile kept the spec of a claim that is not prepared")
					}
				}
				// The kubelet retries (also after a restart of its own, to another instance).
				res := mustPrepare(t, ctx, s, foo)[foo.UID]
				if len(res.Devices) != 1 {
					t.Errorf("result = %+v", res)
				}
				if !ptExists(env.specPath(foo.UID)) || env.checkpoint(t).Claims[foo.UID] == nil {
					t.Error("retry did not leave spec and checkpoint entry")
				}
				// And the state is consistent: Reconcile changes nothing,
				// Unprepare cleans up.
				id := ptFileID(t, env.specPath(foo.UID))
				env.state(t, ctx)
				if ptFileID(t, env.specPath(foo.UID)) != id {
					t.Error("Reconcile rewrote a correct spec")
				}
				mustUnprepare(t, ctx, s, ptRef(foo))
				if ptExists(env.specPath(foo.UID)) {
					t.Error("spec left after Unprepare")
				}
			})
		}
	}
}

// TestStateCrashDuringUnprepare kills Unprepare after the checkpoint entry
// is gone and before the spec file is removed.
func TestStateCrashDuringUnprepare(t *testing.T) {
	for _, restart := range []bool{true, false} {
		t.Run(fmt.Sprintf("restart=%v", restart), func(t *testing.T) {
			ctx := ptCtx(t)
			env := newPtEnv(t)
			s := env.state(t, ctx)
			foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
			mustPrepare(t, ctx, s, foo)
			crashAt(t, s, "unprepare:after-checkpoint", func() { s.Unprepare(ctx, []kubeletplugin.NamespacedObject{ptRef(foo)}) })
			if !ptExists(env.specPath(foo.UID)) {
				t.Fatal("spec removed before the crash point")
			}
			if restart {
				s = env.state(t, ctx)
				if ptExists(env.specPath(foo.UID)) {
					t.Error("Reconcile kept the spec of an unprepared claim")
				}
			}
			// The kubelet retries; the claim is unknown now, which is fine,
			// and the spec goes by its UID alone.
			mustUnprepare(t, ctx, s, ptRef(foo))
			if ptExists(env.specPath(foo.UID)) {
				t.Error("spec left after the retried Unprepare")
			}
			mustPrepare(t, ctx, s, ptClaim("bar", ptResults(ptResult("disk", "loop0"))))
		})
	}
}

func TestStateCorruptCheckpointIsRecovered(t *testing.T) {
	for _, tc := range ptCorruptions(t) {
		for _, via := range []string{"Reconcile", "Prepare"} {
			t.Run(tc.name+" via "+via, func(t *testing.T) {
				ctx := ptCtx(t)
				env := newPtEnv(t)
				s := env.state(t, ctx)
				share := types.UID("11111111-2222-3333-4444-555555555555")
				r := ptResult("fs", "fuse")
				r.ShareID = &share
				foo := ptClaim("foo", ptResults(ptResult("disk", "loop0"), ptResult("all", "mp-all")),
					ptConfig(resourceapi.AllocationConfigSourceClaim, ptParams(`"containerPath":"/dev/data","uid":5`), "disk"))
				bar := ptClaim("bar", ptResults(r))
				results := mustPrepare(t, ctx, s, foo, bar)
				fooSpec, barSpec := ptFileID(t, env.specPath(foo.UID)), ptFileID(t, env.specPath(bar.UID))

				good, _ := os.ReadFile(s.CheckpointPath())
				bad := tc.content(good)
				if err := os.WriteFile(s.CheckpointPath(), bad, 0o600); err != nil {
					t.Fatal(err)
				}
				if via == "Reconcile" {
					s = env.state(t, ctx)
				} else {
					// A new claim arrives first; it must still be checked
					// against the recovered claims.
					err := prepareErr(t, ctx, s, ptClaim("baz", ptResults(ptResult("d", "loop0"))))
					if !strings.Contains(err.Error(), "is already prepared for claim (name unknown, recovered from its CDI spec) (UID uid-foo") {
						t.Errorf("err = %v", err)
					}
				}
				// The bad file is kept aside, byte for byte.
				aside := s.CheckpointPath() + ".corrupt-20261130T040506.000000007Z"
				if got, err := os.ReadFile(aside); err != nil || string(got) != string(bad) {
					t.Errorf("moved-aside file: %v, content equal %v", err, string(got) == string(bad))
				}
				// The new checkpoint is valid and has both claims, from their specs.
				cp := env.checkpoint(t)
				if len(cp.Claims) != 2 || !cp.Claims[foo.UID].Recovered || !cp.Claims[bar.UID].Recovered {
					t.Fatalf("rebuilt checkpoint: %+v", cp.Claims)
				}
				if ptFileID(t, env.specPath(foo.UID)) != fooSpec || ptFileID(t, env.specPath(bar.UID)) != barSpec {
					t.Error("spec files changed by the recovery")
				}
				if got := s.PreparedDeviceNames(); !reflect.DeepEqual(got, []string{"fuse", "loop0", "mp-all"}) {
					t.Errorf("PreparedDeviceNames = %q", got)
				}
				// Exclusive nodes stay taken; the shared one stays shared.
				err := prepareErr(t, ctx, s, ptClaim("baz", ptResults(ptResult("d", "mp-all"))))
				if !strings.Contains(err.Error(), "(UID uid-foo") {
					t.Errorf("err = %v", err)
				}
				r2 := ptResult("fs", "fuse")
				r2.ShareID = ptr.To(types.UID("99999999-2222-3333-4444-555555555555"))
				mustPrepare(t, ctx, s, ptClaim("qux", ptResults(r2)))
				// The kubelet's retry of a recovered claim gets its old answer
				// and the full entry back, without a rewrite of the spec.
				again := mustPrepare(t, ctx, s, foo)[foo.UID]
				if !reflect.DeepEqual(again, results[foo.UID]) {
					t.Errorf("result after recovery:\n got %+v\nwant %+v", again, results[foo.UID])
				}
				if ptFileID(t, env.specPath(foo.UID)) != fooSpec {
					t.Error("spec of foo rewritten")
				}
				if e := env.checkpoint(t).Claims[foo.UID]; e.Recovered || e.Name != "foo" {
					t.Errorf("entry after re-prepare: %+v", e)
				}
				// Unprepare works for recovered claims.
				mustUnprepare(t, ctx, s, ptRef(bar))
				if ptExists(env.specPath(bar.UID)) {
					t.Error("spec of bar left after Unprepare")
				}
			})
		}
	}
}

// TestStateLostCheckpointIsRebuilt: the data directory is wiped while the
// CDI dir survives. The spec files of running pods must not be taken for
// garbage.
func TestStateLostCheckpointIsRebuilt(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	mustPrepare(t, ctx, s, foo)
	id := ptFileID(t, env.specPath(foo.UID))
	if err := os.RemoveAll(env.dataDir); err != nil {
		t.Fatal(err)
	}
	s = env.state(t, ctx)
	if !ptExists(env.specPath(foo.UID)) || ptFileID(t, env.specPath(foo.UID)) != id {
		t.Fatal("spec of a prepared claim removed or rewritten after the checkpoint was lost")
	}
	if e := env.checkpoint(t).Claims[foo.UID]; e == nil || !e.Recovered {
		t.Fatalf("claim not recovered: %+v", e)
	}
	err := prepareErr(t, ctx, s, ptClaim("bar", ptResults(ptResult("d", "loop0"))))
	if !strings.Contains(err.Error(), "(UID uid-foo") {
		t.Errorf("err = %v", err)
	}
	mustUnprepare(t, ctx, s, ptRef(foo))
	if ptExists(env.specPath(foo.UID)) {
		t.Error("spec left after Unprepare")
	}
	// A fresh node (no checkpoint, no specs) starts empty and gets a file.
	env2 := newPtEnv(t)
	env2.state(t, ctx)
	if cp := env2.checkpoint(t); len(cp.Claims) != 0 || !ptExists(filepath.Join(env2.dataDir, CheckpointFileName)) {
		t.Errorf("fresh node: %+v", cp)
	}
}

func TestStateUnreadableCheckpointIsNotTouched(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	cp := s.CheckpointPath()
	if err := os.Remove(cp); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if err := os.Mkdir(cp, 0o700); err != nil { // a read error, not corruption
		t.Fatal(err)
	}
	err := prepareErr(t, ctx, s, ptClaim("foo", ptResults(ptResult("d", "loop0"))))
	if !strings.Contains(err.Error(), "read checkpoint") {
		t.Errorf("err = %v", err)
	}
	if m, _ := filepath.Glob(cp + ".corrupt-*"); len(m) > 0 {
		t.Errorf("moved aside: %v", m)
	}
}

func TestStateReconcile(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	if fi, err := os.Stat(env.cdiDir); err != nil || !fi.IsDir() {
		t.Fatalf("CDI dir not created: %v", err)
	}
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	mustPrepare(t, ctx, s, foo)
	want, _ := os.ReadFile(env.specPath(foo.UID))

	// A reboot empties the CDI dir (it is on tmpfs), directory included.
	if err := os.RemoveAll(env.cdiDir); err != nil {
		t.Fatal(err)
	}
	_ = env.state(t, ctx) // a new instance reconciles at start
	if got, err := os.ReadFile(env.specPath(foo.UID)); err != nil || string(got) != string(want) {
		t.Errorf("vanished spec not rewritten as it was: %v\n got %s\nwant %s", err, got, want)
	}

	others := map[string]string{
		"nvidia.com-gpu.json":              `{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[{"name":"0","containerEdits":{"env":["A=1"]}}]}`,
		"nvidia.com-gpu_abc.json":          `{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[{"name":"1","containerEdits":{"env":["A=1"]}}]}`,
		"power-dev-plugin.io-other_x.json": `{"cdiVersion":"0.5.0","kind":"power-dev-plugin.io/other","devices":[{"name":"x","containerEdits":{"env":["A=1"]}}]}`,
		"power-dev-plugin.io-claim.json":   `{"cdiVersion":"0.5.0","kind":"power-dev-plugin.io/claim","devices":[{"name":"static","containerEdits":{"env":["A=1"]}}]}`,
		"spec.456.tmp":                     `{"kind":"nvidia.com/gpu"}`,
		"README":                           "not a spec",
		// The CDI library names every writer's temp files so, ours
		// included before: whose it is cannot be told, so it stays.
		"spec.123.tmp": `{"cdiVersion":"0.5.0","kind":"power-dev-plugin.io/claim"}`,
		// The legacy mode's, which may be writing right now.
		".power-dev-plugin.io-device.json.77.tmp": "",
	}
	ours := map[string]string{
		CDISpecName("orphan"):                             `{"cdiVersion":"0.5.0","kind":"power-dev-plugin.io/claim","devices":[]}`,
		"power-dev-plugin.io-claim_uid-foo.yaml":          "stale other encoding of a prepared claim",
		"power-dev-plugin.io-claim_junk.yaml":             "not even a spec",
		".power-dev-plugin.io-claim_uid-foo.json.123.tmp": "",
		".power-dev-plugin.io-claim_uid-x.json.9.tmp":     `{"cdiVersion":"0.5.0","kind":"power-dev-plugin.io/cl`,
	}
	for name, content := range others {
		if err := os.WriteFile(filepath.Join(env.cdiDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range ours {
		if err := os.WriteFile(filepath.Join(env.cdiDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The release before named the checkpoint's temp files so.
	stray := filepath.Join(env.dataDir, CheckpointFileName+".tmp1234")
	if err := os.WriteFile(stray, []byte("half a checkpoint"), 0o600); err != nil {
		t.Fatal(err)
	}
	stray2 := filepath.Join(env.dataDir, ".power-dev-plugin.io-checkpoint.json.5678.tmp")
	if err := os.WriteFile(stray2, []byte("half a checkpoint"), 0o600); err != nil {
		t.Fatal(err)
	}
	env.state(t, ctx)
	for name, content := range others {
		if got, err := os.ReadFile(filepath.Join(env.cdiDir, name)); err != nil || string(got) != content {
			t.Errorf("%s changed or removed: %v", name, err)
		}
	}
	for name := range ours {
		if ptExists(filepath.Join(env.cdiDir, name)) {
			t.Errorf("%s not removed", name)
		}
	}
	if ptExists(stray) || ptExists(stray2) {
		t.Error("stray checkpoint temp file not removed")
	}
	if got, _ := os.ReadFile(env.specPath(foo.UID)); string(got) != string(want) {
		t.Error("spec of the prepared claim changed")
	}
}

// TestStateTwoInstances runs two plugin instances on one node, as during a
// rolling update: each sees what the other did.
func TestStateTwoInstances(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	a, b := env.state(t, ctx), env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	mustPrepare(t, ctx, a, foo)
	if err := prepareErr(t, ctx, b, ptClaim("bar", ptResults(ptResult("disk", "loop0")))); !strings.Contains(err.Error(), "default/foo") {
		t.Errorf("b: %v", err)
	}
	mustUnprepare(t, ctx, b, ptRef(foo))
	if ptExists(env.specPath(foo.UID)) {
		t.Error("b did not remove a's spec")
	}
	mustPrepare(t, ctx, a, ptClaim("bar", ptResults(ptResult("disk", "loop0"))))
}

// TestStateConcurrentPrepare prepares many claims at once through two
// instances; a lost checkpoint update would lose a claim.
func TestStateConcurrentPrepare(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	inst := []*State{env.state(t, ctx), env.state(t, ctx)}
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := ptResult("fs", "fuse")
			r.ShareID = ptr.To(types.UID(fmt.Sprintf("00000000-0000-0000-0000-%012d", i)))
			c := ptClaim(fmt.Sprintf("c%d", i), ptResults(r))
			if res := inst[i%2].Prepare(ctx, []*resourceapi.ResourceClaim{c})[c.UID]; res.Err != nil {
				errs <- res.Err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(env.checkpoint(t).Claims); got != n {
		t.Errorf("%d claims in the checkpoint, want %d", got, n)
	}
	specs, _ := filepath.Glob(filepath.Join(env.cdiDir, "*.json"))
	if len(specs) != n {
		t.Errorf("%d spec files, want %d", len(specs), n)
	}
}

func TestStateLockWaitEndsWithContext(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	// Another instance holds the lock.
	f, err := os.OpenFile(filepath.Join(env.dataDir, "state.lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	err = prepareErr(t, tctx, s, foo)
	if !strings.Contains(err.Error(), "prepare claim default/foo: waiting for the lock") || !strings.Contains(err.Error(), "context deadline exceeded") {
		t.Errorf("err = %v", err)
	}
	uerr := s.Unprepare(tctx, []kubeletplugin.NamespacedObject{ptRef(foo)})[foo.UID]
	if uerr == nil || !strings.Contains(uerr.Error(), "unprepare claim default/foo: ") {
		t.Errorf("unprepare err = %v", uerr)
	}
	// Released: works again.
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	mustPrepare(t, ctx, s, foo)
}

// ptCtx carries a logger that writes to the test's log.
func ptCtx(t *testing.T) context.Context {
	_, ctx := ktesting.NewTestContext(t)
	return ctx
}

// ptBenchCtx logs nothing, so that benchmarks measure the work.
func ptBenchCtx() context.Context {
	return klog.NewContext(context.Background(), logr.Discard())
}

func ptBench(b *testing.B, inv *discovery.Inventory, mkClaims func(i int) []*resourceapi.ResourceClaim) {
	ctx := ptBenchCtx()
	env := newPtEnv(b)
	env.inv = inv
	s := env.state(b, ctx)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		claims := mkClaims(i)
		b.StartTimer()
		res := s.Prepare(ctx, claims)
		b.StopTimer()
		refs := make([]kubeletplugin.NamespacedObject, 0, len(claims))
		for _, c := range claims {
			if res[c.UID].Err != nil {
				b.Fatal(res[c.UID].Err)
			}
			refs = append(refs, ptRef(c))
		}
		for _, err := range s.Unprepare(ctx, refs) {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkPrepare1Device(b *testing.B) {
	b.StopTimer()
	ptBench(b, ptInventory(), func(i int) []*resourceapi.ResourceClaim {
		c := ptClaim(fmt.Sprintf("c%d", i), ptResults(ptResult("disk", "loop0")))
		return []*resourceapi.ResourceClaim{c}
	})
}

func BenchmarkPrepare100Claims(b *testing.B) {
	b.StopTimer()
	g := discovery.Group{Name: "disks", Permissions: "rw", Sharing: v1alpha1.Sharing{Mode: v1alpha1.SharingExclusive}}
	for i := 0; i < 100; i++ {
		g.Devices = append(g.Devices, discovery.Device{Name: fmt.Sprintf("disk%d", i), Group: "disks",
			Path: fmt.Sprintf("/dev/disk%d", i), Type: v1alpha1.DeviceTypeBlock, Major: 8, Minor: uint32(i)})
	}
	inv := &discovery.Inventory{Groups: []discovery.Group{g}}
	ptBench(b, inv, func(i int) []*resourceapi.ResourceClaim {
		claims := make([]*resourceapi.ResourceClaim, 100)
		for j := range claims {
			claims[j] = ptClaim(fmt.Sprintf("c%d-%d", i, j), ptResults(ptResult("disk", fmt.Sprintf("disk%d", j))))
		}
		return claims
	})
}

func BenchmarkPrepareBundle1000Nodes(b *testing.B) {
	b.StopTimer()
	g := discovery.Group{Name: "mp", Permissions: "rw", Sharing: v1alpha1.Sharing{Mode: v1alpha1.SharingExclusive},
		Bundle: true, BundleName: "mp-all"}
	for i := 0; i < 1000; i++ {
		g.Devices = append(g.Devices, discovery.Device{Name: fmt.Sprintf("mpath%d", i), Group: "mp",
			Path: fmt.Sprintf("/dev/mapper/mpath%04d", i), Type: v1alpha1.DeviceTypeBlock, Major: 253, Minor: uint32(i)})
	}
	inv := &discovery.Inventory{Groups: []discovery.Group{g}}
	ptBench(b, inv, func(i int) []*resourceapi.ResourceClaim {
		return []*resourceapi.ResourceClaim{ptClaim(fmt.Sprintf("c%d", i), ptResults(ptResult("all", "mp-all")))}
	})
}

// BenchmarkPrepareAgain is the kubelet repeating Prepare for a claim that
// is prepared: lock, read and check the checkpoint and the spec file.
func BenchmarkPrepareAgain(b *testing.B) {
	ctx := ptBenchCtx()
	env := newPtEnv(b)
	s := env.state(b, ctx)
	claims := []*resourceapi.ResourceClaim{ptClaim("foo", ptResults(ptResult("disk", "loop0")))}
	mustPrepare(b, ctx, s, claims...)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if res := s.Prepare(ctx, claims); res[claims[0].UID].Err != nil {
			b.Fatal(res[claims[0].UID].Err)
		}
	}
}
