//go:build faults

package faults

import (
	"bufio"
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/driver"
)

const (
	driverName = driver.DriverName
	// The plugin under test publishes for a Node object of its own that no kubelet runs: the cluster's node
	// "localhost" and its kubelet (which deletes its node's slices when it starts) never see the plugin's
	// slices, a DaemonSet left installed would not share a pool with it, and deleting the Node removes
	// every slice the suite made (they are owned by it).
	nodeName = "pdp-faults"
	nsName   = "pdp-faults"
	// The plugin's /healthz and /readyz, in both modes.
	healthAddr = "127.0.0.1:51525"
	// The kubelet gives NodePrepareResources and NodeUnprepareResources this long
	// (defaultClientCallTimeout in k8s.io/kubernetes pkg/kubelet/cm/dra/plugin).
	kubeletTimeout = 45 * time.Second
	// Fixed loop numbers (the e2e suite uses 240-249): 230-233 exclusive, 234-237 shared.
	firstLoop = 230
	numLoops  = 8
	// The file the full-disk faults fill a tmpfs with; not counted as a leak.
	fillerName = ".faults-filler"
	tmpfsSize  = "8m"
)

// loopDev is one of the suite's loop devices.
type loopDev struct {
	n         int
	path      string // /dev/loopN
	file      string // its backing file
	name      string // the DRA device name the plugin publishes
	group     string
	exclusive bool
	major     uint32
	minor     uint32
}

type claimState int

const (
	stNone     claimState = iota // not prepared: no file may name it
	stPrepared                   // the kubelet was told it is prepared: it must stay so
	stUnknown                    // a call about it was cut short: either is fine until it is retried
)

// claim is a ResourceClaim the suite made and allocated, and what the kubelet knows of it.
type claim struct {
	name   string
	uid    types.UID
	dev    *loopDev
	share  *types.UID
	state  claimState
	answer string // the first successful answer to Prepare (without the metadata CDI device), to compare with
	// metadata: the last answer named the CDI device of the claim's metadata file, so its containers need the
	// file and its CDI spec while the claim is prepared.
	metadata bool
}

