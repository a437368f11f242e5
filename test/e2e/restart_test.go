//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// Scenarios 13-15: the node changes under prepared claims: the kubelet restarts, a reboot renumbers the loop
// devices, a claim is deleted while the plugin is down and the kubelet forgets it.

const (
	pluginDataDir  = "/var/lib/kubelet/plugins/" + driver
	checkpointPath = pluginDataDir + "/checkpoint.json"
	// the kubelet's record of the claims it prepared (k8s.io/kubernetes pkg/kubelet/cm/dra, draManagerStateFileName)
	kubeletDRAState = "/var/lib/kubelet/dra_manager_state"
	// a DaemonSet nodeSelector key no node has: stopPlugin sets it, startPlugin removes it
	pluginOffLabel = "e2e.power-dev-plugin.io/plugin"
	// blocks of 512 bytes: the patterns of scenario 14 (no other scenario writes there)
	rebootBlock1 = 10240 // 5 MiB
	rebootBlock2 = 12288 // 6 MiB
)

// The loop devices scenario 14 swaps, and the one scenarios 15 and 16 pin their claims to.
var (
	rebootDevA = "/dev/loop240"
	rebootDevB = "/dev/loop241"
	pinnedDev  = "/dev/loop242"
)

func devicesDir() string { return filepath.Join(e2eState, "devices") }

// suiteFile is the backing file devices.sh gives a loop device of the suite.
func suiteFile(dev string) string { return filepath.Join(devicesDir(), filepath.Base(dev)+".img") }

// byPath is a CEL selector for the device published at path.
func byPath(p string) string {
	return fmt.Sprintf(`device.attributes["power-dev-plugin.io"].?path.orValue("") == %q`, p)
}

// --- the plugin and the kubelet, stopped and started -------------------------------------------------

// stopPlugin takes the plugin off the node without uninstalling anything: with a nodeSelector that no node
// matches, the DaemonSet controller deletes its pod; the kubelet stops it, it unregisters, and its claims stay
// prepared (checkpoint and CDI specs on the node).
func stopPlugin() error {
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"nodeSelector":{%q:"off"}}}}}`, pluginOffLabel)
	if _, err := kubectl("-n", pluginNS, "patch", "ds", "power-dev-plugin", "--type=strategic", "-p", patch); err != nil {
		return err
	}
	return poll(90*time.Second, "the plugin pod to be gone", func() (bool, error) {
		p, err := pluginPods()
		return err == nil && len(p) == 0, err
	})
}

// pluginStopped tells whether stopPlugin's nodeSelector is on the DaemonSet.
func pluginStopped() bool {
	out, err := kubectl("-n", pluginNS, "get", "ds", "power-dev-plugin", "-o", "jsonpath={.spec.template.spec.nodeSelector}")
	return err == nil && strings.Contains(out, pluginOffLabel)
}

// startPlugin undoes stopPlugin and waits for a ready plugin pod with the disks in the slices.
func startPlugin() error {
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"nodeSelector":{%q:null}}}}}`, pluginOffLabel)
	if _, err := kubectl("-n", pluginNS, "patch", "ds", "power-dev-plugin", "--type=strategic", "-p", patch); err != nil {
		return err
	}
	if err := waitPluginReady(nil, 120*time.Second); err != nil {
		return err
	}
	_, err := waitPublished(90*time.Second, "the disks in the slices", false, func(pub map[string]string) bool {
		for _, d := range disks {
			if pub[d] != "disks" {
				return false
			}
		}
		return true
	})
	return err
}

// kubeletCtl runs cluster/restart-kubelet.sh with action stop, start or restart.
func kubeletCtl(action string) error {
	script := filepath.Join(suiteDir(), "cluster", "restart-kubelet.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, script, action).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", script, action, err, lastLines(string(out), 8))
	}
	return nil
}

func kubeletPIDFile() string { return filepath.Join(e2eState, "pids", "kubelet.pid") }

