package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	v1beta1 "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin/kubelettest"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// clearPluginEnv makes the flag defaults the built-in ones.
func clearPluginEnv(t *testing.T) {
	for _, e := range []string{"MODE", "NODE_NAME", "KUBECONFIG", "CONFIG_FILE", "HOST_ROOT", "CDI_DIR", "DEVICE_PLUGIN_DIR",
		"DEVICE_PLUGIN_CDI", "LEGACY_CONFIG_FILE", "HEALTH_ADDRESS", "POD_UID", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT",
		"KUBELET_PLUGINS_DIR", "POD_RESOURCES_SOCKET"} {
		t.Setenv(e, "")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// pluginRun is the plugin command running in this process against a test
// kubelet.
type pluginRun struct {
	kubelet *kubelettest.Kubelet
	dir     string
	cdiDir  string
	health  string
	cancel  context.CancelFunc
	done    chan error
}

func startPluginCmd(t *testing.T, args ...string) *pluginRun {
	t.Helper()
	base, err := os.MkdirTemp("", "dpc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	r := &pluginRun{dir: filepath.Join(base, "dp"), cdiDir: filepath.Join(base, "cdi"), health: freeAddr(t), done: make(chan error, 1)}
	r.kubelet = kubelettest.New(r.dir)
	if err := r.kubelet.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.kubelet.Stop)
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	// --mode=auto reads the DRA checkpoint and asks the kubelet's
	// pod-resources API: never the real ones of a node running the tests.
	all := append([]string{"--device-plugin-dir", r.dir, "--cdi-dir", r.cdiDir, "--health-address", r.health, "--legacy-config", "",
		"--kubelet-plugins-dir", filepath.Join(base, "plugins"), "--pod-resources-socket", filepath.Join(base, "pod-resources.sock")}, args...)
	go func() {
		var out, errOut bytes.Buffer
		r.done <- run(ctx, all, &out, &errOut)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("plugin: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("the plugin did not stop")
		}
	})
	return r
}

func (r *pluginRun) waitPlugin(t *testing.T, resource string) *kubelettest.Plugin {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	select {
	case err := <-r.done:
		t.Fatalf("the plugin exited: %v", err)
	default:
	}
	p, err := r.kubelet.WaitPlugin(ctx, resource)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// --mode=device-plugin runs without any API server access (no kubeconfig,
// no in-cluster configuration, no node name), registers power-dev-plugin/dev
// with the kubelet and grants what discovery found. The fixture's sdb is a
// real loop device: Allocate asks the kernel, under --host-root, that
// nothing holds it.
func TestDevicePluginModeWithoutAPIServer(t *testing.T) {
	clearPluginEnv(t)
	loop, _ := discoverytest.LoopDevice(t, 16<<20)
	var st unix.Stat_t
	if err := unix.Stat(loop, &st); err != nil {
		t.Fatal(err)
	}
	tr := hostTreeWithSDB(t, discoverytest.DevNum{Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev)})
	r := startPluginCmd(t, "--mode", "device-plugin", "--host-root", tr.Root)
	p := r.waitPlugin(t, "power-dev-plugin/dev")
	if ids := kubelettest.IDs(p.Devices()); len(ids) != 1 || ids[0] != "sdb" {
		t.Errorf("IDs %v, want [sdb] (vda is mounted, loop3 empty)", ids)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := p.Allocate(ctx, []string{"sdb"})
	if err != nil {
		t.Fatal(err)
	}
	c := resp.ContainerResponses[0]
	if len(c.Devices) != 1 || c.Devices[0].HostPath != "/dev/sdb" || len(c.CdiDevices) != 1 || c.CdiDevices[0].Name != "power-dev-plugin.io/device=sdb" {
		t.Errorf("Allocate: %v", c)
	}
	// The DaemonSet's exec probes.
	var out bytes.Buffer
	deadline := time.Now().Add(5 * time.Second)
	for {
		out.Reset()
		err = runHealthcheck(context.Background(), []string{"--ready", r.health}, &out)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || !strings.Contains(out.String(), "power-dev-plugin/dev: 1 IDs") {
		t.Errorf("healthcheck --ready: %v %q", err, out.String())
	}

	// Mounted where the host's mount table does not show it: refused.
	discoverytest.HoldInPrivateMount(t, loop)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = p.Allocate(ctx, []string{"sdb"})
	if msg := status.Convert(err).Message(); status.Code(err) != codes.FailedPrecondition || !strings.Contains(msg, `device ID "sdb": block device /dev/sdb`) || !strings.Contains(msg, "is in use on the node") {
		t.Errorf("Allocate of a held device: %v", err)
	}
}

// --mode=auto without API access settles on the device plugin.
func TestAutoModeWithoutAPIServer(t *testing.T) {
	clearPluginEnv(t)
	tr := hostTree(t)
	r := startPluginCmd(t, "--host-root", tr.Root, "--node-name", "n1", "--kubeconfig", filepath.Join(t.TempDir(), "missing"))
	p := r.waitPlugin(t, "power-dev-plugin/dev")
	if ids := kubelettest.IDs(p.Devices()); len(ids) != 1 {
		t.Errorf("IDs %v", ids)
	}
}

// The old plugin's config.json, where the old plugin read it, wins over
// --config; a broken one stops the plugin with exit code 2.
func TestLegacyConfigFile(t *testing.T) {
	clearPluginEnv(t)
	tr := hostTree(t)
	dir := t.TempDir()
	old := filepath.Join(dir, "config.json")
	if err := os.WriteFile(old, []byte(`{"include-devices": ["/dev/sdb"], "permissions": "r"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(other, []byte("apiVersion: power-dev-plugin.io/v1alpha1\nkind: DiscoveryConfig\ngroups:\n- name: other\n  include: [\"/dev/sdb\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startPluginCmd(t, "--mode", "device-plugin", "--host-root", tr.Root, "--config", other, "--legacy-config", old)
	p := r.waitPlugin(t, "power-dev-plugin/dev")
	// Bundle + shared, no upper-limit: one ID per matched device.
	if ids := kubelettest.IDs(p.Devices()); len(ids) != 1 || ids[0] != "dev_0" {
		t.Errorf("IDs %v, want [dev_0]", ids)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := p.Allocate(ctx, []string{"dev_0"})
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.ContainerResponses[0].Devices; len(d) != 1 || d[0].Permissions != "r" {
		t.Errorf("Allocate %v", d)
	}
	if r.kubelet.Plugin("power-dev-plugin/other") != nil {
		t.Error("--config was used although the old config.json exists")
	}

	if err := os.WriteFile(old, []byte(`{"permissions": "rx"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = runCmd(t, "--mode", "device-plugin", "--legacy-config", old, "--device-plugin-dir", t.TempDir())
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitUsage || !strings.Contains(err.Error(), "permissions") {
		t.Errorf("bad old config.json: %v, want exit code 2 naming permissions", err)
	}
}

func TestConfigPath(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "config.json")
	f := pluginFlags{configFile: "/etc/power-dev-plugin/config.yaml", legacyConfig: old}
	if p, legacy := f.configPath(); p != f.configFile || legacy {
		t.Errorf("without the old file: %s %v", p, legacy)
	}
	if err := os.WriteFile(old, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, legacy := f.configPath(); p != old || !legacy {
		t.Errorf("with the old file: %s %v", p, legacy)
	}
	f.configFile = ""
	if p, legacy := f.configPath(); p != old || !legacy {
		t.Errorf("--config empty, old file there: %s %v", p, legacy)
	}
	f.legacyConfig = ""
	if p, legacy := f.configPath(); p != "" || legacy {
		t.Errorf("--legacy-config empty: %s %v", p, legacy)
	}
}

func TestDevicePluginFlagDefaults(t *testing.T) {
	clearPluginEnv(t)
	var f pluginFlags
	fs := newFlagSet("t")
	f.register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if f.mode != modeAuto || f.devicePluginDir != v1beta1.DevicePluginPath[:len(v1beta1.DevicePluginPath)-1] ||
		!f.devicePluginCDI || f.legacyConfig != "/etc/power-device-plugin/config.json" {
		t.Errorf("defaults: mode %q dir %q cdi %v legacy %q", f.mode, f.devicePluginDir, f.devicePluginCDI, f.legacyConfig)
	}
	t.Setenv("DEVICE_PLUGIN_DIR", "/x/device-plugins")
	t.Setenv("DEVICE_PLUGIN_CDI", "false")
	t.Setenv("MODE", "device-plugin")
	f = pluginFlags{}
	fs = newFlagSet("t")
	f.register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if f.mode != modeDevicePlugin || f.devicePluginDir != "/x/device-plugins" || f.devicePluginCDI {
		t.Errorf("from env: mode %q dir %q cdi %v", f.mode, f.devicePluginDir, f.devicePluginCDI)
	}
}
