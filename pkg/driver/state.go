package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"
	"k8s.io/klog/v2"

	"golang.org/x/sys/unix"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/atomicfile"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/health"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics"
)

// State prepares and unprepares claims on this node: it plans each claim
// (PlanClaim), writes its CDI spec (CDIWriter) and records it in the
// checkpoint, so that a later Unprepare, which only carries the claim UID,
// can undo it.
//
// # Concurrency
//
// Every call takes an in-process lock and then an exclusive flock on
// <data dir>/state.lock, and re-reads the checkpoint from disk under it:
// two plugin instances sharing the data dir during a rolling update see
// each other's changes.
//
// # Crash safety
//
// The invariant is: every claim in the checkpoint has its spec file, for
// its devices as they are now (until a reboot wipes the CDI dir or a device
// moves or goes, which Restore repairs, or not: restore.go), and a spec file
// of this driver without a checkpoint entry is garbage that nothing uses.
//
//   - Prepare writes the spec files first and the checkpoint last, and
//     answers the kubelet only after both. A crash in between leaves spec
//     files the kubelet never heard of: Reconcile removes them at start,
//     and the kubelet's retry of Prepare writes them again (skipping files
//     that are already right) and records the claim.
//   - Unprepare removes the checkpoint entries first and the spec files
//     last. A crash in between leaves spec files without entries: the
//     kubelet retries Unprepare, which removes the spec file by the claim
//     UID alone (an unknown claim is not an error), and Reconcile removes
//     them too.
//
// # Failures
//
// A call that fails at any step undoes what it did (rollback.go): a claim
// it could not prepare keeps no spec, no entry and no hold; a claim it
// could not unprepare stays prepared as it was. Every file is written
// through atomicfile under a temporary name of this plugin's own; Reconcile
// and Restore remove those that a crash left, and no other writer's.
//
// A checkpoint that cannot be trusted (bad JSON, bad checksum, unknown
// version) is moved aside to checkpoint.json.corrupt-<UTC time>, never
// deleted, and rebuilt from this driver's spec files. So is a checkpoint
// that is missing while such spec files exist (Reconcile always leaves a
// checkpoint file behind, so only a lost one is missing). Spec files hold every
// prepared claim's UID, CDI devices and device nodes. The rebuilt entries
// are marked Recovered: they keep their spec files, block their exclusive
// device nodes, and are removed by Unprepare like any other; a Prepare of
// such a claim plans it afresh. What a spec file cannot tell (claim name,
// requests) is only used in messages.
type State struct {
	nodeName  string
	dataDir   string
	inventory func() *discovery.Inventory
	now       func() time.Time
	// probe is discovery.CheckNotHeld under the host root; tests of
	// other parts replace it, because their inventories are made up.
	probe func(d *discovery.Device) error

	cdi            *CDIWriter
	checkpointPath string
	lockPath       string

	// sem serializes calls in this process; it is a channel so that a
	// waiting call can give up when its context ends. lockWatch notes its
	// holder for the liveness check (health.go).
	sem       chan struct{}
	lockWatch health.LockWatch

	// idxInv and idx cache the index of the last inventory seen (guarded
	// by sem).
	idxInv *discovery.Inventory
	idx    *inventoryIndex

	snapMu sync.RWMutex
	snap   map[types.UID]*PreparedClaim
	// snapSignal is closed and replaced at every change of snap; a Prepare
	// waiting for a device to be released waits on it (wait.go).
	snapSignal chan struct{}

	// problems are the recorded claims that cannot be prepared now, and
	// why (restore.go; guarded by snapMu).
	problems map[types.UID]claimProblem

	// boot is the boot the plugin runs in (identity.go).
	boot    bootInfo
	bootErr error

	// fault, when set by tests, is called at named points of Prepare,
	// Unprepare and Reconcile, and inside every file write (hit); a test
	// panics in it to simulate a crash.
	fault func(point string)
	// inject, when set by tests, is called at the same points; the error
	// it returns fails the step there, as a failed write or removal would.
	inject func(point string) error

	// metrics counts checkpoint writes and recoveries and the claims
	// prepared (nil: none).
	metrics *metrics.Metrics
}

