package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/utils/ptr"

	"golang.org/x/sys/unix"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/atomicfile"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/atomicfile/fsfault"
)

var errInjected = errors.New("injected fault")

// failAt makes the n-th time (counted from 1; 0: every time) a fault point
// is reached fail with errInjected, until the returned function is called.
func failAt(s *State, point string, n int) (clear func()) {
	var mu sync.Mutex
	hits := 0
	s.inject = func(p string) error {
		if p != point {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		hits++
		if n == 0 || hits == n {
			return errInjected
		}
		return nil
	}
	return func() { s.inject = nil }
}

// otherWriters are files of other writers in the CDI directory: the CDI
// library names every writer's temp files spec.<digits>.tmp.
var otherWriters = map[string]string{
	"spec.123.tmp":      `{"cdiVersion":"0.5.0","kind":"power-dev-plugin.io/claim"}`,
	"other-vendor.json": `{"cdiVersion":"0.5.0","kind":"other.com/gpu","devices":[{"name":"0","containerEdits":{"env":["A=1"]}}]}`,
}

func (e *ptEnv) writeOtherWriters(t *testing.T) {
	t.Helper()
	for name, content := range otherWriters {
		if err := os.WriteFile(filepath.Join(e.cdiDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *ptEnv) checkOtherWriters(t *testing.T) {
	t.Helper()
	for name, content := range otherWriters {
		if got, err := os.ReadFile(filepath.Join(e.cdiDir, name)); err != nil || string(got) != content {
			t.Errorf("another writer's %s was changed or removed: %v", name, err)
		}
	}
}

// temps lists this plugin's temp files in the CDI and data directories.
func (e *ptEnv) temps(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, dir := range []string{e.cdiDir, e.dataDir} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range entries {
			if atomicfile.IsTemp(en.Name()) {
				out = append(out, filepath.Join(dir, en.Name()))
			}
		}
	}
	return out
}

// nothingLeft checks that a claim whose Prepare failed left nothing: no spec
// file, no temp file, no checkpoint entry, nothing in memory, and its
// exclusive device free for another claim.
func (e *ptEnv) nothingLeft(t *testing.T, s *State, claim *resourceapi.ResourceClaim, device string) {
	t.Helper()
	e.nothingOf(t, s, claim, device)
	inject := s.inject
	s.inject = nil
	defer func() { s.inject = inject }()
	other := ptClaim("other", ptResults(ptResult("d", device)))
	mustPrepare(t, ptCtx(t), s, other)
	mustUnprepare(t, ptCtx(t), s, ptRef(other))
}

// nothingOf is nothingLeft without the other claim (which needs writes).
func (e *ptEnv) nothingOf(t *testing.T, s *State, claim *resourceapi.ResourceClaim, device string) {
	t.Helper()
	for _, ext := range []string{".json", ".yaml"} {
		if p := strings.TrimSuffix(e.specPath(claim.UID), ".json") + ext; ptExists(p) {
			t.Errorf("spec file %s left", p)
		}
	}
	if tmp := e.temps(t); len(tmp) > 0 {
		t.Errorf("temp files left: %q", tmp)
	}
	if _, ok := e.checkpoint(t).Claims[claim.UID]; ok {
		t.Error("checkpoint entry left")
	}
	if _, ok := s.Prepared()[claim.UID]; ok {
		t.Error("the claim is prepared in memory")
	}
	if slices.Contains(s.PreparedDeviceNames(), device) {
		t.Errorf("%s is held in memory: %q", device, s.PreparedDeviceNames())
	}
	if p := s.DeviceProblems(); len(p) > 0 {
		t.Errorf("problems: %q", p)
	}
}

// msg fills {spec} and {cp} in a wanted message.
func msg(format, spec, cp string) string {
	return strings.NewReplacer("{spec}", spec, "{cp}", cp).Replace(format)
}

// stillPrepared checks that a claim is prepared as before: spec file as it
// was, checkpoint entry, in memory, and its exclusive device refused to
// another claim.
func (e *ptEnv) stillPrepared(t *testing.T, s *State, claim *resourceapi.ResourceClaim, device string, spec []byte) {
	t.Helper()
	if got, err := os.ReadFile(e.specPath(claim.UID)); err != nil || string(got) != string(spec) {
		t.Errorf("spec file changed or gone: %v\n got %s\nwant %s", err, got, spec)
	}
	if e.checkpoint(t).Claims[claim.UID] == nil {
		t.Error("checkpoint entry gone")
	}
	if _, ok := s.Prepared()[claim.UID]; !ok {
		t.Error("not prepared in memory")
	}
	if tmp := e.temps(t); len(tmp) > 0 {
		t.Errorf("temp files left: %q", tmp)
	}
	inject := s.inject
	s.inject = nil
	defer func() { s.inject = inject }()
	err := prepareErr(t, ptCtx(t), s, ptClaim("other", ptResults(ptResult("d", device))))
	if !strings.Contains(err.Error(), "is already prepared for claim "+claim.Namespace+"/"+claim.Name) {
		t.Errorf("another claim of %s: %v", device, err)
	}
}

// A Prepare that fails at any step, after the spec was written or before,
// leaves nothing of the claim (review 2026-12-04: a checkpoint that could
// not be written left the spec until the next restart).
func TestPrepareFailureLeavesNothing(t *testing.T) {
	for _, tc := range []struct{ point, step string }{
		{"cdi:temp-created", "write CDI spec {spec} for claim default/foo: injected fault"},
		{"cdi:temp-written", "write CDI spec {spec} for claim default/foo: injected fault"},
		{"prepare:after-spec", "prepare claim default/foo: injected fault. Nothing of the claim was kept (its CDI spec {spec} was removed); the kubelet retries"},
		{"prepare:before-checkpoint", "prepare claim default/foo: record it in the checkpoint: injected fault. Nothing of the claim was kept (its CDI spec {spec} was removed); the kubelet retries"},
		{"checkpoint:temp-created", "prepare claim default/foo: record it in the checkpoint: write the checkpoint {cp}: injected fault. Nothing of the claim was kept (its CDI spec {spec} was removed)"},
		{"checkpoint:temp-written", "prepare claim default/foo: record it in the checkpoint: write the checkpoint {cp}: injected fault. Nothing of the claim was kept (its CDI spec {spec} was removed)"},
	} {
		t.Run(tc.point, func(t *testing.T) {
			ctx := ptCtx(t)
			env := newPtEnv(t)
			s := env.state(t, ctx)
			// Another claim, prepared before, is not touched.
			keep := ptClaim("keep", ptResults(ptResult("d", "loop1")))
			mustPrepare(t, ctx, s, keep)
			keepSpec, _ := os.ReadFile(env.specPath(keep.UID))

			foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
			clear := failAt(s, tc.point, 1)
			err := prepareErr(t, ctx, s, foo)
			if want := msg(tc.step, env.specPath(foo.UID), s.CheckpointPath()); !strings.Contains(err.Error(), want) || !errors.Is(err, errInjected) {
				t.Errorf("err:\n got %q\nwant %q", err, want)
			}
			env.nothingLeft(t, s, foo, "loop0")
			env.stillPrepared(t, s, keep, "loop1", keepSpec)
			// The kubelet's retry works.
			clear()
			mustPrepare(t, ctx, s, foo)
			if !ptExists(env.specPath(foo.UID)) || env.checkpoint(t).Claims[foo.UID] == nil {
				t.Error("retry did not prepare the claim")
			}
		})
	}
}

// Claims of one call: those new in it are undone, one already prepared as
// it is stays.
func TestPrepareFailureInBatch(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	keep := ptClaim("keep", ptResults(ptResult("d", "zero")))
	mustPrepare(t, ctx, s, keep)
	keepSpec, _ := os.ReadFile(env.specPath(keep.UID))
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	bar := ptClaim("bar", ptResults(ptResult("disk", "loop1")))
	failAt(s, "checkpoint:temp-written", 0)
	res := s.Prepare(ctx, []*resourceapi.ResourceClaim{foo, keep, bar})
	for _, c := range []*resourceapi.ResourceClaim{foo, bar} {
		if err := res[c.UID].Err; err == nil || !strings.Contains(err.Error(), "record it in the checkpoint") {
			t.Errorf("%s: %v", c.Name, err)
		}
	}
	if res[keep.UID].Err != nil {
		t.Errorf("keep: %v", res[keep.UID].Err)
	}
	env.nothingLeft(t, s, foo, "loop0")
	env.nothingLeft(t, s, bar, "loop1")
	env.stillPrepared(t, s, keep, "zero", keepSpec)
}

// A claim allocated anew under the same UID whose new allocation cannot be
// recorded keeps the old one: its old spec comes back, its old device stays
// held, the new one is free.
func TestPrepareFailurePutsBackOldAllocation(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	mustPrepare(t, ctx, s, foo)
	old, _ := os.ReadFile(env.specPath(foo.UID))
	failAt(s, "checkpoint:temp-written", 0)
	err := prepareErr(t, ctx, s, ptClaim("foo", ptResults(ptResult("disk", "loop1"))))
	if want := "Its CDI spec " + env.specPath(foo.UID) + " was put back as it was, and the claim stays prepared as before"; !strings.Contains(err.Error(), want) {
		t.Errorf("err = %v", err)
	}
	env.stillPrepared(t, s, foo, "loop0", old)
	s.inject = nil
	mustPrepare(t, ctx, s, ptClaim("bar", ptResults(ptResult("d", "loop1"))))
}

// An Unprepare that fails at any step leaves the claim prepared as it was,
// so that the kubelet's retry finds it; before, a spec file that could not
// be removed stayed without its entry, its device free for another claim.
func TestUnprepareFailureKeepsClaim(t *testing.T) {
	for _, tc := range []struct {
		point string
		n     int
		step  string
	}{
		{"unprepare:before-checkpoint", 1, "unprepare claim default/foo: remove it from the checkpoint: injected fault. The claim stays prepared; the kubelet retries"},
		{"checkpoint:temp-written", 1, "unprepare claim default/foo: remove it from the checkpoint: write the checkpoint {cp}: injected fault. The claim stays prepared"},
		{"unprepare:after-checkpoint", 1, "unprepare claim default/foo: injected fault. The claim stays prepared; the kubelet retries"},
		{"cdi:remove", 1, "unprepare claim default/foo: remove CDI spec: injected fault. The claim stays prepared; the kubelet retries"},
	} {
		t.Run(tc.point, func(t *testing.T) {
			ctx := ptCtx(t)
			env := newPtEnv(t)
			s := env.state(t, ctx)
			foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
			mustPrepare(t, ctx, s, foo)
			spec, _ := os.ReadFile(env.specPath(foo.UID))
			clear := failAt(s, tc.point, tc.n)
			err := s.Unprepare(ctx, []kubeletplugin.NamespacedObject{ptRef(foo)})[foo.UID]
			if want := msg(tc.step, env.specPath(foo.UID), s.CheckpointPath()); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("err:\n got %v\nwant %q", err, want)
			}
			clear()
			env.stillPrepared(t, s, foo, "loop0", spec)
			mustUnprepare(t, ctx, s, ptRef(foo))
			env.nothingLeft(t, s, foo, "loop0")
		})
	}
}

// When the entry cannot even be put back, the spec without an entry is
// garbage that the kubelet's retry or the next start removes.
func TestUnprepareFailureCannotRecordAgain(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	mustPrepare(t, ctx, s, foo)
	var mu sync.Mutex
	writes := 0
	s.inject = func(p string) error {
		mu.Lock()
		defer mu.Unlock()
		if p == "checkpoint:temp-written" {
			writes++
			if writes == 2 {
				return errInjected
			}
		}
		if p == "cdi:remove" {
			return errInjected
		}
		return nil
	}
	err := s.Unprepare(ctx, []kubeletplugin.NamespacedObject{ptRef(foo)})[foo.UID]
	if err == nil || !strings.Contains(err.Error(), "recording the claim as prepared again failed too") {
		t.Errorf("err = %v", err)
	}
	s.inject = nil
	if _, ok := env.checkpoint(t).Claims[foo.UID]; ok {
		t.Error("entry recorded")
	}
	env.state(t, ctx) // a restart
	env.nothingLeft(t, s, foo, "loop0")
}

// The stale-claim collector unprepares as Unprepare does: all or nothing.
func TestStaleClaimUnprepareFailureKeepsClaim(t *testing.T) {
	e := newGCEnv(t)
	old := ptClaim("old", ptResults(ptResult("d", "loop0")))
	e.prepared(t, old)
	e.api.del(old.Namespace, old.Name)
	clear := failAt(e.s, "cdi:remove", 0)
	e.twoRounds(t)
	if !e.isPrepared(t, old) {
		t.Fatal("a stale claim whose spec could not be removed lost its entry")
	}
	if log := e.log.String(); !strings.Contains(log, "Unpreparing a stale claim failed; it stays prepared") {
		t.Errorf("log:\n%s", log)
	}
	clear()
	e.twoRounds(t)
	if e.isPrepared(t, old) {
		t.Error("not collected once the spec can be removed")
	}
}

// kill -9 inside a write (a spec's or the checkpoint's) leaves at most a
// temp file that carries this plugin's prefix, which the next start
// removes; other writers' files, their spec.<digits>.tmp among them, are
// never touched.
func TestCrashInsideWriteLeavesOnlyOwnTemps(t *testing.T) {
	for _, point := range []string{"cdi:temp-created", "cdi:temp-written", "checkpoint:temp-created", "checkpoint:temp-written"} {
		t.Run(point, func(t *testing.T) {
			ctx := ptCtx(t)
			env := newPtEnv(t)
			s := env.state(t, ctx)
			env.writeOtherWriters(t)
			foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
			crashAt(t, s, point, func() { s.Prepare(ctx, []*resourceapi.ResourceClaim{foo}) })
			tmp := env.temps(t)
			wantDir := env.cdiDir
			if strings.HasPrefix(point, "checkpoint:") {
				wantDir = env.dataDir
			}
			if len(tmp) != 1 || filepath.Dir(tmp[0]) != wantDir || !strings.HasPrefix(filepath.Base(tmp[0]), ".power-dev-plugin.io-") {
				t.Fatalf("after the crash: temp files %q, want one of ours in %s", tmp, wantDir)
			}
			s = env.state(t, ctx) // the restart
			if tmp := env.temps(t); len(tmp) > 0 {
				t.Errorf("temp files left after the restart: %q", tmp)
			}
			env.checkOtherWriters(t)
			env.nothingLeft(t, s, foo, "loop0")
			mustPrepare(t, ctx, s, foo)
		})
	}
}

// Real faults: the plugin's data directory full (a size-limited tmpfs).
// Prepare fails and leaves nothing; Unprepare fails and leaves the claim
// prepared; both say what to do, and work once there is space again.
func TestDataDirFull(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	fsfault.Tmpfs(t, env.dataDir, 64<<10)
	s := env.state(t, ctx)
	keep := ptClaim("keep", ptResults(ptResult("d", "loop1")))
	mustPrepare(t, ctx, s, keep)
	keepSpec, _ := os.ReadFile(env.specPath(keep.UID))
	filler := fsfault.Fill(t, env.dataDir)

	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	err := prepareErr(t, ctx, s, foo)
	want := "prepare claim default/foo: record it in the checkpoint: write the checkpoint " + s.CheckpointPath() + ": "
	advice := "no space left on device. The filesystem of " + env.dataDir + " is full (ENOSPC): free space on it. Nothing of the claim was kept"
	if !errors.Is(err, unix.ENOSPC) || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), advice) {
		t.Errorf("err:\n got %q\nwant %q...%q", err, want, advice)
	}
	env.nothingOf(t, s, foo, "loop0")

	uerr := s.Unprepare(ctx, []kubeletplugin.NamespacedObject{ptRef(keep)})[keep.UID]
	if !errors.Is(uerr, unix.ENOSPC) || !strings.Contains(uerr.Error(), "unprepare claim default/keep: remove it from the checkpoint: ") ||
		!strings.Contains(uerr.Error(), "free space on it. The claim stays prepared") {
		t.Errorf("unprepare: %v", uerr)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	env.stillPrepared(t, s, keep, "loop1", keepSpec)
	mustPrepare(t, ctx, s, foo)
	mustUnprepare(t, ctx, s, ptRef(keep), ptRef(foo))
}

// The CDI directory full: the spec cannot be written, nothing is recorded.
func TestCDIDirFull(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	fsfault.Tmpfs(t, env.cdiDir, 64<<10)
	s := env.state(t, ctx)
	env.writeOtherWriters(t)
	filler := fsfault.Fill(t, env.cdiDir)
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	err := prepareErr(t, ctx, s, foo)
	want := "write CDI spec " + env.specPath(foo.UID) + " for claim default/foo: "
	advice := "no space left on device. The filesystem of " + env.cdiDir + " is full (ENOSPC): free space on it"
	if !errors.Is(err, unix.ENOSPC) || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), advice) {
		t.Errorf("err:\n got %q\nwant %q...%q", err, want, advice)
	}
	env.nothingOf(t, s, foo, "loop0")
	_ = os.Remove(filler)
	mustPrepare(t, ctx, s, foo)
	env.checkOtherWriters(t)
}

