package discovery

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// Source delivers inventories: the first at start, then one each time
// discovery changes. Watcher implements it; the DRA driver and the device
// plugin consume it (and tests feed them through a channel-backed fake).
type Source interface {
	Run(ctx context.Context) error
	Updates() <-chan *Inventory
}

var _ Source = (*Watcher)(nil)

// Watcher runs discovery again whenever devices or the configuration may
// have changed and sends each new inventory on Updates.
//
// Triggers are kernel uevents (netlink; when that is unavailable, e.g.
// without permission, the Watcher logs it and goes on without), changes in
// <root>/dev, <root>/dev/mapper and <root>/dev/disk/by-id, new entries in
// the host's udev database (<root>/run/udev/data), changes of the
// configuration file, the end of a new block device's settle time (on
// hosts without udev), and a slow rescan in any case. A burst of triggers
// gives one scan, at most the debounce time after the first trigger. An
// inventory is sent only when it differs from the last one sent.
type Watcher struct {
	s       settings
	cfg     *v1alpha1.DiscoveryConfig
	updates chan *Inventory
	started atomic.Bool

	lastLoadErr string
	// cfgWarnings are the warnings of the configuration in force.
	cfgWarnings []string
}

// NewWatcher makes a Watcher. See the WatcherOption functions for the
// configuration, host root, intervals and loader.
func NewWatcher(opts ...WatcherOption) *Watcher {
	s := defaultSettings()
	for _, o := range opts {
		if o != nil {
			o(&s)
		}
	}
	s.state = newScanState(true)
	cfg := s.cfg
	if cfg == nil && s.loader == nil {
		cfg = v1alpha1.DefaultDiscoveryConfig()
	}
	return &Watcher{s: s, cfg: cfg, updates: make(chan *Inventory, 1)}
}

// Updates delivers inventories: the first one as soon as Run has scanned,
// then one per change. A reader that falls behind gets only the newest
// inventory. The channel is closed when Run returns.
func (w *Watcher) Updates() <-chan *Inventory { return w.updates }

// Run watches until ctx ends, then stops every goroutine it started and
// returns nil. It returns an error when the first scan fails or when it is
// called a second time. Later failed scans are logged and the last
// inventory stays in force.
func (w *Watcher) Run(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errors.New("discovery watcher: Run called twice")
	}
	defer close(w.updates)
	logger := klog.FromContext(ctx).WithName("discovery-watcher")
	ctx = klog.NewContext(ctx, logger)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	trigger := make(chan string, 1)
	poke := func(why string) {
		select {
		case trigger <- why:
		default:
		}
	}
	if !w.s.noUevents {
		if err := listenUevents(ctx, &wg, poke); err != nil {
			logger.Info("Kernel uevents unavailable; relying on file watches and rescans",
				"err", err, "rescanInterval", w.s.rescan)
		}
	}
	files := w.watchFiles(ctx)
	if files != nil {
		defer files.close()
	}

	last, err := w.scan(ctx, "initial")
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	logWarnings(logger, last, nil)
	w.publish(last)

	ticker := time.NewTicker(w.s.rescan)
	defer ticker.Stop()
	var debounce *time.Timer
	var debounceC <-chan time.Time
	defer func() {
		if debounce != nil {
			debounce.Stop()
		}
	}()
	arm := func(why string) {
		logger.V(5).Info("Rescan requested", "why", why)
		if debounceC == nil {
			debounce = time.NewTimer(w.s.debounce)
			debounceC = debounce.C
		}
	}
	// A device held back as new is published when its settle time is over,
	// without waiting for an event or the rescan.
	var settle clock.Timer
	var settleC <-chan time.Time
	defer func() {
		if settle != nil {
			settle.Stop()
		}
	}()
	armSettle := func() {
		if settle != nil {
			settle.Stop()
			settle, settleC = nil, nil
		}
		if next := w.s.state.nextSettle; !next.IsZero() {
			if d := next.Sub(w.s.clock.Now()); d > 0 {
				settle = w.s.clock.NewTimer(d)
				settleC = settle.C()
			} else {
				arm("settle time over")
			}
		}
	}
	armSettle()
	var fsEvents <-chan fsnotify.Event
	var fsErrors <-chan error
	if files != nil {
		fsEvents, fsErrors = files.w.Events, files.w.Errors
	}
	for {
		var why, kind string
		select {
		case <-ctx.Done():
			return nil
		case reason := <-trigger:
			arm(reason)
			continue
		case ev, ok := <-fsEvents:
			if !ok {
				fsEvents = nil
				continue
			}
			if files.relevant(ctx, ev) {
				arm("file " + ev.Name)
			}
			continue
		case err, ok := <-fsErrors:
			if !ok {
				fsErrors = nil
				continue
			}
			// Mostly a queue overflow: events were lost.
			logger.Info("File watch error; rescanning", "err", err)
			arm("file watch error")
			continue
		case <-debounceC:
			debounceC, debounce = nil, nil
			why, kind = "events", "event"
		case <-settleC:
			settle, settleC = nil, nil
			why, kind = "settle time over", "settle"
		case <-ticker.C:
			why, kind = "rescan interval", "interval"
		}
		inv, err := w.scan(ctx, kind)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			logger.Error(err, "Discovery failed; keeping the last inventory", "trigger", why)
			continue
		}
		armSettle()
		if reflect.DeepEqual(inv, last) {
			logger.V(4).Info("Inventory unchanged", "trigger", why)
			continue
		}
		logger.V(2).Info("Inventory changed", "trigger", why)
		logWarnings(logger, inv, last)
		last = inv
		w.publish(inv)
	}
}

