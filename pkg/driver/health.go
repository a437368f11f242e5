package driver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	resourceapi "k8s.io/api/resource/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	resourcev1 "k8s.io/client-go/kubernetes/typed/resource/v1"
	"k8s.io/client-go/util/watchlist"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	drapb "k8s.io/kubelet/pkg/apis/dra/v1"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/health"
)

// Liveness of the DRA plugin: its state lock is not held past
// health.StuckAfter, its registration and DRA gRPC servers answer, and the
// kubelet did not reject the registration (the kubelet asks again only for
// a new socket, which a restart makes). Nothing here needs the API server:
// while it is away a restart would not help. Readiness adds: devices
// published, ResourceSlices accepted by the API server, the registration
// confirmed by the kubelet.

// healthState is what the health checks read that the driver records as it
// runs. Its own lock keeps it apart from the helper's state, which is not
// safe to read concurrently (RegistrationStatus).
type healthState struct {
	mu sync.Mutex
	// registered is nil until the kubelet's first NotifyRegistrationStatus.
	registered *registerapi.RegistrationStatus
	// publishErr is why the latest inventory was not published.
	publishErr error
	// sliceErr is the API server's answer to the last ResourceSlice write
	// that failed, until a write succeeds.
	sliceErr error

	regSocket string // the registration socket, for the gRPC check
	lockLimit time.Duration
	timeout   time.Duration
}

func (h *healthState) set(f func(h *healthState)) {
	h.mu.Lock()
	f(h)
	h.mu.Unlock()
}

func (h *healthState) get() (reg *registerapi.RegistrationStatus, publishErr, sliceErr error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.registered, h.publishErr, h.sliceErr
}

// registrationSocket is the path of the socket the kubelet finds the
// plugin by; Start names it so that the gRPC check can dial it.
func registrationSocket(o *options) (string, kubeletplugin.Option) {
	dir := o.registrarDir
	if dir == "" {
		dir = kubeletplugin.KubeletRegistryDir
	}
	if o.rollingUID != "" {
		return filepath.Join(dir, kubeletplugin.RollingUpdateRegistrarSocketFile(dir, DriverName, o.rollingUID)), nil
	}
	file := DriverName + "-reg.sock"
	return filepath.Join(dir, file), kubeletplugin.RegistrarSocketFilename(file)
}

// observeRegistration is a gRPC interceptor that keeps the kubelet's
// answer to the registration.
func (d *Driver) observeRegistration(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if st, ok := req.(*registerapi.RegistrationStatus); ok {
		cp := &registerapi.RegistrationStatus{PluginRegistered: st.PluginRegistered, Error: st.Error}
		d.health.set(func(h *healthState) { h.registered = cp })
	}
	return handler(ctx, req)
}

func (d *Driver) serveHealth(ctx context.Context, addr string) (*http.Server, error) {
	return health.Serve(ctx, addr, d.healthEndpoints().Handler(), nil)
}

func (d *Driver) healthEndpoints() *health.Endpoints {
	return &health.Endpoints{
		Live:    []health.Check{d.checkRegistrationRejected, d.checkStateLock, d.checkGRPC},
		Ready:   []health.Check{d.checkPublished, d.checkSlices, d.checkRegistered},
		Timeout: d.health.timeout,
	}
}

func (d *Driver) checkRegistrationRejected(context.Context) error {
	if reg, _, _ := d.health.get(); reg != nil && !reg.PluginRegistered {
		return fmt.Errorf("the kubelet rejected the registration: %s; the kubelet asks again only for a new socket, which a restart creates", reg.Error)
	}
	return nil
}

func (d *Driver) checkStateLock(context.Context) error {
	if holder, held, stuck := d.state.lockWatch.Stuck(d.health.lockLimit); stuck {
		return fmt.Errorf("the claim state lock has been held by %s for %s, longer than any wait the plugin does on purpose (%s): the plugin is stuck, most likely in a disk write to %s or %s that does not return (look for hung tasks in the node's kernel log); a restart frees the lock",
			holder, held, d.health.lockLimit, d.state.CDIDir(), d.state.dataDir)
	}
	return nil
}

