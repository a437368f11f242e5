package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilversion "k8s.io/apimachinery/pkg/util/version"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// Modes.
const (
	modeDRA          = "dra"
	modeDevicePlugin = "device-plugin"
	modeAuto         = "auto"
)

// draGroupVersion is the DRA API the driver needs, and draMinKubelet the
// first kubelet that runs DRA plugins against it (DRA GA).
const draGroupVersion = "resource.k8s.io/v1"

var draMinKubelet = utilversion.MustParseGeneric("1.34.0")

// modeProbe is what --mode=auto found out about the cluster and the node.
type modeProbe struct {
	// ClientErr: no API client could be built (no in-cluster
	// configuration, bad kubeconfig).
	ClientErr error
	// ResourceAPIErr: the discovery request for resource.k8s.io/v1 failed
	// (a 404 means the API server does not serve it).
	ResourceAPIErr error
	// ResourceSlices: resource.k8s.io/v1 is served with resourceslices.
	ResourceSlices bool
	// NodeName is the node's name ("" when not given).
	NodeName string
	// NodeErr: reading the Node object failed.
	NodeErr error
	// KubeletVersion is the node's status.nodeInfo.kubeletVersion.
	KubeletVersion string
}

// chooseMode decides --mode=auto: DRA when the API server serves
// resource.k8s.io/v1 (with resourceslices) and the node's kubelet is 1.34
// or newer, else the device plugin. It always says why. One mode serves
// every group: the two never run at once for the same group.
func chooseMode(p modeProbe) (mode, reason string) {
	switch {
	case p.ClientErr != nil:
		return modeDevicePlugin, fmt.Sprintf("no access to the API server (%v); the device plugin needs none", p.ClientErr)
	case p.ResourceAPIErr != nil && apierrors.IsNotFound(p.ResourceAPIErr):
		return modeDevicePlugin, fmt.Sprintf("the API server does not serve %s (Kubernetes older than 1.34, or DRA turned off)", draGroupVersion)
	case p.ResourceAPIErr != nil:
		return modeDevicePlugin, fmt.Sprintf("cannot tell whether the API server serves %s: %v", draGroupVersion, p.ResourceAPIErr)
	case !p.ResourceSlices:
		return modeDevicePlugin, fmt.Sprintf("the API server serves %s without resourceslices", draGroupVersion)
	case p.NodeName == "":
		return modeDevicePlugin, "no node name (--node-name or NODE_NAME) to check the kubelet's version with"
	case p.NodeErr != nil:
		return modeDevicePlugin, fmt.Sprintf("cannot read node %s to check its kubelet: %v", p.NodeName, p.NodeErr)
	}
	v, err := utilversion.ParseGeneric(p.KubeletVersion)
	if err != nil {
		return modeDevicePlugin, fmt.Sprintf("node %s reports kubelet version %q, which does not parse", p.NodeName, p.KubeletVersion)
	}
	if !v.AtLeast(draMinKubelet) {
		return modeDevicePlugin, fmt.Sprintf("the API server serves %s but node %s runs kubelet %s, older than %s", draGroupVersion, p.NodeName, p.KubeletVersion, "1.34")
	}
	return modeDRA, fmt.Sprintf("the API server serves %s and node %s runs kubelet %s", draGroupVersion, p.NodeName, p.KubeletVersion)
}

// groupVersionDiscovery is the one discovery call the probe makes.
type groupVersionDiscovery interface {
	ServerResourcesForGroupVersion(groupVersion string) (*metav1.APIResourceList, error)
}

// probeMode asks the API server what chooseMode needs. Errors other than
// "not found" are retried until budget is spent: a node that boots before
// the API server answers should not settle on the device plugin for good.
func probeMode(ctx context.Context, client kubernetes.Interface, nodeName string, budget time.Duration) modeProbe {
	logger := klog.FromContext(ctx)
	deadline := time.Now().Add(budget)
	for attempt := 1; ; attempt++ {
		p := probeOnce(ctx, client.Discovery(), client, nodeName)
		transient := (p.ResourceAPIErr != nil && !apierrors.IsNotFound(p.ResourceAPIErr)) ||
			(p.NodeErr != nil && !apierrors.IsNotFound(p.NodeErr) && !apierrors.IsForbidden(p.NodeErr))
		if !transient || time.Now().After(deadline) || ctx.Err() != nil {
			return p
		}
		err := p.ResourceAPIErr
		if err == nil {
			err = p.NodeErr
		}
		logger.Info("Cannot tell yet which mode to run in; retrying", "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return p
		case <-time.After(min(time.Duration(attempt)*time.Second, 5*time.Second)):
		}
	}
}

func probeOnce(ctx context.Context, disc groupVersionDiscovery, client kubernetes.Interface, nodeName string) modeProbe {
	p := modeProbe{NodeName: nodeName}
	list, err := disc.ServerResourcesForGroupVersion(draGroupVersion)
	if err != nil {
		p.ResourceAPIErr = err
		return p
	}
	for _, r := range list.APIResources {
		if r.Name == "resourceslices" {
			p.ResourceSlices = true
		}
	}
	if !p.ResourceSlices || nodeName == "" {
		return p
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	node, err := client.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		p.NodeErr = err
		return p
	}
	p.KubeletVersion = node.Status.NodeInfo.KubeletVersion
	return p
}

// resolveAutoMode turns --mode=auto into dra or device-plugin and logs the
// choice and why: the mode the node's state holds it to (keptMode), else
// what the cluster supports. The client may be nil when clientErr says why.
func resolveAutoMode(ctx context.Context, client kubernetes.Interface, clientErr error, nodeName string, st modeState) (string, error) {
	mode, reason, err := keptMode(st)
	if err != nil {
		return "", err
	}
	if mode == "" {
		var p modeProbe
		if clientErr != nil || client == nil {
			if clientErr == nil {
				clientErr = errors.New("no client")
			}
			p = modeProbe{ClientErr: clientErr, NodeName: nodeName}
		} else {
			p = probeMode(ctx, client, nodeName, autoProbeBudget)
		}
		mode, reason = chooseMode(p)
	}
	klog.FromContext(ctx).Info("Mode chosen", "mode", mode, "reason", reason)
	return mode, nil
}

// autoProbeBudget is how long --mode=auto retries an API server that does
// not answer before it settles on the device plugin.
var autoProbeBudget = 30 * time.Second
