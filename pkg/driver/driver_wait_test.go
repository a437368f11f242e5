package driver

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stesting "k8s.io/client-go/testing"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// The kubelet asks to prepare the next pod's claim before it unprepares the
// previous pod's, which holds the same exclusive device and was deleted.
// Over the helper's real gRPC sockets: the Prepare waits, other claims are
// prepared meanwhile, and the old claim's Unprepare, arriving while the
// Prepare waits, releases it. The fake clientset stands for the API server.
func TestDriverPrepareWaitsForReleaseOverGRPC(t *testing.T) {
	const bound = 20 * time.Second
	inv := inventoryForTest(groupForTest("chars", charDeviceForTest("null", "/dev/null", 1, 3), charDeviceForTest("zero", "/dev/zero", 1, 5)))
	classes := []*resourceapi.DeviceClass{driverClassForTest("pdp")}
	on := func(path string) resourceapi.DeviceRequest {
		return exactRequestForTest("dev", "pdp", `device.attributes["power-dev-plugin.io"].path == "`+path+`"`)
	}
	// Allocated one after the other, as the scheduler does once the old
	// claim is gone.
	old := allocateForTest(t, "node-1", inv, classes, claimForTest("old", on("/dev/null")))[0]
	next := allocateForTest(t, "node-1", inv, classes, claimForTest("next", on("/dev/null")))[0]
	other := allocateForTest(t, "node-1", inv, classes, claimForTest("other", on("/dev/zero")))[0]
	client := newFakeClient(old, next, other)
	e := startDriver(t, client, inv, WithReleaseWait(bound), WithStaleClaimInterval(0))
	e.waitForDevices(t, "null", "zero")

	reg := registerapi.NewRegistrationClient(dialUnix(t, filepath.Join(e.regDir, DriverName+"-reg.sock")))
	ctx := context.Background()
	info, err := reg.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatalf("GetInfo: %v", err)
	}
	if _, err := reg.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatalf("NotifyRegistrationStatus: %v", err)
	}
	dra := drapb.NewDRAPluginClient(dialUnix(t, info.Endpoint))
	ref := func(c *resourceapi.ResourceClaim) []*drapb.Claim {
		return []*drapb.Claim{{Namespace: c.Namespace, Name: c.Name, Uid: string(c.UID)}}
	}
	prepare := func(ctx context.Context, c *resourceapi.ResourceClaim) string {
		resp, err := dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: ref(c)})
		if err != nil {
			return err.Error()
		}
		if r := resp.Claims[string(c.UID)]; r == nil || r.Error != "" || len(r.Devices) != 1 {
			return "result " + r.String()
		}
		return ""
	}
	if msg := prepare(ctx, old); msg != "" {
		t.Fatalf("prepare old: %s", msg)
	}
	// The old pod ended and its claim was deleted.
	if err := client.ResourceV1().ResourceClaims("default").Delete(ctx, old.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	seen := len(client.Actions())

	start := time.Now()
	done := make(chan string, 1)
	go func() { done <- prepare(ctx, next) }()
	// It waits once it asked the API server about the holder.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if gotHolderGet(client.Actions()[seen:]) {
			break
		}
		select {
		case msg := <-done:
			t.Fatalf("Prepare returned instead of waiting: %q", msg)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Prepare never asked about the claim holding the device")
		}
	}
	time.Sleep(50 * time.Millisecond)
	select {
	case msg := <-done:
		t.Fatalf("Prepare returned instead of waiting: %q", msg)
	default:
	}

	// Other calls go on meanwhile; with the helper's serialization they
	// would wait for the bound.
	quick, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if msg := prepare(quick, other); msg != "" {
		t.Fatalf("another claim while one waits: %s", msg)
	}
	un, err := dra.NodeUnprepareResources(quick, &drapb.NodeUnprepareResourcesRequest{Claims: ref(old)})
	if err != nil || un.Claims[string(old.UID)].GetError() != "" {
		t.Fatalf("unprepare old while the next claim waits: %v, %v", un, err)
	}
	select {
	case msg := <-done:
		if msg != "" {
			t.Fatalf("prepare after the holder was unprepared: %s", msg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the Unprepare did not release the waiting Prepare")
	}
	if d := time.Since(start); d >= bound {
		t.Errorf("took %s: released by the bound, not the Unprepare", d)
	}
}

func gotHolderGet(actions []k8stesting.Action) bool {
	for _, a := range actions {
		if g, ok := a.(k8stesting.GetAction); ok && a.GetResource().Resource == "resourceclaims" && g.GetName() == "old" {
			return true
		}
	}
	return false
}
