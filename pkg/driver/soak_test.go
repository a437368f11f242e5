package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/klog/v2"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
	"github.com/power-dev-plugin/power-dev-plugin/test/soak"
)

// The prepare/unprepare soak (`make bench-soak`, docs/benchmarks.md).
const (
	soakBatches   = 100 // measured batches
	soakBatchSize = 100 // claims per batch
	soakWarmup    = 5   // batches before the baseline: caches, buffers, pools
	soakLoops     = 8   // real loop devices (as root), one exclusive claim each per batch
	// soakCalls: even batches go as one NodePrepareResources call of 100
	// claims, odd ones as this many concurrent calls (pods starting at once).
	soakCalls = 4
)

// soakTolerance is what the process may have grown by after the soak. Files
// and goroutines must be back where they were (a small margin for a gRPC
// connection or timer being replaced). The live heap after a GC moves by
// up to 0.1 MiB from run to run; 256 KiB is 26 bytes per cycle, so a map
// entry per claim that is never deleted shows.
var soakTolerance = soak.Tolerance{FDs: 2, Goroutines: 4, RSS: 8 << 20, Heap: 256 << 10}

var soakChars = []string{"/dev/null", "/dev/zero", "/dev/full", "/dev/urandom"}

// TestSoakPrepareUnprepare prepares and unprepares 10,000 claims in batches
// of 100, as the kubelet does: over the DRA gRPC socket that the
// kubeletplugin helper serves for the driver started in this process. The
// API server is the fake clientset (the helper GETs each claim from it);
// the claims are allocated by the scheduler's structured allocator to
// devices that discovery found on this machine: as root real loop devices
// (exclusive: Prepare opens each one exclusively to check that nothing
// holds it) and /dev/null, /dev/zero, /dev/full, /dev/urandom in a shared
// group. It fails if open files, goroutines, RSS or the heap grow, if a
// spec file or checkpoint entry stays behind, or if anything logs an error.
func TestSoakPrepareUnprepare(t *testing.T) {
	soak.Require(t)
	var logged soak.Errors
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), logged.Logger()))
	defer cancel()

	inv, loops := soakInventory(t, ctx)
	classes := []*resourceapi.DeviceClass{driverClassForTest("pdp")}
	alloc := newAllocEnv(t, "node-1", inv, classes)
	client := newFakeClient()
	e := soakStart(t, ctx, client, inv)

	reg := registerapi.NewRegistrationClient(dialUnix(t, filepath.Join(e.regDir, DriverName+"-reg.sock")))
	info, err := reg.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatalf("GetInfo: %v", err)
	}
	if _, err := reg.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatalf("NotifyRegistrationStatus: %v", err)
	}
	dra := drapb.NewDRAPluginClient(dialUnix(t, info.Endpoint))
	run := func(b int) {
		soakBatch(t, ctx, e, alloc, dra, b, loops)
	}

	start := time.Now()
	for b := range soakWarmup {
		run(b)
	}
	filesBefore := soakFiles(t, e.cdiDir, e.dataDir)
	before, err := soak.Baseline(time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("after %d warm-up batches: %v", soakWarmup, before)

	measured := time.Now()
	for b := soakWarmup; b < soakWarmup+soakBatches; b++ {
		run(b)
		if t.Failed() {
			return
		}
		if n := b - soakWarmup + 1; n%25 == 0 {
			s, err := soak.Settled()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%5d cycles, %5.1fs: %v", n*soakBatchSize, time.Since(measured).Seconds(), s)
		}
	}
	elapsed := time.Since(measured)

	after, err := soak.After(before, soakTolerance, 10*time.Second)
	t.Logf("%d prepare/unprepare cycles in %d batches of %d (%d exclusive loop devices, %d shared char devices) in %.1fs (%.1f ms per batch; %.1fs with the warm-up and setup); before and after:\n%s",
		soakBatches*soakBatchSize, soakBatches, soakBatchSize, len(loops), len(soakChars),
		elapsed.Seconds(), float64(elapsed.Milliseconds())/soakBatches, time.Since(start).Seconds(), soak.Table(before, after))
	if err != nil {
		t.Errorf("not flat after the soak (allowed: %v):\n%v", soakTolerance, err)
	}
	if filesAfter := soakFiles(t, e.cdiDir, e.dataDir); !slices.Equal(filesBefore, filesAfter) {
		t.Errorf("files in the CDI and plugin directories changed:\nbefore %q\n after %q", filesBefore, filesAfter)
	}
	if n := logged.Count(); n > 0 {
		t.Errorf("%d error lines logged during the soak; the first: %q", n, logged.First())
	}
}

