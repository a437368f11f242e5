// Package kubelettest is a stand-in for the kubelet's device manager, for
// tests of device plugins over real unix sockets and real gRPC.
//
// A Kubelet serves the Registration service (k8s.io/kubelet device plugin
// API v1beta1) on <dir>/kubelet.sock and treats a registration the way the
// kubelet's device manager (pkg/kubelet/cm/devicemanager of 1.37) does:
//
//   - the API version must be v1beta1 and the resource name an extended
//     resource name (domain/name, not in kubernetes.io);
//   - it dials <dir>/<endpoint>, calls GetDevicePluginOptions and only then
//     answers; a plugin it cannot reach is refused;
//   - a resource may have several endpoints (a rolling update of the
//     plugin), keyed by socket path; the newest is the one Plugin returns
//     (the kubelet allocates through it), and when it goes an older one
//     takes over;
//   - an endpoint path it holds already is refused ("device plugin already
//     connected"), and, as in the kubelet, that refusal drops its record of
//     the first connection: when that one ends the endpoint stays behind,
//     dead, and the path can never register again (Stale lists them);
//   - it opens ListAndWatch at once and records every list; when the stream
//     ends the endpoint is disconnected and must register again.
//
// WithSingleEndpoint makes it behave like older kubelets instead: one
// endpoint per resource, a second path refused while the first is
// connected, the same path answered "already connected" without a new
// connection.
//
// Start, like the kubelet at start, first removes every socket in the
// directory; Stop drops every plugin connection and removes kubelet.sock.
// Stop then Start is a kubelet restart.
package kubelettest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"k8s.io/apimachinery/pkg/util/validation"
	v1beta1 "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// Kubelet is the test kubelet. Its methods are safe for concurrent use.
type Kubelet struct {
	dir    string
	socket string
	single bool

	mu       sync.Mutex
	srv      *grpc.Server
	serving  chan struct{}        // closed when Serve returns
	plugins  map[string][]*Plugin // connected endpoints per resource, oldest first
	stale    map[string]string    // endpoint path -> resource, left behind dead
	all      []*Plugin
	requests []*v1beta1.RegisterRequest
	changed  chan struct{}
	wg       sync.WaitGroup
}

// Option changes a Kubelet.
type Option func(*Kubelet)

// WithSingleEndpoint emulates kubelets before multi-endpoint support: one
// endpoint per resource.
func WithSingleEndpoint() Option { return func(k *Kubelet) { k.single = true } }

// New makes a Kubelet for the device-plugin directory dir; Start serves.
func New(dir string, opts ...Option) *Kubelet {
	k := &Kubelet{
		dir:     dir,
		socket:  filepath.Join(dir, v1beta1KubeletSocket),
		plugins: map[string][]*Plugin{},
		stale:   map[string]string{},
		changed: make(chan struct{}),
	}
	for _, o := range opts {
		o(k)
	}
	return k
}

const v1beta1KubeletSocket = "kubelet.sock"

// Socket is the path of kubelet.sock.
func (k *Kubelet) Socket() string { return k.socket }

// Start removes every socket in the directory, as the kubelet does when it
// starts, and serves Registration on kubelet.sock.
func (k *Kubelet) Start() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.srv != nil {
		return errors.New("kubelettest: already started")
	}
	if err := os.MkdirAll(k.dir, 0o750); err != nil {
		return err
	}
	entries, err := os.ReadDir(k.dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.Type()&os.ModeSocket != 0 {
			if err := os.Remove(filepath.Join(k.dir, e.Name())); err != nil {
				return err
			}
		}
	}
	lis, err := net.Listen("unix", k.socket)
	if err != nil {
		return err
	}
	srv := grpc.NewServer(grpc.WaitForHandlers(true))
	v1beta1.RegisterRegistrationServer(srv, &registration{k: k})
	k.srv = srv
	k.serving = make(chan struct{})
	done := k.serving
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	return nil
}

