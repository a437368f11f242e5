package deviceplugin

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"k8s.io/klog/v2/ktesting"
	v1beta1 "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin/kubelettest"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// Hotplug on the running kernel: the real discovery watcher on the host
// root, a loop device bound while the plugin runs appears in ListAndWatch,
// and is gone once detached. Needs root (losetup); skipped otherwise.
func TestHotplugRealLoopDevice(t *testing.T) {
	cfg := &v1alpha1.DiscoveryConfig{Groups: []v1alpha1.DeviceGroup{{
		Name: "loops", Include: []string{"/dev/loop*"}, Types: []v1alpha1.DeviceType{v1alpha1.DeviceTypeBlock},
	}}}
	v1alpha1.SetDefaults(cfg)
	w := discovery.NewWatcher(discovery.WithWatchHostRoot("/"), discovery.WithConfig(cfg),
		discovery.WithRescanInterval(2*time.Second), discovery.WithDebounce(50*time.Millisecond))

	base := shortDir(t)
	dir := filepath.Join(base, "dp")
	k := kubelettest.New(dir)
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	m, err := New(WithPluginDir(dir), WithCDIDir(filepath.Join(base, "cdi")), WithHostRoot("/"), fast)
	if err != nil {
		t.Fatal(err)
	}
	_, ctx := ktesting.NewTestContext(t)
	startManager(t, ctx, m, w)
	p, err := k.WaitPlugin(waitCtx(t, 10*time.Second), "power-dev-plugin/loops")
	if err != nil {
		t.Fatal(err)
	}

	dev, detach := discoverytest.LoopDevice(t, 16<<20)
	id := filepath.Base(dev)
	t.Logf("bound %s", dev)

	start := time.Now()
	if _, err := p.WaitDevices(waitCtx(t, 15*time.Second), func(d []*v1beta1.Device) bool {
		return slices.Contains(kubelettest.Healthy(d), id)
	}); err != nil {
		t.Fatalf("%s never listed: %v", id, err)
	}
	t.Logf("%s listed %v after losetup", id, time.Since(start).Round(time.Millisecond))
	resp, err := p.Allocate(waitCtx(t, 5*time.Second), []string{id})
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.ContainerResponses[0].Devices; len(d) != 1 || d[0].HostPath != dev {
		t.Errorf("Allocate %s: %v", id, d)
	}

	detach()
	start = time.Now()
	if _, err := p.WaitDevices(waitCtx(t, 15*time.Second), func(d []*v1beta1.Device) bool {
		return !slices.Contains(kubelettest.IDs(d), id)
	}); err != nil {
		t.Fatalf("%s still listed after detach: %v", id, err)
	}
	t.Logf("%s gone %v after losetup -d", id, time.Since(start).Round(time.Millisecond))
}