// soakInventory is what discovery finds on this machine for a shared group
// of character devices and, as root, an exclusive group of new loop devices.
func soakInventory(t *testing.T, ctx context.Context) (*discovery.Inventory, []string) {
	t.Helper()
	groups := []v1alpha1.DeviceGroup{{Name: "chars", Include: soakChars,
		Sharing: &v1alpha1.Sharing{Mode: v1alpha1.SharingShared}}}
	var loops []string
	if os.Geteuid() == 0 {
		for range soakLoops {
			dev, _ := discoverytest.LoopDevice(t, 4<<20)
			loops = append(loops, dev)
		}
		groups = append(groups, v1alpha1.DeviceGroup{Name: "loops", Include: loops,
			Types: []v1alpha1.DeviceType{v1alpha1.DeviceTypeBlock}})
	} else {
		t.Log("not root: no loop devices, so the exclusive open of a block device at Prepare is not soaked")
	}
	cfg := &v1alpha1.DiscoveryConfig{Groups: groups}
	v1alpha1.SetDefaults(cfg)
	inv, err := discovery.Discover(ctx, cfg, discovery.WithHostRoot("/"))
	if err != nil {
		t.Fatalf("Discover: %v", err)
	}
	n := 0
	for _, g := range inv.Groups {
		n += len(g.Devices)
	}
	if n != len(soakChars)+len(loops) {
		t.Fatalf("discovery published %d devices, want %d (%q and %q); left out: %v", n, len(soakChars)+len(loops), soakChars, loops, inv.Excluded)
	}
	return inv, loops
}

// soakStart is startDriver with the soak's context: startDriver's test
// logger keeps every line in memory.
func soakStart(t *testing.T, ctx context.Context, client *fake.Clientset, inv *discovery.Inventory) *driverEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	base, err := os.MkdirTemp("", "pdp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	e := &driverEnv{
		regDir: filepath.Join(base, "reg"), dataDir: filepath.Join(base, "data"), cdiDir: filepath.Join(base, "cdi"),
		client: client, src: newChanSource(), done: make(chan error, 1), cancel: cancel,
	}
	// Checked every half second (default 5 min): its rounds run among the
	// batches, and what it remembers about claims must not pile up either.
	e.driver, err = Start(ctx, WithKubeClient(client), WithNodeName("node-1"), WithCDIDir(e.cdiDir),
		WithRegistrarDir(e.regDir), WithPluginDataDir(e.dataDir), WithStaleClaimInterval(500*time.Millisecond))
	if err != nil {
		cancel()
		t.Fatalf("Start: %v", err)
	}
	go func() { e.done <- e.driver.Run(ctx, e.src) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-e.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	e.src.ch <- inv
	for deadline := time.Now().Add(10 * time.Second); e.driver.inventory() == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the driver did not take the inventory")
		}
	}
	return e
}