// The CDI directory read-only (a read-only bind mount): Prepare fails and
// records nothing, Unprepare fails and the claim stays prepared.
func TestCDIDirReadOnly(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	mustPrepare(t, ctx, s, foo)
	spec, _ := os.ReadFile(env.specPath(foo.UID))
	writable := fsfault.ReadOnly(t, env.cdiDir)

	bar := ptClaim("bar", ptResults(ptResult("disk", "loop1")))
	err := prepareErr(t, ctx, s, bar)
	advice := "read-only file system. " + env.cdiDir + " is on a read-only filesystem (EROFS): the plugin must be able to write there; check the hostPath volume"
	if !errors.Is(err, unix.EROFS) || !strings.HasPrefix(err.Error(), "write CDI spec "+env.specPath(bar.UID)) || !strings.Contains(err.Error(), advice) {
		t.Errorf("prepare: %v", err)
	}
	if _, ok := env.checkpoint(t).Claims[bar.UID]; ok {
		t.Error("bar recorded")
	}
	uerr := s.Unprepare(ctx, []kubeletplugin.NamespacedObject{ptRef(foo)})[foo.UID]
	if !errors.Is(uerr, unix.EROFS) || !strings.Contains(uerr.Error(), "unprepare claim default/foo: remove CDI spec: remove "+env.specPath(foo.UID)) ||
		!strings.Contains(uerr.Error(), advice) || !strings.HasSuffix(uerr.Error(), "The claim stays prepared; the kubelet retries") {
		t.Errorf("unprepare: %v", uerr)
	}
	env.stillPrepared(t, s, foo, "loop0", spec)
	writable()
	mustUnprepare(t, ctx, s, ptRef(foo))
	env.nothingLeft(t, s, foo, "loop0")
	env.nothingLeft(t, s, bar, "loop1")
}

