// Command fakedra is a tiny DRA kubelet plugin that proves the e2e cluster's DRA and CDI path
// (scheduler allocation, kubelet NodePrepareResources, containerd CDI injection) without our
// driver: smoke.sh runs it as a host process. It publishes -devices devices named dev-0..dev-N
// on the node; preparing a claim writes a CDI spec into -cdi-dir that sets FAKEDRA_DEVICE and
// FAKEDRA_CLAIM in the container; unpreparing removes the spec again.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/klog/v2"
)

type plugin struct {
	driver, cdiDir, cdiKind string
}

func (p *plugin) specPath(uid types.UID) string {
	return filepath.Join(p.cdiDir, "fakedra-"+string(uid)+".json")
}

func (p *plugin) PrepareResourceClaims(ctx context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	res := map[types.UID]kubeletplugin.PrepareResult{}
	for _, c := range claims {
		var r kubeletplugin.PrepareResult
		var devs []map[string]any
		if c.Status.Allocation == nil {
			r.Err = errors.New("claim is not allocated")
			res[c.UID] = r
			continue
		}
		for _, a := range c.Status.Allocation.Devices.Results {
			if a.Driver != p.driver {
				continue
			}
			// unique per claim, as CDI caches may outlive a claim
			name := fmt.Sprintf("%s-%s", c.UID, a.Device)
			devs = append(devs, map[string]any{"name": name, "containerEdits": map[string]any{
				"env": []string{"FAKEDRA_DEVICE=" + a.Device, "FAKEDRA_CLAIM=" + c.Namespace + "/" + c.Name}}})
			r.Devices = append(r.Devices, kubeletplugin.Device{Requests: []string{a.Request}, PoolName: a.Pool,
				DeviceName: a.Device, CDIDeviceIDs: []string{p.cdiKind + "=" + name}})
		}
		spec, _ := json.Marshal(map[string]any{"cdiVersion": "0.6.0", "kind": p.cdiKind, "devices": devs})
		tmp := p.specPath(c.UID) + ".tmp"
		if err := os.WriteFile(tmp, spec, 0o644); err != nil {
			r.Err = err
		} else if err := os.Rename(tmp, p.specPath(c.UID)); err != nil {
			r.Err = err
		}
		klog.InfoS("prepared", "claim", klog.KObj(c), "devices", r.Devices, "err", r.Err)
		res[c.UID] = r
	}
	return res, nil
}

func (p *plugin) UnprepareResourceClaims(ctx context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	res := map[types.UID]error{}
	for _, c := range claims {
		err := os.Remove(p.specPath(c.UID))
		if errors.Is(err, os.ErrNotExist) {
			err = nil
		}
		klog.InfoS("unprepared", "claim", c.NamespacedName, "err", err)
		res[c.UID] = err
	}
	return res, nil
}

func (p *plugin) WatchHealthStatus(ctx context.Context, reports chan<- kubeletplugin.DeviceHealthReport) error {
	return kubeletplugin.ErrHealthNotSupported
}

func (p *plugin) HandleError(ctx context.Context, err error, msg string) {
	klog.ErrorS(err, msg)
	if !errors.Is(err, kubeletplugin.ErrRecoverable) {
		os.Exit(1)
	}
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	node := flag.String("node", "localhost", "node name")
	kubeletDir := flag.String("kubelet-dir", "/var/lib/kubelet", "kubelet root dir")
	cdiDir := flag.String("cdi-dir", "/var/run/cdi", "where the container runtime reads CDI specs")
	driver := flag.String("driver", "fakedra.e2e.example.com", "DRA driver name")
	devices := flag.Int("devices", 2, "number of devices to publish")
	klog.InitFlags(nil)
	flag.Parse()

	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		klog.Fatal(err)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	pluginDir := filepath.Join(*kubeletDir, "plugins", *driver)
	for _, d := range []string{pluginDir, *cdiDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			klog.Fatal(err)
		}
	}
	p := &plugin{driver: *driver, cdiDir: *cdiDir, cdiKind: strings.SplitN(*driver, ".", 2)[1] + "/" + strings.SplitN(*driver, ".", 2)[0]}
	h, err := kubeletplugin.Start(ctx, p,
		kubeletplugin.DriverName(*driver), kubeletplugin.KubeClient(kubernetes.NewForConfigOrDie(cfg)),
		kubeletplugin.NodeName(*node),
		kubeletplugin.RegistrarDirectoryPath(filepath.Join(*kubeletDir, "plugins_registry")),
		kubeletplugin.PluginDataDirectoryPath(pluginDir))
	if err != nil {
		klog.Fatal(err)
	}
	var devs []resourceapi.Device
	for i := range *devices {
		devs = append(devs, resourceapi.Device{
			Name:       fmt.Sprintf("dev-%d", i),
			Attributes: map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{"index": {IntValue: new(int64(i))}},
			Capacity:   map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{"memory": {Value: resource.MustParse("1Gi")}},
		})
	}
	if err := h.PublishResources(ctx, resourceslice.DriverResources{Pools: map[string]resourceslice.Pool{
		*node: {Slices: []resourceslice.Slice{{Devices: devs}}},
	}}); err != nil {
		klog.Fatal(err)
	}
	klog.InfoS("fakedra started", "driver", *driver, "devices", *devices, "cdiDir", *cdiDir)
	<-ctx.Done()
	h.Stop()
	klog.Info("fakedra stopped")
}
