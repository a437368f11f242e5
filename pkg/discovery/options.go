package discovery

import (
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/utils/clock"

	"github.com/power-dev-plugin/power-dev-plugin/api/v1alpha1"
)

// StatFunc reports what kind of file path is and, for device nodes, its
// device numbers. path is a real filesystem path (host root included) with
// every symbolic link already resolved. The mode carries only type bits:
// fs.ModeDevice for a block device, fs.ModeDevice|fs.ModeCharDevice for a
// character device, fs.ModeDir for a directory and 0 for a regular file.
//
// The default calls stat(2). Replacing it is meant for tests that cannot
// create device nodes because mknod(2) needs CAP_MKNOD.
type StatFunc func(path string) (mode fs.FileMode, major, minor uint32, err error)

// OpenFunc opens a host block device read-only so that discovery can look
// for storage stack signatures on it when the host's udev database cannot
// say. hostPath is the device's /dev path; the file must be that device
// (major:minor). The default is OpenBlockDevice under the host root;
// replacing it is meant for fixture trees, whose nodes lead nowhere.
type OpenFunc func(hostPath string, major, minor uint32) (*os.File, error)

// Option changes how Discover works.
type Option func(*settings)

// WatcherOption changes how a Watcher works.
type WatcherOption func(*settings)

type settings struct {
	root   string
	stat   StatFunc
	opener OpenFunc // nil: OpenBlockDevice under root

	// Kept across the scans of a Watcher; nil for Discover alone.
	state  *scanState
	settle time.Duration
	clock  clock.Clock

	// Watcher only.
	cfg        *v1alpha1.DiscoveryConfig
	rescan     time.Duration
	debounce   time.Duration
	configPath string
	loader     ConfigLoader
	noUevents  bool
	observe    ScanObserver
}

const (
	// DefaultRescanInterval is how often a Watcher rescans when no event
	// arrives.
	DefaultRescanInterval = time.Minute
	// DefaultDebounce is how long a Watcher collects events before it
	// rescans.
	DefaultDebounce = 200 * time.Millisecond
	// DefaultSettleTime is how long a Watcher holds a new block device back
	// on a host without a usable udev database, so that a multipath map or
	// another stack can take it first.
	DefaultSettleTime = 5 * time.Second
)

func defaultSettings() settings {
	return settings{
		root:     "/",
		stat:     statNode,
		rescan:   DefaultRescanInterval,
		debounce: DefaultDebounce,
		settle:   DefaultSettleTime,
		clock:    clock.RealClock{},
	}
}

func newSettings(opts []Option) settings {
	s := defaultSettings()
	for _, o := range opts {
		if o != nil {
			o(&s)
		}
	}
	return s
}

// WithHostRoot makes discovery read the host's /dev, /sys and /proc under
// dir instead of under "/", e.g. "/host" in a container that mounts the host
// root there. Reported paths stay host paths (/dev/...).
func WithHostRoot(dir string) Option {
	return func(s *settings) {
		if dir == "" {
			dir = "/"
		}
		s.root = filepath.Clean(dir)
	}
}

// WithStat replaces the stat(2) call used to read device nodes; nil restores
// the default. See StatFunc.
func WithStat(f StatFunc) Option {
	return func(s *settings) {
		if f == nil {
			f = statNode
		}
		s.stat = f
	}
}

// WithBlockOpener replaces how block devices are opened to read their
// signatures; nil restores the default. See OpenFunc.
func WithBlockOpener(f OpenFunc) Option {
	return func(s *settings) { s.opener = f }
}

// WithWatchHostRoot is WithHostRoot for a Watcher: its scans and file
// watches use <dir>/dev, <dir>/sys and <dir>/proc.
func WithWatchHostRoot(dir string) WatcherOption {
	return WatcherOption(WithHostRoot(dir))
}

// WithDiscoverOptions passes options to every scan of a Watcher (WithStat in
// tests).
func WithDiscoverOptions(opts ...Option) WatcherOption {
	return func(s *settings) {
		for _, o := range opts {
			if o != nil {
				o(s)
			}
		}
	}
}