// checkGRPC asks the registration server for the plugin's info, then the
// DRA server at the endpoint it names for a prepare of no claim, which the
// driver answers without taking any lock.
func (d *Driver) checkGRPC(ctx context.Context) error {
	var endpoint string
	err := health.CallUnix(ctx, d.health.regSocket, func(ctx context.Context, conn *grpc.ClientConn) error {
		info, err := registerapi.NewRegistrationClient(conn).GetInfo(ctx, &registerapi.InfoRequest{})
		if err == nil {
			endpoint = info.Endpoint
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("registration server: %w; the kubelet cannot find the plugin without it, a restart serves it again", err)
	}
	err = health.CallUnix(ctx, endpoint, func(ctx context.Context, conn *grpc.ClientConn) error {
		_, err := drapb.NewDRAPluginClient(conn).NodePrepareResources(ctx, &drapb.NodePrepareResourcesRequest{})
		return err
	})
	if err != nil {
		return fmt.Errorf("DRA server: %w; the kubelet cannot prepare claims without it, a restart serves it again", err)
	}
	return nil
}

func (d *Driver) checkPublished(context.Context) error {
	_, publishErr, _ := d.health.get()
	published := d.published.Load()
	switch {
	case !published && publishErr != nil:
		return fmt.Errorf("devices not published: %w", publishErr)
	case !published && d.inventory() == nil:
		return errors.New("devices not published yet: waiting for the first inventory from device discovery (the plugin log says why if it fails)")
	case !published:
		return errors.New("devices not published yet: waiting for the API server to list this node's ResourceSlices, which comes before the first publication")
	case publishErr != nil:
		return fmt.Errorf("the latest inventory is not published, the one before stays: %w", publishErr)
	}
	return nil
}

func (d *Driver) checkSlices(context.Context) error {
	if _, _, err := d.health.get(); err != nil {
		return fmt.Errorf("ResourceSlices not accepted by the API server: %w; the plugin keeps trying", err)
	}
	return nil
}

func (d *Driver) checkRegistered(context.Context) error {
	reg, _, _ := d.health.get()
	switch {
	case reg == nil:
		return fmt.Errorf("not registered with the kubelet: the kubelet has not confirmed the registration yet; it finds the plugin through %s, so that directory must be the kubelet's plugins_registry", d.health.regSocket)
	case !reg.PluginRegistered:
		return fmt.Errorf("not registered with the kubelet: it rejected the registration: %s", reg.Error)
	}
	return nil
}

// sliceClient passes the kubelet plugin helper's ResourceSlice writes
// through and records their outcome for the readiness check; the helper
// reports failures but never a success.
type sliceClient struct {
	kubernetes.Interface
	h *healthState
}

// IsWatchListSemanticsUnSupported passes on what the wrapped client says
// (client-go's fake clientset cannot stream watch lists).
func (c sliceClient) IsWatchListSemanticsUnSupported() bool {
	return watchlist.DoesClientNotSupportWatchListSemantics(c.Interface)
}

func (c sliceClient) ResourceV1() resourcev1.ResourceV1Interface {
	return sliceGroup{c.Interface.ResourceV1(), c.h}
}

type sliceGroup struct {
	resourcev1.ResourceV1Interface
	h *healthState
}

func (g sliceGroup) ResourceSlices() resourcev1.ResourceSliceInterface {
	return sliceWrites{g.ResourceV1Interface.ResourceSlices(), g.h}
}

type sliceWrites struct {
	resourcev1.ResourceSliceInterface
	h *healthState
}

func (s sliceWrites) note(err error) {
	s.h.set(func(h *healthState) { h.sliceErr = err })
}

func (s sliceWrites) Create(ctx context.Context, slice *resourceapi.ResourceSlice, opts metav1.CreateOptions) (*resourceapi.ResourceSlice, error) {
	out, err := s.ResourceSliceInterface.Create(ctx, slice, opts)
	s.note(err)
	return out, err
}

func (s sliceWrites) Update(ctx context.Context, slice *resourceapi.ResourceSlice, opts metav1.UpdateOptions) (*resourceapi.ResourceSlice, error) {
	out, err := s.ResourceSliceInterface.Update(ctx, slice, opts)
	s.note(err)
	return out, err
}

func (s sliceWrites) Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	err := s.ResourceSliceInterface.Delete(ctx, name, opts)
	if apierrors.IsNotFound(err) {
		err = nil
	}
	s.note(err)
	return err
}

// withHealthTiming shortens the stuck-lock limit and the checks' timeout
// (tests); zero keeps a value.
func withHealthTiming(lockLimit, timeout time.Duration) Option {
	return func(o *options) {
		if lockLimit > 0 {
			o.lockLimit = lockLimit
		}
		if timeout > 0 {
			o.healthTimeout = timeout
		}
	}
}