// DefaultCDIDir is where the container runtime looks for transient CDI specs.
const DefaultCDIDir = kubeletplugin.DefaultCDIDir

// DefaultDataDir is the kubelet's data directory for this plugin.
var DefaultDataDir = filepath.Join(kubeletplugin.KubeletPluginsDir, DriverName)

const lockFileName = "state.lock"

// StateOption configures NewState.
type StateOption func(*stateConfig)

type stateConfig struct {
	nodeName  string
	cdiDir    string
	dataDir   string
	hostRoot  string
	inventory func() *discovery.Inventory
	now       func() time.Time
	boot      *bootInfo
	metrics   *metrics.Metrics
}

// WithStateNodeName sets the node name, which is also the pool name of the
// node's devices. Required.
func WithStateNodeName(name string) StateOption { return func(c *stateConfig) { c.nodeName = name } }

// WithStateCDIDir sets the CDI spec directory. Empty: DefaultCDIDir.
func WithStateCDIDir(dir string) StateOption { return func(c *stateConfig) { c.cdiDir = dir } }

// WithStateDataDir sets the directory of the checkpoint and lock file.
// Empty: DefaultDataDir.
func WithStateDataDir(dir string) StateOption { return func(c *stateConfig) { c.dataDir = dir } }

// WithStateHostRoot sets where the host's /dev is found, for the check
// that nothing holds a block device at its first Prepare. Empty: "/".
func WithStateHostRoot(dir string) StateOption { return func(c *stateConfig) { c.hostRoot = dir } }

// WithStateInventory sets where the current inventory comes from. It may
// return nil while discovery has not finished; Prepare then fails for
// claims that are not prepared yet. Required.
func WithStateInventory(f func() *discovery.Inventory) StateOption {
	return func(c *stateConfig) { c.inventory = f }
}

// WithStateClock replaces time.Now (it names moved-aside checkpoints).
func WithStateClock(now func() time.Time) StateOption { return func(c *stateConfig) { c.now = now } }

// WithStateBoot sets the boot the plugin runs in instead of reading the
// kernel's boot ID and the boot time from /proc (tests simulate a reboot
// with it). See PreparedClaim.BootID.
func WithStateBoot(id string, bootTime time.Time) StateOption {
	return func(c *stateConfig) { c.boot = &bootInfo{id: id, time: bootTime} }
}

