package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/klog/v2/ktesting"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin/kubelettest"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/driver"
)

func TestChooseMode(t *testing.T) {
	notFound := apierrors.NewNotFound(schema.GroupResource{Group: "resource.k8s.io"}, "v1")
	served := modeProbe{ResourceSlices: true, NodeName: "n1", KubeletVersion: "v1.37.2"}
	with := func(f func(p *modeProbe)) modeProbe {
		p := served
		f(&p)
		return p
	}
	tests := []struct {
		name       string
		probe      modeProbe
		want       string
		wantReason string
	}{
		{"DRA served, kubelet 1.37", served, modeDRA, "serves resource.k8s.io/v1 and node n1 runs kubelet v1.37.2"},
		{"kubelet exactly 1.34", with(func(p *modeProbe) { p.KubeletVersion = "v1.34.0" }), modeDRA, "kubelet v1.34.0"},
		{"vendor kubelet version", with(func(p *modeProbe) { p.KubeletVersion = "v1.34.3+rhcos1" }), modeDRA, ""},
		{"kubelet older than the API server", with(func(p *modeProbe) { p.KubeletVersion = "v1.33.5" }), modeDevicePlugin, "runs kubelet v1.33.5, older than 1.34"},
		{"kubelet version garbage", with(func(p *modeProbe) { p.KubeletVersion = "latest" }), modeDevicePlugin, "does not parse"},
		{"resource.k8s.io/v1 not served", modeProbe{ResourceAPIErr: notFound, NodeName: "n1"}, modeDevicePlugin, "does not serve resource.k8s.io/v1"},
		{"discovery failed", modeProbe{ResourceAPIErr: errors.New("connection refused"), NodeName: "n1"}, modeDevicePlugin, "cannot tell whether"},
		{"served without resourceslices", with(func(p *modeProbe) { p.ResourceSlices = false }), modeDevicePlugin, "without resourceslices"},
		{"no node name", with(func(p *modeProbe) { p.NodeName = "" }), modeDevicePlugin, "no node name"},
		{"node unreadable", with(func(p *modeProbe) { p.NodeErr = errors.New("forbidden") }), modeDevicePlugin, "cannot read node n1"},
		{"no API client", modeProbe{ClientErr: errors.New("not in a cluster")}, modeDevicePlugin, "no access to the API server"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mode, reason := chooseMode(tc.probe)
			if mode != tc.want {
				t.Errorf("mode %s (%s), want %s", mode, reason, tc.want)
			}
			if reason == "" || !strings.Contains(reason, tc.wantReason) {
				t.Errorf("reason %q, want it to contain %q", reason, tc.wantReason)
			}
		})
	}
}

// The probe against a client. The fake clientset is the one fake here: no
// API server runs in unit tests; the cluster suite runs the real one.
func TestProbeMode(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.37.2"}}}
	oldNode := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.31.4"}}}
	resourceV1 := &metav1.APIResourceList{GroupVersion: "resource.k8s.io/v1", APIResources: []metav1.APIResource{
		{Name: "deviceclasses"}, {Name: "resourceclaims"}, {Name: "resourceslices"},
	}}
	tests := []struct {
		name      string
		node      *corev1.Node
		resources []*metav1.APIResourceList
		nodeName  string
		want      string
	}{
		{"1.37 cluster", node, []*metav1.APIResourceList{resourceV1}, "n1", modeDRA},
		{"old kubelet", oldNode, []*metav1.APIResourceList{resourceV1}, "n1", modeDevicePlugin},
		{"no DRA API", node, []*metav1.APIResourceList{{GroupVersion: "v1", APIResources: []metav1.APIResource{{Name: "nodes"}}}}, "n1", modeDevicePlugin},
		{"node missing", node, []*metav1.APIResourceList{resourceV1}, "n2", modeDevicePlugin},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewClientset(tc.node)
			client.Discovery().(*fakediscovery.FakeDiscovery).Resources = tc.resources
			p := probeMode(context.Background(), client, tc.nodeName, 0)
			if mode, reason := chooseMode(p); mode != tc.want {
				t.Errorf("mode %s (%s), want %s; probe %+v", mode, reason, tc.want, p)
			}
		})
	}
	// A 404 from discovery is the answer, not an error to retry.
	client := fake.NewClientset(node)
	p := probeMode(context.Background(), client, "n1", 0)
	var se *apierrors.StatusError
	if !errors.As(p.ResourceAPIErr, &se) || se.Status().Code != http.StatusNotFound {
		t.Errorf("probe of a server without resource.k8s.io/v1: %+v", p)
	}
}

