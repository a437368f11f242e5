package deviceplugin

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2"
	v1beta1 "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics"
)

// PluginStatus is what one group's device plugin is doing.
type PluginStatus struct {
	Group    string `json:"group"`
	Resource string `json:"resource"`
	// Socket is the plugin's socket path.
	Socket string `json:"socket"`
	// IDs is the number of device IDs advertised.
	IDs int `json:"ids"`
	// Serving: the gRPC server listens on Socket.
	Serving bool `json:"serving"`
	// Registered: the kubelet accepted the last registration and has not
	// been seen going away since.
	Registered bool `json:"registered"`
	// Streams is the number of open ListAndWatch streams (normally 1).
	Streams int `json:"streams"`
	// Registrations counts successful registrations since start.
	Registrations int64 `json:"registrations"`
	// LastError is the last serve or registration failure; empty once
	// registered again.
	LastError string `json:"lastError,omitempty"`
}

// fileID identifies a file across renames and re-creation.
type fileID struct{ dev, ino uint64 }

func statID(path string) (fileID, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return fileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileID{}, errors.New("no inode")
	}
	return fileID{dev: uint64(st.Dev), ino: st.Ino}, nil //nolint:unconvert // Dev is uint32 on some platforms.
}

// plugin is the device plugin of one group: its gRPC server on a unix
// socket in the device-plugin directory, and its keeper, which serves,
// registers with the kubelet and does both again when the kubelet restarts.
//
// Every registration attempt serves on a new socket,
// <socketBase>-<n>.sock. The kubelet (1.37) keys a resource's endpoints by
// socket path and refuses a path it holds already ("device plugin already
// connected"), and that refusal also drops its record of the first
// connection, so the path would stay stuck. A new path is always a new
// endpoint; the kubelet forgets the old one when its stream ends.
type plugin struct {
	group, resource string
	socketBase      string // full path without "-<n>.sock"
	kubeletSocket   string
	registrar       Registrar
	cdiName         func(device string) string      // nil: no CDI devices in answers
	probe           func(d *discovery.Device) error // nil: no check at Allocate
	metrics         *metrics.Metrics                // nil: none
	timing          timing
	logger          klog.Logger

	mu      sync.Mutex
	set     *DeviceSet
	changed chan struct{} // closed and replaced when set changes
	ids     atomic.Int64  // len(set.Units), for status without mu

	streams    atomic.Int32
	opens      atomic.Int64  // streams opened so far
	streamEvts chan struct{} // a stream opened or closed
	pokes      chan struct{} // something happened in the directory

	state         atomic.Pointer[keeperStatus]
	registrations atomic.Int64

	// Owned by the keeper goroutine.
	srv     *grpc.Server
	srvQuit chan struct{}
	srvDone chan struct{}
	socket  string // the current socket's path, "" when not serving
	sockID  fileID
	gen     int
}

type keeperStatus struct {
	socket              string
	serving, registered bool
	lastError           string
}

func newPlugin(set *DeviceSet, socketBase, kubeletSocket string, r Registrar, cdiName func(string) string, t timing, logger klog.Logger) *plugin {
	p := &plugin{
		group:         set.Group,
		resource:      set.Resource,
		socketBase:    socketBase,
		kubeletSocket: kubeletSocket,
		registrar:     r,
		cdiName:       cdiName,
		timing:        t,
		logger:        logger.WithValues("resource", set.Resource),
		set:           set,
		changed:       make(chan struct{}),
		streamEvts:    make(chan struct{}, 1),
		pokes:         make(chan struct{}, 1),
	}
	p.state.Store(&keeperStatus{})
	p.ids.Store(int64(len(set.Units)))
	return p
}

