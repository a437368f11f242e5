package deviceplugin

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	oci "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2/ktesting"
	v1beta1 "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin/kubelettest"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// Each group gets its own plugin, registered the way the kubelet wants it,
// advertising the discovery names (never list positions).
func TestRegistersOnePluginPerGroup(t *testing.T) {
	e := newEnv(t)
	e.src.send(t, threeGroups())

	dev := e.plugin(t, "power-dev-plugin/dev")
	waitIDs(t, dev, "sdb", "sdc")
	db2 := e.plugin(t, "power-dev-plugin/db2")
	waitIDs(t, db2, "db2")
	nx := e.plugin(t, "power-dev-plugin/nx-gzip")
	waitIDs(t, nx, "crypto-nx-gzip_0", "crypto-nx-gzip_1", "crypto-nx-gzip_2")

	resources := map[string]bool{}
	for _, r := range e.kubelet.Requests() {
		resources[r.ResourceName] = true
		if r.Version != v1beta1.Version {
			t.Errorf("%s: version %q", r.ResourceName, r.Version)
		}
		if strings.Contains(r.Endpoint, "/") || !strings.HasPrefix(r.Endpoint, SocketPrefix) || !strings.HasSuffix(r.Endpoint, "-test0001-1.sock") {
			t.Errorf("%s: endpoint %q: want a socket name in the device-plugin directory", r.ResourceName, r.Endpoint)
		}
		if r.Options == nil || !r.Options.GetPreferredAllocationAvailable || r.Options.PreStartRequired {
			t.Errorf("%s: options %v", r.ResourceName, r.Options)
		}
	}
	if len(resources) != 3 {
		t.Errorf("registered resources %v, want the three groups'", resources)
	}
	if !dev.Options.GetPreferredAllocationAvailable {
		t.Errorf("GetDevicePluginOptions: %v", dev.Options)
	}
	eventually(t, 5*time.Second, "every plugin serving and registered once, with one stream", func() bool {
		for _, s := range e.m.Status() {
			if !s.Serving || !s.Registered || s.Streams != 1 || s.Registrations != 1 {
				return false
			}
		}
		return true
	})
}