// WithConfig sets the configuration a Watcher uses when it has no loader,
// and while its loader fails. Without it and without a loader the Watcher
// uses v1alpha1.DefaultDiscoveryConfig().
func WithConfig(cfg *v1alpha1.DiscoveryConfig) WatcherOption {
	return func(s *settings) { s.cfg = cfg }
}

// WithConfigLoader makes a Watcher call load before every scan to get the
// current configuration (FileConfigLoader in the plugin). When load fails
// the Watcher keeps using the last configuration that loaded (or the one
// from WithConfig) and logs the error; when there is none yet, Run fails
// rather than guess one. Each warning is logged when it first appears, and
// again when it comes back after a configuration without it.
func WithConfigLoader(load ConfigLoader) WatcherOption {
	return func(s *settings) { s.loader = load }
}

// WithConfigFile names the configuration file the loader reads. Its
// directory is watched so that edits trigger a scan at once (ConfigMap
// updates, which swap a "..data" link, are seen too); without it edits are
// seen at the next event or rescan.
func WithConfigFile(path string) WatcherOption {
	return func(s *settings) { s.configPath = path }
}

// WithRescanInterval sets how often a Watcher rescans even without events
// (default DefaultRescanInterval). A value <= 0 keeps the default.
func WithRescanInterval(d time.Duration) WatcherOption {
	return func(s *settings) {
		if d > 0 {
			s.rescan = d
		}
	}
}

// WithDebounce sets how long a Watcher waits after the first event of a
// burst before it rescans (default DefaultDebounce). A value < 0 keeps the
// default.
func WithDebounce(d time.Duration) WatcherOption {
	return func(s *settings) {
		if d >= 0 {
			s.debounce = d
		}
	}
}

// WithSettleTime sets how long a Watcher holds a new block device back on a
// host without a usable udev database (default DefaultSettleTime); 0 turns
// the hold off, a value < 0 keeps the default. With udev a device waits for
// udev instead, however long that takes.
func WithSettleTime(d time.Duration) WatcherOption {
	return func(s *settings) {
		if d >= 0 {
			s.settle = d
		}
	}
}

// WithClock gives a Watcher the clock its settle times run on (a fake one in
// tests); nil keeps the real clock.
func WithClock(c clock.Clock) WatcherOption {
	return func(s *settings) {
		if c != nil {
			s.clock = c
		}
	}
}

// withoutUevents keeps a Watcher off the kernel uevent socket (tests).
func withoutUevents() WatcherOption {
	return func(s *settings) { s.noUevents = true }
}

// statNode is the default StatFunc.
func statNode(path string) (fs.FileMode, uint32, uint32, error) {
	var st unix.Stat_t
	for {
		err := unix.Stat(path, &st)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, 0, 0, &fs.PathError{Op: "stat", Path: path, Err: err}
		}
		break
	}
	var mode fs.FileMode
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		mode = fs.ModeDevice
	case unix.S_IFCHR:
		mode = fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFDIR:
		mode = fs.ModeDir
	case unix.S_IFREG:
		mode = 0
	case unix.S_IFLNK:
		mode = fs.ModeSymlink
	case unix.S_IFIFO:
		mode = fs.ModeNamedPipe
	case unix.S_IFSOCK:
		mode = fs.ModeSocket
	default:
		mode = fs.ModeIrregular
	}
	rdev := uint64(st.Rdev) //nolint:unconvert // Rdev is uint32 on some platforms.
	return mode, unix.Major(rdev), unix.Minor(rdev), nil
}

func isBlockMode(m fs.FileMode) bool { return m&fs.ModeDevice != 0 && m&fs.ModeCharDevice == 0 }
func isCharMode(m fs.FileMode) bool  { return m&fs.ModeDevice != 0 && m&fs.ModeCharDevice != 0 }

// ScanTriggers are the triggers a ScanObserver is told: the first scan,
// events (uevents, file changes), a settle time that ended, the rescan
// interval.
var ScanTriggers = []string{"initial", "event", "settle", "interval"}

// ScanObserver is told about every scan of a Watcher: what triggered it
// (initial, event, settle, interval), how long it took and its error.
type ScanObserver func(trigger string, took time.Duration, err error)

// WithScanObserver has the Watcher report every scan to f (metrics).
func WithScanObserver(f ScanObserver) WatcherOption {
	return func(s *settings) { s.observe = f }
}