type suite struct {
	t    *testing.T
	seed int64
	rng  *rand.Rand
	kube kubernetes.Interface

	dir, out                     string
	host, udev                   string // the host root the plugin sees, and its udev database
	cdi, reg, plugins, data, etc string
	config                       string
	bin, fpBin                   string
	repo                         string
	devs                         []*loopDev
	holder                       types.UID

	mu     sync.Mutex
	cur    *fault
	faults []*fault
	claims map[types.UID]*claim
	seq    int
	// answers counts the successful Prepare answers, metaAnswers those that named a metadata file.
	answers, metaAnswers int
	toldMetadata         bool
	// foreign are other writers' files the suite put into the CDI directory: not leaks, never to be touched.
	foreign map[string]bool

	plugin *proc
	last   *proc // the last one started, of any mode
	starts int
	log    *os.File
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func (s *suite) outPath(name string) string { return filepath.Join(s.out, name) }

const configYAML = `apiVersion: power-dev-plugin.io/v1alpha1
kind: DiscoveryConfig
groups:
- name: excl
  include: ["/dev/loop23[0-3]"]
  types: [block]
- name: shared
  include: ["/dev/loop23[4-7]"]
  types: [block]
  sharing: {mode: shared}
`

// newSuite sets the node up: directories (the CDI and data directories are size-limited tmpfs mounts, as
// /var/run is), a host root like the DaemonSet's (/dev and /sys bind-mounted read-only, /proc/1/mountinfo and
// /proc/swaps, and a udev database the suite writes, because these machines run no udev), the loop devices,
// the configuration, the Node and the namespace. t.Cleanup undoes all of it.
func newSuite(t *testing.T, seed int64, rng *rand.Rand) *suite {
	s := &suite{t: t, seed: seed, rng: rng, claims: map[types.UID]*claim{}, foreign: map[string]bool{}, holder: uuid.NewUUID()}
	s.dir = envOr("FAULTS_DIR", "/var/lib/power-dev-plugin-faults")
	s.repo = envOr("FAULTS_REPO", "../..")
	s.out = envOr("FAULTS_OUT", filepath.Join(s.repo, "_output", "faults"))
	s.bin = os.Getenv("FAULTS_BIN")
	s.fpBin = os.Getenv("FAULTS_FAILPOINT_BIN")
	s.host = filepath.Join(s.dir, "host")
	s.udev = filepath.Join(s.host, "run", "udev", "data")
	s.cdi = filepath.Join(s.dir, "cdi")
	s.reg = filepath.Join(s.dir, "plugins_registry")
	s.plugins = filepath.Join(s.dir, "plugins")
	s.data = filepath.Join(s.plugins, driverName)
	s.etc = filepath.Join(s.dir, "etc")
	s.config = filepath.Join(s.etc, "config.yaml")

	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	if s.kube, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.out, 0o755); err != nil {
		t.Fatal(err)
	}
	if s.log, err = os.OpenFile(s.outPath("plugin.log"), os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.log.Close() })

	unmountUnder(s.dir) // a run that was killed
	s.detachLoops()
	t.Cleanup(func() {
		if s.plugin != nil {
			s.plugin.stop()
		}
		s.deleteKubeObjects()
		s.detachLoops()
		unmountUnder(s.dir)
		_ = os.RemoveAll(s.dir)
	})
	s.deleteKubeObjects()
	for _, d := range []string{s.host, s.udev, s.cdi, s.reg, s.data, s.etc, filepath.Join(s.host, "dev"),
		filepath.Join(s.host, "sys"), filepath.Join(s.host, "proc", "1"), filepath.Join(s.dir, "devices")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"proc/1/mountinfo", "proc/swaps", "run/udev/control"} {
		if err := os.WriteFile(filepath.Join(s.host, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mounts := []struct {
		src, dst, fstype, data string
		flags                  uintptr
		ro                     bool
	}{
		{"/dev", "dev", "", "", unix.MS_BIND, true},
		{"/sys", "sys", "", "", unix.MS_BIND, true},
		{"/proc/1/mountinfo", "proc/1/mountinfo", "", "", unix.MS_BIND, false},
		{"/proc/swaps", "proc/swaps", "", "", unix.MS_BIND, false},
	}
	for _, m := range mounts {
		dst := filepath.Join(s.host, m.dst)
		if err := unix.Mount(m.src, dst, m.fstype, m.flags, m.data); err != nil {
			t.Fatalf("mount %s on %s: %v", m.src, dst, err)
		}
		if m.ro {
			if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
				t.Fatalf("remount %s read-only: %v", dst, err)
			}
		}
	}
	for _, d := range []struct{ dir, mode string }{{s.cdi, "0755"}, {s.data, "0750"}} {
		if err := unix.Mount("tmpfs", d.dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size="+tmpfsSize+",mode="+d.mode); err != nil {
			t.Fatalf("mount a tmpfs on %s: %v", d.dir, err)
		}
	}
	if err := os.WriteFile(s.config, []byte(configYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < numLoops; i++ {
		n := firstLoop + i
		d := &loopDev{n: n, path: fmt.Sprintf("/dev/loop%d", n), file: filepath.Join(s.dir, "devices", fmt.Sprintf("loop%d.img", n)),
			group: "excl", exclusive: i < 4}
		if !d.exclusive {
			d.group = "shared"
		}
		f, err := os.Create(d.file)
		if err == nil {
			err = f.Truncate(int64(8+i) << 20)
			f.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := s.attach(d); err != nil {
			t.Fatal(err)
		}
		s.devs = append(s.devs, d)
	}
	s.createKubeObjects()
	s.plugin = s.start(startOpts{why: "suite start"})
	if err := s.waitReady(s.plugin, 30*time.Second); err != nil {
		t.Fatalf("the plugin did not become ready: %v", err)
	}
	s.learnDeviceNames()
	return s
}

// attach binds d to its file and writes its udev database entry, as udev would once it processed the device.
func (s *suite) attach(d *loopDev) error {
	if out, err := exec.Command("losetup", d.path, d.file).CombinedOutput(); err != nil {
		return fmt.Errorf("losetup %s %s: %v: %s", d.path, d.file, err, out)
	}
	var st unix.Stat_t
	if err := unix.Stat(d.path, &st); err != nil {
		return err
	}
	d.major, d.minor = unix.Major(uint64(st.Rdev)), unix.Minor(uint64(st.Rdev))
	return os.WriteFile(s.udevEntry(d), []byte("E:DEVTYPE=disk\nE:ID_PATH=virtual-loop\n"), 0o644)
}

// detach removes d's udev entry and detaches it, as unplugging it would.
func (s *suite) detach(d *loopDev) error {
	_ = os.Remove(s.udevEntry(d))
	if out, err := exec.Command("losetup", "-d", d.path).CombinedOutput(); err != nil {
		return fmt.Errorf("losetup -d %s: %v: %s", d.path, err, out)
	}
	return nil
}

func (s *suite) udevEntry(d *loopDev) string {
	return filepath.Join(s.udev, fmt.Sprintf("b%d:%d", d.major, d.minor))
}

// detachLoops detaches the suite's loop numbers when they are bound to the suite's files, and removes the
// devices (LOOP_CTL_REMOVE), so that the machine is left as it was.
func (s *suite) detachLoops() {
	ctl, err := unix.Open("/dev/loop-control", unix.O_RDWR|unix.O_CLOEXEC, 0)
	for i := 0; i < numLoops; i++ {
		n := firstLoop + i
		back, _ := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/loop/backing_file", n))
		if b := strings.TrimSpace(string(back)); b != "" {
			if !strings.HasPrefix(b, filepath.Join(s.dir, "devices")+"/") {
				s.t.Fatalf("/dev/loop%d is bound to %s, which is not the suite's: free it first", n, b)
			}
			if out, err := exec.Command("losetup", "-d", fmt.Sprintf("/dev/loop%d", n)).CombinedOutput(); err != nil {
				s.t.Logf("losetup -d /dev/loop%d: %v: %s", n, err, out)
			}
		}
		if err == nil {
			_ = unix.IoctlSetInt(ctl, 0x4C81, n) // LOOP_CTL_REMOVE; EBUSY while bound
		}
	}
	if err == nil {
		unix.Close(ctl)
	}
}

// unmountUnder unmounts every mount point under dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			points = append(points, fields[4])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		if err := unix.Unmount(p, 0); err != nil {
			_ = unix.Unmount(p, unix.MNT_DETACH)
		}
	}
}

func (s *suite) createKubeObjects() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{"e2e.power-dev-plugin.io/faults": "yes"}}}
	if _, err := s.kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		s.t.Fatalf("create node %s: %v", nodeName, err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nsName}}
	if _, err := s.kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		s.t.Fatalf("create namespace %s: %v", nsName, err)
	}
}