// update replaces the device set; open ListAndWatch streams send the new
// list when it differs from the old one.
func (p *plugin) update(set *DeviceSet) {
	p.mu.Lock()
	defer p.mu.Unlock()
	same := proto.Equal(p.set.ListAndWatchResponse(), set.ListAndWatchResponse())
	p.set = set
	p.ids.Store(int64(len(set.Units)))
	if !same {
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

func (p *plugin) current() (*DeviceSet, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.set, p.changed
}

func (p *plugin) poke() {
	select {
	case p.pokes <- struct{}{}:
	default:
	}
}

func (p *plugin) status() PluginStatus {
	// Not under mu: the health checks read the status, and one of them
	// finds out whether mu is stuck.
	st := p.state.Load()
	return PluginStatus{
		Group: p.group, Resource: p.resource, Socket: st.socket, IDs: int(p.ids.Load()),
		Serving: st.serving, Registered: st.registered, Streams: int(p.streams.Load()),
		Registrations: p.registrations.Load(), LastError: st.lastError,
	}
}

// keeper is the state of the loop that keeps the plugin served and
// registered.
type keeper struct {
	registered bool
	kubeletID  fileID    // the kubelet's socket when it accepted us
	failedID   fileID    // the kubelet's socket at the last failed attempt
	failures   int       // failed attempts in a row
	next       time.Time // no attempt before
	quietSince time.Time // registered, and no stream open since
	lastError  string
	// opensBefore is the number of streams opened before the last
	// attempt started.
	opensBefore int64
}

// sameKubelet reports whether kubelet.sock is still the socket id.
func (p *plugin) sameKubelet(id fileID) bool {
	cur, err := statID(p.kubeletSocket)
	return err == nil && cur == id
}

// run keeps the plugin served and registered until ctx ends, then stops
// the server and removes the socket.
func (p *plugin) run(ctx context.Context) {
	defer p.stopServer()
	k := &keeper{}
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wait := p.step(ctx, k, time.Now())
		p.state.Store(&keeperStatus{socket: p.socket, serving: p.srv != nil, registered: k.registered, lastError: k.lastError})
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-p.pokes:
			// A new kubelet socket ends the backoff at once.
			if !k.registered {
				if id, err := statID(p.kubeletSocket); err == nil && id != k.failedID {
					k.next = time.Time{}
				}
			}
		case <-p.streamEvts:
		case <-timer.C:
		}
	}
}

// step does what is due and returns how long to wait for the next step.
func (p *plugin) step(ctx context.Context, k *keeper, now time.Time) time.Duration {
	// The kubelet removes every socket in the directory when it starts.
	if p.srv != nil {
		if id, err := statID(p.socket); err != nil || id != p.sockID {
			p.logger.Info("Plugin socket removed (kubelet restart?); serving on a new one", "socket", p.socket)
			if k.registered {
				p.metrics.Reconnect(p.group, metrics.CauseSocketRemoved)
			}
			p.stopServer()
			k.registered = false
			k.next = time.Time{}
		}
	}
	if k.registered {
		id, err := statID(p.kubeletSocket)
		switch {
		case err != nil || id != k.kubeletID:
			p.logger.Info("The kubelet's registration socket is new or gone (kubelet restart); registering again", "kubeletSocket", p.kubeletSocket)
			p.metrics.Reconnect(p.group, metrics.CauseKubeletRestart)
			k.registered = false
			k.next = time.Time{}
		case p.streams.Load() > 0:
			k.quietSince = time.Time{}
		case k.quietSince.IsZero():
			k.quietSince = now
		case now.Sub(k.quietSince) >= p.timing.streamGrace:
			// The kubelet opens ListAndWatch right after it accepts a
			// registration and keeps it open: without one it has
			// dropped the plugin.
			p.logger.Info("The kubelet has no ListAndWatch stream open; registering again", "since", k.quietSince)
			p.metrics.Reconnect(p.group, metrics.CauseStreamLost)
			k.registered = false
			k.next = time.Time{}
		}
	}
	if !k.registered && k.failures > 0 && p.srv != nil && p.streams.Load() > 0 && p.opens.Load() > k.opensBefore && p.sameKubelet(k.failedID) {
		// The kubelet opened a stream on the socket of the last attempt
		// although the Register call failed (it timed out here after the
		// kubelet had dialed back).
		k.registered = true
		k.kubeletID, _ = statID(p.kubeletSocket)
		k.quietSince = time.Time{}
		k.failures, k.lastError = 0, ""
		p.registrations.Add(1)
		p.metrics.Registration(p.group, nil)
		p.logger.Info("The kubelet is connected; registered", "socket", p.socket)
	}
	if !k.registered && !now.Before(k.next) {
		if err := p.attempt(ctx, k); err != nil {
			k.failures++
			k.lastError = err.Error()
			k.next = now.Add(p.timing.backoff(k.failures))
			if k.failures == 1 || k.failures%20 == 0 {
				p.logger.Error(err, "Device plugin not registered; retrying", "attempts", k.failures, "retryIn", k.next.Sub(now).Round(time.Millisecond))
			} else {
				p.logger.V(2).Info("Registration failed; retrying", "err", err, "attempts", k.failures)
			}
		}
	}

	wait := p.timing.check
	if !k.registered {
		wait = min(wait, max(k.next.Sub(now), 0))
	} else if !k.quietSince.IsZero() {
		wait = min(wait, max(k.quietSince.Add(p.timing.streamGrace).Sub(now), 0))
	}
	return max(wait, time.Millisecond)
}