// Stop stops serving, ends every plugin connection (their ListAndWatch
// streams end), removes kubelet.sock and waits for its goroutines.
func (k *Kubelet) Stop() {
	k.mu.Lock()
	srv, done := k.srv, k.serving
	k.srv = nil
	k.mu.Unlock()
	if srv != nil {
		srv.Stop() // waits for running Register calls
		<-done
	}
	k.mu.Lock()
	var plugins []*Plugin
	for _, ps := range k.plugins {
		plugins = append(plugins, ps...)
	}
	k.mu.Unlock()
	for _, p := range plugins {
		p.disconnect()
	}
	k.wg.Wait()
	k.mu.Lock()
	// A new kubelet process knows nothing of the old one's endpoints.
	k.plugins = map[string][]*Plugin{}
	k.stale = map[string]string{}
	k.mu.Unlock()
	_ = os.Remove(k.socket)
}

// Requests returns every registration request received, accepted or not.
func (k *Kubelet) Requests() []*v1beta1.RegisterRequest {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]*v1beta1.RegisterRequest(nil), k.requests...)
}

// Plugin returns the endpoint the kubelet uses for a resource (the newest
// connected one), or nil.
func (k *Kubelet) Plugin(resource string) *Plugin {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.primary(resource)
}

func (k *Kubelet) primary(resource string) *Plugin {
	ps := k.plugins[resource]
	if len(ps) == 0 {
		return nil
	}
	return ps[len(ps)-1]
}

// Endpoints returns the connected endpoints of a resource, oldest first.
func (k *Kubelet) Endpoints(resource string) []*Plugin {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]*Plugin(nil), k.plugins[resource]...)
}

// Stale lists endpoints the kubelet keeps although they are gone (see the
// package documentation): a plugin that causes one has left its resource
// with a dead endpoint.
func (k *Kubelet) Stale() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for path := range k.stale {
		out = append(out, path)
	}
	return out
}

// Disconnect drops the connections of a resource as the kubelet does when
// it loses a plugin's stream, without restarting.
func (k *Kubelet) Disconnect(resource string) {
	k.mu.Lock()
	ps := append([]*Plugin(nil), k.plugins[resource]...)
	k.mu.Unlock()
	for _, p := range ps {
		p.disconnect()
	}
}

// Connections returns every plugin connection made so far, in order.
func (k *Kubelet) Connections() []*Plugin {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]*Plugin(nil), k.all...)
}

// WaitPlugin waits until a plugin for resource is connected and has sent
// its first list, and returns it. Connections in skip are not wanted (an
// earlier connection of the same resource).
func (k *Kubelet) WaitPlugin(ctx context.Context, resource string, skip ...*Plugin) (*Plugin, error) {
	for {
		k.mu.Lock()
		p, changed := k.primary(resource), k.changed
		k.mu.Unlock()
		if p != nil && !contains(skip, p) {
			if _, err := p.WaitDevices(ctx, func([]*v1beta1.Device) bool { return true }); err != nil {
				return nil, err
			}
			return p, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no new plugin for %s connected: %w", resource, ctx.Err())
		case <-changed:
		}
	}
}

func contains(ps []*Plugin, p *Plugin) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

func (k *Kubelet) notify() {
	close(k.changed)
	k.changed = make(chan struct{})
}

type registration struct {
	v1beta1.UnimplementedRegistrationServer
	k *Kubelet
}