// NewState checks the options; it touches nothing on disk. Call Reconcile
// once before serving the kubelet, and Restore after every new inventory.
func NewState(opts ...StateOption) (*State, error) {
	cfg := stateConfig{cdiDir: DefaultCDIDir, dataDir: DefaultDataDir, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.nodeName == "" {
		return nil, errors.New("claim state: the node name is required")
	}
	if cfg.inventory == nil {
		return nil, errors.New("claim state: an inventory source is required")
	}
	if cfg.cdiDir == "" {
		cfg.cdiDir = DefaultCDIDir
	}
	if cfg.dataDir == "" {
		cfg.dataDir = DefaultDataDir
	}
	if cfg.now == nil {
		cfg.now = time.Now
	}
	if cfg.hostRoot == "" {
		cfg.hostRoot = "/"
	}
	w, err := NewCDIWriter(cfg.cdiDir)
	if err != nil {
		return nil, err
	}
	dataDir := filepath.Clean(cfg.dataDir)
	var boot bootInfo
	var bootErr error
	if cfg.boot != nil {
		boot = *cfg.boot
	} else {
		boot, bootErr = readBoot()
	}
	s := &State{
		nodeName:       cfg.nodeName,
		dataDir:        dataDir,
		inventory:      cfg.inventory,
		now:            cfg.now,
		probe:          func(d *discovery.Device) error { return discovery.CheckNotHeld(cfg.hostRoot, d) },
		metrics:        cfg.metrics,
		cdi:            w,
		checkpointPath: filepath.Join(dataDir, CheckpointFileName),
		lockPath:       filepath.Join(dataDir, lockFileName),
		sem:            make(chan struct{}, 1),
		snap:           map[types.UID]*PreparedClaim{},
		snapSignal:     make(chan struct{}),
		problems:       map[types.UID]claimProblem{},
		boot:           boot,
		bootErr:        bootErr,
		fault:          failpoint,
	}
	w.hook = s.hit
	return s, nil
}

// CDIDir is the directory spec files are written to.
func (s *State) CDIDir() string { return s.cdi.Dir() }

// CheckpointPath is the checkpoint file.
func (s *State) CheckpointPath() string { return s.checkpointPath }

// hit marks a fault point (tests): fault may crash there, inject fail the
// step with an error.
func (s *State) hit(point string) error {
	if s.fault != nil {
		s.fault(point)
	}
	if s.inject != nil {
		return s.inject(point)
	}
	return nil
}

// session is one call holding both locks with the checkpoint loaded.
type session struct {
	s       *State
	logger  klog.Logger
	cp      *Checkpoint
	raw     []byte
	lock    *os.File
	holders map[string][]holder
	// undo says, per claim this call wrote a spec for, how to undo that
	// if the call fails (rollback.go).
	undo map[types.UID]specUndo
}

// holder is a claim's use of a device node.
type holder struct {
	uid       types.UID
	claim     string
	device    string
	exclusive bool
}

// backgroundLockWait bounds the wait for the locks of a call without a
// deadline (Reconcile, Restore, the stale-claim check), as the kubelet's
// 45 s bound its calls: every wait under the state lock ends well before
// health.StuckAfter, which the liveness check counts on. Tests shorten it.
var backgroundLockWait = time.Minute

// begin takes the locks for a call; holder names it for the liveness check.
func (s *State) begin(ctx context.Context, holder string) (*session, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, backgroundLockWait)
		defer cancel()
	}
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("waiting for another call of this plugin to finish: %w", context.Cause(ctx))
	}
	s.lockWatch.Acquired(holder)
	ss, err := s.beginLocked(ctx)
	if err != nil {
		s.lockWatch.Released()
		<-s.sem
		return nil, err
	}
	return ss, nil
}

func (s *State) beginLocked(ctx context.Context) (*session, error) {
	if err := os.MkdirAll(s.dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("create the plugin data directory: %w", atomicfile.WithAdvice(err, s.dataDir))
	}
	f, err := flock(ctx, s.lockPath)
	if err != nil {
		return nil, err
	}
	cp, raw, meta, err := loadCheckpointFile(s.checkpointPath)
	if err == nil && raw != nil && meta.version == checkpointV1 {
		s.fromV1(ctx, cp, meta)
		// Not the encoding of any data: the next save writes the file
		// in the current version.
		raw = []byte(checkpointV1)
	}
	switch {
	case IsCorruptCheckpoint(err):
		cp, raw, err = s.recoverCheckpoint(ctx, err)
	case err == nil && raw == nil:
		cp, raw, err = s.recoverMissingCheckpoint(ctx)
	}
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	s.setSnapshot(cp)
	return &session{s: s, logger: klog.FromContext(ctx), cp: cp, raw: raw, lock: f, undo: map[types.UID]specUndo{}}, nil
}

func (ss *session) end() {
	_ = ss.lock.Close() // releases the flock
	ss.s.lockWatch.Released()
	<-ss.s.sem
}

// save writes the checkpoint if it changed. On an error the file is as it
// was.
func (ss *session) save() error {
	data, err := encodeCheckpointData(ss.cp)
	if err != nil {
		return fmt.Errorf("encode checkpoint: %w", err)
	}
	if ss.raw != nil && string(data) == string(ss.raw) {
		return nil
	}
	if err := ss.s.writeCheckpoint(ss.logger, data); err != nil {
		return err
	}
	ss.raw = data
	ss.s.setSnapshot(ss.cp)
	return nil
}