// soakBatch allocates a batch of new claims, adds them to the API server,
// prepares and unprepares them over gRPC and deletes them again, checking
// every result and that nothing stays behind.
func soakBatch(t *testing.T, ctx context.Context, e *driverEnv, alloc *allocEnv, dra drapb.DRAPluginClient, b int, loops []string) {
	t.Helper()
	claims := make([]*resourceapi.ResourceClaim, soakBatchSize)
	for i := range claims {
		path := soakChars[i%len(soakChars)]
		if i < len(loops) {
			path = loops[i]
		}
		claims[i] = claimForTest(fmt.Sprintf("b%03d-c%03d", b, i),
			exactRequestForTest("dev", "pdp", `device.attributes["power-dev-plugin.io"].path == "`+path+`"`))
	}
	claims, err := alloc.tryAllocate(claims...)
	if err != nil || claims == nil {
		t.Fatalf("batch %d: allocate: %v", b, err)
	}
	tracker := e.client.Tracker()
	gvr := resourceapi.SchemeGroupVersion.WithResource("resourceclaims")
	for _, c := range claims {
		if err := tracker.Add(c); err != nil {
			t.Fatal(err)
		}
	}

	calls := 1
	if b%2 == 1 {
		calls = soakCalls
	}
	var mu sync.Mutex
	prepared := map[string]*drapb.NodePrepareResourceResponse{}
	unprepared := map[string]*drapb.NodeUnprepareResourceResponse{}
	each := func(do func(refs []*drapb.Claim) error) {
		var wg sync.WaitGroup
		errs := make([]error, calls)
		for k := range calls {
			var refs []*drapb.Claim
			for i := k; i < len(claims); i += calls {
				c := claims[i]
				refs = append(refs, &drapb.Claim{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)})
			}
			wg.Go(func() { errs[k] = do(refs) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("batch %d: %v", b, err)
			}
		}
	}
	each(func(refs []*drapb.Claim) error {
		resp, err := dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: refs})
		if err != nil {
			return fmt.Errorf("NodePrepareResources: %w", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for uid, r := range resp.Claims {
			prepared[uid] = r
		}
		return nil
	})
	for _, c := range claims {
		r := prepared[string(c.UID)]
		want := c.Status.Allocation.Devices.Results[0].Device
		if r == nil || r.Error != "" || len(r.Devices) != 1 || r.Devices[0].DeviceName != want || len(r.Devices[0].CdiDeviceIds) != 2 {
			t.Fatalf("batch %d: prepare %s (device %s): %v", b, c.Name, want, r)
		}
		if _, err := os.Stat(filepath.Join(e.cdiDir, CDISpecName(c.UID))); err != nil {
			t.Fatalf("batch %d: prepared %s has no CDI spec: %v", b, c.Name, err)
		}
	}

	each(func(refs []*drapb.Claim) error {
		resp, err := dra.NodeUnprepareResources(ctx, &drapb.NodeUnprepareResourcesRequest{Claims: refs})
		if err != nil {
			return fmt.Errorf("NodeUnprepareResources: %w", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for uid, r := range resp.Claims {
			unprepared[uid] = r
		}
		return nil
	})
	for _, c := range claims {
		if r := unprepared[string(c.UID)]; r == nil || r.Error != "" {
			t.Fatalf("batch %d: unprepare %s: %v", b, c.Name, r)
		}
		if _, err := os.Stat(filepath.Join(e.cdiDir, CDISpecName(c.UID))); !os.IsNotExist(err) {
			t.Fatalf("batch %d: unprepared %s still has its CDI spec: %v", b, c.Name, err)
		}
		// The pod is gone, and with it its claim.
		if err := tracker.Delete(gvr, c.Namespace, c.Name); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := e.driver.state.loadEntries(ctx)
	if err != nil || len(entries) != 0 {
		t.Fatalf("batch %d: checkpoint after unpreparing everything: %d entries, %v", b, len(entries), err)
	}
	// The fake clientset records every call; the real API server keeps
	// nothing per call in the plugin.
	e.client.ClearActions()
}

// soakFiles lists the files in the directories, sorted.
func soakFiles(t *testing.T, dirs ...string) []string {
	t.Helper()
	var out []string
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, _ os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(out)
	return out
}