func kubeletRunning() bool {
	b, err := os.ReadFile(kubeletPIDFile())
	if err != nil {
		return false
	}
	_, err = os.Stat("/proc/" + strings.TrimSpace(string(b)))
	return err == nil
}

// ensureNodeUp starts the kubelet and the plugin if a scenario left either stopped.
func ensureNodeUp() error {
	var errs []string
	if !kubeletRunning() {
		if err := kubeletCtl("start"); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if pluginStopped() {
		if err := startPlugin(); err != nil {
			errs = append(errs, "start the plugin again: "+err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// --- containers, loop devices and the plugin's files on the node -----------------------------------

func ctr(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"-n", "k8s.io"}, args...)...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, lastLines(string(ee.Stderr), 3))
		}
		return string(out), fmt.Errorf("ctr %s: %v", strings.Join(args, " "), err)
	}
	return string(out), nil
}

// podContainers lists the containerd containers of a pod (its sandbox and its containers), by the CRI's label.
func podContainers(podUID string) ([]string, error) {
	out, err := ctr("containers", "ls", "-q", fmt.Sprintf(`labels."io.kubernetes.pod.uid"==%s`, podUID))
	return strings.Fields(out), err
}

// runningTasks returns which of ids have a running task.
func runningTasks(ids []string) ([]string, error) {
	out, err := ctr("tasks", "ls")
	if err != nil {
		return nil, err
	}
	var run []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 3 && f[2] == "RUNNING" && contains(ids, f[0]) {
			run = append(run, f[0])
		}
	}
	return run, nil
}

// killPodTasks SIGKILLs every process of a pod, sandbox included, as a power cut would, and waits until none
// runs. Run it while the kubelet is stopped, or the kubelet starts the pod again at once.
func killPodTasks(podUID string) error {
	ids, err := podContainers(podUID)
	if err != nil {
		return err
	}
	if len(ids) == 0 {
		return fmt.Errorf("no container of pod %s on the node", podUID)
	}
	for _, id := range ids {
		_, _ = ctr("tasks", "kill", "-s", "SIGKILL", id) // a stopped task is not an error here
	}
	return poll(30*time.Second, "the pod's tasks to stop", func() (bool, error) {
		run, err := runningTasks(ids)
		return err == nil && len(run) == 0, err
	})
}

// waitPodTasksGone waits until no task of the pod runs on the node (after a forced delete the kubelet kills them).
func waitPodTasksGone(podUID string, timeout time.Duration) error {
	return poll(timeout, "the kubelet to stop the pod's containers", func() (bool, error) {
		ids, err := podContainers(podUID)
		if err != nil {
			return false, err
		}
		run, err := runningTasks(ids)
		return err == nil && len(run) == 0, err
	})
}

// loopBacking is the backing file of a loop device ("" when it is not bound).
func loopBacking(dev string) string {
	out, _ := exec.Command("losetup", "-n", "-O", "BACK-FILE", dev).Output()
	return strings.TrimSpace(string(out))
}

// bindLoops binds each loop device of want to the file want names, detaching first whatever file of the suite is
// bound there. Only the suite's devices over the suite's files are touched: a loop device bound to any other
// file is an error and left alone.
func bindLoops(want map[string]string) error {
	devs := make([]string, 0, len(want))
	for d := range want {
		devs = append(devs, d)
	}
	sort.Strings(devs)
	for _, d := range devs {
		if b := loopBacking(d); b != "" && filepath.Dir(b) != devicesDir() {
			return fmt.Errorf("%s is bound to %s, not a file of the suite under %s: not touching it", d, b, devicesDir())
		}
		if filepath.Dir(want[d]) != devicesDir() {
			return fmt.Errorf("%s is not a file of the suite", want[d])
		}
	}
	for _, d := range devs {
		b := loopBacking(d)
		if b == "" || b == want[d] {
			continue
		}
		if out, err := exec.Command("losetup", "-d", d).CombinedOutput(); err != nil {
			return fmt.Errorf("losetup -d %s: %v: %s", d, err, strings.TrimSpace(string(out)))
		}
		// With an opener the kernel only marks the device for detaching when it is closed.
		if err := poll(10*time.Second, d+" to be detached", func() (bool, error) { return loopBacking(d) == "", nil }); err != nil {
			return fmt.Errorf("%v: something holds %s open (%s stays bound)", err, d, b)
		}
	}
	for _, d := range devs {
		if loopBacking(d) == want[d] {
			continue
		}
		if out, err := exec.Command("losetup", d, want[d]).CombinedOutput(); err != nil {
			return fmt.Errorf("losetup %s %s: %v: %s", d, want[d], err, strings.TrimSpace(string(out)))
		}
		if b := loopBacking(d); b != want[d] {
			return fmt.Errorf("%s is bound to %q after losetup, want %s", d, b, want[d])
		}
	}
	return nil
}