// attempt serves on a new socket and registers it.
func (p *plugin) attempt(ctx context.Context, k *keeper) error {
	p.stopServer()
	k.opensBefore = p.opens.Load()
	if err := p.serve(); err != nil {
		return err
	}
	k.failedID, _ = statID(p.kubeletSocket)
	ctx, cancel := context.WithTimeout(ctx, p.timing.register)
	defer cancel()
	err := p.registrar.Register(ctx, &v1beta1.RegisterRequest{
		Version:      v1beta1.Version,
		Endpoint:     filepath.Base(p.socket),
		ResourceName: p.resource,
		Options:      &v1beta1.DevicePluginOptions{GetPreferredAllocationAvailable: true},
	})
	p.metrics.Registration(p.group, err)
	if err != nil {
		return err
	}
	if k.failedID == (fileID{}) {
		// kubelet.sock appeared during the call (a starting kubelet removes
		// every socket first): the kubelet that accepted us is that one.
		k.failedID, _ = statID(p.kubeletSocket)
	}
	k.kubeletID = k.failedID
	k.registered = true
	k.quietSince = time.Now()
	if k.failures > 0 {
		p.logger.Info("Registered with the kubelet", "socket", p.socket, "afterAttempts", k.failures+1)
	} else {
		p.logger.Info("Registered with the kubelet", "socket", p.socket)
	}
	k.failures, k.lastError = 0, ""
	p.registrations.Add(1)
	return nil
}

