package main

import (
	"context"
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

	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/driver"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics"
)

const pluginUsage = `Usage: power-dev-plugin [flags]

Runs the kubelet plugin on this node. Every flag can also be set through the
environment variable named in its help; a flag on the command line wins.

Modes:
  dra            a Dynamic Resource Allocation kubelet plugin (Kubernetes 1.34+):
                 publishes ResourceSlices and prepares ResourceClaims through CDI
  device-plugin  a kubelet device plugin serving power-dev-plugin/<group> (one per
                 configured group; the default group "dev" is the old plugin's
                 power-dev-plugin/dev); needs no API server access
  auto           (default) the mode that holds state on this node (prepared DRA claims,
                 or pods holding device-plugin devices); without any, dra when the API
                 server serves resource.k8s.io/v1 and this node's kubelet is 1.34 or
                 newer, else device-plugin; logs why

Configuration: --config, except that the old plugin's config.json wins when it
exists (--legacy-config, default /etc/power-device-plugin/config.json).

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
	metricsAddr    string
	staleInterval  time.Duration
	releaseWait    time.Duration
	deviceMetadata bool

	// Device-plugin mode.
	devicePluginDir string
	devicePluginCDI bool
	legacyConfig    string

	// Auto mode.
	podResourcesSocket string

	// metrics is served on metricsAddr; nil when that is empty.
	metrics *metrics.Metrics
}

func (f *pluginFlags) register(fs *pflag.FlagSet) {
	stringFlag(fs, &f.mode, "mode", "", "MODE", modeAuto, "dra, device-plugin or auto")
	stringFlag(fs, &f.nodeName, "node-name", "", "NODE_NAME", "", "name of this node, from the downward API in a DaemonSet (required for dra; auto reads the node's kubelet version; device-plugin does not use it)")
	stringFlag(fs, &f.kubeconfig, "kubeconfig", "", "KUBECONFIG", "", "kubeconfig file; empty: the in-cluster configuration")
	stringFlag(fs, &f.configFile, "config", "", "CONFIG_FILE", "", "DiscoveryConfig file (or the old plugin's config.json); empty: the built-in default group \"dev\"; re-read when it changes")
	stringFlag(fs, &f.hostRoot, "host-root", "", "HOST_ROOT", "/", "directory where the host's /dev, /sys and /proc are found")
	stringFlag(fs, &f.cdiDir, "cdi-dir", "", "CDI_DIR", "/var/run/cdi", "directory for the CDI specs the container runtime reads")
	stringFlag(fs, &f.registrarDir, "kubelet-registrar-dir", "", "KUBELET_REGISTRAR_DIR", "/var/lib/kubelet/plugins_registry", "kubelet's plugin registration directory")
	stringFlag(fs, &f.pluginsDir, "kubelet-plugins-dir", "", "KUBELET_PLUGINS_DIR", "/var/lib/kubelet/plugins", "kubelet's plugins directory; the plugin keeps its socket and checkpoint in <dir>/"+driver.DriverName)
	stringFlag(fs, &f.podUID, "pod-uid", "", "POD_UID", "", "UID of this plugin's pod; when set, a new DaemonSet pod can start before the old one stops (rolling update); device-plugin mode names its sockets after it")
	fs.Float64Var(&f.kubeAPIQPS, "kube-api-qps", floatEnv("KUBE_API_QPS", 50), "queries per second to the API server (env KUBE_API_QPS); client-go's default of 5 caps claim preparation at about 5 claims/s")
	fs.IntVar(&f.kubeAPIBurst, "kube-api-burst", intEnv("KUBE_API_BURST", 100), "burst of queries to the API server (env KUBE_API_BURST)")
	fs.DurationVar(&f.rescanInterval, "rescan-interval", durationEnv("RESCAN_INTERVAL", time.Minute), "safety rescan of the devices besides kernel events (env RESCAN_INTERVAL)")
	fs.DurationVar(&f.staleInterval, "stale-claim-interval", durationEnv("STALE_CLAIM_INTERVAL", driver.DefaultStaleClaimInterval), "dra: how often prepared claims are checked against the API server; one whose ResourceClaim was deleted, replaced or deallocated, and that no pod on this node uses, is unprepared (env STALE_CLAIM_INTERVAL); 0: never")
	fs.DurationVar(&f.releaseWait, "release-wait", durationEnv("RELEASE_WAIT", driver.DefaultReleaseWait), "dra: how long a Prepare waits for the claim holding its exclusive device to be unprepared when that claim is being released (env RELEASE_WAIT); 0: refuse at once; the kubelet's call timeout (45 s) bounds it too")
	fs.BoolVar(&f.deviceMetadata, "device-metadata", boolEnv("DEVICE_METADATA", false), "dra: mount a metadata file saying which host device(s) a claim got into its containers (/var/run/kubernetes.io/dra-device-attributes/...); off by default: the kubelet plugin helper keys these files by claim name, so a claim recreated under the same name before the old one is unprepared loses its file and its containers cannot start; costs two synced file writes per request in each prepare (env DEVICE_METADATA)")
	stringFlag(fs, &f.healthAddr, "health-address", "", "HEALTH_ADDRESS", "127.0.0.1:51515", "address of the /healthz and /readyz HTTP endpoint; empty: off")
	stringFlag(fs, &f.metricsAddr, "metrics-address", "", "METRICS_ADDRESS", "", "address of the Prometheus /metrics HTTP endpoint, e.g. :8080; empty: off")
	stringFlag(fs, &f.devicePluginDir, "device-plugin-dir", "", "DEVICE_PLUGIN_DIR", deviceplugin.DefaultPluginDir, "device-plugin mode: the kubelet's device-plugin directory (its kubelet.sock, and the plugin's sockets)")
	fs.BoolVar(&f.devicePluginCDI, "device-plugin-cdi", boolEnv("DEVICE_PLUGIN_CDI", true), "device-plugin mode: also name CDI devices (from a static spec in --cdi-dir) next to the DeviceSpecs; turn off for runtimes with CDI explicitly disabled (env DEVICE_PLUGIN_CDI)")
	stringFlag(fs, &f.podResourcesSocket, "pod-resources-socket", "", "POD_RESOURCES_SOCKET", deviceplugin.DefaultPodResourcesSocket, "auto mode: the kubelet's pod-resources API, which tells whether pods hold device-plugin devices (without it: the kubelet's checkpoint in --device-plugin-dir)")
	stringFlag(fs, &f.legacyConfig, "legacy-config", "", "LEGACY_CONFIG_FILE", defaultLegacyConfig, "the old plugin's config.json; when this file exists it is used instead of --config; empty: never")
}

func boolEnv(env string, def bool) bool {
	if v, err := strconv.ParseBool(envDefault(env, "")); err == nil {
		return v
	}
	return def
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
	logCfg, err := addLogFlags(fs)
	if err != nil {
		return err
	}
	if err := parseFlags(fs, args, pluginUsage); err != nil {
		return err
	}
	if err := applyLogging(logCfg); err != nil {
		return err
	}
	logger := klog.Background().WithName("power-dev-plugin")
	ctx = klog.NewContext(ctx, logger)
	logger.Info("Starting", "version", version, "commit", gitCommit, "mode", f.mode, "node", f.nodeName)
	logFlags(logger, fs)

	switch f.mode {
	case modeDRA:
		if f.nodeName == "" {
			return &exitError{code: exitUsage, err: fmt.Errorf("--node-name (or NODE_NAME) is required")}
		}
	case modeDevicePlugin, modeAuto:
	default:
		return &exitError{code: exitUsage, err: fmt.Errorf("--mode %q: must be dra, device-plugin or auto", f.mode)}
	}
	// Fail early, with exit code 2, on a configuration file that cannot be
	// used (missing, unreadable, empty, invalid); its warnings are logged
	// by the watcher's first scan.
	f.logConfigChoice(ctx)
	path, _ := f.configPath()
	if _, _, err := discovery.LoadConfig(path); err != nil {
		return &exitError{code: exitUsage, err: fmt.Errorf("not starting: %w", err)}
	}
	// Before the API client is made: client-go takes its metrics then.
	if f.metricsAddr != "" {
		f.metrics = metrics.New()
		if _, err := f.metrics.Serve(ctx, f.metricsAddr); err != nil {
			return &exitError{code: exitFailure, err: err}
		}
	}
	if f.mode == modeDevicePlugin {
		// A kubelet device plugin talks to the kubelet only.
		return runDevicePlugin(ctx, f)
	}
	client, err := newKubeClient(f)
	if f.mode == modeAuto {
		mode, autoErr := resolveAutoMode(ctx, client, err, f.nodeName, readModeState(ctx, f))
		if autoErr != nil {
			return &exitError{code: exitFailure, err: autoErr}
		}
		if f.mode = mode; f.mode == modeDevicePlugin {
			return runDevicePlugin(ctx, f)
		}
	}
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

// newWatcher builds the discovery watcher both modes consume. The file is
// chosen again before every scan: creating or deleting the old plugin's
// config.json switches to or from it. A file that cannot be used at run time
// leaves the last good configuration in force (the watcher logs that, and
// each configuration warning when it appears).
func newWatcher(ctx context.Context, f pluginFlags) *discovery.Watcher {
	last, _ := f.configPath()
	current := func() string {
		path, _ := f.configPath()
		if path != last {
			klog.FromContext(ctx).Info("Configuration file changed", "from", last, "to", path)
			last = path
		}
		return path
	}
	opts := []discovery.WatcherOption{
		discovery.WithWatchHostRoot(f.hostRoot),
		discovery.WithRescanInterval(f.rescanInterval),
		discovery.WithConfigLoader(discovery.FileConfigLoader(current)),
		discovery.WithScanObserver(f.metrics.ObserveScan),
	}
	if last != "" {
		opts = append(opts, discovery.WithConfigFile(last))
	}
	return discovery.NewWatcher(opts...)
}

func runDRA(ctx context.Context, f pluginFlags, client kubernetes.Interface) error {
	w := newWatcher(ctx, f)
	d, err := driver.Start(ctx,
		driver.WithKubeClient(client),
		driver.WithNodeName(f.nodeName),
		driver.WithCDIDir(f.cdiDir),
		driver.WithRegistrarDir(f.registrarDir),
		driver.WithPluginDataDir(filepath.Join(f.pluginsDir, driver.DriverName)),
		driver.WithHostRoot(f.hostRoot),
		driver.WithRollingUpdate(types.UID(f.podUID)),
		driver.WithHealthAddress(f.healthAddr),
		driver.WithStaleClaimInterval(f.staleInterval),
		driver.WithReleaseWait(f.releaseWait),
		driver.WithDeviceMetadata(f.deviceMetadata),
		driver.WithMetrics(f.metrics),
	)
	if err != nil {
		return err
	}
	return d.Run(ctx, w)
}