// publishedSizes maps each published device path to its size capacity (e.g. "64Mi").
func publishedSizes() (map[string]string, error) {
	sl, err := getJSON("get", "resourceslices", "--field-selector", "spec.driver="+driver)
	if err != nil {
		return nil, err
	}
	sizes := map[string]string{}
	for _, it := range list(path(sl, "items")) {
		for _, d := range list(path(it, "spec", "devices")) {
			if p := str(path(d, "attributes", "path", "string")); p != "" {
				sizes[p] = str(path(d, "capacity", "size", "value"))
			}
		}
	}
	return sizes, nil
}

// waitLoopSizes waits until each device is published with the size of its backing file (after a renumbering,
// before the next scenario relies on sizes and paths).
func waitLoopSizes(devs []string) error {
	var sizes map[string]string
	err := poll(90*time.Second, "the slices to show "+strings.Join(devs, ", ")+" with the sizes of their backing files", func() (bool, error) {
		var err error
		if sizes, err = publishedSizes(); err != nil {
			return false, err
		}
		for _, d := range devs {
			fi, err := os.Stat(loopBacking(d))
			if err != nil {
				return false, err
			}
			if sizes[d] != fmt.Sprintf("%dMi", fi.Size()>>20) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("%v (published sizes: %v)", err, sizes)
	}
	return nil
}

// readAt reads n bytes of a file at block (of 512 bytes), without the NUL padding.
func readAt(file string, block int64, n int) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, block*512); err != nil {
		return "", fmt.Errorf("read %s: %v", file, err)
	}
	return string(bytes.TrimRight(b, "\x00")), nil
}

// zeroAt writes a block of zeros into a file at block, so that a pattern found there later was written by this run.
func zeroAt(file string, block int64) error {
	f, err := os.OpenFile(file, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, 512), block*512); err != nil {
		return err
	}
	return f.Sync()
}

