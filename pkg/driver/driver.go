package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/health"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics"
)

// InventorySource is where inventories come from: discovery.Watcher.
type InventorySource = discovery.Source

// healthResendInterval is how often health is re-sent even when nothing
// changed: the kubelet marks a device's health Unknown after 30 s without one.
const healthResendInterval = 10 * time.Second

// Option configures a Driver.
type Option func(*options)

type options struct {
	client        kubernetes.Interface
	nodeName      string
	cdiDir        string
	registrarDir  string
	dataDir       string
	hostRoot      string
	rollingUID    types.UID
	healthAddress string
	helperOpts    []kubeletplugin.Option
	metrics       *metrics.Metrics

	// Stale claims and device reuse (gc.go, wait.go).
	claims        ClaimReader
	clock         clock.Clock
	staleInterval time.Duration
	releaseWait   time.Duration
	// Health checks (health.go); tests shorten them.
	lockLimit, healthTimeout time.Duration
	// Claim status writes and the metadata file (claimstatus.go, devicemetadata.go).
	statusBase, statusMax time.Duration
	noMetadata            bool
}

func WithKubeClient(c kubernetes.Interface) Option { return func(o *options) { o.client = c } }
func WithNodeName(n string) Option                 { return func(o *options) { o.nodeName = n } }
func WithCDIDir(d string) Option                   { return func(o *options) { o.cdiDir = d } }
func WithRegistrarDir(d string) Option             { return func(o *options) { o.registrarDir = d } }
func WithPluginDataDir(d string) Option            { return func(o *options) { o.dataDir = d } }

// WithHostRoot sets where the host's /dev is found: Prepare opens a block
// device there to check that nothing holds it. Empty: "/".
func WithHostRoot(d string) Option { return func(o *options) { o.hostRoot = d } }

// WithRollingUpdate registers with the kubelet's rolling-update support so
// a new plugin pod can start before the old one stops. Empty: off.
func WithRollingUpdate(podUID types.UID) Option { return func(o *options) { o.rollingUID = podUID } }

// WithHealthAddress serves /healthz and /readyz on addr. Empty: off.
func WithHealthAddress(addr string) Option { return func(o *options) { o.healthAddress = addr } }

// WithHelperOptions passes extra options to kubeletplugin.Start (tests use
// it to turn services off or to choose sockets).
func WithHelperOptions(opts ...kubeletplugin.Option) Option {
	return func(o *options) { o.helperOpts = append(o.helperOpts, opts...) }
}

// Driver is the DRA kubelet plugin: it publishes the inventory as
// ResourceSlices and prepares claims through State.
type Driver struct {
	opts   options
	state  *State
	helper *kubeletplugin.Helper

	mu        sync.RWMutex
	inv       *discovery.Inventory
	invSignal chan struct{} // closed and replaced on every new inventory
	published atomic.Bool
	fatal     chan error // HandleError's first fatal error, for Run (even before Run)
	health    healthState
	waiter    *releaseWaiter
	collector *staleCollector
	status    *claimStatusWriter

	// withheld is what the last publication left out (path -> reason),
	// so that a change is logged once.
	withheld map[string]string
	// countersDropped is set once the API server was seen dropping the
	// overlap counters.
	countersDropped atomic.Bool
	// taints of held devices (driver_taints.go).
	taints        taintState
	taintPoke     chan struct{}
	taintsDropped atomic.Bool
}

var _ kubeletplugin.DRAPlugin = (*Driver)(nil)

