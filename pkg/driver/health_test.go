package driver

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2/ktesting"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

func healthAddrForTest(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func getHealth(addr, path string) (int, string, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitHealth polls path until it answers code with a body containing every
// one of want, and returns that body.
func waitHealth(t *testing.T, addr, path string, code int, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got int
	var body string
	var err error
	for {
		got, body, err = getHealth(addr, path)
		ok := err == nil && got == code
		for _, w := range want {
			ok = ok && strings.Contains(body, w)
		}
		if ok {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d %q (%v); want %d with %q", path, got, body, err, code, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// notifyRegistration answers the plugin's registration as the kubelet does.
func (e *driverEnv) notifyRegistration(t *testing.T, registered bool, msg string) {
	t.Helper()
	reg := registerapi.NewRegistrationClient(dialUnix(t, filepath.Join(e.regDir, DriverName+"-reg.sock")))
	_, err := reg.NotifyRegistrationStatus(context.Background(), &registerapi.RegistrationStatus{PluginRegistered: registered, Error: msg})
	if registered && err != nil {
		t.Fatalf("NotifyRegistrationStatus: %v", err)
	}
}

// Readiness names every reason it is not ready, and liveness fails only
// for the one a restart mends (a rejected registration).
func TestHealthReadinessReasons(t *testing.T) {
	addr := healthAddrForTest(t)
	var refuse atomic.Bool
	refuse.Store(true)
	client := newFakeClient()
	// What an admission policy that denies the slices looks like.
	client.PrependReactor("create", "resourceslices", func(k8stesting.Action) (bool, runtime.Object, error) {
		if refuse.Load() {
			return true, nil, apierrors.NewForbidden(resourceapi.Resource("resourceslices"), "",
				errors.New("ValidatingAdmissionPolicy 'resourceslices.power-dev-plugin.io' denied request"))
		}
		return false, nil, nil
	})
	e := startDriver(t, client, nil, WithHealthAddress(addr))

	waitHealth(t, addr, "/readyz", http.StatusServiceUnavailable, "not ready\n",
		"- devices not published yet: waiting for the first inventory from device discovery",
		"- not registered with the kubelet: the kubelet has not confirmed the registration yet; it finds the plugin through "+filepath.Join(e.regDir, DriverName+"-reg.sock"))
	waitHealth(t, addr, "/healthz", http.StatusOK, "ok\n")

	e.notifyRegistration(t, false, "plugin power-dev-plugin.io: version not supported")
	waitHealth(t, addr, "/healthz", http.StatusServiceUnavailable,
		"- the kubelet rejected the registration: plugin power-dev-plugin.io: version not supported; the kubelet asks again only for a new socket")
	waitHealth(t, addr, "/readyz", http.StatusServiceUnavailable,
		"- not registered with the kubelet: it rejected the registration: plugin power-dev-plugin.io: version not supported")
	e.notifyRegistration(t, true, "")
	waitHealth(t, addr, "/healthz", http.StatusOK, "ok\n")

	e.src.ch <- inventoryForTest(groupForTest("null", charDeviceForTest("null", "/dev/null", 1, 3)))
	body := waitHealth(t, addr, "/readyz", http.StatusServiceUnavailable,
		"- ResourceSlices not accepted by the API server: ", "ValidatingAdmissionPolicy 'resourceslices.power-dev-plugin.io' denied request")
	if strings.Contains(body, "registered") || strings.Contains(body, "devices not published") {
		t.Errorf("reasons that no longer hold:\n%s", body)
	}
	waitHealth(t, addr, "/healthz", http.StatusOK, "ok\n")
	refuse.Store(false)
	waitHealth(t, addr, "/readyz", http.StatusOK, "ok\n")
	e.waitForDevices(t, "null")

	// An inventory that cannot be published (two devices of one name, a
	// bug): the devices published before stay, readiness says so.
	e.src.ch <- inventoryForTest(groupForTest("a", charDeviceForTest("null", "/dev/null", 1, 3)),
		groupForTest("b", charDeviceForTest("null", "/dev/zero", 1, 5)))
	waitHealth(t, addr, "/readyz", http.StatusServiceUnavailable,
		`- the latest inventory is not published, the one before stays: build resources for node "node-1": device name "null" is used by both /dev/null in group "a" and /dev/zero in group "b"`)
	waitHealth(t, addr, "/healthz", http.StatusOK, "ok\n")
}

// The API server unreachable (a client to a closed port): the first
// publication waits for it and a prepare fails, but the plugin is live, so
// the kubelet does not restart it, which would not help.
func TestHealthLiveWhileAPIServerAway(t *testing.T) {
	addr := healthAddrForTest(t)
	closed := healthAddrForTest(t)
	away, err := kubernetes.NewForConfig(&rest.Config{Host: "https://" + closed, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	inv := inventoryForTest(groupForTest("null", charDeviceForTest("null", "/dev/null", 1, 3)))
	e := startDriver(t, newFakeClient(), inv, WithKubeClient(away), WithHealthAddress(addr), WithStaleClaimInterval(100*time.Millisecond))
	e.notifyRegistration(t, true, "")

	info, err := registerapi.NewRegistrationClient(dialUnix(t, filepath.Join(e.regDir, DriverName+"-reg.sock"))).GetInfo(context.Background(), &registerapi.InfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	dra := drapb.NewDRAPluginClient(dialUnix(t, info.Endpoint))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := dra.NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{Claims: []*drapb.Claim{{Namespace: "default", Name: "c", Uid: "uid-c"}}}); err == nil {
		t.Fatal("a prepare succeeded without the API server")
	}
	waitHealth(t, addr, "/readyz", http.StatusServiceUnavailable,
		"- devices not published yet: waiting for the API server to list this node's ResourceSlices")
	// Several probe periods' worth: never not live.
	for i := 0; i < 10; i++ {
		if code, body, err := getHealth(addr, "/healthz"); err != nil || code != http.StatusOK || body != "ok\n" {
			t.Fatalf("/healthz while the API server is away: %d %q %v", code, body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A Prepare stuck while it holds the state lock (a disk write that does
// not return, simulated by the fault hook) fails liveness once it has held
// the lock longer than the limit; the gRPC check still passes, as it takes
// no lock. Freed, the plugin is live again.
func TestHealthStuckStateLock(t *testing.T) {
	addr := healthAddrForTest(t)
	inv := inventoryForTest(groupForTest("null", charDeviceForTest("null", "/dev/null", 1, 3)))
	claim := allocateForTest(t, "node-1", inv, []*resourceapi.DeviceClass{driverClassForTest("pdp")},
		claimForTest("stuck", exactRequestForTest("dev", "pdp")))[0]
	e := startDriver(t, newFakeClient(claim), inv, WithHealthAddress(addr), WithStaleClaimInterval(0), withHealthTiming(time.Second, 0))
	e.notifyRegistration(t, true, "")
	e.waitForDevices(t, "null")
	waitHealth(t, addr, "/readyz", http.StatusOK, "ok\n")

	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	e.driver.state.fault = func(point string) {
		if point == "prepare:after-spec" {
			once.Do(func() { close(held) })
			<-release
		}
	}
	_, ctx := ktesting.NewTestContext(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.driver.state.Prepare(ctx, []*resourceapi.ResourceClaim{claim})
	}()
	<-held
	if code, body, err := getHealth(addr, "/healthz"); err != nil || code != http.StatusOK {
		t.Errorf("a lock held within the limit is not stuck: %d %q %v", code, body, err)
	}
	body := waitHealth(t, addr, "/healthz", http.StatusServiceUnavailable, "not live\n",
		"- the claim state lock has been held by Prepare for ", "longer than any wait the plugin does on purpose (1s): the plugin is stuck",
		e.cdiDir, e.dataDir)
	if strings.Contains(body, "gRPC") {
		t.Errorf("the gRPC check must not wait for the state lock:\n%s", body)
	}
	close(release)
	<-done
	waitHealth(t, addr, "/healthz", http.StatusOK, "ok\n")
}

// Liveness fails when the plugin's gRPC servers do not answer: one that
// hangs (an interceptor that holds the check's call), and sockets removed
// from under the plugin.
func TestHealthGRPCNotAnswering(t *testing.T) {
	addr := healthAddrForTest(t)
	var hang atomic.Bool
	hold := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if r, ok := req.(*drapb.NodePrepareResourcesRequest); ok && len(r.Claims) == 0 && hang.Load() {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return handler(ctx, req)
	}
	e := startDriver(t, newFakeClient(), nil, WithHealthAddress(addr), withHealthTiming(0, 500*time.Millisecond),
		WithHelperOptions(kubeletplugin.GRPCInterceptor(hold)))
	e.notifyRegistration(t, true, "")
	waitHealth(t, addr, "/healthz", http.StatusOK, "ok\n")

	draSock := filepath.Join(e.dataDir, "dra.sock")
	hang.Store(true)
	waitHealth(t, addr, "/healthz", http.StatusServiceUnavailable,
		"- DRA server: the gRPC server on "+draSock+" does not answer: ", "DeadlineExceeded", "a restart serves it again")
	hang.Store(false)
	waitHealth(t, addr, "/healthz", http.StatusOK, "ok\n")

	if err := os.Remove(draSock); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, addr, "/healthz", http.StatusServiceUnavailable,
		"- DRA server: the gRPC server on "+draSock+" does not answer: ", "no such file or directory")
	regSock := filepath.Join(e.regDir, DriverName+"-reg.sock")
	if err := os.Remove(regSock); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, addr, "/healthz", http.StatusServiceUnavailable,
		"- registration server: the gRPC server on "+regSock+" does not answer: ", "the kubelet cannot find the plugin without it")
}

// A fatal error of the helper (its gRPC server failed) stops Run with that
// error, also when it comes while Run starts (finding 16: it was read
// unsynchronized, and lost before Run). Run with -race.
func TestDriverFatalErrorStopsRun(t *testing.T) {
	_, ctx := ktesting.NewTestContext(t)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	base, err := os.MkdirTemp("", "pdp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(base)
	d, err := Start(ctx, WithKubeClient(newFakeClient()), WithNodeName("node-1"), WithCDIDir(filepath.Join(base, "cdi")),
		WithRegistrarDir(filepath.Join(base, "reg")), WithPluginDataDir(filepath.Join(base, "data")), WithStaleClaimInterval(0))
	if err != nil {
		t.Fatal(err)
	}
	// One before Run, which must not be lost, and one while Run starts.
	d.HandleError(ctx, errors.New("accept unix dra.sock: use of closed network connection"), "DRA gRPC server failed")
	go d.HandleError(ctx, errors.New("accept unix reg.sock: use of closed network connection"), "registrar gRPC server failed")
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, newChanSource()) }()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "fatal error: DRA gRPC server failed: accept unix dra.sock") {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run ignored a fatal error")
	}
}

// The kubelet's registration answers arrive while the probes read them
// (finding 16: the helper's RegistrationStatus is not safe for that). Run
// with -race.
func TestHealthRegistrationConcurrently(t *testing.T) {
	addr := healthAddrForTest(t)
	e := startDriver(t, newFakeClient(), nil, WithHealthAddress(addr))
	waitHealth(t, addr, "/healthz", http.StatusOK)
	reg := registerapi.NewRegistrationClient(dialUnix(t, filepath.Join(e.regDir, DriverName+"-reg.sock")))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			_, _ = reg.NotifyRegistrationStatus(context.Background(), &registerapi.RegistrationStatus{PluginRegistered: i%2 == 1, Error: "not now"})
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			_, _, _ = getHealth(addr, "/healthz")
			_, _, _ = getHealth(addr, "/readyz")
		}
	}()
	wg.Wait()
	e.notifyRegistration(t, true, "")
	waitHealth(t, addr, "/healthz", http.StatusOK, "ok\n")
}

// A call without a deadline (the stale-claim check, Restore, Reconcile)
// gives up waiting for the flock another plugin instance holds, so that it
// does not hold the state lock past the liveness limit for another
// instance's sake.
func TestStateBackgroundLockWaitIsBounded(t *testing.T) {
	ctx := ptCtx(t)
	env := newPtEnv(t)
	s := env.state(t, ctx)
	f, err := os.OpenFile(filepath.Join(env.dataDir, "state.lock"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	defer func(d time.Duration) { backgroundLockWait = d }(backgroundLockWait)
	backgroundLockWait = 200 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		_, err := s.loadEntries(context.WithoutCancel(ctx))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "waiting for the lock") || !strings.Contains(err.Error(), "context deadline exceeded") {
			t.Errorf("err = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a call without a deadline waits for the flock for ever")
	}
	if holder, _ := s.lockWatch.Held(); holder != "" {
		t.Errorf("the state lock is still held by %s", holder)
	}
}

// With rolling updates the sockets carry the pod's UID: the gRPC check
// finds them.
func TestHealthRollingUpdateSockets(t *testing.T) {
	addr := healthAddrForTest(t)
	e := startDriver(t, newFakeClient(), nil, WithHealthAddress(addr), WithRollingUpdate("0b5f7c3e-pod-uid"))
	regSock := filepath.Join(e.regDir, kubeletplugin.RollingUpdateRegistrarSocketFile(e.regDir, DriverName, "0b5f7c3e-pod-uid"))
	if _, err := os.Stat(regSock); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, addr, "/healthz", http.StatusOK, "ok\n")
	if err := os.Remove(filepath.Join(e.dataDir, "dra-0b5f7c3e-pod-uid.sock")); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, addr, "/healthz", http.StatusServiceUnavailable, "- DRA server: the gRPC server on "+filepath.Join(e.dataDir, "dra-0b5f7c3e-pod-uid.sock"))
}