// checkpointHas tells whether the plugin's checkpoint names the claim UID (whatever the file's version).
func checkpointHas(uid string) (bool, error) {
	b, err := os.ReadFile(checkpointPath)
	if os.IsNotExist(err) {
		return false, nil
	}
	return bytes.Contains(b, []byte(uid)), err
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// driverCDISpecs lists this driver's claim CDI specs on the node.
func driverCDISpecs() []string {
	m, _ := filepath.Glob(filepath.Join(cdiDir, driver+"-claim_*"))
	return m
}

// kubeletDRAClaims lists the claim UIDs in the kubelet's DRA state file.
func kubeletDRAClaims() ([]string, error) {
	b, err := os.ReadFile(kubeletDRAState)
	if err != nil {
		return nil, err
	}
	var outer struct{ Data string }
	if err := json.Unmarshal(b, &outer); err != nil {
		return nil, fmt.Errorf("%s: %v", kubeletDRAState, err)
	}
	var inner struct {
		ClaimInfoStateList []struct{ ClaimUID string }
	}
	if err := json.Unmarshal([]byte(outer.Data), &inner); err != nil {
		return nil, fmt.Errorf("%s: %v", kubeletDRAState, err)
	}
	var uids []string
	for _, c := range inner.ClaimInfoStateList {
		uids = append(uids, c.ClaimUID)
	}
	return uids, nil
}

// resetPluginState clears what a failed collection left behind (a checkpoint entry that holds its device for
// ever, and its CDI spec), so that the next scenarios and runs find the device free: with the plugin stopped
// and no claim of the suite prepared, the checkpoint and this driver's claim CDI specs are removed, as on a
// fresh node.
func resetPluginState() error {
	if err := stopPlugin(); err != nil {
		return err
	}
	fmt.Printf("e2e: cleanup: removing the plugin's checkpoint %s and its claim CDI specs %v\n", checkpointPath, driverCDISpecs())
	var errs []string
	if err := os.Remove(checkpointPath); err != nil && !os.IsNotExist(err) {
		errs = append(errs, err.Error())
	}
	for _, f := range driverCDISpecs() {
		if err := os.Remove(f); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if err := startPlugin(); err != nil {
		errs = append(errs, err.Error())
	}
	if len(errs) > 0 {
		return fmt.Errorf("reset the plugin's state: %s", strings.Join(errs, "; "))
	}
	return nil
}

// podUID returns a pod's UID.
func podUID(name string) (string, error) {
	return kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.metadata.uid}")
}

// containerState is a pod's phase, its container's restart count and ID.
func containerState(name string) (string, error) {
	return kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.status.phase} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].containerID}")
}

// sliceDevices lists the published devices as "name path group size", sorted.
func sliceDevices() ([]string, error) {
	sl, err := getJSON("get", "resourceslices", "--field-selector", "spec.driver="+driver)
	if err != nil {
		return nil, err
	}
	var devs []string
	for _, it := range list(path(sl, "items")) {
		for _, d := range list(path(it, "spec", "devices")) {
			devs = append(devs, strings.Join([]string{str(path(d, "name")), str(path(d, "attributes", "path", "string")),
				str(path(d, "attributes", "group", "string")), str(path(d, "capacity", "size", "value"))}, " "))
		}
	}
	sort.Strings(devs)
	return devs, nil
}

// --- the scenarios -----------------------------------------------------------------------------------

// 13. The kubelet restarted in DRA mode while two claim pods run: both keep running (same container, no
// restart), the plugin pod is unchanged and registers again, the new kubelet (which deletes every slice of its
// node when it starts) gets the same devices published again, a new claim pod gets a device, and the old pods'
// claims are unprepared when they are deleted.
func kubeletRestart(t *testing.T) error {
	if err := apply(claimTemplate("disk", "block.power-dev-plugin.io", inDisks, "", nil)); err != nil {
		return err
	}
	holders := []string{"holder-1", "holder-2"}
	for _, n := range holders {
		if err := apply(pod(n, podOpts{templates: []string{"disk"}, script: holdScript})); err != nil {
			return err
		}
		if _, err := waitPhase(n, 120*time.Second, "Running"); err != nil {
			return err
		}
	}
	var uids []string
	states := map[string]string{}
	for _, n := range holders {
		u, err := claimUIDs(n)
		if err != nil {
			return err
		}
		uids = append(uids, u...)
		if states[n], err = containerState(n); err != nil {
			return err
		}
	}
	before, err := sliceDevices()
	if err != nil {
		return err
	}
	plugin, err := pluginState()
	if err != nil {
		return err
	}
	oldPID, _ := os.ReadFile(kubeletPIDFile())
	if err := kubeletCtl("restart"); err != nil {
		return err
	}
	newPID, _ := os.ReadFile(kubeletPIDFile())
	st, serr := os.Stat(kubeletPIDFile())
	if serr != nil || len(oldPID) == 0 || bytes.Equal(oldPID, newPID) {
		return fmt.Errorf("the kubelet was not restarted: pid %q, was %q (%v)", strings.TrimSpace(string(newPID)), strings.TrimSpace(string(oldPID)), serr)
	}
	started := st.ModTime() // up.sh writes the pid file as it starts the kubelet
	var after []string
	if err := poll(90*time.Second, "the same devices in the slices after the kubelet restart", func() (bool, error) {
		var err error
		after, err = sliceDevices()
		return err == nil && strings.Join(after, "\n") == strings.Join(before, "\n"), err
	}); err != nil {
		return fmt.Errorf("%v: published %q, before the restart %q", err, after, before)
	}
	fmt.Printf("e2e: measure: kubelet restart (DRA): the plugin's devices back in the slices %.1fs after the new kubelet started\n",
		time.Since(started).Seconds())
	for _, n := range holders {
		s, err := containerState(n)
		if err != nil {
			return err
		}
		if s != states[n] {
			return fmt.Errorf("%s is %q after the kubelet restart, was %q (phase, restarts, container); %s", n, s, states[n], podReport(n))
		}
	}
	if p, err := pluginState(); err != nil {
		return err
	} else if p != plugin {
		return fmt.Errorf("the plugin pod changed across the kubelet restart: %q, was %q (name uid restarts container)", p, plugin)
	}
	if _, err := runPod("after-kubelet-restart", podOpts{templates: []string{"disk"}, script: listBlock + `[ -n "$devs" ] && echo "OK: $devs"`}); err != nil {
		return fmt.Errorf("a new claim pod after the kubelet restart: %v", err)
	}
	if _, err := kubectl(append([]string{"-n", ns, "delete", "pod", "--wait=true", "--timeout=90s"}, holders...)...); err != nil {
		return err
	}
	return waitCDIGone(uids)
}