// deleteKubeObjects deletes the namespace (with its claims) and the Node and its slices, and waits for them.
func (s *suite) deleteKubeObjects() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_ = s.kube.CoreV1().Namespaces().Delete(ctx, nsName, metav1.DeleteOptions{})
	_ = s.kube.CoreV1().Nodes().Delete(ctx, nodeName, metav1.DeleteOptions{})
	_ = s.kube.ResourceV1().ResourceSlices().DeleteCollection(ctx, metav1.DeleteOptions{},
		metav1.ListOptions{FieldSelector: "spec.nodeName=" + nodeName})
	for ctx.Err() == nil {
		_, errNS := s.kube.CoreV1().Namespaces().Get(ctx, nsName, metav1.GetOptions{})
		_, errNode := s.kube.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(errNS) && apierrors.IsNotFound(errNode) {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.t.Logf("namespace %s or node %s still there after 2 minutes", nsName, nodeName)
}

// learnDeviceNames reads the DRA device names the plugin published for the loop devices (by their path
// attribute), as the scheduler would find them.
func (s *suite) learnDeviceNames() {
	byPath, err := s.published(30 * time.Second)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, d := range s.devs {
		if d.name = byPath[d.path]; d.name == "" {
			s.t.Fatalf("%s is not in the plugin's ResourceSlices (%v); see %s", d.path, byPath, s.outPath("plugin.log"))
		}
	}
}

// published waits until the node's slices list all the suite's attached devices and returns path -> name.
func (s *suite) published(timeout time.Duration) (map[string]string, error) {
	var byPath map[string]string
	err := poll(timeout, func() (bool, error) {
		var err error
		byPath, err = s.slices()
		if err != nil {
			return false, nil
		}
		for _, d := range s.devs {
			if byPath[d.path] == "" && attached(d) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return byPath, fmt.Errorf("the slices of node %s do not list all %d loop devices: %v", nodeName, numLoops, byPath)
	}
	return byPath, nil
}

// slices lists the devices of the node's ResourceSlices, path -> name.
func (s *suite) slices() (map[string]string, error) {
	out, _, err := s.slicesTainted()
	return out, err
}

// slicesTainted lists the devices of the node's ResourceSlices, path -> name, and path -> their taints
// ("key=value:effect").
func (s *suite) slicesTainted() (map[string]string, map[string][]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	list, err := s.kube.ResourceV1().ResourceSlices().List(ctx, metav1.ListOptions{
		FieldSelector: "spec.nodeName=" + nodeName + ",spec.driver=" + driverName})
	if err != nil {
		return nil, nil, err
	}
	out, taints := map[string]string{}, map[string][]string{}
	for _, sl := range list.Items {
		for _, d := range sl.Spec.Devices {
			if p := d.Attributes["path"].StringValue; p != nil {
				out[*p] = d.Name
				for _, t := range d.Taints {
					taints[*p] = append(taints[*p], fmt.Sprintf("%s=%s:%s", t.Key, t.Value, t.Effect))
				}
			}
		}
	}
	return out, taints, nil
}

func attached(d *loopDev) bool {
	b, _ := os.ReadFile(fmt.Sprintf("/sys/block/loop%d/loop/backing_file", d.n))
	return strings.TrimSpace(string(b)) != ""
}

// poll calls fn every 100 ms until it says done, returns an error, or timeout passes.
func poll(timeout time.Duration, fn func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		done, err := fn()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