// Start reconciles the checkpoint with the CDI directory and registers the
// plugin with the kubelet. Devices are published, and the CDI specs of
// prepared claims restored (State.Restore), once Run receives the first
// inventory.
func Start(ctx context.Context, opts ...Option) (*Driver, error) {
	d := &Driver{invSignal: make(chan struct{}), fatal: make(chan error, 1), taintPoke: make(chan struct{}, 1)}
	d.opts.clock = clock.RealClock{}
	d.opts.staleInterval = DefaultStaleClaimInterval
	d.opts.releaseWait = DefaultReleaseWait
	d.opts.lockLimit = health.StuckAfter
	for _, o := range opts {
		o(&d.opts)
	}
	if d.opts.nodeName == "" {
		return nil, errors.New("node name is required")
	}
	if d.opts.client == nil {
		return nil, errors.New("a Kubernetes client is required")
	}
	logger := klog.FromContext(ctx)
	// The kubelet creates its directories; create them anyway so a plugin
	// that starts first, or a test, does not fail on a missing directory.
	for _, dir := range []string{d.opts.registrarDir, d.opts.dataDir} {
		if dir != "" {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return nil, fmt.Errorf("create %s: %w", dir, err)
			}
		}
	}

	state, err := NewState(
		WithStateNodeName(d.opts.nodeName),
		WithStateCDIDir(d.opts.cdiDir),
		WithStateDataDir(d.opts.dataDir),
		WithStateHostRoot(d.opts.hostRoot),
		withStateMetrics(d.opts.metrics),
		WithStateInventory(d.inventory),
	)
	if err != nil {
		return nil, err
	}
	d.state = state
	if err := state.Reconcile(ctx); err != nil {
		// Register anyway: Unprepare must stay possible, and only the
		// claims concerned fail their Prepare (Restore retries).
		logger.Error(err, "Reconciling prepared claims with the CDI directory failed; starting anyway", "cdiDir", state.CDIDir())
	}
	if d.opts.claims == nil {
		d.opts.claims = NewClaimReader(d.opts.client, d.opts.nodeName)
	}
	d.waiter = &releaseWaiter{state: state, api: d.opts.claims, nodeName: d.opts.nodeName, clock: d.opts.clock, bound: d.opts.releaseWait}
	if d.opts.staleInterval > 0 {
		d.collector = newStaleCollector(state, d.opts.claims, d.opts.nodeName, d.opts.clock, d.opts.staleInterval)
	}

	d.status = newClaimStatusWriter(d.opts.client, state.preparedClaim, d.inventory, d.opts.statusBase, d.opts.statusMax)
	regSocket, regOpt := registrationSocket(&d.opts)
	d.health.regSocket, d.health.lockLimit, d.health.timeout = regSocket, d.opts.lockLimit, d.opts.healthTimeout
	hopts := []kubeletplugin.Option{
		kubeletplugin.DriverName(DriverName),
		kubeletplugin.NodeName(d.opts.nodeName),
		kubeletplugin.KubeClient(sliceClient{Interface: d.opts.client, h: &d.health}),
		kubeletplugin.GRPCInterceptor(d.observeRegistration),
		// State locks each call itself (in-process and flock); the
		// helper's serialization would also hold back the Unprepare that
		// a waiting Prepare needs.
		kubeletplugin.Serialize(false),
	}
	if regOpt != nil {
		hopts = append(hopts, regOpt)
	}
	if d.opts.registrarDir != "" {
		hopts = append(hopts, kubeletplugin.RegistrarDirectoryPath(d.opts.registrarDir))
	}
	if d.opts.dataDir != "" {
		hopts = append(hopts, kubeletplugin.PluginDataDirectoryPath(d.opts.dataDir))
	}
	if d.opts.cdiDir != "" {
		hopts = append(hopts, kubeletplugin.CDIDirectory(d.opts.cdiDir))
	}
	if d.opts.rollingUID != "" {
		hopts = append(hopts, kubeletplugin.RollingUpdate(d.opts.rollingUID))
	}
	hopts = append(hopts, d.metadataOptions()...)
	hopts = append(hopts, d.opts.helperOpts...)
	helper, err := kubeletplugin.Start(ctx, d, hopts...)
	if err != nil {
		return nil, fmt.Errorf("start the kubelet plugin: %w", err)
	}
	d.helper = helper
	logger.Info("Registered with the kubelet", "driver", DriverName, "node", d.opts.nodeName, "rollingUpdate", d.opts.rollingUID != "")
	return d, nil
}

