package deviceplugin

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	v1beta1 "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"
)

// KubeletSocket is the name of the kubelet's registration socket in the
// device-plugin directory.
const KubeletSocket = "kubelet.sock"

// DefaultPluginDir is where the kubelet expects device plugin sockets.
const DefaultPluginDir = "/var/lib/kubelet/device-plugins"

// Registrar registers a device plugin with the kubelet. The real one calls
// the kubelet's Registration service on its unix socket; the kubelet then
// connects to the plugin's endpoint before it answers.
type Registrar interface {
	Register(ctx context.Context, req *v1beta1.RegisterRequest) error
}

// SocketRegistrar calls the Registration service on the unix socket at its
// path (normally <device-plugin dir>/kubelet.sock). A new connection is made
// for each call: the kubelet may have restarted in between.
type SocketRegistrar string

// Register implements Registrar.
func (r SocketRegistrar) Register(ctx context.Context, req *v1beta1.RegisterRequest) error {
	conn, err := grpc.NewClient("unix://"+string(r), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("kubelet registration socket %s: %w", string(r), err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := v1beta1.NewRegistrationClient(conn).Register(ctx, req); err != nil {
		return fmt.Errorf("register %s with the kubelet at %s: %w", req.ResourceName, string(r), err)
	}
	return nil
}