// specPaths lists a container's DeviceSpecs as "container path" or, when
// the host path differs, "container path <- host path", sorted.
func specPaths(c *v1beta1.ContainerAllocateResponse) []string {
	var out []string
	for _, d := range c.Devices {
		p := d.ContainerPath
		if d.HostPath != d.ContainerPath {
			p += " <- " + d.HostPath
		}
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func cdiNames(c *v1beta1.ContainerAllocateResponse) []string {
	var out []string
	for _, d := range c.CdiDevices {
		out = append(out, d.Name)
	}
	return out
}

// Allocate grants exactly the requested IDs: DeviceSpecs at the kernel path
// (the host path too, for devices without a /dev/disk/by-id link) and the
// group's permissions, plus the CDI devices.
func TestAllocate(t *testing.T) {
	e := newEnv(t)
	e.src.send(t, threeGroups())
	ctx := waitCtx(t, 10*time.Second)

	dev := e.plugin(t, "power-dev-plugin/dev")
	resp, err := dev.Allocate(ctx, []string{"sdc"}, []string{"sdb", "sdc"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.ContainerResponses) != 2 {
		t.Fatalf("%d container responses for 2 containers", len(resp.ContainerResponses))
	}
	c := resp.ContainerResponses[0]
	if len(c.Devices) != 1 || c.Devices[0].HostPath != "/dev/sdc" || c.Devices[0].ContainerPath != "/dev/sdc" || c.Devices[0].Permissions != "rw" {
		t.Errorf("container 0: %v", c.Devices)
	}
	if got := cdiNames(c); !equal(got, []string{"power-dev-plugin.io/device=sdc"}) {
		t.Errorf("container 0 CDI devices %v", got)
	}
	if got := specPaths(resp.ContainerResponses[1]); !equal(got, []string{"/dev/sdb", "/dev/sdc"}) {
		t.Errorf("container 1: %v", got)
	}
	if len(c.Mounts) > 0 || len(c.Envs) > 0 || len(c.Annotations) > 0 {
		t.Errorf("unexpected mounts/envs/annotations: %v", c)
	}

	// A bundle ID grants every node of its group, with its permissions;
	// device-mapper nodes also under their /dev/mapper names. The runtime
	// opens them by their /dev/disk/by-id links (dmDev has dm-name- ones).
	db2 := e.plugin(t, "power-dev-plugin/db2")
	resp, err = db2.Allocate(ctx, []string{"db2"})
	if err != nil {
		t.Fatal(err)
	}
	c = resp.ContainerResponses[0]
	if got := specPaths(c); !equal(got, []string{
		"/dev/dm-1 <- /dev/disk/by-id/dm-name-mpath1", "/dev/dm-2 <- /dev/disk/by-id/dm-name-mpath2",
		"/dev/mapper/mpath1 <- /dev/disk/by-id/dm-name-mpath1", "/dev/mapper/mpath2 <- /dev/disk/by-id/dm-name-mpath2"}) {
		t.Errorf("bundle: %v", got)
	}
	for _, d := range c.Devices {
		if d.Permissions != "rwm" {
			t.Errorf("bundle node %s: permissions %q, want the group's rwm", d.HostPath, d.Permissions)
		}
	}
	if got := cdiNames(c); !equal(got, []string{"power-dev-plugin.io/device=db2"}) {
		t.Errorf("bundle CDI devices %v", got)
	}

	// Two shares of one device: the node and its CDI device once.
	nx := e.plugin(t, "power-dev-plugin/nx-gzip")
	resp, err = nx.Allocate(ctx, []string{"crypto-nx-gzip_0", "crypto-nx-gzip_2"})
	if err != nil {
		t.Fatal(err)
	}
	c = resp.ContainerResponses[0]
	if got := specPaths(c); !equal(got, []string{"/dev/crypto/nx-gzip"}) {
		t.Errorf("shares: %v", got)
	}
	if got := cdiNames(c); !equal(got, []string{"power-dev-plugin.io/device=crypto-nx-gzip"}) {
		t.Errorf("shares CDI devices %v", got)
	}

	// An ID the plugin does not advertise: a clear error, nothing granted.
	for _, ids := range [][]string{{"sdz"}, {"sdb", "0"}, {"db2"}} {
		_, err = dev.Allocate(ctx, ids)
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("Allocate %v: %v, want InvalidArgument", ids, err)
		}
		msg := status.Convert(err).Message()
		if !strings.Contains(msg, "power-dev-plugin/dev") || !strings.Contains(msg, `"`+ids[len(ids)-1]+`"`) {
			t.Errorf("Allocate %v: message %q should name the resource and the ID", ids, msg)
		}
	}
}

// The static CDI spec loads with the CDI library's own cache and injects
// the same nodes the DeviceSpecs name, owned by the container's user.
func TestCDISpec(t *testing.T) {
	e := newEnv(t)
	e.src.send(t, threeGroups())
	dev := e.plugin(t, "power-dev-plugin/dev")
	waitIDs(t, dev, "sdb", "sdc")

	cache, err := cdi.NewCache(cdi.WithSpecDirs(e.cdiDir), cdi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if errs := cache.GetErrors(); len(errs) > 0 {
		t.Fatalf("CDI spec errors: %v", errs)
	}
	want := []string{
		"power-dev-plugin.io/device=crypto-nx-gzip",
		"power-dev-plugin.io/device=db2",
		"power-dev-plugin.io/device=sdb",
		"power-dev-plugin.io/device=sdc",
	}
	if got := cache.ListDevices(); !equal(got, want) {
		t.Errorf("CDI devices %v, want %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(e.cdiDir, "power-dev-plugin.io-device.json")); err != nil {
		t.Errorf("spec file: %v", err)
	}
	d := cache.GetDevice("power-dev-plugin.io/device=db2")
	if d == nil {
		t.Fatal("no db2 device")
	}
	var paths []string
	for _, n := range d.ContainerEdits.DeviceNodes {
		paths = append(paths, n.Path+" "+n.HostPath+" "+n.Type+" "+n.Permissions)
		if n.Major != 253 || n.UID != nil || n.GID != nil || n.FileMode != nil {
			t.Errorf("db2 node %+v: want major 253 and no uid/gid/mode (the runtime gives the node to the container's user)", *n)
		}
	}
	if !equal(paths, []string{"/dev/dm-1 /dev/dm-1 b rwm", "/dev/mapper/mpath1 /dev/dm-1 b rwm", "/dev/dm-2 /dev/dm-2 b rwm", "/dev/mapper/mpath2 /dev/dm-2 b rwm"}) {
		t.Errorf("db2 nodes %v", paths)
	}

	// What a runtime does with the names Allocate returns.
	resp, err := dev.Allocate(waitCtx(t, 5*time.Second), []string{"sdb"})
	if err != nil {
		t.Fatal(err)
	}
	spec := &oci.Spec{Process: &oci.Process{User: oci.User{UID: 1000, GID: 2000}}, Linux: &oci.Linux{}}
	if unresolved, err := cache.InjectDevices(spec, cdiNames(resp.ContainerResponses[0])...); err != nil {
		t.Fatalf("inject %v: unresolved %v: %v", cdiNames(resp.ContainerResponses[0]), unresolved, err)
	}
	if len(spec.Linux.Devices) != 1 {
		t.Fatalf("OCI devices %+v", spec.Linux.Devices)
	}
	od := spec.Linux.Devices[0]
	if od.Path != "/dev/sdb" || od.Type != "b" || od.Major != 8 || od.Minor != 16 || od.UID == nil || *od.UID != 1000 || od.GID == nil || *od.GID != 2000 {
		t.Errorf("OCI device %+v", od)
	}

	// A spec removed on the node comes back.
	if err := os.Remove(filepath.Join(e.cdiDir, CDISpecFile)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "CDI spec rewritten", func() bool {
		_, err := os.Stat(filepath.Join(e.cdiDir, CDISpecFile))
		return err == nil
	})
}

// Without CDI devices the answers carry DeviceSpecs only and no spec is
// written.
func TestCDIDevicesOff(t *testing.T) {
	e := newEnv(t, WithCDIDevices(false))
	e.src.send(t, threeGroups())
	dev := e.plugin(t, "power-dev-plugin/dev")
	resp, err := dev.Allocate(waitCtx(t, 5*time.Second), []string{"sdb"})
	if err != nil {
		t.Fatal(err)
	}
	if c := resp.ContainerResponses[0]; len(c.CdiDevices) != 0 || len(c.Devices) != 1 {
		t.Errorf("response %v", c)
	}
	if _, err := os.Stat(filepath.Join(e.cdiDir, CDISpecFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spec file: %v, want none", err)
	}
}

// When the CDI spec cannot be written, Allocate still answers, with
// DeviceSpecs only.
func TestCDIUnwritable(t *testing.T) {
	base := shortDir(t)
	file := filepath.Join(base, "not-a-dir")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, WithCDIDir(filepath.Join(file, "cdi")))
	e.src.send(t, threeGroups())
	dev := e.plugin(t, "power-dev-plugin/dev")
	resp, err := dev.Allocate(waitCtx(t, 5*time.Second), []string{"sdb"})
	if err != nil {
		t.Fatal(err)
	}
	if c := resp.ContainerResponses[0]; len(c.CdiDevices) != 0 || len(c.Devices) != 1 {
		t.Errorf("response %v", c)
	}
}

// Discovery changes reach the kubelet: a new device appears, a vanished
// one is gone from the list, a new group registers, a group removed from
// the configuration sends an empty list and stops.
func TestInventoryChanges(t *testing.T) {
	e := newEnv(t)
	inv := threeGroups()
	e.src.send(t, inv)
	dev := e.plugin(t, "power-dev-plugin/dev")
	waitIDs(t, dev, "sdb", "sdc")
	db2 := e.plugin(t, "power-dev-plugin/db2")

	// sdh appears (not sdd: that one is under db2's dm-1).
	inv2 := threeGroups()
	inv2.Groups[0].Devices = append(inv2.Groups[0].Devices, blockDev("dev", "sdh", 8, 112, ""))
	e.src.send(t, inv2)
	waitIDs(t, dev, "sdb", "sdc", "sdh")
	if _, err := dev.Allocate(waitCtx(t, 5*time.Second), []string{"sdh"}); err != nil {
		t.Errorf("Allocate the new device: %v", err)
	}

	// sdb vanishes: gone from the list, and no longer allocatable.
	inv3 := threeGroups()
	inv3.Groups[0].Devices = []discovery.Device{blockDev("dev", "sdc", 8, 32, ""), blockDev("dev", "sdh", 8, 112, "")}
	before := db2.Lists()
	e.src.send(t, inv3)
	waitIDs(t, dev, "sdc", "sdh")
	if _, err := dev.Allocate(waitCtx(t, 5*time.Second), []string{"sdb"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Allocate a vanished device: %v", err)
	}
	// Other groups' lists did not change, so they were not re-sent.
	time.Sleep(100 * time.Millisecond)
	if db2.Lists() != before {
		t.Errorf("db2 got %d lists, want %d: unchanged groups need no update", db2.Lists(), before)
	}

	// A new group appears; db2 and nx-gzip are removed.
	inv4 := &discovery.Inventory{Groups: []discovery.Group{
		inv3.Groups[0],
		{Name: "fuse", Permissions: "rwm", Sharing: shared(0), Devices: []discovery.Device{charDev("fuse", "fuse", "/dev/fuse", 10, 229)}},
	}}
	socket := db2.Endpoint
	e.src.send(t, inv4)
	fuse := e.plugin(t, "power-dev-plugin/fuse")
	devs := waitIDs(t, fuse, func() []string {
		var ids []string
		for k := 0; k < DefaultSharedIDs; k++ {
			ids = append(ids, ShareID("fuse", k))
		}
		return ids
	}()...)
	if len(devs) != DefaultSharedIDs {
		t.Errorf("unbounded shared device: %d IDs, want %d", len(devs), DefaultSharedIDs)
	}
	if err := db2.WaitEnded(waitCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := db2.Devices(); len(got) != 0 {
		t.Errorf("db2's last list %v, want empty before the plugin stops", kubelettest.IDs(got))
	}
	eventually(t, 5*time.Second, "db2's socket removed", func() bool {
		_, err := os.Stat(socket)
		return errors.Is(err, os.ErrNotExist)
	})
	if got := len(e.m.Status()); got != 2 {
		t.Errorf("%d plugins, want 2", got)
	}
}

// A kubelet restart (its socket and every plugin socket removed, a new
// kubelet.sock) makes the plugin serve and register again in-process.
func TestKubeletRestart(t *testing.T) {
	e := newEnv(t)
	e.src.send(t, threeGroups())
	old := e.plugin(t, "power-dev-plugin/dev")
	waitIDs(t, old, "sdb", "sdc")
	olds := []*kubelettest.Plugin{old, e.plugin(t, "power-dev-plugin/db2"), e.plugin(t, "power-dev-plugin/nx-gzip")}

	e.kubelet.Stop()
	for _, p := range olds {
		if err := p.WaitEnded(waitCtx(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // the kubelet is down for a moment
	start := time.Now()
	if err := e.kubelet.Start(); err != nil { // removes the plugins' sockets
		t.Fatal(err)
	}
	for _, r := range []string{"power-dev-plugin/dev", "power-dev-plugin/db2", "power-dev-plugin/nx-gzip"} {
		p := e.plugin(t, r, olds...)
		if r == "power-dev-plugin/dev" {
			waitIDs(t, p, "sdb", "sdc")
			if _, err := p.Allocate(waitCtx(t, 5*time.Second), []string{"sdb"}); err != nil {
				t.Errorf("Allocate after the restart: %v", err)
			}
		}
	}
	took := time.Since(start)
	t.Logf("all plugins registered again %v after the kubelet came back", took)
	if took > 5*time.Second {
		t.Errorf("re-registration took %v", took)
	}
	defer func() {
		if t.Failed() {
			t.Logf("status: %+v", e.m.Status())
		}
	}()
	// Each resource has a new connection (e.plugin above waits for one
	// that is not among the old ones); the plugin's own view must agree.
	// (Its registration counter is not checked: when the test stops the
	// kubelet while a first Register call is still in flight, the kubelet
	// has already opened the stream the test waited for, but the call
	// returns EOF and the plugin rightly counts a failure, then registers
	// once on the new kubelet: a counter of 1, seen under load.)
	eventually(t, 5*time.Second, "every plugin registered with one stream", func() bool {
		for _, s := range e.m.Status() {
			if s.Registrations < 1 || !s.Registered || s.Streams != 1 {
				return false
			}
		}
		return true
	})
	if stale := e.kubelet.Stale(); len(stale) > 0 {
		t.Errorf("the kubelet holds dead endpoints %v", stale)
	}
}

// The kubelet going away for longer: the plugin keeps retrying and
// registers as soon as the socket is back.
func TestKubeletDownThenBack(t *testing.T) {
	e := newEnv(t)
	e.src.send(t, threeGroups())
	old := e.plugin(t, "power-dev-plugin/dev")
	e.kubelet.Stop()
	eventually(t, 5*time.Second, "registration failing", func() bool {
		s := statusOf(e.m, "dev")
		return !s.Registered && s.LastError != ""
	})
	time.Sleep(2 * time.Second) // several failed attempts, backoff at its cap
	start := time.Now()
	if err := e.kubelet.Start(); err != nil {
		t.Fatal(err)
	}
	p := e.plugin(t, "power-dev-plugin/dev", old)
	waitIDs(t, p, "sdb", "sdc")
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("registered %v after kubelet.sock came back; the directory watch should end the backoff", took)
	}
}

// Only the plugin's socket removed (the kubelet stays): the plugin serves
// on a new socket and the kubelet connects again; the kubelet is left with
// no dead endpoint.
func TestPluginSocketRemoved(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []kubelettest.Option
	}{
		{"kubelet 1.37", nil},
		{"single-endpoint kubelet", []kubelettest.Option{kubelettest.WithSingleEndpoint()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvWith(t, tc.opts)
			e.src.send(t, threeGroups())
			old := e.plugin(t, "power-dev-plugin/dev")
			socket := old.Endpoint
			if err := os.Remove(socket); err != nil {
				t.Fatal(err)
			}
			p := e.plugin(t, "power-dev-plugin/dev", old)
			waitIDs(t, p, "sdb", "sdc")
			if _, err := os.Stat(p.Endpoint); err != nil || p.Endpoint == socket {
				t.Errorf("new socket %s (old %s): %v", p.Endpoint, socket, err)
			}
			if err := old.WaitEnded(waitCtx(t, 5*time.Second)); err != nil {
				t.Error(err)
			}
			eventually(t, 5*time.Second, "one endpoint", func() bool { return len(e.kubelet.Endpoints("power-dev-plugin/dev")) == 1 })
			if stale := e.kubelet.Stale(); len(stale) > 0 {
				t.Errorf("the kubelet holds dead endpoints %v", stale)
			}
		})
	}
}

// The kubelet drops the plugin's connection without restarting: the plugin
// notices that no stream is open and registers again, on a new socket.
func TestKubeletDropsConnection(t *testing.T) {
	e := newEnv(t)
	e.src.send(t, threeGroups())
	old := e.plugin(t, "power-dev-plugin/dev")
	e.kubelet.Disconnect("power-dev-plugin/dev")
	p := e.plugin(t, "power-dev-plugin/dev", old)
	waitIDs(t, p, "sdb", "sdc")
	if p.Endpoint == old.Endpoint {
		t.Errorf("registered again on the same socket %s", p.Endpoint)
	}
	if stale := e.kubelet.Stale(); len(stale) > 0 {
		t.Errorf("the kubelet holds dead endpoints %v", stale)
	}
}

// The test kubelet reproduces the kubelet's trap for a plugin that
// registers a path it holds already: refused, and the path is dead for
// good. The plugin never does that (see TestKubeletDropsConnection).
func TestKubeletSamePathTrap(t *testing.T) {
	e := newEnv(t)
	e.src.send(t, threeGroups())
	p := e.plugin(t, "power-dev-plugin/dev")
	reg := SocketRegistrar(e.kubelet.Socket())
	req := &v1beta1.RegisterRequest{Version: v1beta1.Version, Endpoint: filepath.Base(p.Endpoint), ResourceName: "power-dev-plugin/dev"}
	err := reg.Register(waitCtx(t, 5*time.Second), req)
	if err == nil || !strings.Contains(err.Error(), "device plugin already connected") {
		t.Fatalf("second registration of %s: %v", p.Endpoint, err)
	}
	e.stop()
	eventually(t, 5*time.Second, "a dead endpoint", func() bool { return len(e.kubelet.Stale()) == 1 })
}

// A registration the kubelet accepts without opening ListAndWatch (for
// example "already connected" just before it dropped the old connection)
// is made again.
func TestRegistersAgainWithoutStream(t *testing.T) {
	var calls atomic.Int32
	reg := registrarFunc(func(context.Context, *v1beta1.RegisterRequest) error {
		calls.Add(1)
		return nil
	})
	base := shortDir(t)
	fakeKubeletSocket(t, base)
	m, err := New(WithPluginDir(base), WithCDIDir(""), WithNUMA(nil), WithRegistrar(reg),
		WithIntervals(100*time.Millisecond, 300*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	src := newChanSource()
	startManager(t, ctx, m, src)
	src.send(t, &discovery.Inventory{Groups: threeGroups().Groups[:1]})
	eventually(t, 5*time.Second, "three registrations", func() bool { return calls.Load() >= 3 })
}

type registrarFunc func(context.Context, *v1beta1.RegisterRequest) error

// fakeKubeletSocket puts a stand-in for kubelet.sock in dir for tests with
// a fake Registrar: the plugin registers again when the socket is gone.
func fakeKubeletSocket(t *testing.T, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, KubeletSocket), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f registrarFunc) Register(ctx context.Context, r *v1beta1.RegisterRequest) error {
	return f(ctx, r)
}

// Failed registrations are retried with backoff and reported in Status.
func TestRegistrationRetried(t *testing.T) {
	var calls atomic.Int32
	reg := registrarFunc(func(ctx context.Context, r *v1beta1.RegisterRequest) error {
		if calls.Add(1) <= 3 {
			return errors.New("kubelet says no")
		}
		return nil
	})
	base := shortDir(t)
	fakeKubeletSocket(t, base)
	m, err := New(WithPluginDir(base), WithCDIDir(""), WithNUMA(nil), WithRegistrar(reg),
		WithIntervals(100*time.Millisecond, time.Minute, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	src := newChanSource()
	startManager(t, ctx, m, src)
	src.send(t, &discovery.Inventory{Groups: threeGroups().Groups[:1]})
	eventually(t, 5*time.Second, "a failure reported", func() bool {
		return strings.Contains(statusOf(m, "dev").LastError, "kubelet says no")
	})
	eventually(t, 5*time.Second, "registered after three failures", func() bool {
		s := statusOf(m, "dev")
		return s.Registered && s.LastError == "" && s.Registrations == 1
	})
}

// A rolling update: a new plugin pod (another instance, other sockets)
// starts while the old one runs. A 1.37 kubelet takes both endpoints and
// allocates through the newest; an older kubelet refuses the new one until
// the old one's stream ends. Either way the new pod is ready at once, and
// serves the resource within seconds after the old pod stops; the old pod's
// exit removes neither the new pod's socket nor the CDI spec.
func TestRollingUpdate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opts   []kubelettest.Option
		refuse bool
	}{
		{"kubelet 1.37", nil, false},
		{"single-endpoint kubelet", []kubelettest.Option{kubelettest.WithSingleEndpoint()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnvWith(t, tc.opts)
			e.src.send(t, threeGroups())
			old := e.plugin(t, "power-dev-plugin/dev")

			m2, err := New(WithPluginDir(e.dir), WithCDIDir(e.cdiDir), WithNUMA(nil), WithInstanceID("test0002"), fast, withProbe(noProbe))
			if err != nil {
				t.Fatal(err)
			}
			src2 := newChanSource()
			startManager(t, e.ctx, m2, src2)
			src2.send(t, threeGroups())
			// Ready while it waits: the DaemonSet rollout waits for the
			// new pod to be ready before it stops the old one.
			eventually(t, 5*time.Second, "the second instance ready", m2.Ready)
			var p *kubelettest.Plugin
			if tc.refuse {
				eventually(t, 5*time.Second, "the second instance refused", func() bool {
					return strings.Contains(statusOf(m2, "dev").LastError, "already registered with a different socket path")
				})
			} else {
				p = e.plugin(t, "power-dev-plugin/dev", old)
				if n := len(e.kubelet.Endpoints("power-dev-plugin/dev")); n != 2 {
					t.Errorf("%d endpoints, want both instances'", n)
				}
			}

			e.stop() // the old pod goes
			if err := old.WaitEnded(waitCtx(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if p == nil {
				p = e.plugin(t, "power-dev-plugin/dev", old)
			}
			waitIDs(t, p, "sdb", "sdc")
			eventually(t, 5*time.Second, "one endpoint, the new instance's", func() bool {
				eps := e.kubelet.Endpoints("power-dev-plugin/dev")
				return len(eps) == 1 && eps[0] == p
			})
			t.Logf("the new instance serves %v after the old one stopped", time.Since(start))
			if !strings.Contains(p.Endpoint, "-test0002-") {
				t.Errorf("connected to %s, want the second instance", p.Endpoint)
			}
			if _, err := p.Allocate(waitCtx(t, 5*time.Second), []string{"sdb"}); err != nil {
				t.Errorf("Allocate through the new instance: %v", err)
			}
			// The CDI spec stays for the new instance.
			if _, err := os.Stat(filepath.Join(e.cdiDir, CDISpecFile)); err != nil {
				t.Errorf("CDI spec after the old instance stopped: %v", err)
			}
			if stale := e.kubelet.Stale(); len(stale) > 0 {
				t.Errorf("the kubelet holds dead endpoints %v", stale)
			}
		})
	}
}

// A ListAndWatch stream ends with its context, and only that stream.
func TestListAndWatchEndsWithContext(t *testing.T) {
	e := newEnv(t)
	e.src.send(t, threeGroups())
	socket := e.plugin(t, "power-dev-plugin/dev").Endpoint

	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := v1beta1.NewDevicePluginClient(conn).ListAndWatch(ctx, &v1beta1.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := stream.Recv(); err != nil || len(resp.Devices) != 2 {
		t.Fatalf("first list %v, %v", resp, err)
	}
	eventually(t, 5*time.Second, "two streams", func() bool { return statusOf(e.m, "dev").Streams == 2 })
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("Recv after cancel: %v", err)
	}
	eventually(t, 5*time.Second, "the stream's goroutine ends", func() bool { return statusOf(e.m, "dev").Streams == 1 })
	if s := statusOf(e.m, "dev"); !s.Registered {
		t.Errorf("the kubelet's stream must be unaffected: %+v", s)
	}
}

// GetPreferredAllocation over gRPC, as the kubelet calls it.
func TestPreferredAllocationOverGRPC(t *testing.T) {
	e := newEnv(t)
	inv := &discovery.Inventory{Groups: []discovery.Group{{Name: "parts", Permissions: "rw", Sharing: exclusive(), Devices: []discovery.Device{
		blockDev("parts", "sdb1", 8, 17, "sdb"), blockDev("parts", "sdb2", 8, 18, "sdb"),
		blockDev("parts", "sdc1", 8, 33, "sdc"), blockDev("parts", "sdc2", 8, 34, "sdc"), blockDev("parts", "sdc3", 8, 35, "sdc"),
	}}}}
	e.src.send(t, inv)
	p := e.plugin(t, "power-dev-plugin/parts")
	ctx := waitCtx(t, 5*time.Second)
	got, err := p.Preferred(ctx, []string{"sdb1", "sdb2", "sdc1", "sdc2", "sdc3"}, []string{"sdb1"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(got, []string{"sdb1", "sdb2"}) {
		t.Errorf("with sdb1: %v, want its sibling", got)
	}
	got, err = p.Preferred(ctx, []string{"sdb1", "sdb2", "sdc1", "sdc2", "sdc3"}, nil, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !equal(got, []string{"sdc1", "sdc2", "sdc3"}) {
		t.Errorf("3 of one parent: %v", got)
	}
}

// /healthz and /readyz for the DaemonSet's probes.
func TestHealthEndpoint(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	e := newEnv(t, WithHealthAddress(addr))
	get := func(path string) (int, string) {
		var resp *http.Response
		var err error
		for i := 0; i < 50; i++ {
			if resp, err = http.Get("http://" + addr + path); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz before any inventory: %d", code)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before any inventory: %d %s", code, body)
	}
	e.src.send(t, threeGroups())
	waitIDs(t, e.plugin(t, "power-dev-plugin/dev"), "sdb", "sdc")
	eventually(t, 5*time.Second, "ready", e.m.Ready)
	code, body := get("/readyz")
	if code != http.StatusOK || !strings.Contains(body, "power-dev-plugin/dev: 2 IDs, serving=true, registered") {
		t.Errorf("/readyz: %d %s", code, body)
	}
}

// Sockets of earlier instances that nobody serves are removed at start;
// other files are left alone.
func TestStaleSocketsRemoved(t *testing.T) {
	base := shortDir(t)
	dir := filepath.Join(base, "dp")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	stale := filepath.Join(dir, SocketPrefix+"dev-deadbeef.sock")
	l, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = l.Close()
	other := filepath.Join(dir, "other-vendor.sock")
	l2, err := net.Listen("unix", other)
	if err != nil {
		t.Fatal(err)
	}
	l2.(*net.UnixListener).SetUnlinkOnClose(false)
	_ = l2.Close()
	t.Cleanup(func() { _ = os.Remove(other) })

	m, err := New(WithPluginDir(dir), WithCDIDir(""), WithNUMA(nil), fast)
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	src := newChanSource()
	startManager(t, ctx, m, src)
	eventually(t, 5*time.Second, "stale socket removed", func() bool {
		_, err := os.Stat(stale)
		return errors.Is(err, os.ErrNotExist)
	})
	if _, err := os.Stat(other); err != nil {
		t.Errorf("another vendor's socket: %v", err)
	}
}

// Options are checked.
func TestNewErrors(t *testing.T) {
	if _, err := New(WithPluginDir("")); err == nil {
		t.Error("empty plugin dir accepted")
	}
	long := "/" + strings.Repeat("d", 100)
	if _, err := New(WithPluginDir(long)); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("long plugin dir: %v", err)
	}
	m, err := New(WithPluginDir("/var/lib/kubelet/device-plugins"), WithInstanceID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.socketBase("dev")
	if err != nil || p != "/var/lib/kubelet/device-plugins/power-dev-plugin-dev-0f1e2d3c" {
		t.Errorf("socket base %q, %v", p, err)
	}
	p, err = m.socketBase(strings.Repeat("g", 63))
	if err != nil || len(p+"-99999.sock") > maxSocketPath || !strings.HasPrefix(filepath.Base(p), SocketPrefix) {
		t.Errorf("socket base of a long group %q (%d), %v", p, len(p), err)
	}
	if m.PluginDir() != "/var/lib/kubelet/device-plugins" {
		t.Errorf("dir %s", m.PluginDir())
	}
}

// A Register call that fails here although the kubelet connected (it timed
// out after the kubelet had dialed back): the open stream counts as the
// registration, and the plugin does not register again, which would make
// the kubelet refuse the path and lose track of the connection.
func TestRegisterErrorAfterKubeletConnected(t *testing.T) {
	base := shortDir(t)
	dir := filepath.Join(base, "dp")
	k := kubelettest.New(dir)
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	real := SocketRegistrar(k.Socket())
	var calls atomic.Int32
	reg := registrarFunc(func(ctx context.Context, r *v1beta1.RegisterRequest) error {
		calls.Add(1)
		if err := real.Register(ctx, r); err != nil {
			return err
		}
		return context.DeadlineExceeded
	})
	m, err := New(WithPluginDir(dir), WithCDIDir(""), WithNUMA(nil), WithRegistrar(reg),
		WithIntervals(100*time.Millisecond, 300*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	src := newChanSource()
	startManager(t, ctx, m, src)
	src.send(t, &discovery.Inventory{Groups: threeGroups().Groups[:1]})
	p, err := k.WaitPlugin(waitCtx(t, 5*time.Second), "power-dev-plugin/dev")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "registered", func() bool { return statusOf(m, "dev").Registered })
	time.Sleep(time.Second) // several checks and stream grace periods
	if n := calls.Load(); n != 1 {
		t.Errorf("%d Register calls, want 1", n)
	}
	if ended, err := p.Ended(); ended {
		t.Errorf("the kubelet's connection ended: %v", err)
	}
	if stale := k.Stale(); len(stale) > 0 {
		t.Errorf("the kubelet holds dead endpoints %v", stale)
	}
}

// A configuration with groups: [] stops every device plugin after sending
// it an empty list, and the manager stays ready.
func TestInventoryWithoutGroups(t *testing.T) {
	e := newEnv(t)
	e.src.send(t, threeGroups())
	dev := e.plugin(t, "power-dev-plugin/dev")
	waitIDs(t, dev, "sdb", "sdc")
	e.src.send(t, &discovery.Inventory{Groups: []discovery.Group{}, Excluded: []discovery.Exclusion{}})
	if err := dev.WaitEnded(waitCtx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := dev.Devices(); len(got) != 0 {
		t.Errorf("dev's last list %v, want empty before the plugin stops", kubelettest.IDs(got))
	}
	eventually(t, 5*time.Second, "no plugins left", func() bool { return len(e.m.Status()) == 0 })
}

// A kubelet that starts removes every socket in the directory, the plugin's
// among them, and then creates kubelet.sock. The plugin, seeing its socket
// gone, may register in between: kubelet.sock is not there when it looks,
// and is there when the call reaches it. That registration holds (it is the
// new kubelet's), and is not made again as if the kubelet had restarted once
// more, which dropped the connection the kubelet had just opened (found by
// test/faults, "legacy: kubelet socket gone and back").
func TestKubeletSocketAppearsDuringRegistration(t *testing.T) {
	base := shortDir(t)
	sock := filepath.Join(base, KubeletSocket)
	var calls atomic.Int32
	reg := registrarFunc(func(context.Context, *v1beta1.RegisterRequest) error {
		calls.Add(1)
		if _, err := os.Stat(sock); err != nil {
			// the kubelet's listener comes up as the call is made
			if err := os.WriteFile(sock, nil, 0o600); err != nil {
				return err
			}
		}
		return nil
	})
	m, err := New(WithPluginDir(base), WithCDIDir(""), WithNUMA(nil), WithRegistrar(reg),
		WithIntervals(50*time.Millisecond, time.Minute, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	src := newChanSource()
	startManager(t, ctx, m, src)
	src.send(t, &discovery.Inventory{Groups: threeGroups().Groups[:1]})
	eventually(t, 5*time.Second, "registered", func() bool { return statusOf(m, "dev").Registered })
	time.Sleep(500 * time.Millisecond) // ten checks of the kubelet's socket
	if n := calls.Load(); n != 1 {
		t.Errorf("%d registrations with one kubelet, want 1", n)
	}
}