// writeCheckpoint writes the checkpoint file for data. On an error the file
// is as it was. A directory that could not be synced is only logged: the
// new checkpoint is what every reader sees, and answering as if it were not
// would leave the caller's view and the file apart.
func (s *State) writeCheckpoint(logger klog.Logger, data []byte) error {
	err := writeCheckpointData(s.checkpointPath, data, s.hit)
	s.metrics.CheckpointWrite(err)
	var nd *atomicfile.NotDurableError
	if errors.As(err, &nd) {
		logger.Error(err, "The checkpoint may not survive a power loss of the node")
		return nil
	}
	return err
}

// flock opens path and takes an exclusive flock on it, polling so that ctx
// can end the wait.
func flock(ctx context.Context, path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock file: %w", atomicfile.WithAdvice(err, filepath.Dir(path)))
	}
	delay := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			_ = f.Close()
			return nil, fmt.Errorf("waiting for the lock %s, which another plugin instance holds: %w", path, context.Cause(ctx))
		case <-t.C:
		}
		if delay < 10*time.Millisecond {
			delay *= 2
		}
	}
}

// recoverCheckpoint moves a corrupt checkpoint aside and rebuilds it from
// this driver's spec files.
func (s *State) recoverCheckpoint(ctx context.Context, cause error) (*Checkpoint, []byte, error) {
	logger := klog.FromContext(ctx)
	aside := s.checkpointPath + ".corrupt-" + s.now().UTC().Format("20060102T150405.000000000Z")
	if err := os.Rename(s.checkpointPath, aside); err != nil {
		return nil, nil, fmt.Errorf("%w; moving it aside failed, so no claim can be prepared or unprepared until the file is fixed or removed: %v", cause, err)
	}
	_ = atomicfile.SyncDir(s.dataDir)
	logger.Error(cause, "Checkpoint cannot be trusted: moved it aside and rebuilding it from the CDI spec files. "+
		"A prepared claim whose spec file is gone too cannot be recovered; its Unprepare still succeeds.",
		"movedTo", aside, "cdiDir", s.cdi.Dir())
	cp, data, err := s.rebuildFromSpecs(ctx, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%w; %v", cause, err)
	}
	return cp, data, nil
}

// rebuildFromSpecs builds a checkpoint from this driver's spec files and
// writes it. files may be given when already listed.
func (s *State) rebuildFromSpecs(ctx context.Context, files []specFile) (*Checkpoint, []byte, error) {
	logger := klog.FromContext(ctx)
	if files == nil {
		var err error
		if files, err = s.cdi.listSpecs(); err != nil {
			return nil, nil, fmt.Errorf("rebuilding the checkpoint from the CDI spec files failed: %w", err)
		}
	}
	cp := NewCheckpoint()
	for _, f := range files {
		spec, err := s.cdi.readSpec(f.Name)
		if err != nil {
			logger.Error(err, "Cannot recover a claim from its CDI spec file; it will be removed as garbage", "file", s.cdi.Path(f.Name))
			continue
		}
		if prev := cp.Claims[f.ClaimUID]; prev != nil && prev.SpecName == CDISpecName(f.ClaimUID) {
			// Both .json and .yaml: keep the one this plugin writes.
			continue
		}
		cp.Claims[f.ClaimUID] = preparedClaimFromSpec(f, spec, s.nodeName)
		if fi, err := os.Stat(s.cdi.Path(f.Name)); err == nil {
			cp.Claims[f.ClaimUID].BootID = s.bootOfFile(fi.ModTime())
		}
		logger.Info("Recovered a prepared claim from its CDI spec file", "claimUID", f.ClaimUID, "file", s.cdi.Path(f.Name))
	}
	data, err := encodeCheckpointData(cp)
	if err == nil {
		err = s.writeCheckpoint(logger, data)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("writing the rebuilt checkpoint failed: %w", err)
	}
	logger.Info("Rebuilt the checkpoint from the CDI spec files", "claims", len(cp.Claims), "path", s.checkpointPath)
	s.metrics.CheckpointRecovered()
	return cp, data, nil
}