// 14. A reboot that renumbers loop devices, simulated. A pod (restartPolicy Always, like a Deployment's) writes
// a pattern through its claim's device, loop240 (by path), which the host finds in loop240.img. Then, as in a
// reboot: the plugin is stopped, the kubelet stopped, the pod's processes and sandbox killed, loop240 and loop241
// detached and attached the other way round (loop240 over loop241.img, loop241 over loop240.img), this driver's
// CDI specs wiped (/var/run is a tmpfs), the kubelet and the plugin started. The kubelet makes a new sandbox and
// prepares the claim again (a restarted kubelet holds no claim as prepared). The new container must get the
// device of the same backing file, now loop241: it reads the pattern back, and a second pattern it writes is
// found in loop240.img and not in loop241.img.
func rebootRenumbered(t *testing.T) (err error) {
	fileA, fileB := suiteFile(rebootDevA), suiteFile(rebootDevB)
	orig := map[string]string{rebootDevA: fileA, rebootDevB: fileB}
	for d, f := range orig {
		if b := loopBacking(d); b != f {
			return fmt.Errorf("%s is bound to %q, want %s (devices.sh up)", d, b, f)
		}
	}
	for _, f := range []string{fileA, fileB} {
		for _, b := range []int64{rebootBlock1, rebootBlock2} {
			if err := zeroAt(f, b); err != nil {
				return err
			}
		}
	}
	buf := make([]byte, 6)
	_, _ = rand.Read(buf)
	p1, p2 := "e2e-before-"+hex.EncodeToString(buf), "e2e-after-"+hex.EncodeToString(buf)
	script := listBlock + fmt.Sprintf(`n=$(echo $devs | wc -w); [ "$n" = 1 ] || { echo "FAIL: want 1 block device, got $n"; exec sleep 3600; }
ls -l $devs
if [ -e /state/first ]; then
  echo "read=$(dd if=$devs bs=512 skip=%d count=1 2>/dev/null | tr -d '\0') device=$devs"
  printf '%%s' %q | dd of=$devs bs=512 seek=%d count=1 conv=sync,notrunc,fsync 2>/dev/null && echo "wrote2 device=$devs"
else
  printf '%%s' %q | dd of=$devs bs=512 seek=%d count=1 conv=sync,notrunc,fsync 2>/dev/null || { echo "FAIL: cannot write $devs"; exec sleep 3600; }
  echo "$devs" >/state/first; echo "wrote1 device=$devs"
fi
exec sleep 3600`, rebootBlock1, p2, rebootBlock2, p1, rebootBlock1)
	p := pod("rebooted", podOpts{templates: []string{"pin-a"}, script: script})
	spec := p["spec"].(obj)
	spec["restartPolicy"] = "Always"
	spec["volumes"] = []any{obj{"name": "state", "emptyDir": obj{}}}
	spec["containers"].([]any)[0].(obj)["volumeMounts"] = []any{obj{"name": "state", "mountPath": "/state"}}
	if err := apply(claimTemplate("pin-a", "block.power-dev-plugin.io", byPath(rebootDevA), "", nil), p); err != nil {
		return err
	}
	if _, err := waitPhase("rebooted", 120*time.Second, "Running"); err != nil {
		return err
	}
	if err := poll(30*time.Second, "the pod to write its pattern", func() (bool, error) {
		l, err := logs("rebooted")
		if strings.Contains(l, "FAIL") {
			return false, stopError{fmt.Errorf("rebooted: %s", lastLines(l, 3))}
		}
		return strings.Contains(l, "wrote1 device="+rebootDevA), err
	}); err != nil {
		return fmt.Errorf("%v; %s", err, podReport("rebooted"))
	}
	if got, err := readAt(fileA, rebootBlock1, len(p1)); err != nil {
		return err
	} else if got != p1 {
		return fmt.Errorf("%s at 5 MiB holds %q after the pod wrote %q through %s", fileA, got, p1, rebootDevA)
	}
	uid, err := podUID("rebooted")
	if err != nil {
		return err
	}
	claims, err := claimUIDs("rebooted")
	if err != nil {
		return err
	}

	defer func() {
		// whatever happened: kubelet and plugin up, the pod and its claim gone, the loop devices as devices.sh made them
		var errs []string
		if e := ensureNodeUp(); e != nil {
			errs = append(errs, e.Error())
		}
		if _, e := kubectl("-n", ns, "delete", "pod", "rebooted", "--ignore-not-found", "--wait=true", "--timeout=90s", "--grace-period=1"); e != nil {
			errs = append(errs, e.Error())
		} else if e := waitCDIGone(claims); e != nil {
			errs = append(errs, e.Error())
		}
		if e := bindLoops(orig); e != nil {
			errs = append(errs, "put the loop devices back: "+e.Error())
		} else if e := waitLoopSizes([]string{rebootDevA, rebootDevB}); e != nil {
			errs = append(errs, e.Error())
		}
		if len(errs) > 0 {
			if err == nil {
				err = fmt.Errorf("cleanup: %s", strings.Join(errs, "; "))
			} else {
				fmt.Printf("e2e: cleanup after 14: %s\n", strings.Join(errs, "; "))
			}
		}
	}()

	// The reboot.
	if err := stopPlugin(); err != nil {
		return err
	}
	if err := kubeletCtl("stop"); err != nil {
		return err
	}
	if err := killPodTasks(uid); err != nil {
		return err
	}
	if err := bindLoops(map[string]string{rebootDevA: fileB, rebootDevB: fileA}); err != nil {
		return fmt.Errorf("renumber: %v", err)
	}
	specs := driverCDISpecs()
	for _, f := range specs {
		if err := os.Remove(f); err != nil {
			return err
		}
	}
	t.Logf("renumbered: %s is now over %s, %s over %s; removed the CDI specs %v", rebootDevA, loopBacking(rebootDevA), rebootDevB, loopBacking(rebootDevB), specs)
	if err := kubeletCtl("start"); err != nil {
		return err
	}
	if err := startPlugin(); err != nil {
		return err
	}

	// The pod's new container.
	var l string
	readRE := regexp.MustCompile(`(?m)^read=(.*) device=(\S+)$`)
	if err := poll(120*time.Second, "the pod's new container to read its device", func() (bool, error) {
		var err error
		l, err = logs("rebooted")
		return readRE.MatchString(l), err
	}); err != nil {
		return fmt.Errorf("%v; %s", err, podReport("rebooted"))
	}
	m := readRE.FindStringSubmatch(l)
	got, dev := m[1], m[2]
	_ = poll(15*time.Second, "the second pattern", func() (bool, error) {
		l, err := logs("rebooted")
		return strings.Contains(l, "wrote2 "), err
	})
	inA, errA := readAt(fileA, rebootBlock2, len(p2))
	inB, errB := readAt(fileB, rebootBlock2, len(p2))
	if errA != nil || errB != nil {
		return fmt.Errorf("%v %v", errA, errB)
	}
	t.Logf("after the reboot the container has %s; it read %q; at 6 MiB %s holds %q, %s holds %q", dev, got, fileA, inA, fileB, inB)
	var problems []string
	if got != p1 {
		problems = append(problems, fmt.Sprintf("the restarted container read %q at 5 MiB of its device (%s), want %q, which it wrote there before the reboot through %s = %s",
			got, dev, p1, rebootDevA, filepath.Base(fileA)))
	}
	if inB == p2 {
		problems = append(problems, fmt.Sprintf("its write after the reboot landed in %s, the other device's file", filepath.Base(fileB)))
	}
	if inA != p2 {
		problems = append(problems, fmt.Sprintf("%s does not hold its write after the reboot (has %q)", filepath.Base(fileA), inA))
	}
	if len(problems) > 0 {
		return fmt.Errorf("the claim's device was %s (%s) before the reboot; now %s is over %s and %s over %s: %s",
			rebootDevA, filepath.Base(fileA), rebootDevA, filepath.Base(fileB), rebootDevB, filepath.Base(fileA), strings.Join(problems, "; "))
	}
	return nil
}

