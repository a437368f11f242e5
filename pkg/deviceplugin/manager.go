package deviceplugin

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/klog/v2"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/health"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics"
)

// InventorySource is where inventories come from: discovery.Watcher.
type InventorySource = discovery.Source

// SocketPrefix starts the name of every socket this plugin creates in the
// device-plugin directory: power-dev-plugin-<group>-<instance>-<n>.sock.
const SocketPrefix = "power-dev-plugin-"

// OldPluginSocket is the socket of the old power-device-plugin, which
// served the same resource power-dev-plugin/dev.
const OldPluginSocket = "power-dev.csi.ibm.com-reg.sock"

// maxSocketPath is the longest unix socket path (sun_path is 108 bytes
// with the terminating NUL).
const maxSocketPath = 107

// timing are the loop intervals; tests shorten them.
type timing struct {
	// check is the period of the checks that do not rely on inotify: own
	// socket still there, kubelet socket unchanged, CDI spec in place.
	check time.Duration
	// streamGrace is how long a registered plugin may be without a
	// ListAndWatch stream before it registers again.
	streamGrace time.Duration
	// minBackoff and maxBackoff bound the wait between failed attempts.
	minBackoff, maxBackoff time.Duration
	// register bounds one Register call (the kubelet dials back the plugin
	// before it answers).
	register time.Duration
}

func defaultTiming() timing {
	return timing{
		check:       5 * time.Second,
		streamGrace: 5 * time.Second,
		minBackoff:  500 * time.Millisecond,
		maxBackoff:  5 * time.Second,
		register:    15 * time.Second,
	}
}

func (t timing) backoff(failures int) time.Duration {
	d := t.minBackoff
	for i := 1; i < failures && d < t.maxBackoff; i++ {
		d *= 2
	}
	return min(d, t.maxBackoff)
}

// Option configures a Manager.
type Option func(*options)

type options struct {
	pluginDir  string
	cdiDir     string
	cdiDevices bool
	hostRoot   string
	numa       NUMAFunc
	numaSet    bool
	instance   string
	healthAddr string
	registrar  Registrar
	timing     timing
	// stuckAfter and healthTimeout are the health checks' limits
	// (health.go); tests shorten them.
	stuckAfter, healthTimeout time.Duration
	// probe is discovery.CheckNotHeld under hostRoot; tests replace it
	// when their inventories are made up.
	probe func(d *discovery.Device) error
	// metrics counts registrations, streams and Allocate calls (nil: none).
	metrics *metrics.Metrics
}

// WithPluginDir sets the kubelet's device-plugin directory, where its
// kubelet.sock is and the plugins' sockets go (default DefaultPluginDir).
func WithPluginDir(dir string) Option { return func(o *options) { o.pluginDir = dir } }

// WithCDIDir sets the CDI spec directory the container runtime reads
// (default /var/run/cdi). Empty: no CDI spec and no CDI devices.
func WithCDIDir(dir string) Option { return func(o *options) { o.cdiDir = dir } }

// WithCDIDevices says whether Allocate names CDI devices next to the
// DeviceSpecs (default true). Off, the plugin writes no CDI spec.
func WithCDIDevices(on bool) Option { return func(o *options) { o.cdiDevices = on } }

// WithHostRoot sets where the host's /sys and /dev are found, for NUMA
// nodes and for the check at Allocate that nothing holds a block device
// (default "/").
func WithHostRoot(dir string) Option { return func(o *options) { o.hostRoot = dir } }

// WithNUMA replaces the NUMA lookup (default SysfsNUMA(host root)); nil
// turns topology off.
func WithNUMA(f NUMAFunc) Option { return func(o *options) { o.numa, o.numaSet = f, true } }

// WithInstanceID names this process's sockets, so that a new plugin pod
// (rolling update) never takes over the old pod's socket path. The pod UID
// is a good choice; letters and digits are kept, at most 8. Empty: random.
func WithInstanceID(id string) Option { return func(o *options) { o.instance = id } }

// WithHealthAddress serves /healthz and /readyz on addr. Empty: off.
func WithHealthAddress(addr string) Option { return func(o *options) { o.healthAddr = addr } }

// WithRegistrar replaces the kubelet registration client (tests).
func WithRegistrar(r Registrar) Option { return func(o *options) { o.registrar = r } }