// recoverMissingCheckpoint handles a checkpoint file that does not exist.
// On a fresh node there are no spec files of this driver either, and the
// checkpoint is simply empty. Spec files without a checkpoint mean it was
// lost (data directory wiped or moved): rather than take them for garbage,
// which would break the restart of containers that use them, the
// checkpoint is rebuilt from them.
func (s *State) recoverMissingCheckpoint(ctx context.Context) (*Checkpoint, []byte, error) {
	files, err := s.cdi.listSpecs()
	if err != nil {
		return nil, nil, err
	}
	if len(files) == 0 {
		return NewCheckpoint(), nil, nil
	}
	klog.FromContext(ctx).Error(nil, "Checkpoint is missing but CDI spec files of prepared claims exist: rebuilding it from them",
		"checkpoint", s.checkpointPath, "cdiDir", s.cdi.Dir(), "specFiles", len(files))
	return s.rebuildFromSpecs(ctx, files)
}

func (s *State) setSnapshot(cp *Checkpoint) {
	m := make(map[types.UID]*PreparedClaim, len(cp.Claims))
	for uid, pc := range cp.Claims {
		m[uid] = pc
	}
	s.snapMu.Lock()
	s.snap = m
	s.metrics.SetClaimsPrepared(len(m)) // under snapMu: in the order of the snapshots
	close(s.snapSignal)
	s.snapSignal = make(chan struct{})
	s.snapMu.Unlock()
}

// index returns the index of inv, reusing the last one for the same
// inventory (inventories are never modified once published).
func (s *State) index(inv *discovery.Inventory) *inventoryIndex {
	if s.idx == nil || s.idxInv != inv {
		s.idxInv, s.idx = inv, newInventoryIndex(inv)
	}
	return s.idx
}

// Prepare prepares claims and returns a result for each claim UID. A claim
// that is already prepared with the same allocation gets its recorded
// result again; its spec file is rewritten only if it is missing or
// differs.
func (s *State) Prepare(ctx context.Context, claims []*resourceapi.ResourceClaim) map[types.UID]kubeletplugin.PrepareResult {
	logger := klog.FromContext(ctx)
	out := make(map[types.UID]kubeletplugin.PrepareResult, len(claims))
	ss, err := s.begin(ctx, "Prepare")
	if err != nil {
		for _, c := range claims {
			if c != nil {
				out[c.UID] = kubeletplugin.PrepareResult{Err: fmt.Errorf("prepare claim %s: %w", claimRef(c), err)}
			}
		}
		return out
	}
	defer ss.end()

	var changed []*resourceapi.ResourceClaim
	for _, claim := range claims {
		if claim == nil {
			continue
		}
		pc, isNew, err := ss.prepare(ctx, claim)
		if err != nil {
			logger.Error(err, "Preparing claim failed", "claim", klog.KObj(claim), "claimUID", claim.UID)
			out[claim.UID] = kubeletplugin.PrepareResult{Err: err}
			continue
		}
		out[claim.UID] = pc.PrepareResult()
		if isNew {
			changed = append(changed, claim)
		}
	}
	err = s.hit("prepare:before-checkpoint")
	if err == nil {
		err = ss.save()
	}
	if err != nil {
		err = fmt.Errorf("record it in the checkpoint: %w", err)
		logger.Error(err, "Recording prepared claims in the checkpoint failed; undoing what this call wrote, the kubelet will retry", "claims", len(changed))
		for _, c := range changed {
			out[c.UID] = kubeletplugin.PrepareResult{Err: ss.undoPrepare(ctx, c, err)}
		}
	}
	return out
}