// 15. A claim deleted while the plugin is down, which the kubelet has forgotten: the pod deleted with --force
// --grace-period=0, the claim without its finalizers, and the kubelet's DRA state file removed while it is
// stopped (as after a node repair; with its state the kubelet itself calls Unprepare once the plugin is back,
// and nothing would be left to collect). After the plugin starts, its garbage collection must remove the
// claim's checkpoint entry and CDI spec, and a new claim for the same device (loop242, by path) must run.
func staleClaimGC(t *testing.T) (err error) {
	hold := listBlock + `[ -n "$devs" ] || exit 1; echo "device=$devs"; exec sleep 3600`
	if err := apply(claimTemplate("pin-c", "block.power-dev-plugin.io", byPath(pinnedDev), "", nil),
		pod("stale", podOpts{templates: []string{"pin-c"}, script: hold})); err != nil {
		return err
	}
	if _, err := waitPhase("stale", 120*time.Second, "Running"); err != nil {
		return err
	}
	uid, err := podUID("stale")
	if err != nil {
		return err
	}
	claimName, err := kubectl("-n", ns, "get", "pod", "stale", "-o", "jsonpath={.status.resourceClaimStatuses[0].resourceClaimName}")
	if err != nil {
		return err
	}
	claimUID, err := kubectl("-n", ns, "get", "resourceclaim", claimName, "-o", "jsonpath={.metadata.uid}")
	if err != nil {
		return err
	}
	if ok, err := checkpointHas(claimUID); err != nil || !ok {
		return fmt.Errorf("the prepared claim %s is not in %s (%v)", claimUID, checkpointPath, err)
	}
	if !fileExists(cdiSpecPath(claimUID)) {
		return fmt.Errorf("the prepared claim %s has no CDI spec", claimUID)
	}

	defer func() {
		var errs []string
		if e := ensureNodeUp(); e != nil {
			errs = append(errs, e.Error())
		}
		if _, e := kubectl("-n", ns, "delete", "pod", "--all", "--wait=true", "--timeout=90s", "--grace-period=1"); e != nil {
			errs = append(errs, e.Error())
		}
		// a collection that did not happen leaves the device held for ever: the next scenarios need it
		if has, _ := checkpointHas(claimUID); has || fileExists(cdiSpecPath(claimUID)) {
			if e := resetPluginState(); e != nil {
				errs = append(errs, e.Error())
			}
		}
		if len(errs) > 0 {
			if err == nil {
				err = fmt.Errorf("cleanup: %s", strings.Join(errs, "; "))
			} else {
				fmt.Printf("e2e: cleanup after 15: %s\n", strings.Join(errs, "; "))
			}
		}
	}()

	if err := stopPlugin(); err != nil {
		return err
	}
	if _, err := kubectl("-n", ns, "delete", "pod", "stale", "--force", "--grace-period=0"); err != nil {
		return err
	}
	if _, err := kubectl("-n", ns, "patch", "resourceclaim", claimName, "--type=merge", "-p", `{"metadata":{"finalizers":null}}`); err != nil && !strings.Contains(err.Error(), "NotFound") {
		return err
	}
	if _, err := kubectl("-n", ns, "delete", "resourceclaim", claimName, "--ignore-not-found", "--wait=true", "--timeout=60s"); err != nil {
		return err
	}
	if err := waitPodTasksGone(uid, 60*time.Second); err != nil {
		return err
	}
	// The kubelet forgets the claim: its state file goes while it is stopped. Nothing else of the node may be
	// forgotten with it.
	if err := kubeletCtl("stop"); err != nil {
		return err
	}
	known, err := kubeletDRAClaims()
	if err != nil {
		return err
	}
	for _, u := range known {
		if u != claimUID {
			return fmt.Errorf("the kubelet's %s holds claim %s besides %s: not removing it", kubeletDRAState, u, claimUID)
		}
	}
	if err := os.Remove(kubeletDRAState); err != nil {
		return err
	}
	if err := kubeletCtl("start"); err != nil {
		return err
	}
	if err := startPlugin(); err != nil {
		return err
	}
	started := time.Now()

	// The stale-claim check runs 1 minute after start and removes an entry seen stale at two looks at least a
	// minute apart (pkg/driver/gc.go): about 2 to 2.5 minutes.
	collectErr := poll(200*time.Second, "the plugin to collect the deleted claim's checkpoint entry and CDI spec", func() (bool, error) {
		has, err := checkpointHas(claimUID)
		return err == nil && !has && !fileExists(cdiSpecPath(claimUID)), err
	})
	if collectErr == nil {
		fmt.Printf("e2e: measure: stale claim collected %.1fs after the plugin was ready\n", time.Since(started).Seconds())
	}
	// The device is free for a new claim.
	script := listBlock + `[ "$devs" = "` + pinnedDev + `" ] || { echo "FAIL: got '$devs', want ` + pinnedDev + `"; exit 1; }; echo OK`
	if err := apply(pod("after-gc", podOpts{templates: []string{"pin-c"}, script: script})); err != nil {
		return err
	}
	if collectErr == nil {
		if _, err := waitPhase("after-gc", 90*time.Second, "Succeeded"); err != nil {
			return fmt.Errorf("the deleted claim was collected, but a new claim for %s: %v", pinnedDev, err)
		}
		return nil
	}
	// Not collected: what a user then sees (the kubelet retries about once a minute).
	has, _ := checkpointHas(claimUID)
	msg := fmt.Sprintf("%v: the checkpoint still has claim %s: %v, its CDI spec is still there: %v", collectErr, claimUID, has, fileExists(cdiSpecPath(claimUID)))
	var bad string
	_ = poll(30*time.Second, "after-gc to run or fail to prepare", func() (bool, error) {
		bad, _ = failedPrepareEvents([]string{"after-gc"})
		p, _ := phase("after-gc")
		return bad != "" || p == "Succeeded", nil
	})
	if p, _ := phase("after-gc"); p == "Succeeded" {
		return fmt.Errorf("%s (a new claim for %s ran all the same)", msg, pinnedDev)
	}
	return fmt.Errorf("%s; a new claim for %s does not run: %s", msg, pinnedDev, bad)
}
