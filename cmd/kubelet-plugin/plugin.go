package main

import (
	"context"
	goflag "flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/driver"
)

const pluginUsage = `Usage: power-dev-plugin [flags]

Runs the kubelet plugin on this node. Every flag can also be set through the
environment variable named in its help; a flag on the command line wins.

Modes:
  dra            a Dynamic Resource Allocation kubelet plugin (Kubernetes 1.34+):
                 publishes ResourceSlices and prepares ResourceClaims through CDI
  device-plugin  a kubelet device plugin serving power-dev-plugin/<group>
  auto           dra when the API server serves resource.k8s.io/v1, else device-plugin

Subcommands: discover (what would be published, and why not), version.
`

// pluginFlags are the settings of the long-running plugin.
type pluginFlags struct {
	mode           string
	nodeName       string
	kubeconfig     string
	configFile     string
	hostRoot       string
	cdiDir         string
	registrarDir   string
	pluginsDir     string
	podUID         string
	kubeAPIQPS     float64
	kubeAPIBurst   int
	rescanInterval time.Duration
	healthAddr     string
}

func (f *pluginFlags) register(fs *pflag.FlagSet) {
	stringFlag(fs, &f.mode, "mode", "", "MODE", "dra", "dra, device-plugin or auto")
	stringFlag(fs, &f.nodeName, "node-name", "", "NODE_NAME", "", "name of this node (required; from the downward API in a DaemonSet)")
	stringFlag(fs, &f.kubeconfig, "kubeconfig", "", "KUBECONFIG", "", "kubeconfig file; empty: the in-cluster configuration")
	stringFlag(fs, &f.configFile, "config", "", "CONFIG_FILE", "", "DiscoveryConfig file (or the old plugin's config.json); empty: the built-in default group \"dev\"; re-read when it changes")
	stringFlag(fs, &f.hostRoot, "host-root", "", "HOST_ROOT", "/", "directory where the host's /dev, /sys and /proc are found")
	stringFlag(fs, &f.cdiDir, "cdi-dir", "", "CDI_DIR", "/var/run/cdi", "directory for the CDI specs the container runtime reads")
	stringFlag(fs, &f.registrarDir, "kubelet-registrar-dir", "", "KUBELET_REGISTRAR_DIR", "/var/lib/kubelet/plugins_registry", "kubelet's plugin registration directory")
	stringFlag(fs, &f.pluginsDir, "kubelet-plugins-dir", "", "KUBELET_PLUGINS_DIR", "/var/lib/kubelet/plugins", "kubelet's plugins directory; the plugin keeps its socket and checkpoint in <dir>/"+driver.DriverName)
	stringFlag(fs, &f.podUID, "pod-uid", "", "POD_UID", "", "UID of this plugin's pod; when set, a new DaemonSet pod can start before the old one stops (rolling update)")
	fs.Float64Var(&f.kubeAPIQPS, "kube-api-qps", floatEnv("KUBE_API_QPS", 50), "queries per second to the API server (env KUBE_API_QPS); client-go's default of 5 caps claim preparation at about 5 claims/s")
	fs.IntVar(&f.kubeAPIBurst, "kube-api-burst", intEnv("KUBE_API_BURST", 100), "burst of queries to the API server (env KUBE_API_BURST)")
	fs.DurationVar(&f.rescanInterval, "rescan-interval", durationEnv("RESCAN_INTERVAL", time.Minute), "safety rescan of the devices besides kernel events (env RESCAN_INTERVAL)")
	stringFlag(fs, &f.healthAddr, "health-address", "", "HEALTH_ADDRESS", "127.0.0.1:51515", "address of the /healthz and /readyz HTTP endpoint; empty: off")
}

func floatEnv(env string, def float64) float64 {
	if v, err := strconv.ParseFloat(envDefault(env, ""), 64); err == nil {
		return v
	}
	return def
}

func intEnv(env string, def int) int {
	if v, err := strconv.Atoi(envDefault(env, "")); err == nil {
		return v
	}
	return def
}