// prepare prepares one claim within the session. isNew is false when the
// claim was already recorded as it is.
func (ss *session) prepare(ctx context.Context, claim *resourceapi.ResourceClaim) (*PreparedClaim, bool, error) {
	s := ss.s
	logger := klog.FromContext(ctx)
	ref := claimRef(claim)
	if claim.UID == "" {
		return nil, false, fmt.Errorf("claim %s has no UID", ref)
	}
	old := ss.cp.Claims[claim.UID]
	recorded := old != nil
	if old != nil && !old.Recovered && old.Allocation == allocationFingerprint(claim, s.nodeName) {
		return ss.prepareAgain(ctx, claim, old)
	} else if old != nil && old.Recovered && !s.sameBoot(old.BootID) {
		return nil, false, fmt.Errorf("claim %s was recovered from its CDI spec file, which was written before the node restarted, "+
			"so which devices it had cannot be told. %s", ref, adviceNotRestored)
	} else if old != nil {
		logger.Info("Claim is recorded with a different or unknown allocation; preparing it afresh",
			"claim", klog.KObj(claim), "claimUID", claim.UID, "recovered", old.Recovered)
	}

	inv := s.inventory()
	if inv == nil {
		return nil, false, fmt.Errorf("claim %s: the node's devices have not been discovered yet; the kubelet will retry", ref)
	}
	idx := s.index(inv)
	plan, err := planClaim(claim, s.nodeName, idx)
	if err != nil {
		return nil, false, err
	}
	pc := NewPreparedClaim(plan)
	pc.BootID = s.boot.id
	if err := ss.checkExclusive(pc, ref, idx); err != nil {
		return nil, false, err
	}
	// The nodes an earlier record gave the claim are its own only while
	// their numbers are this boot's.
	if old != nil && !s.sameBoot(old.BootID) {
		old = nil
	}
	if err := ss.checkNotHeld(ctx, pc, old, ref, idx); err != nil {
		return nil, false, err
	}
	written, prev, err := s.cdi.writeSpec(pc)
	if err != nil {
		return nil, false, err
	}
	ss.noteSpec(pc, recorded, written, prev)
	if err := s.hit("prepare:after-spec"); err != nil {
		return nil, false, ss.undoPrepare(ctx, claim, err)
	}
	ss.put(pc, idx)
	nodes := 0
	for _, d := range pc.Devices {
		nodes += len(d.Nodes)
	}
	logger.Info("Prepared claim", "claim", klog.KObj(claim), "claimUID", claim.UID,
		"devices", len(pc.Devices), "nodes", nodes, "specWritten", written, "file", s.cdi.Path(pc.SpecName))
	return pc, true, nil
}

// buildHolders indexes which claims hold which device nodes.
func (ss *session) buildHolders(idx *inventoryIndex) {
	if ss.holders != nil {
		return
	}
	ss.holders = map[string][]holder{}
	uids := make([]types.UID, 0, len(ss.cp.Claims))
	for uid := range ss.cp.Claims {
		uids = append(uids, uid)
	}
	sort.Slice(uids, func(i, j int) bool { return uids[i] < uids[j] })
	for _, uid := range uids {
		ss.addHolders(ss.cp.Claims[uid], idx)
	}
}

func (ss *session) addHolders(pc *PreparedClaim, idx *inventoryIndex) {
	ref := pc.Namespace + "/" + pc.Name
	if pc.Recovered {
		ref = "(name unknown, recovered from its CDI spec)"
	}
	for di := range pc.Devices {
		d := &pc.Devices[di]
		if d.AdminAccess {
			continue
		}
		// A recovered record does not say; the inventory does, and the
		// node stays blocked if the device is gone.
		excl := exclusiveNode(pc, d, idx)
		for i := range d.Nodes {
			for _, k := range ss.s.holderKeys(pc, &d.Nodes[i]) {
				ss.holders[k] = append(ss.holders[k], holder{uid: pc.UID, claim: ref, device: d.Device, exclusive: excl})
			}
		}
	}
}

func (ss *session) put(pc *PreparedClaim, idx *inventoryIndex) {
	_, replaced := ss.cp.Claims[pc.UID]
	ss.cp.Claims[pc.UID] = pc
	if ss.holders == nil {
		return
	}
	if replaced {
		ss.holders = nil
		ss.buildHolders(idx)
		return
	}
	ss.addHolders(pc, idx)
}