// Register implements the kubelet's Registration service.
func (r *registration) Register(ctx context.Context, req *v1beta1.RegisterRequest) (*v1beta1.Empty, error) {
	k := r.k
	k.mu.Lock()
	k.requests = append(k.requests, req)
	k.notify()
	k.mu.Unlock()

	if req.Version != v1beta1.Version {
		return nil, fmt.Errorf("requested device plugin API version %q is not supported by the kubelet (%s)", req.Version, v1beta1.Version)
	}
	if err := validateResourceName(req.ResourceName); err != nil {
		return nil, err
	}
	endpoint := filepath.Join(k.dir, req.Endpoint)

	k.mu.Lock()
	existing := k.plugins[req.ResourceName]
	var same *Plugin
	for _, p := range existing {
		if p.Endpoint == endpoint {
			same = p
		}
	}
	_, isStale := k.stale[endpoint]
	k.mu.Unlock()
	switch {
	case k.single && same != nil:
		return &v1beta1.Empty{}, nil // "already connected with the same socket path"
	case k.single && len(existing) > 0:
		return nil, fmt.Errorf("the device plugin %s already registered with a different socket path %s", req.ResourceName, existing[0].Endpoint)
	}
	p, err := connect(ctx, req, endpoint)
	if err != nil {
		return nil, err
	}
	if same != nil || isStale {
		// PluginConnected refuses the path; the deregistration that
		// follows forgets the first client too, so its end is never
		// processed and its endpoint stays.
		_ = p.conn.Close()
		k.mu.Lock()
		if same != nil {
			same.orphan = true
		}
		k.mu.Unlock()
		return nil, fmt.Errorf("device plugin already connected: %s", endpoint)
	}
	k.mu.Lock()
	if k.srv == nil {
		k.mu.Unlock()
		_ = p.conn.Close()
		return nil, errors.New("kubelet stopping")
	}
	k.plugins[req.ResourceName] = append(k.plugins[req.ResourceName], p)
	k.all = append(k.all, p)
	k.notify()
	k.wg.Add(1)
	k.mu.Unlock()
	go func() {
		defer k.wg.Done()
		p.listAndWatch()
		k.mu.Lock()
		if p.orphan {
			k.stale[p.Endpoint] = p.Resource
		} else {
			ps := k.plugins[p.Resource]
			for i, q := range ps {
				if q == p {
					k.plugins[p.Resource] = append(ps[:i:i], ps[i+1:]...)
					break
				}
			}
			if len(k.plugins[p.Resource]) == 0 {
				delete(k.plugins, p.Resource)
			}
		}
		k.notify()
		k.mu.Unlock()
		_ = p.conn.Close()
	}()
	return &v1beta1.Empty{}, nil
}

// validateResourceName is the kubelet's extended resource name check.
func validateResourceName(name string) error {
	domain, rest, ok := strings.Cut(name, "/")
	if !ok || domain == "" || rest == "" {
		return fmt.Errorf("invalid name of device plugin socket: %q must be an extended resource name (domain/name)", name)
	}
	if domain == "kubernetes.io" || strings.HasSuffix(domain, ".kubernetes.io") {
		return fmt.Errorf("invalid name of device plugin socket: %q is in the kubernetes.io domain", name)
	}
	if errs := validation.IsQualifiedName(name); len(errs) > 0 {
		return fmt.Errorf("invalid name of device plugin socket: %q: %s", name, strings.Join(errs, "; "))
	}
	return nil
}

// Plugin is a device plugin connection as the kubelet holds it.
type Plugin struct {
	Resource string
	// Endpoint is the plugin's socket path.
	Endpoint string
	Options  *v1beta1.DevicePluginOptions
	Client   v1beta1.DevicePluginClient

	conn   *grpc.ClientConn
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex
	lists   [][]*v1beta1.Device
	ended   bool
	endErr  error
	changed chan struct{}

	orphan bool // guarded by the Kubelet's mu
}

func connect(ctx context.Context, req *v1beta1.RegisterRequest, endpoint string) (*Plugin, error) {
	conn, err := grpc.NewClient("unix://"+endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("failed to dial device plugin: %w", err)
	}
	client := v1beta1.NewDevicePluginClient(conn)
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	opts, err := client.GetDevicePluginOptions(octx, &v1beta1.Empty{})
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("failed to get device plugin options: %w", err)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	return &Plugin{
		Resource: req.ResourceName, Endpoint: endpoint, Options: opts, Client: client,
		conn: conn, ctx: pctx, cancel: pcancel, changed: make(chan struct{}),
	}, nil
}

