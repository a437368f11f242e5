package driver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2/ktesting"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// claimOnNode1 is an allocated claim default/<name> for one device of
// node-1's pool.
func claimOnNode1(name, device string) *resourceapi.ResourceClaim {
	c := ptClaim(name, ptResults(resourceapi.DeviceRequestAllocationResult{Request: "dev", Driver: DriverName, Pool: "node-1", Device: device}))
	return c
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Review finding 13: a spec that cannot be written (here a directory in
// its place; in life ENOSPC on /run or an unreadable directory) no longer
// stops the plugin from starting. The plugin starts, the claim concerned
// fails Prepare with the reason and its device is unhealthy, the other
// claim works, both can be unprepared, and the repair is retried.
func TestDriverStartsWhenASpecCannotBeWritten(t *testing.T) {
	base, err := os.MkdirTemp("", "pdp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	cdiDir, dataDir, regDir := filepath.Join(base, "cdi"), filepath.Join(base, "data"), filepath.Join(base, "reg")
	_, ctx := ktesting.NewTestContext(t)
	inv := inventoryForTest(groupForTest("chars", charDeviceForTest("null", "/dev/null", 1, 3), charDeviceForTest("zero", "/dev/zero", 1, 5)))
	for gi := range inv.Groups {
		for di := range inv.Groups[gi].Devices {
			d := &inv.Groups[gi].Devices[di]
			d.Identity = "path:" + d.Path
		}
	}
	foo, bar := claimOnNode1("foo", "null"), claimOnNode1("bar", "zero")

	// A first run prepares both claims.
	st, err := NewState(WithStateNodeName("node-1"), WithStateCDIDir(cdiDir), WithStateDataDir(dataDir),
		WithStateInventory(func() *discovery.Inventory { return inv }))
	if err != nil {
		t.Fatal(err)
	}
	mustPrepare(t, ctx, st, foo, bar)
	// The CDI directory is emptied (a reboot) and foo's spec cannot be
	// written any more.
	if err := os.RemoveAll(cdiDir); err != nil {
		t.Fatal(err)
	}
	fooSpec := filepath.Join(cdiDir, CDISpecName(foo.UID))
	if err := os.MkdirAll(fooSpec, 0o755); err != nil {
		t.Fatal(err)
	}

	old := restoreRetryInterval
	restoreRetryInterval = 50 * time.Millisecond
	t.Cleanup(func() { restoreRetryInterval = old })
	ctx, cancel := context.WithCancel(ctx)
	d, err := Start(ctx, WithKubeClient(newFakeClient(foo, bar)), WithNodeName("node-1"), WithCDIDir(cdiDir),
		WithRegistrarDir(regDir), WithPluginDataDir(dataDir))
	if err != nil {
		cancel()
		t.Fatalf("Start: %v", err)
	}
	src := newChanSource()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, src) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	src.ch <- inv
	waitFor(t, "bar's spec to be restored", func() bool { return ptExists(filepath.Join(cdiDir, CDISpecName(bar.UID))) })

	res, err := d.PrepareResourceClaims(ctx, []*resourceapi.ResourceClaim{foo, bar})
	if err != nil {
		t.Fatal(err)
	}
	if err := res[foo.UID].Err; err == nil || !strings.Contains(err.Error(), "write CDI spec "+fooSpec+" for claim default/foo") {
		t.Errorf("foo: %v", res[foo.UID].Err)
	}
	if res[bar.UID].Err != nil {
		t.Errorf("bar: %v", res[bar.UID].Err)
	}
	health := map[string]kubeletplugin.DeviceHealth{}
	for _, h := range d.healthReport(inv, time.Now()).Devices {
		health[h.DeviceName] = h
	}
	if h := health["null"]; h.Health != kubeletplugin.HealthStatusUnhealthy || !strings.Contains(h.Message, "write CDI spec") {
		t.Errorf("null: %+v", h)
	}
	if h := health["zero"]; h.Health != kubeletplugin.HealthStatusHealthy {
		t.Errorf("zero: %+v", h)
	}

	// The obstacle goes: the retry writes foo's spec.
	if err := os.Remove(fooSpec); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "foo's spec to be restored", func() bool {
		fi, err := os.Stat(fooSpec)
		return err == nil && fi.Mode().IsRegular() && len(d.state.DeviceProblems()) == 0
	})
	un, err := d.UnprepareResourceClaims(ctx, []kubeletplugin.NamespacedObject{ptRef(foo), ptRef(bar)})
	if err != nil {
		t.Fatal(err)
	}
	for _, uid := range []types.UID{foo.UID, bar.UID} {
		if un[uid] != nil {
			t.Errorf("unprepare %s: %v", uid, un[uid])
		}
	}
}