// WithIntervals shortens the periodic check and the time a registered
// plugin may go without a ListAndWatch stream (tests). Zero keeps a value.
func WithIntervals(check, streamGrace, maxBackoff time.Duration) Option {
	return func(o *options) {
		if check > 0 {
			o.timing.check = check
		}
		if streamGrace > 0 {
			o.timing.streamGrace = streamGrace
		}
		if maxBackoff > 0 {
			o.timing.maxBackoff = maxBackoff
			o.timing.minBackoff = min(o.timing.minBackoff, maxBackoff)
		}
	}
}

// Manager runs one kubelet device plugin per configured group, fed by
// discovery. See the package documentation.
type Manager struct {
	opts          options
	kubeletSocket string
	cdi           *cdiWriter
	logger        klog.Logger

	cdiNames  atomic.Pointer[map[string]bool] // devices the spec on disk defines
	cdiSets   []*DeviceSet                    // the sets the spec should hold (Run's goroutine)
	cdiFailed bool
	// heldBack is what the last inventory held back (path -> reason), so
	// that a change is logged once (Run's goroutine).
	heldBack map[string]string

	mu      sync.RWMutex
	plugins map[string]*pluginRun // by group

	started atomic.Bool
	ready   atomic.Bool
	// loop notes what Run's loop is doing, for the liveness check.
	loop health.LockWatch
}

type pluginRun struct {
	*plugin
	cancel context.CancelFunc
	done   chan struct{}
}

// New checks the options and returns a Manager; Run starts it.
func New(opts ...Option) (*Manager, error) {
	o := options{pluginDir: DefaultPluginDir, cdiDir: "/var/run/cdi", cdiDevices: true, hostRoot: "/", timing: defaultTiming(), stuckAfter: health.StuckAfter}
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	if o.pluginDir == "" {
		return nil, errors.New("device-plugin directory is empty")
	}
	o.pluginDir = filepath.Clean(o.pluginDir)
	o.instance = instanceID(o.instance)
	if !o.numaSet {
		o.numa = SysfsNUMA(o.hostRoot)
	}
	if o.probe == nil {
		root := o.hostRoot
		o.probe = func(d *discovery.Device) error { return discovery.CheckNotHeld(root, d) }
	}
	m := &Manager{opts: o, kubeletSocket: filepath.Join(o.pluginDir, KubeletSocket), plugins: map[string]*pluginRun{}}
	if m.opts.registrar == nil {
		m.opts.registrar = SocketRegistrar(m.kubeletSocket)
	}
	if len(m.kubeletSocket) > maxSocketPath {
		return nil, fmt.Errorf("device-plugin directory %s: too long for unix socket paths", o.pluginDir)
	}
	if _, err := m.socketBase("g"); err != nil {
		return nil, err
	}
	if o.cdiDevices && o.cdiDir != "" {
		w, err := newCDIWriter(o.cdiDir)
		if err != nil {
			return nil, err
		}
		m.cdi = w
	}
	empty := map[string]bool{}
	m.cdiNames.Store(&empty)
	return m, nil
}

// instanceID keeps up to 8 letters and digits of id, or makes a random one.
func instanceID(id string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(id) {
		if b.Len() == 8 {
			break
		}
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			b.WriteRune(c)
		}
	}
	if b.Len() > 0 {
		return b.String()
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	return hex.EncodeToString(r[:])
}

// socketBase is the start of a group's socket paths:
// <dir>/power-dev-plugin-<group>-<instance>, to which the plugin adds
// "-<n>.sock"; a hash of the group name stands for it when the path would
// be too long.
func (m *Manager) socketBase(group string) (string, error) {
	const suffix = len("-99999.sock")
	p := filepath.Join(m.opts.pluginDir, SocketPrefix+group+"-"+m.opts.instance)
	if len(p)+suffix <= maxSocketPath {
		return p, nil
	}
	sum := sha256.Sum256([]byte(group))
	p = filepath.Join(m.opts.pluginDir, SocketPrefix+hex.EncodeToString(sum[:6])+"-"+m.opts.instance)
	if len(p)+suffix > maxSocketPath {
		return "", fmt.Errorf("device-plugin directory %s: too long for unix socket paths", m.opts.pluginDir)
	}
	return p, nil
}

// PluginDir is the device-plugin directory.
func (m *Manager) PluginDir() string { return m.opts.pluginDir }

// Status reports every group's plugin, sorted by group.
func (m *Manager) Status() []PluginStatus {
	m.mu.RLock()
	out := make([]PluginStatus, 0, len(m.plugins))
	for _, p := range m.plugins {
		out = append(out, p.status())
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Group < out[j].Group })
	return out
}