func (p *Plugin) listAndWatch() {
	defer p.cancel()
	stream, err := p.Client.ListAndWatch(p.ctx, &v1beta1.Empty{})
	if err != nil {
		p.end(err)
		return
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			p.end(err)
			return
		}
		p.mu.Lock()
		p.lists = append(p.lists, resp.Devices)
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
}

func (p *Plugin) end(err error) {
	p.mu.Lock()
	p.ended, p.endErr = true, err
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// disconnect ends the connection as a stopping kubelet does.
func (p *Plugin) disconnect() { p.cancel() }

// Devices is the last list the plugin sent (nil before the first).
func (p *Plugin) Devices() []*v1beta1.Device {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.lists) == 0 {
		return nil
	}
	return p.lists[len(p.lists)-1]
}

// Lists returns how many lists the plugin has sent.
func (p *Plugin) Lists() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lists)
}

// Ended reports whether the ListAndWatch stream has ended, and its error.
func (p *Plugin) Ended() (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ended, p.endErr
}

// WaitDevices waits until the last list satisfies ok and returns it. It
// fails when the stream ends first.
func (p *Plugin) WaitDevices(ctx context.Context, ok func([]*v1beta1.Device) bool) ([]*v1beta1.Device, error) {
	for {
		p.mu.Lock()
		var last []*v1beta1.Device
		have := len(p.lists) > 0
		if have {
			last = p.lists[len(p.lists)-1]
		}
		ended, endErr, changed := p.ended, p.endErr, p.changed
		p.mu.Unlock()
		if have && ok(last) {
			return last, nil
		}
		if ended {
			return last, fmt.Errorf("%s: ListAndWatch ended: %v", p.Resource, endErr)
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("%s: waiting for devices: %w; last list %v", p.Resource, ctx.Err(), IDs(last))
		case <-changed:
		}
	}
}

// WaitEnded waits until the ListAndWatch stream has ended.
func (p *Plugin) WaitEnded(ctx context.Context) error {
	for {
		p.mu.Lock()
		ended, changed := p.ended, p.changed
		p.mu.Unlock()
		if ended {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: ListAndWatch did not end: %w", p.Resource, ctx.Err())
		case <-changed:
		}
	}
}

// Allocate calls Allocate with one container request per ID list, as the
// kubelet does when it admits a pod.
func (p *Plugin) Allocate(ctx context.Context, containers ...[]string) (*v1beta1.AllocateResponse, error) {
	req := &v1beta1.AllocateRequest{}
	for _, ids := range containers {
		req.ContainerRequests = append(req.ContainerRequests, &v1beta1.ContainerAllocateRequest{DevicesIds: ids})
	}
	return p.Client.Allocate(ctx, req)
}

// Preferred calls GetPreferredAllocation for one container.
func (p *Plugin) Preferred(ctx context.Context, available, mustInclude []string, size int) ([]string, error) {
	resp, err := p.Client.GetPreferredAllocation(ctx, &v1beta1.PreferredAllocationRequest{
		ContainerRequests: []*v1beta1.ContainerPreferredAllocationRequest{{
			AvailableDeviceIDs: available, MustIncludeDeviceIDs: mustInclude, AllocationSize: int32(size),
		}},
	})
	if err != nil {
		return nil, err
	}
	if len(resp.ContainerResponses) != 1 {
		return nil, fmt.Errorf("%d container responses for 1 request", len(resp.ContainerResponses))
	}
	return resp.ContainerResponses[0].DeviceIDs, nil
}

// IDs lists the IDs of devices.
func IDs(devs []*v1beta1.Device) []string {
	out := make([]string, 0, len(devs))
	for _, d := range devs {
		out = append(out, d.ID)
	}
	return out
}

// Healthy lists the IDs of the healthy devices.
func Healthy(devs []*v1beta1.Device) []string {
	var out []string
	for _, d := range devs {
		if d.Health == v1beta1.Healthy {
			out = append(out, d.ID)
		}
	}
	return out
}