// The data directory read-only: no call can take the lock; nothing is
// written to the CDI directory.
func TestDataDirReadOnly(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	fsfault.ReadOnly(t, env.dataDir)
	foo := ptClaim("foo", ptResults(ptResult("disk", "loop0")))
	err := prepareErr(t, ctx, s, foo)
	if !errors.Is(err, unix.EROFS) || !strings.Contains(err.Error(), "prepare claim default/foo: open lock file: ") ||
		!strings.Contains(err.Error(), env.dataDir+" is on a read-only filesystem (EROFS)") {
		t.Errorf("err = %v", err)
	}
	if ptExists(env.specPath(foo.UID)) {
		t.Error("spec written")
	}
}

// Shared devices too: a failed Prepare of one sharer leaves the others.
func TestPrepareFailureSharedDevice(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	share := func(i int) *types.UID {
		return ptr.To(types.UID(fmt.Sprintf("00000000-0000-0000-0000-00000000000%d", i)))
	}
	r0, r1 := ptResult("fs", "fuse"), ptResult("fs", "fuse")
	r0.ShareID, r1.ShareID = share(0), share(1)
	a, b := ptClaim("a", ptResults(r0)), ptClaim("b", ptResults(r1))
	mustPrepare(t, ctx, s, a)
	failAt(s, "checkpoint:temp-written", 1)
	_ = prepareErr(t, ctx, s, b)
	if ptExists(env.specPath(b.UID)) || !ptExists(env.specPath(a.UID)) {
		t.Error("wrong spec files after the failure")
	}
	if got := s.PreparedDeviceNames(); !slices.Equal(got, []string{"fuse"}) {
		t.Errorf("PreparedDeviceNames = %q", got)
	}
}