// Run serves the inventories src delivers until ctx ends, then stops every
// plugin (their sockets are removed; the CDI spec stays, see the package
// documentation) and returns nil. It returns an error when discovery
// fails or when called twice.
func (m *Manager) Run(ctx context.Context, src InventorySource) error {
	if !m.started.CompareAndSwap(false, true) {
		return errors.New("device plugin manager: Run called twice")
	}
	m.logger = klog.FromContext(ctx).WithName("device-plugin")
	ctx = klog.NewContext(ctx, m.logger)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	defer m.stopAll()

	if err := os.MkdirAll(m.opts.pluginDir, 0o750); err != nil {
		return fmt.Errorf("device-plugin directory: %w", err)
	}
	m.cleanStaleSockets()
	m.cleanCDITemps()
	if m.opts.healthAddr != "" {
		srv, err := m.serveHealth(ctx, &wg)
		if err != nil {
			return err
		}
		defer func() { _ = srv.Close() }()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.watchDir(ctx)
	}()
	srcErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		srcErr <- src.Run(ctx)
	}()
	m.logger.Info("Device plugin mode", "dir", m.opts.pluginDir, "cdiDir", m.opts.cdiDir, "cdiDevices", m.cdi != nil, "instance", m.opts.instance)

	ticker := time.NewTicker(m.opts.timing.check)
	defer ticker.Stop()
	updates := src.Updates()
	for {
		select {
		case <-ctx.Done():
			m.logger.Info("Shutting down")
			return nil
		case err := <-srcErr:
			if err != nil && ctx.Err() == nil {
				return fmt.Errorf("device discovery: %w", err)
			}
			return nil
		case inv, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
			if inv != nil {
				m.doing("applying a new inventory", func() { m.apply(ctx, inv) })
			}
		case <-ticker.C:
			if m.cdi != nil && m.cdiSets != nil {
				m.doing("checking the CDI spec", func() { m.writeCDI(m.cdiSets, m.cdiFailed) })
			}
		}
	}
}

// apply serves a new inventory: the CDI spec first (so no ID is advertised
// before its CDI device exists), then the groups' device sets; plugins of
// new groups start, those of groups gone get an empty list and stop.
func (m *Manager) apply(ctx context.Context, inv *discovery.Inventory) {
	sets := BuildDeviceSets(inv, m.opts.numa)
	m.opts.metrics.ObserveInventory(metrics.ModeDevicePlugin, inv, nil)
	m.logHeldBack(sets)
	if m.cdi != nil {
		m.cdiSets = sets
		m.writeCDI(sets, true)
	}
	seen := map[string]bool{}
	var gone []*pluginRun
	m.mu.Lock()
	for _, s := range sets {
		seen[s.Group] = true
		if s.Capped {
			m.logger.Info("Too many IDs for one resource: fewer per device", "resource", s.Resource,
				"perDevice", s.PerDevice, "limit", MaxIDsPerResource)
		}
		if p := m.plugins[s.Group]; p != nil {
			p.update(s)
			continue
		}
		socket, err := m.socketBase(s.Group)
		if err != nil {
			m.logger.Error(err, "Not serving group", "group", s.Group)
			continue
		}
		cdiName := m.cdiName
		if m.cdi == nil {
			cdiName = nil
		}
		pctx, cancel := context.WithCancel(ctx)
		p := &pluginRun{
			plugin: newPlugin(s, socket, m.kubeletSocket, m.opts.registrar, cdiName, m.opts.timing, m.logger),
			cancel: cancel,
			done:   make(chan struct{}),
		}
		p.probe = m.opts.probe
		p.metrics = m.opts.metrics
		m.plugins[s.Group] = p
		go func() {
			defer close(p.done)
			p.run(pctx)
		}()
	}
	for g, p := range m.plugins {
		if !seen[g] {
			gone = append(gone, p)
			delete(m.plugins, g)
		}
	}
	m.mu.Unlock()
	for _, p := range gone {
		m.logger.Info("Group gone from the configuration; stopping its device plugin", "resource", p.resource)
		p.update(EmptyDeviceSet(p.group))
		p.cancel()
		<-p.done
	}
	var summary []string
	for _, s := range sets {
		summary = append(summary, fmt.Sprintf("%s=%d", s.Resource, len(s.Units)))
	}
	m.logger.Info("Serving devices", "ids", strings.Join(summary, " "), "excluded", len(inv.Excluded))
	m.ready.Store(true)
}