// checkExclusive refuses a device node of an exclusive group that another
// claim already holds: the scheduler should never allow it, so this is the
// last line of defense. Admin access does not count.
func (ss *session) checkExclusive(pc *PreparedClaim, ref string, idx *inventoryIndex) error {
	ss.buildHolders(idx)
	var errs []error
	for _, d := range pc.Devices {
		if d.AdminAccess {
			continue
		}
		for i := range d.Nodes {
			n := &d.Nodes[i]
			for _, h := range ss.holdersOf(pc, n) {
				if h.uid == pc.UID || (!d.Exclusive && !h.exclusive) {
					continue
				}
				why := fmt.Sprintf("group %q is exclusive", d.Group)
				if !d.Exclusive {
					why = "that claim holds it exclusively"
				}
				errs = append(errs, &heldError{holder: h.uid, msg: fmt.Sprintf("claim %s: device %q: device node %s is already prepared for claim %s (UID %s, device %q) and %s; it is freed when that claim is unprepared",
					ref, d.Device, n.describe(), h.claim, h.uid, h.device, why)})
				break
			}
			// A disk and its partitions share blocks: handing one to a
			// claim and the other to another would let both write the
			// same data. Sharing a device is not sharing those that
			// overlap it, so this holds in shared groups too, as the
			// scheduler's counters say.
		overlaps:
			for _, o := range idx.overlaps[n.nodeKey()] {
				for _, h := range ss.holders[o.key] {
					if h.uid == pc.UID {
						continue
					}
					errs = append(errs, &heldError{holder: h.uid, msg: fmt.Sprintf("claim %s: device %q: device node %s shares blocks with %s, which is prepared for claim %s (UID %s, device %q); it is freed when that claim is unprepared",
						ref, d.Device, n.describe(), o.path, h.claim, h.uid, h.device)})
					break overlaps
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Unprepare undoes Prepare for each claim and returns an error (or nil)
// for each claim UID. A claim that is not prepared succeeds; its spec file
// is removed anyway. A claim that fails stays prepared as it was
// (rollback.go).
func (s *State) Unprepare(ctx context.Context, claims []kubeletplugin.NamespacedObject) map[types.UID]error {
	out := make(map[types.UID]error, len(claims))
	ss, err := s.begin(ctx, "Unprepare")
	if err != nil {
		for _, c := range claims {
			out[c.UID] = fmt.Errorf("unprepare claim %s: %w", c.NamespacedName, err)
		}
		return out
	}
	defer ss.end()
	return ss.unprepare(ctx, claims)
}

// Prepared returns the prepared claims as of the last call (no I/O).
func (s *State) Prepared() map[types.UID]PreparedClaim {
	s.snapMu.RLock()
	defer s.snapMu.RUnlock()
	out := make(map[types.UID]PreparedClaim, len(s.snap))
	for uid, pc := range s.snap {
		out[uid] = pc.deepCopy()
	}
	return out
}

// PreparedDeviceNames lists the DRA device names that prepared claims hold
// as of the last call (no I/O), sorted and without duplicates.
func (s *State) PreparedDeviceNames() []string {
	s.snapMu.RLock()
	defer s.snapMu.RUnlock()
	seen := map[string]bool{}
	var names []string
	for _, pc := range s.snap {
		for _, d := range pc.Devices {
			if d.Device != "" && !seen[d.Device] {
				seen[d.Device] = true
				names = append(names, d.Device)
			}
		}
	}
	sort.Strings(names)
	return names
}

func (pc *PreparedClaim) deepCopy() PreparedClaim {
	out := *pc
	out.Devices = make([]PreparedDevice, len(pc.Devices))
	for i, d := range pc.Devices {
		if d.ShareID != nil {
			id := *d.ShareID
			d.ShareID = &id
		}
		nodes := make([]PlannedNode, len(d.Nodes))
		for j, n := range d.Nodes {
			n.UID = copyPtr(n.UID)
			n.GID = copyPtr(n.GID)
			n.FileMode = copyPtr(n.FileMode)
			nodes[j] = n
		}
		d.Nodes = nodes
		out.Devices[i] = d
	}
	return out
}

func copyPtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