// scan loads the configuration and discovers, and tells the observer.
func (w *Watcher) scan(ctx context.Context, trigger string) (*Inventory, error) {
	start := time.Now() // the duration in real time, whatever clock settles run on
	inv, err := w.load(ctx)
	if err == nil {
		inv, err = discover(ctx, w.cfg, w.s)
	}
	if w.s.observe != nil {
		w.s.observe(trigger, time.Since(start), err)
	}
	return inv, err
}

// load loads the configuration into w.cfg; an error means there is none.
func (w *Watcher) load(ctx context.Context) (*Inventory, error) {
	if w.s.loader != nil {
		cfg, warns, err := w.s.loader()
		switch {
		case err != nil && w.cfg == nil:
			// No good configuration yet: guessing one could publish
			// what the operator meant to keep back.
			return nil, fmt.Errorf("load configuration: %w", err)
		case err != nil:
			if msg := err.Error(); msg != w.lastLoadErr {
				w.lastLoadErr = msg
				klog.FromContext(ctx).Error(err, "The configuration file cannot be used; the last good configuration stays in force until the file is fixed")
			}
		case cfg == nil:
			// Treated like a failure: keep what we have.
			if w.cfg == nil {
				return nil, errors.New("load configuration: loader returned nothing")
			}
		default:
			if w.lastLoadErr != "" {
				klog.FromContext(ctx).Info("Configuration loads again")
				w.lastLoadErr = ""
			}
			w.cfg = cfg
			w.logConfigWarnings(ctx, warns)
		}
	}
	return nil, nil
}

// publish hands inv to the reader, replacing an inventory not yet read.
func (w *Watcher) publish(inv *Inventory) {
	for {
		select {
		case w.updates <- inv:
			return
		default:
		}
		select {
		case <-w.updates:
		default:
		}
	}
}

// fileWatch is the fsnotify side of a Watcher.
type fileWatch struct {
	w         *fsnotify.Watcher
	devDirs   []string // real paths
	udevDir   string   // real path of the udev database
	configDir string   // real path, "" without a config file
	config    string   // base name of the config file
}

// watchFiles watches the device directories and the configuration file's
// directory. It returns nil when inotify is unavailable.
func (w *Watcher) watchFiles(ctx context.Context) *fileWatch {
	logger := klog.FromContext(ctx)
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		logger.Info("File watches unavailable; relying on uevents and rescans", "err", err)
		return nil
	}
	h := newHostFS(w.s.root, w.s.stat)
	f := &fileWatch{w: fw}
	// udev writes a device's database entry when it is done with it.
	for _, d := range []string{"/dev", "/dev/mapper", "/dev/disk", "/dev/disk/by-id", udevData} {
		f.devDirs = append(f.devDirs, h.real(d))
	}
	f.udevDir = h.real(udevData)
	if w.s.configPath != "" {
		f.configDir = filepath.Dir(filepath.Clean(w.s.configPath))
		f.config = filepath.Base(w.s.configPath)
		if err := fw.Add(f.configDir); err != nil {
			logger.Info("Cannot watch the configuration directory; edits are seen at the next rescan",
				"dir", f.configDir, "err", err)
		}
	}
	f.addDevDirs(ctx)
	return f
}

// addDevDirs adds watches for the device directories that exist; adding a
// watched directory again is harmless.
func (f *fileWatch) addDevDirs(ctx context.Context) {
	for _, d := range f.devDirs {
		if err := f.w.Add(d); err != nil {
			klog.FromContext(ctx).V(4).Info("Not watching directory", "dir", d, "err", err)
		}
	}
}

// relevant reports whether an event may change the inventory.
func (f *fileWatch) relevant(ctx context.Context, ev fsnotify.Event) bool {
	if ev.Op == fsnotify.Chmod {
		return false
	}
	dir := filepath.Dir(ev.Name)
	if dir == f.udevDir && !strings.HasPrefix(filepath.Base(ev.Name), "b") {
		// Entries of other devices, and temporary files.
		return false
	}
	if f.configDir != "" && dir == f.configDir {
		// ConfigMap volumes swap a "..data" link to publish a new version.
		base := filepath.Base(ev.Name)
		if base == f.config || strings.HasPrefix(base, "..") {
			return true
		}
		// The config directory may also be a device directory.
		isDev := false
		for _, d := range f.devDirs {
			isDev = isDev || d == dir
		}
		if !isDev {
			return false
		}
	}
	if ev.Has(fsnotify.Create) {
		for _, d := range f.devDirs {
			if d == ev.Name {
				f.addDevDirs(ctx)
				break
			}
		}
	}
	return true
}

func (f *fileWatch) close() { _ = f.w.Close() }

// logConfigWarnings logs the warnings of a configuration that the one in
// force before did not have.
func (w *Watcher) logConfigWarnings(ctx context.Context, warns []string) {
	logger := klog.FromContext(ctx)
	for _, msg := range warns {
		if !slices.Contains(w.cfgWarnings, msg) {
			logger.Info("Configuration warning", "config", w.s.configPath, "warning", msg)
		}
	}
	w.cfgWarnings = warns
}

// logWarnings logs the warnings of inv that prev did not have.
func logWarnings(logger klog.Logger, inv, prev *Inventory) {
	seen := map[string]bool{}
	if prev != nil {
		for _, msg := range prev.Warnings {
			seen[msg] = true
		}
	}
	for _, msg := range inv.Warnings {
		if !seen[msg] {
			logger.Info("WARNING: " + msg)
		}
	}
}