// Run publishes every inventory src delivers until ctx ends, then stops the
// kubelet plugin cleanly (a rolling update depends on that).
func (d *Driver) Run(ctx context.Context, src InventorySource) error {
	logger := klog.FromContext(ctx)
	ctx, cancel := context.WithCancelCause(ctx)
	defer d.helper.Stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(nil)

	if d.opts.healthAddress != "" {
		srv, err := d.serveHealth(ctx, d.opts.healthAddress)
		if err != nil {
			return err
		}
		defer srv.Close()
	}

	if d.collector != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.collector.run(ctx)
		}()
	}

	srcErr := make(chan error, 1)
	wg.Add(2)
	wg.Go(func() { d.runClaimStatus(ctx) })
	go func() {
		defer wg.Done()
		srcErr <- src.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		d.restoreLoop(ctx)
	}()

	updates := src.Updates()
	taintTicker := newTaintTicker()
	defer taintTicker.Stop()
	for {
		select {
		case <-d.taintPoke:
			d.checkTaints(ctx)
		case <-taintTicker.C:
			d.checkTaints(ctx)
		case <-ctx.Done():
			cause := context.Cause(ctx)
			if errors.Is(cause, context.Canceled) {
				logger.Info("Shutting down")
				return nil
			}
			return cause
		case err := <-d.fatal:
			return err
		case err := <-srcErr:
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("device discovery: %w", err)
			}
			return nil
		case inv, ok := <-updates:
			if !ok {
				// The source is ending; its error arrives on srcErr.
				updates = nil
				continue
			}
			if inv == nil {
				continue
			}
			if err := d.publish(ctx, inv); err != nil {
				// A slice the API server would reject is a bug; keep
				// the last good publication and say what is wrong.
				logger.Error(err, "Not publishing the new inventory")
			}
		}
	}
}

// publish builds the ResourceSlices for inv, checks them against the API's
// rules and hands them to the helper, which syncs them with the API server.
func (d *Driver) publish(ctx context.Context, inv *discovery.Inventory) error {
	logger := klog.FromContext(ctx)
	res, withheld, err := d.buildForPublish(inv)
	if err == nil {
		err = ValidateResources(res)
	}
	if err == nil {
		d.logWithheld(logger, withheld)
		d.setInventory(inv)
		if err = d.helper.PublishResources(ctx, res); err != nil {
			err = fmt.Errorf("publish ResourceSlices: %w", err)
		}
	}
	d.health.set(func(h *healthState) { h.publishErr = err })
	d.opts.metrics.SlicePublication(err)
	if err != nil {
		return err
	}
	d.opts.metrics.ObserveInventory(metrics.ModeDRA, inv, withheld)
	n := 0
	for _, p := range res.Pools {
		for _, s := range p.Slices {
			n += len(s.Devices)
		}
	}
	d.recordPublished(res)
	logger.Info("Published devices", "devices", n, "excluded", len(inv.Excluded))
	d.published.Store(true)
	return nil
}

// logWithheld logs the devices BuildResources left out when that list
// changes, not on every publication. Run calls it from one goroutine.
func (d *Driver) logWithheld(logger klog.Logger, withheld []discovery.Exclusion) {
	now := make(map[string]string, len(withheld))
	for _, w := range withheld {
		now[w.Path] = w.Reason
		if d.withheld[w.Path] != w.Reason {
			logger.Info("Not publishing a device", "path", w.Path, "reason", w.Reason)
		}
	}
	for p := range d.withheld {
		if _, still := now[p]; !still {
			logger.Info("Publishing a device that was withheld before", "path", p)
		}
	}
	d.withheld = now
}

func (d *Driver) setInventory(inv *discovery.Inventory) {
	d.mu.Lock()
	d.inv = inv
	close(d.invSignal)
	d.invSignal = make(chan struct{})
	d.mu.Unlock()
}

// inventory returns the latest inventory (nil before the first).
func (d *Driver) inventory() *discovery.Inventory {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.inv
}

func (d *Driver) inventoryAndSignal() (*discovery.Inventory, <-chan struct{}) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.inv, d.invSignal
}