// serve listens on the plugin's next socket, replacing whatever is there.
func (p *plugin) serve() error {
	p.gen++
	socket := p.socketBase + "-" + strconv.Itoa(p.gen) + ".sock"
	if err := os.Remove(socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	// The socket is removed by stopServer, and only while it is still
	// this one.
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	id, err := statID(socket)
	if err != nil {
		_ = lis.Close()
		return err
	}
	srv := grpc.NewServer(grpc.WaitForHandlers(true))
	quit, done := make(chan struct{}), make(chan struct{})
	v1beta1.RegisterDevicePluginServer(srv, &endpoint{p: p, quit: quit})
	go func() {
		defer close(done)
		if err := srv.Serve(lis); err != nil {
			p.logger.Error(err, "Device plugin server stopped")
		}
	}()
	p.srv, p.srvQuit, p.srvDone, p.socket, p.sockID = srv, quit, done, socket, id
	p.logger.V(2).Info("Serving", "socket", socket)
	return nil
}

// stopServer ends the streams, lets running calls finish (briefly), and
// removes the socket if it is still this server's.
func (p *plugin) stopServer() {
	if p.srv == nil {
		return
	}
	close(p.srvQuit)
	stopped := make(chan struct{})
	go func() {
		p.srv.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		p.srv.Stop()
		<-stopped
	}
	<-p.srvDone
	if id, err := statID(p.socket); err == nil && id == p.sockID {
		if err := os.Remove(p.socket); err != nil && !errors.Is(err, fs.ErrNotExist) {
			p.logger.Error(err, "Removing the plugin socket")
		}
	}
	p.srv, p.socket = nil, ""
}

func (p *plugin) streamEvent() {
	select {
	case p.streamEvts <- struct{}{}:
	default:
	}
}

// endpoint is the v1beta1.DevicePluginServer of one server instance: quit
// ends its streams when that instance stops.
type endpoint struct {
	v1beta1.UnimplementedDevicePluginServer
	p    *plugin
	quit chan struct{}
}

// GetDevicePluginOptions implements v1beta1.DevicePluginServer.
func (e *endpoint) GetDevicePluginOptions(context.Context, *v1beta1.Empty) (*v1beta1.DevicePluginOptions, error) {
	return &v1beta1.DevicePluginOptions{GetPreferredAllocationAvailable: true}, nil
}

// ListAndWatch implements v1beta1.DevicePluginServer: the full list at
// once and after every change, until the stream's context ends or the
// server stops.
func (e *endpoint) ListAndWatch(_ *v1beta1.Empty, stream grpc.ServerStreamingServer[v1beta1.ListAndWatchResponse]) error {
	p := e.p
	p.streams.Add(1)
	p.opens.Add(1)
	p.streamEvent()
	defer func() {
		p.streams.Add(-1)
		p.streamEvent()
	}()
	ctx := stream.Context()
	p.logger.V(2).Info("ListAndWatch stream opened")
	defer p.logger.V(2).Info("ListAndWatch stream closed")
	for {
		set, changed := p.current()
		if err := stream.Send(set.ListAndWatchResponse()); err != nil {
			return err
		}
		p.metrics.ListAndWatchUpdate(p.group)
		p.logger.V(4).Info("Sent devices", "ids", len(set.Units))
		select {
		case <-ctx.Done():
			return nil
		case <-e.quit:
			// A group that goes away gets its empty list before the end.
			if last, _ := p.current(); last != set {
				_ = stream.Send(last.ListAndWatchResponse())
			}
			return nil
		case <-changed:
		}
	}
}

// GetPreferredAllocation implements v1beta1.DevicePluginServer.
func (e *endpoint) GetPreferredAllocation(_ context.Context, req *v1beta1.PreferredAllocationRequest) (*v1beta1.PreferredAllocationResponse, error) {
	set, _ := e.p.current()
	resp := &v1beta1.PreferredAllocationResponse{}
	for _, cr := range req.GetContainerRequests() {
		ids := set.Preferred(cr.GetAvailableDeviceIDs(), cr.GetMustIncludeDeviceIDs(), int(cr.GetAllocationSize()))
		resp.ContainerResponses = append(resp.ContainerResponses, &v1beta1.ContainerPreferredAllocationResponse{DeviceIDs: ids})
	}
	return resp, nil
}

// Allocate implements v1beta1.DevicePluginServer: exactly the requested
// IDs, each known to the current set, else an error naming the unknown.
func (e *endpoint) Allocate(_ context.Context, req *v1beta1.AllocateRequest) (_ *v1beta1.AllocateResponse, err error) {
	p := e.p
	start := time.Now()
	defer func() { p.metrics.Allocate(p.group, allocateResult(err), time.Since(start)) }()
	set, _ := p.current()
	resp := &v1beta1.AllocateResponse{ContainerResponses: make([]*v1beta1.ContainerAllocateResponse, 0, len(req.GetContainerRequests()))}
	for _, cr := range req.GetContainerRequests() {
		c, err := set.ContainerResponse(cr.GetDevicesIds(), p.cdiName)
		if err != nil {
			p.logger.Info("Allocate refused", "err", err)
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		if err := p.checkNotHeld(set, cr.GetDevicesIds()); err != nil {
			p.logger.Info("Allocate refused", "err", err)
			return nil, status.Error(codes.FailedPrecondition, err.Error())
		}
		p.logger.V(2).Info("Allocated", "ids", cr.GetDevicesIds(), "nodes", len(c.Devices), "cdiDevices", len(c.CdiDevices))
		resp.ContainerResponses = append(resp.ContainerResponses, c)
	}
	return resp, nil
}

// PreStartContainer implements v1beta1.DevicePluginServer. The plugin does
// not ask for it (PreStartRequired is false); it answers anyway.
func (e *endpoint) PreStartContainer(context.Context, *v1beta1.PreStartContainerRequest) (*v1beta1.PreStartContainerResponse, error) {
	return &v1beta1.PreStartContainerResponse{}, nil
}