// autoNode is a node's directories for --mode=auto: the DRA data
// directory (under --kubelet-plugins-dir), the device-plugin directory and
// the pod-resources socket path.
type autoNode struct {
	f pluginFlags
}

func newAutoNode(t *testing.T) *autoNode {
	t.Helper()
	base, err := os.MkdirTemp("", "auto")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	n := &autoNode{f: pluginFlags{
		pluginsDir:         filepath.Join(base, "plugins"),
		devicePluginDir:    filepath.Join(base, "device-plugins"),
		podResourcesSocket: filepath.Join(base, "pod-resources.sock"),
	}}
	for _, d := range []string{filepath.Join(n.f.pluginsDir, driver.DriverName), n.f.devicePluginDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return n
}

// prepareClaims writes the DRA checkpoint as the driver does, with n
// prepared claims.
func (n *autoNode) prepareClaims(t *testing.T, count int) {
	t.Helper()
	cp := driver.NewCheckpoint()
	for i := range count {
		uid := types.UID(fmt.Sprintf("claim-%d", i))
		cp.Claims[uid] = &driver.PreparedClaim{Namespace: "ns", Name: string(uid), UID: uid}
	}
	if err := driver.SaveCheckpoint(filepath.Join(n.f.pluginsDir, driver.DriverName, driver.CheckpointFileName), cp); err != nil {
		t.Fatal(err)
	}
}

// resolve runs resolveAutoMode on the node's state and returns the mode,
// what it logged and the error.
func (n *autoNode) resolve(t *testing.T, client kubernetes.Interface, clientErr error) (string, string, error) {
	t.Helper()
	logger := ktesting.NewLogger(t, ktesting.NewConfig(ktesting.BufferLogs(true)))
	ctx := klog.NewContext(context.Background(), logger)
	mode, err := resolveAutoMode(ctx, client, clientErr, "n1", readModeState(ctx, n.f))
	return mode, logger.GetSink().(ktesting.Underlier).GetBuffer().String(), err
}

// draCluster is a fake API server that serves resource.k8s.io/v1 to a node
// with kubelet 1.37: what --mode=auto takes for DRA.
func draCluster() kubernetes.Interface {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.37.2"}}}
	client := fake.NewClientset(node)
	client.Discovery().(*fakediscovery.FakeDiscovery).Resources = []*metav1.APIResourceList{{GroupVersion: "resource.k8s.io/v1",
		APIResources: []metav1.APIResource{{Name: "resourceclaims"}, {Name: "resourceslices"}}}}
	return client
}

// A node with prepared DRA claims stays in DRA mode although the API server
// does not serve resource.k8s.io/v1 or cannot be reached: the device plugin
// would offer the claims' devices again. It says why in the log.
func TestAutoModeKeepsDRAWhileClaimsArePrepared(t *testing.T) {
	n := newAutoNode(t)
	n.prepareClaims(t, 2)
	noDRA := fake.NewClientset()

	// An API server that does not answer: a real client to a closed port.
	cfg := &rest.Config{Host: "https://" + freeAddr(t), Timeout: time.Second}
	down, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	old := autoProbeBudget
	autoProbeBudget = 2 * time.Second
	t.Cleanup(func() { autoProbeBudget = old })

	for name, tc := range map[string]struct {
		client    kubernetes.Interface
		clientErr error
	}{
		"no resource.k8s.io": {client: noDRA},
		"API server down":    {client: down},
		"no API client":      {clientErr: errors.New("not in a cluster")},
	} {
		t.Run(name, func(t *testing.T) {
			mode, log, err := n.resolve(t, tc.client, tc.clientErr)
			if err != nil || mode != modeDRA {
				t.Fatalf("mode %q (%v), want dra\n%s", mode, err, log)
			}
			if !strings.Contains(log, "Mode chosen") || !strings.Contains(log, "records 2 prepared claim(s)") {
				t.Errorf("the log does not say why:\n%s", log)
			}
		})
	}

	// Once the claims are unprepared the cluster decides again.
	n.prepareClaims(t, 0)
	if mode, log, err := n.resolve(t, noDRA, nil); err != nil || mode != modeDevicePlugin {
		t.Errorf("no claims left: mode %q (%v), want device-plugin\n%s", mode, err, log)
	}
	// A checkpoint that cannot be read may record claims.
	if err := os.WriteFile(filepath.Join(n.f.pluginsDir, driver.DriverName, driver.CheckpointFileName), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if mode, log, err := n.resolve(t, noDRA, nil); err != nil || mode != modeDRA || !strings.Contains(log, "cannot be read") {
		t.Errorf("unreadable checkpoint: mode %q (%v), want dra\n%s", mode, err, log)
	}
}

// A node whose pods hold device-plugin devices stays in device-plugin mode
// although the cluster now supports DRA: DRA would publish those devices
// again. The kubelet's pod-resources API tells which pods run; without it
// the kubelet's checkpoint is read.
func TestAutoModeKeepsDevicePluginWhilePodsHoldDevices(t *testing.T) {
	n := newAutoNode(t)
	if mode, log, err := n.resolve(t, draCluster(), nil); err != nil || mode != modeDRA {
		t.Fatalf("without allocations: mode %q (%v), want dra\n%s", mode, err, log)
	}

	// The kubelet's checkpoint alone (no pod-resources socket).
	if err := os.WriteFile(filepath.Join(n.f.devicePluginDir, deviceplugin.KubeletCheckpoint), []byte(`{"Data":{"PodDeviceEntries":[`+
		`{"PodUID":"p1","ContainerName":"a","ResourceName":"power-dev-plugin/dev","DeviceIDs":{"-1":["dev_0"]},"AllocResp":"CgA="}],`+
		`"RegisteredDevices":{"power-dev-plugin/dev":["dev_0"]}},"Checksum":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	mode, log, err := n.resolve(t, draCluster(), nil)
	if err != nil || mode != modeDevicePlugin {
		t.Fatalf("with the kubelet's checkpoint listing a pod: mode %q (%v), want device-plugin\n%s", mode, err, log)
	}
	if !strings.Contains(log, "1 pod(s) holding device-plugin devices (power-dev-plugin/dev: 1") || !strings.Contains(log, "may still list pods that ended") {
		t.Errorf("the log does not say why:\n%s", log)
	}

	// The pod-resources API: exact, and it wins over the checkpoint.
	pr := kubelettest.ServePodResources(t, n.f.podResourcesSocket,
		kubelettest.PodDevices("db", "power-dev-plugin/db2", "db2"), kubelettest.PodDevices("gpu", "example.com/gpu", "0"))
	mode, log, err = n.resolve(t, draCluster(), nil)
	if err != nil || mode != modeDevicePlugin || !strings.Contains(log, "power-dev-plugin/db2: 1") || strings.Contains(log, "may still list") {
		t.Errorf("with a running pod holding power-dev-plugin/db2: mode %q (%v), want device-plugin\n%s", mode, err, log)
	}
	// The pod ended: the checkpoint's stale entry does not hold the mode.
	pr.SetPods(kubelettest.PodDevices("gpu", "example.com/gpu", "0"))
	if mode, log, err := n.resolve(t, draCluster(), nil); err != nil || mode != modeDRA {
		t.Errorf("no pod of ours running: mode %q (%v), want dra\n%s", mode, err, log)
	}
}

// Both modes holding state: no mode is safe, so --mode=auto refuses, with
// what to do.
func TestAutoModeRefusesWhenBothModesHoldState(t *testing.T) {
	n := newAutoNode(t)
	n.prepareClaims(t, 1)
	kubelettest.ServePodResources(t, n.f.podResourcesSocket, kubelettest.PodDevices("p", "power-dev-plugin/dev", "sdb"))
	mode, log, err := n.resolve(t, draCluster(), nil)
	if err == nil || mode != "" {
		t.Fatalf("mode %q (%v), want an error\n%s", mode, err, log)
	}
	for _, want := range []string{"records 1 prepared claim(s)", "power-dev-plugin/dev: 1", "set --mode (MODE) to dra or device-plugin"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// The command: --mode=auto without any API access used to settle on the
// device plugin; with prepared DRA claims it keeps DRA, which cannot start
// without the API server, so the plugin exits (and its pod restarts) rather
// than offering the claims' devices to the kubelet.
func TestAutoModeCommandKeepsDRAWithoutAPIServer(t *testing.T) {
	clearPluginEnv(t)
	n := newAutoNode(t)
	n.prepareClaims(t, 1)
	k := kubelettest.New(n.f.devicePluginDir)
	if err := k.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	tr := hostTreeWithSDB(t, discoverytest.DevNum{Major: 8, Minor: 16})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"--mode", "auto", "--host-root", tr.Root, "--legacy-config", "", "--health-address", "",
		"--kubelet-plugins-dir", n.f.pluginsDir, "--device-plugin-dir", n.f.devicePluginDir,
		"--pod-resources-socket", n.f.podResourcesSocket, "--cdi-dir", filepath.Join(n.f.pluginsDir, "cdi")}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "kubernetes client configuration") {
		t.Errorf("run: %v, want the missing API client as the error", err)
	}
	if reqs := k.Requests(); len(reqs) > 0 {
		t.Errorf("the device plugin registered %v with the kubelet", reqs)
	}
}