// writeCDI makes the CDI spec match sets. Run calls it on every inventory
// and, periodically, to repair a spec that was removed or edited.
func (m *Manager) writeCDI(sets []*DeviceSet, logChange bool) {
	spec, err := buildCDISpec(sets, m.cdi.defined)
	if err == nil {
		var names map[string]bool
		var wrote bool
		names, wrote, err = m.cdi.write(spec)
		if err == nil {
			m.cdiNames.Store(&names)
			if m.cdiFailed {
				m.logger.Info("CDI spec written again", "path", m.cdi.path())
			} else if wrote && logChange {
				m.logger.V(2).Info("CDI spec written", "path", m.cdi.path(), "devices", len(names))
			} else if wrote {
				m.logger.Info("CDI spec was changed or removed on the node; written again", "path", m.cdi.path())
			}
			m.cdiFailed = false
			return
		}
	}
	if !m.cdiFailed {
		// The spec on disk (if any) still defines the devices it had;
		// new devices get DeviceSpecs only until a write works.
		m.logger.Error(err, "CDI spec not written; new devices are allocated without CDI names", "dir", m.opts.cdiDir)
	}
	m.cdiFailed = true
}

// cdiName is the qualified name of a CDI device (Unit.CDIDevice), when the
// spec defines it.
func (m *Manager) cdiName(device string) string {
	if names := m.cdiNames.Load(); names != nil && (*names)[device] {
		return CDIDeviceName(device)
	}
	return ""
}

func (m *Manager) stopAll() {
	m.mu.Lock()
	runs := make([]*pluginRun, 0, len(m.plugins))
	for g, p := range m.plugins {
		runs = append(runs, p)
		delete(m.plugins, g)
	}
	m.mu.Unlock()
	for _, p := range runs {
		p.cancel()
	}
	for _, p := range runs {
		<-p.done
	}
}

// watchDir turns inotify events in the device-plugin directory into pokes:
// kubelet.sock appearing or going wakes every plugin, a plugin's own socket
// going wakes that plugin. Without inotify the plugins' periodic checks do
// the same, more slowly.
func (m *Manager) watchDir(ctx context.Context) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		m.logger.Info("Cannot watch the device-plugin directory; checking it periodically", "err", err, "interval", m.opts.timing.check)
		return
	}
	defer func() { _ = fw.Close() }()
	if err := fw.Add(m.opts.pluginDir); err != nil {
		m.logger.Info("Cannot watch the device-plugin directory; checking it periodically", "dir", m.opts.pluginDir, "err", err, "interval", m.opts.timing.check)
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-fw.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			m.pokeFor(filepath.Base(ev.Name))
		case err, ok := <-fw.Errors:
			if !ok {
				return
			}
			m.logger.V(2).Info("Device-plugin directory watch error", "err", err)
			m.pokeFor(KubeletSocket)
		}
	}
}

func (m *Manager) pokeFor(name string) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for _, p := range m.plugins {
		if name == KubeletSocket || strings.HasPrefix(name, filepath.Base(p.socketBase)+"-") {
			p.poke()
		}
	}
}

// cleanStaleSockets removes sockets of earlier instances that nobody
// listens on any more, and says so when another instance or the old
// plugin is serving.
func (m *Manager) cleanStaleSockets() {
	entries, err := os.ReadDir(m.opts.pluginDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		ours := strings.HasPrefix(name, SocketPrefix) && strings.HasSuffix(name, ".sock")
		if !ours && name != OldPluginSocket {
			continue
		}
		path := filepath.Join(m.opts.pluginDir, name)
		if e.Type()&os.ModeSocket == 0 {
			continue
		}
		conn, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			_ = conn.Close()
			if name == OldPluginSocket {
				m.logger.Info("The old power-device-plugin is running on this node: the kubelet keeps its registration of "+
					"power-dev-plugin/dev until it stops; delete its DaemonSet", "socket", path)
			} else if !strings.Contains(name, "-"+m.opts.instance+"-") {
				m.logger.Info("Another instance of this plugin is serving (rolling update?); the kubelet switches over when it stops", "socket", path)
			}
			continue
		}
		if ours && errors.Is(err, syscall.ECONNREFUSED) {
			if err := os.Remove(path); err == nil {
				m.logger.V(2).Info("Removed a stale plugin socket", "socket", path)
			}
		}
	}
}