// PrepareResourceClaims implements kubeletplugin.DRAPlugin.
func (d *Driver) PrepareResourceClaims(ctx context.Context, claims []*resourceapi.ResourceClaim) (map[types.UID]kubeletplugin.PrepareResult, error) {
	if len(claims) == 0 {
		// The liveness check's call (health.go); it must take no lock.
		return map[types.UID]kubeletplugin.PrepareResult{}, nil
	}
	if d.inventory() == nil {
		return nil, errors.New("devices not discovered yet; the kubelet will retry")
	}
	defer d.pokeTaints()
	start := time.Now()
	res := d.waiter.prepare(ctx, claims)
	d.observePrepare(start, res)
	return d.tellPrepared(claims, res), nil
}

// UnprepareResourceClaims implements kubeletplugin.DRAPlugin.
func (d *Driver) UnprepareResourceClaims(ctx context.Context, claims []kubeletplugin.NamespacedObject) (map[types.UID]error, error) {
	defer d.pokeTaints()
	start := time.Now()
	res := d.state.Unprepare(ctx, claims)
	d.observeUnprepare(start, res)
	return res, nil
}

// HandleError implements kubeletplugin.DRAPlugin: background errors (mostly
// from publishing slices) are logged; a fatal one stops the plugin so that
// the pod restarts and says why.
func (d *Driver) HandleError(ctx context.Context, err error, msg string) {
	if d.expectedDrop(ctx, err) {
		return
	}
	d.opts.metrics.BackgroundError()
	utilruntime.HandleErrorWithContext(ctx, err, msg)
	if !errors.Is(err, kubeletplugin.ErrRecoverable) {
		select {
		case d.fatal <- fmt.Errorf("fatal error: %s: %w", msg, err):
		default: // Run gets the first one
		}
	}
}

// WatchHealthStatus implements kubeletplugin.DRAPlugin. Every published
// device is Healthy; a device that a prepared claim still holds but that
// has gone from the node is Unhealthy. Reports are re-sent well within the
// kubelet's 30 s timeout and at once when the inventory changes.
func (d *Driver) WatchHealthStatus(ctx context.Context, reports chan<- kubeletplugin.DeviceHealthReport) error {
	ticker := time.NewTicker(healthResendInterval)
	defer ticker.Stop()
	for {
		inv, changed := d.inventoryAndSignal()
		if inv != nil {
			report := d.healthReport(inv, time.Now())
			select {
			case <-ctx.Done():
				return nil
			case reports <- report:
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		case <-changed:
		}
	}
}

func (d *Driver) healthReport(inv *discovery.Inventory, now time.Time) kubeletplugin.DeviceHealthReport {
	pool := d.opts.nodeName
	present := PublishedDeviceNames(inv)
	var devs []kubeletplugin.DeviceHealth
	for _, name := range present {
		devs = append(devs, kubeletplugin.DeviceHealth{
			PoolName: pool, DeviceName: name, Health: kubeletplugin.HealthStatusHealthy,
			LastUpdated: now, HealthCheckTimeout: 3 * healthResendInterval,
		})
	}
	have := make(map[string]bool, len(present))
	for _, n := range present {
		have[n] = true
	}
	var gone []string
	for _, name := range d.state.PreparedDeviceNames() {
		if !have[name] {
			gone = append(gone, name)
			have[name] = true
		}
	}
	sort.Strings(gone)
	for _, name := range gone {
		devs = append(devs, kubeletplugin.DeviceHealth{
			PoolName: pool, DeviceName: name, Health: kubeletplugin.HealthStatusUnhealthy,
			LastUpdated: now, HealthCheckTimeout: 3 * healthResendInterval,
			Message: "the device is no longer on the node",
		})
	}
	markProblems(devs, d.state.DeviceProblems())
	return kubeletplugin.DeviceHealthReport{Devices: devs}
}

// PublishedDeviceNames lists the names of the DRA devices an inventory
// publishes: one per node, or one per bundle group. Sorted.
func PublishedDeviceNames(inv *discovery.Inventory) []string {
	var names []string
	for _, g := range inv.Groups {
		if g.Bundle {
			if len(g.Devices) > 0 { // an empty bundle is not published
				names = append(names, g.BundleName)
			}
			continue
		}
		for _, dev := range g.Devices {
			names = append(names, dev.Name)
		}
	}
	sort.Strings(names)
	return names
}
