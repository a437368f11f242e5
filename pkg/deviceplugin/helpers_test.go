package deviceplugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"go.uber.org/goleak"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"
	v1beta1 "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin/kubelettest"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// Every test leaves no goroutine behind: plugin servers, keepers, streams,
// the directory watch and the test kubelet all end when their test does.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// chanSource is an InventorySource fed by the test. The real one,
// discovery.Watcher, drives TestHotplugRealLoopDevice.
type chanSource struct{ ch chan *discovery.Inventory }

func newChanSource() *chanSource { return &chanSource{ch: make(chan *discovery.Inventory, 1)} }

func (s *chanSource) Run(ctx context.Context) error        { <-ctx.Done(); return nil }
func (s *chanSource) Updates() <-chan *discovery.Inventory { return s.ch }

func (s *chanSource) send(t testing.TB, inv *discovery.Inventory) {
	t.Helper()
	select {
	case s.ch <- inv:
	case <-time.After(5 * time.Second):
		t.Fatal("the manager does not read inventories")
	}
}

func ptr[T any](v T) *T { return &v }

func blockDev(group, kname string, major, minor uint32, parent string) discovery.Device {
	kind := discovery.KindDisk
	if parent != "" {
		kind = discovery.KindPartition
	}
	return discovery.Device{
		Name: kname, Group: group, Path: "/dev/" + kname, Type: v1alpha1.DeviceTypeBlock, Major: major, Minor: minor,
		Block: &discovery.BlockInfo{KernelName: kname, Kind: kind, SizeBytes: 1 << 30, Parent: parent},
	}
}

// dmDev is a multipath device mpath<minor>: /dev/dm-<minor>, also
// /dev/mapper/mpath<minor>.
func dmDev(group, kname string, minor uint32, slaves ...string) discovery.Device {
	dmName := fmt.Sprintf("mpath%d", minor)
	return discovery.Device{
		Name: kname, Group: group, Path: "/dev/" + kname, Type: v1alpha1.DeviceTypeBlock, Major: 253, Minor: minor,
		Aliases: []string{"/dev/disk/by-id/dm-name-" + dmName, "/dev/mapper/" + dmName},
		Block:   &discovery.BlockInfo{KernelName: kname, Kind: discovery.KindDM, SizeBytes: 1 << 30, Slaves: slaves, DMName: dmName},
	}
}

func charDev(group, name, path string, major, minor uint32) discovery.Device {
	return discovery.Device{Name: name, Group: group, Path: path, Type: v1alpha1.DeviceTypeChar, Major: major, Minor: minor}
}

func exclusive() v1alpha1.Sharing { return v1alpha1.Sharing{Mode: v1alpha1.SharingExclusive} }

func shared(n int32) v1alpha1.Sharing {
	s := v1alpha1.Sharing{Mode: v1alpha1.SharingShared}
	if n > 0 {
		s.MaxConsumers = ptr(n)
	}
	return s
}

// threeGroups has an exclusive group of disks, a bundle of two multipath
// devices and a shared accelerator with three consumers.
func threeGroups() *discovery.Inventory {
	return &discovery.Inventory{Groups: []discovery.Group{
		{Name: "dev", Permissions: "rw", Sharing: exclusive(), Devices: []discovery.Device{
			blockDev("dev", "sdb", 8, 16, ""), blockDev("dev", "sdc", 8, 32, ""),
		}},
		{Name: "db2", Permissions: "rwm", Sharing: exclusive(), Bundle: true, BundleName: "db2", Devices: []discovery.Device{
			dmDev("db2", "dm-1", 1, "sdd", "sde"), dmDev("db2", "dm-2", 2, "sdf", "sdg"),
		}},
		{Name: "nx-gzip", Permissions: "rw", Sharing: shared(3), Devices: []discovery.Device{
			charDev("nx-gzip", "crypto-nx-gzip", "/dev/crypto/nx-gzip", 10, 121),
		}},
	}}
}

// shortDir is a temporary directory with a short path: unix socket paths
// are limited to 108 bytes, and t.TempDir's can be longer.
func shortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// env is a manager served by a test kubelet in a temporary directory.
type env struct {
	dir, cdiDir string
	kubelet     *kubelettest.Kubelet
	src         *chanSource
	m           *Manager
	ctx         context.Context
	stop        func()
}

// withProbe replaces discovery.CheckNotHeld at Allocate; nil keeps the
// real one. Most tests' inventories are made up (/dev/sdb of a host that
// may have another or none), so newEnv uses noProbe.
func withProbe(f func(d *discovery.Device) error) Option { return func(o *options) { o.probe = f } }

func noProbe(*discovery.Device) error { return nil }

// quietContext logs nothing: benchmarks must not time the logging.
var quietContext = klog.NewContext(context.Background(), logr.Discard())

// fast are intervals that keep tests short.
var fast = WithIntervals(200*time.Millisecond, time.Second, 500*time.Millisecond)

func newEnv(t testing.TB, opts ...Option) *env {
	t.Helper()
	return newEnvWith(t, nil, opts...)
}

// newEnvWith is newEnv with options for the test kubelet.
func newEnvWith(t testing.TB, kopts []kubelettest.Option, opts ...Option) *env {
	t.Helper()
	base := shortDir(t)
	e := &env{dir: filepath.Join(base, "dp"), cdiDir: filepath.Join(base, "cdi"), src: newChanSource()}
	e.kubelet = kubelettest.New(e.dir, kopts...)
	if err := e.kubelet.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.kubelet.Stop)
	all := append([]Option{WithPluginDir(e.dir), WithCDIDir(e.cdiDir), WithNUMA(nil), WithInstanceID("test0001"), fast, withProbe(noProbe)}, opts...)
	m, err := New(all...)
	if err != nil {
		t.Fatal(err)
	}
	e.m = m
	ctx := quietContext
	if _, ok := t.(*testing.T); ok {
		_, ctx = ktesting.NewTestContext(t)
	}
	e.ctx = ctx
	e.stop = startManager(t, ctx, m, e.src)
	return e
}

// startManager runs m until the test ends (or stop is called) and checks
// that Run returns nil.
func startManager(t testing.TB, ctx context.Context, m *Manager, src InventorySource) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, src) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	}
	t.Cleanup(stop)
	return stop
}

func waitCtx(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// plugin waits for the resource's plugin to be connected to the test
// kubelet with a first list.
func (e *env) plugin(t testing.TB, resource string, skip ...*kubelettest.Plugin) *kubelettest.Plugin {
	t.Helper()
	p, err := e.kubelet.WaitPlugin(waitCtx(t, 10*time.Second), resource, skip...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitIDs waits until the plugin's last list has exactly want (any order),
// all healthy.
func waitIDs(t testing.TB, p *kubelettest.Plugin, want ...string) []*v1beta1.Device {
	t.Helper()
	sort.Strings(want)
	devs, err := p.WaitDevices(waitCtx(t, 10*time.Second), func(d []*v1beta1.Device) bool {
		got := kubelettest.Healthy(d)
		sort.Strings(got)
		return len(got) == len(d) && equal(got, want)
	})
	if err != nil {
		t.Fatalf("want IDs %v: %v", want, err)
	}
	return devs
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// eventually polls cond until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