func durationEnv(env string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(envDefault(env, "")); err == nil {
		return v
	}
	return def
}

// runPlugin runs the kubelet plugin in the selected mode until ctx ends.
func runPlugin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f pluginFlags
	fs := newFlagSet("power-dev-plugin")
	f.register(fs)
	klogFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(klogFlags)
	// Only the verbosity flags: the rest of klog's are about log files,
	// which a DaemonSet does not use.
	for _, name := range []string{"v", "vmodule"} {
		fs.AddGoFlag(klogFlags.Lookup(name))
	}
	if err := parseFlags(fs, args, pluginUsage); err != nil {
		return err
	}
	logger := klog.Background().WithName("power-dev-plugin")
	ctx = klog.NewContext(ctx, logger)
	logger.Info("Starting", "version", version, "commit", gitCommit, "mode", f.mode, "node", f.nodeName)

	if f.nodeName == "" {
		return &exitError{code: exitUsage, err: fmt.Errorf("--node-name (or NODE_NAME) is required")}
	}
	switch f.mode {
	case "dra":
	case "device-plugin", "auto":
		return &exitError{code: exitUsage, err: fmt.Errorf("--mode=%s is not available yet; use --mode=dra", f.mode)}
	default:
		return &exitError{code: exitUsage, err: fmt.Errorf("--mode %q: must be dra, device-plugin or auto", f.mode)}
	}
	// Fail early, with exit code 2, on a bad configuration file.
	if _, err := loadConfig(ctx, f.configFile); err != nil {
		return err
	}
	client, err := newKubeClient(f)
	if err != nil {
		return &exitError{code: exitFailure, err: err}
	}
	return runDRA(ctx, f, client)
}

func newKubeClient(f pluginFlags) (kubernetes.Interface, error) {
	var cfg *rest.Config
	var err error
	if f.kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", f.kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return nil, fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.QPS = float32(f.kubeAPIQPS)
	cfg.Burst = f.kubeAPIBurst
	cfg.UserAgent = "power-dev-plugin/" + version
	return kubernetes.NewForConfig(cfg)
}

// newWatcher builds the discovery watcher both modes consume.
func newWatcher(ctx context.Context, f pluginFlags) *discovery.Watcher {
	loader := func() (*v1alpha1.DiscoveryConfig, error) {
		return loadConfigQuiet(ctx, f.configFile)
	}
	opts := []discovery.WatcherOption{
		discovery.WithWatchHostRoot(f.hostRoot),
		discovery.WithRescanInterval(f.rescanInterval),
		discovery.WithConfigLoader(loader),
	}
	if f.configFile != "" {
		opts = append(opts, discovery.WithConfigFile(f.configFile))
	}
	return discovery.NewWatcher(opts...)
}

// loadConfigQuiet loads the configuration without logging its warnings:
// the watcher calls it before every scan, and the warnings were logged once
// at start.
func loadConfigQuiet(_ context.Context, path string) (*v1alpha1.DiscoveryConfig, error) {
	if path == "" {
		return v1alpha1.DefaultDiscoveryConfig(), nil
	}
	cfg, _, err := v1alpha1.LoadDiscoveryConfig(path)
	return cfg, err
}

func runDRA(ctx context.Context, f pluginFlags, client kubernetes.Interface) error {
	w := newWatcher(ctx, f)
	d, err := driver.Start(ctx,
		driver.WithKubeClient(client),
		driver.WithNodeName(f.nodeName),
		driver.WithCDIDir(f.cdiDir),
		driver.WithRegistrarDir(f.registrarDir),
		driver.WithPluginDataDir(filepath.Join(f.pluginsDir, driver.DriverName)),
		driver.WithRollingUpdate(types.UID(f.podUID)),
		driver.WithHealthAddress(f.healthAddr),
	)
	if err != nil {
		return err
	}
	return d.Run(ctx, w)
}
