//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Scenario 18: the legacy mode (a kubelet device plugin) under the real kubelet, installed with the shipped
// deploy/kustomize/overlays/legacy through test/e2e/overlay-legacy, configured by the old plugin's config.json.

const (
	legacyResource   = "power-dev-plugin/dev"
	legacyResPrefix  = "power-dev-plugin/"
	legacyCDISpec    = cdiDir + "/" + driver + "-device.json"
	legacyConfigJSON = "/etc/power-device-plugin/config.json"
	devicePluginDir  = "/var/lib/kubelet/device-plugins"
	// pkg/deviceplugin: shared IDs per device without maxConsumers, and the cap per resource
	defaultSharedIDs  = 256
	maxIDsPerResource = 16384
)

// What test/e2e/overlay-legacy/power-device-config.yaml must give on the devices of devices.sh.
var legacyDevs = []string{"/dev/loop240", "/dev/loop241"}

// suiteDir is test/e2e (run.sh exports it; the source directory otherwise).
func suiteDir() string {
	if d := os.Getenv("E2E_SUITE_DIR"); d != "" {
		return d
	}
	_, f, _, _ := runtime.Caller(0)
	return filepath.Dir(f)
}

// discoverReport is the part of `power-dev-plugin discover -o json` the scenario reads.
type discoverReport struct {
	Devices []struct {
		Group string `json:"group"`
		Path  string `json:"path"`
	} `json:"devices"`
	Excluded []struct {
		Path   string `json:"path"`
		Reason string `json:"reason"`
	} `json:"excluded"`
	Groups []struct {
		Name         string `json:"name"`
		Nodes        int    `json:"nodes"`
		Bundle       string `json:"bundle"`
		Sharing      string `json:"sharing"`
		MaxConsumers *int   `json:"maxConsumers"`
	} `json:"groups"`
}

// expectedIDs is the number of device IDs the device plugin advertises for each group of the report (see
// pkg/deviceplugin's package documentation): exclusive: one per node, or one for a non-empty bundle; shared:
// maxConsumers per device (or bundle), without it the bundle's node count for a bundle and 256 per device
// otherwise, at most 16384 per resource.
func (r *discoverReport) expectedIDs() map[string]int {
	ids := map[string]int{}
	for _, g := range r.Groups {
		n := g.Nodes
		switch {
		case g.Sharing != "shared" && g.Bundle != "":
			n = min(g.Nodes, 1)
		case g.Sharing == "shared" && g.Bundle != "":
			if g.Nodes > 0 && g.MaxConsumers != nil {
				n = *g.MaxConsumers
			}
		case g.Sharing == "shared":
			per := defaultSharedIDs
			if g.MaxConsumers != nil {
				per = *g.MaxConsumers
			}
			n = g.Nodes * per
		}
		ids[g.Name] = min(n, maxIDsPerResource)
	}
	return ids
}

func (r *discoverReport) paths(group string) []string {
	var p []string
	for _, d := range r.Devices {
		if d.Group == group {
			p = append(p, d.Path)
		}
	}
	sort.Strings(p)
	return p
}

// nodeResources returns the node's capacity and allocatable of the plugin's resources (power-dev-plugin/*),
// and the Ready condition's last heartbeat.
func nodeResources() (capacity, allocatable map[string]int, heartbeat time.Time, err error) {
	n, err := getJSON("get", "node", "localhost")
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	read := func(field string) map[string]int {
		m := map[string]int{}
		res, _ := path(n, "status", field).(map[string]any)
		for k, v := range res {
			if strings.HasPrefix(k, legacyResPrefix) {
				m[strings.TrimPrefix(k, legacyResPrefix)], _ = strconv.Atoi(str(v))
			}
		}
		return m
	}
	for _, c := range list(path(n, "status", "conditions")) {
		if str(path(c, "type")) == "Ready" {
			heartbeat, _ = time.Parse(time.RFC3339, str(path(c, "lastHeartbeatTime")))
		}
	}
	return read("capacity"), read("allocatable"), heartbeat, nil
}

// resourcesMatch: every group's resource has exactly the expected IDs in capacity and allocatable, and any
// other power-dev-plugin/* resource (of an earlier install) is at 0.
func resourcesMatch(want, capacity, allocatable map[string]int) error {
	for g, w := range want {
		if capacity[g] != w || allocatable[g] != w {
			return fmt.Errorf("%s%s: capacity %d, allocatable %d, want %d (discover)", legacyResPrefix, g, capacity[g], allocatable[g], w)
		}
	}
	for g, v := range allocatable {
		if _, ok := want[g]; !ok && v != 0 {
			return fmt.Errorf("%s%s: allocatable %d, but discover has no such group", legacyResPrefix, g, v)
		}
	}
	return nil
}

// legacyPodScript checks the container's block devices are exactly want, reads the first sector of each and
// writes a pattern (with the device's name) at 3 MiB, which the host reads back.
func legacyPodScript(want []string, pattern string) string {
	return listBlock + `set -e
[ "$devs" = "` + strings.Join(want, " ") + `" ] || { echo "FAIL: block devices '$devs', want '` + strings.Join(want, " ") + `'"; exit 1; }
for d in $devs; do
  dd if=$d of=/dev/null bs=512 count=1 2>/dev/null || { echo "FAIL: $(id -u) cannot read $d ($(stat -c '%u:%g %a' $d))"; exit 1; }
  printf '%s' "` + pattern + `-${d##*/}" | dd of=$d bs=512 seek=6144 count=1 conv=sync,notrunc,fsync 2>/dev/null || { echo "FAIL: $(id -u) cannot write $d"; exit 1; }
  echo "OK: $(id -u):$(id -g) read and wrote $d ($(stat -c '%u:%g %a' $d))"
done`
}

// runLegacyPod runs an unchanged legacy pod (non-root, every capability dropped, only the extended resource)
// and checks it got want through the device plugin: no claim, the pattern on the host's backing files.
func runLegacyPod(t *testing.T, name string, want []string) error {
	buf := make([]byte, 6)
	_, _ = rand.Read(buf)
	pattern := "e2e-legacy-" + hex.EncodeToString(buf)
	out, err := runPod(name, podOpts{uid: i64(1000), gid: i64(1000), limits: obj{legacyResource: "1"}, script: legacyPodScript(want, pattern)})
	if err != nil {
		return err
	}
	t.Log(strings.TrimSpace(out))
	if c, _ := kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.status.extendedResourceClaimStatus.resourceClaimName}{.status.resourceClaimStatuses}"); c != "" {
		return fmt.Errorf("pod %s holds a resource claim (%s): DRA served it, not the device plugin", name, c)
	}
	for _, d := range want {
		file := filepath.Join(e2eState, "devices", filepath.Base(d)+".img")
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		exp := pattern + "-" + filepath.Base(d)
		got := make([]byte, len(exp))
		_, err = f.ReadAt(got, 6144*512)
		f.Close()
		if err != nil {
			return fmt.Errorf("read %s: %v", file, err)
		}
		if string(got) != exp {
			return fmt.Errorf("%s at 3 MiB holds %q, want %q (written by pod %s through %s)", file, got, exp, name, d)
		}
	}
	return nil
}

// pluginState is the one plugin pod's name, UID, restart count and container ID.
func pluginState() (string, error) {
	out, err := kubectl("-n", pluginNS, "get", "pods", "-l", pluginSel, "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].containerID}{"\n"}{end}`)
	if err != nil {
		return "", err
	}
	out = strings.TrimSpace(out)
	if out == "" || strings.Contains(out, "\n") {
		return "", fmt.Errorf("want one plugin pod, have %q", out)
	}
	return out, nil
}

// pluginSockets lists the plugin's sockets in the kubelet's device-plugin directory.
func pluginSockets() []string {
	s, _ := filepath.Glob(filepath.Join(devicePluginDir, "power-dev-plugin-*.sock"))
	return s
}

func deleteKustomize(dir string) error {
	_, err := kubectl("delete", "-k", dir, "--ignore-not-found", "--wait=true", "--timeout=120s")
	return err
}

// 18. The legacy device-plugin mode under the real kubelet, with the old plugin's config.json.
func legacyDevicePlugin(t *testing.T) (err error) {
	dir := suiteDir()
	// The DRA driver out: its DeviceClass power-dev-plugin.io maps the same extended resource.
	if err := deleteKustomize(filepath.Join(dir, "overlay")); err != nil {
		return fmt.Errorf("uninstall the DRA driver: %v", err)
	}
	if _, err := kubectl("delete", "resourceslices", "--field-selector", "spec.driver="+driver, "--ignore-not-found"); err != nil {
		return err
	}
	if out, _ := kubectl("get", "deviceclasses", "-o", "name"); strings.Contains(out, driver) {
		return fmt.Errorf("DeviceClasses of the driver left after uninstalling it: %s", oneLine(out))
	}
	_ = os.Remove(legacyCDISpec) // a previous failed run's
	sockBefore := pluginSockets()

	legacyDir := filepath.Join(dir, "overlay-legacy")
	if _, err := kubectl("apply", "-k", legacyDir); err != nil {
		return fmt.Errorf("install the legacy overlay: %v", err)
	}
	// On failure the legacy plugin stays for run.sh's diagnostics; its teardown uninstalls it.
	defer func() {
		if err != nil {
			return
		}
		if err = deleteKustomize(legacyDir); err != nil {
			return
		}
		// kept by design when the plugin stops (containers restarting meanwhile resolve their CDI devices)
		if rerr := os.Remove(legacyCDISpec); rerr != nil && !os.IsNotExist(rerr) {
			err = rerr
		}
	}()
	if _, err := kubectl("-n", pluginNS, "rollout", "status", "ds/power-dev-plugin", "--timeout=180s"); err != nil {
		return err
	}
	state, err := pluginState()
	if err != nil {
		return err
	}
	podName := strings.Fields(state)[0]
	if err := poll(60*time.Second, "the plugin to log that it uses the old config.json", func() (bool, error) {
		l, err := kubectl("-n", pluginNS, "logs", podName)
		return strings.Contains(l, "Using the old plugin's config.json"), err
	}); err != nil {
		return err
	}

	// (a) What discovery publishes, asked of the plugin's own binary in its pod, with the same configuration.
	out, err := kubectl("-n", pluginNS, "exec", podName, "-c", "plugin", "--", "/usr/bin/power-dev-plugin", "discover",
		"--host-root", "/host", "--config", legacyConfigJSON, "-o", "json")
	if err != nil {
		return fmt.Errorf("discover in the plugin pod: %v", err)
	}
	var rep discoverReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		return fmt.Errorf("discover -o json: %v: %s", err, lastLines(out, 5))
	}
	if len(rep.Groups) != 1 || rep.Groups[0].Name != "dev" || rep.Groups[0].Sharing != "shared" || rep.Groups[0].Bundle == "" {
		return fmt.Errorf("the old config.json should give one shared bundle group dev; discover: %s", oneLine(out))
	}
	devs := rep.paths("dev")
	if strings.Join(devs, " ") != strings.Join(legacyDevs, " ") {
		return fmt.Errorf("discover puts %v in group dev, want %v (include-devices minus exclude-devices and the mounted %s)", devs, legacyDevs, mountedLoop)
	}
	mountedOut := false
	for _, e := range rep.Excluded {
		mountedOut = mountedOut || e.Path == mountedLoop
	}
	if !mountedOut {
		return fmt.Errorf("discover does not list the mounted %s as excluded: %s", mountedLoop, oneLine(out))
	}
	want := rep.expectedIDs()
	t.Logf("discover: group dev %v, bundle %s; expected IDs %v", devs, rep.Groups[0].Bundle, want)
	var capacity, allocatable map[string]int
	if err := poll(60*time.Second, "node capacity/allocatable as discover says", func() (bool, error) {
		var err error
		capacity, allocatable, _, err = nodeResources()
		if err != nil {
			return false, err
		}
		return resourcesMatch(want, capacity, allocatable) == nil, nil
	}); err != nil {
		return fmt.Errorf("%v: %v", err, resourcesMatch(want, capacity, allocatable))
	}

	// (b) An unchanged legacy pod gets the bundle's devices and completes.
	if err := runLegacyPod(t, "legacy-dp-1", devs); err != nil {
		return err
	}

	// (c) Restart the kubelet: the plugin registers again by itself, the pod is not restarted.
	restart := filepath.Join(dir, "cluster", "restart-kubelet.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pidFile := filepath.Join(e2eState, "pids", "kubelet.pid")
	oldPID, _ := os.ReadFile(pidFile)
	t0 := time.Now()
	rout, rerr := exec.CommandContext(ctx, restart).CombinedOutput()
	if rerr != nil {
		return fmt.Errorf("%s: %v: %s", restart, rerr, lastLines(string(rout), 8))
	}
	newPID, _ := os.ReadFile(pidFile)
	st, serr := os.Stat(pidFile)
	if serr != nil || len(oldPID) == 0 || string(newPID) == string(oldPID) {
		return fmt.Errorf("the kubelet was not restarted: pid %q, was %q (%v)", strings.TrimSpace(string(newPID)), strings.TrimSpace(string(oldPID)), serr)
	}
	tStart := st.ModTime() // up.sh writes the pid file as it starts the kubelet
	var hb time.Time
	if err := poll(30*time.Second, "the restarted kubelet to report "+legacyResource+" again", func() (bool, error) {
		var err error
		capacity, allocatable, hb, err = nodeResources()
		if err != nil {
			return false, err
		}
		// a status written by the new kubelet (heartbeats have second precision)
		return !hb.Before(tStart.Truncate(time.Second)) && resourcesMatch(want, capacity, allocatable) == nil, nil
	}); err != nil {
		return fmt.Errorf("after the kubelet restart: %v: %v (Ready heartbeat %s, kubelet started %s)", err,
			resourcesMatch(want, capacity, allocatable), hb.Format(time.RFC3339), tStart.Format(time.RFC3339))
	}
	fmt.Printf("e2e: measure: legacy: kubelet restart: %s back in the node status %.1fs after the new kubelet started (%.1fs after the old one was stopped)\n",
		legacyResource, time.Since(tStart).Seconds(), time.Since(t0).Seconds())
	var newSock []string
	for _, s := range pluginSockets() {
		if !contains(sockBefore, s) {
			newSock = append(newSock, s)
		}
	}
	after, err := pluginState()
	if err != nil {
		return err
	}
	if after != state {
		return fmt.Errorf("the plugin pod changed across the kubelet restart: %q, was %q (name uid restarts container)", after, state)
	}
	if len(newSock) == 0 {
		return fmt.Errorf("no new plugin socket in %s after the kubelet restart (have %v)", devicePluginDir, pluginSockets())
	}
	t.Logf("plugin %s re-registered on %v", podName, newSock)
	if err := runLegacyPod(t, "legacy-dp-2", devs); err != nil {
		return fmt.Errorf("a new legacy pod after the kubelet restart: %v", err)
	}

	// (d) Uninstalled (in the deferred function): the kubelet withdraws the resource (allocatable 0), so that
	// a DRA install afterwards serves power-dev-plugin/dev through its DeviceClass again.
	if err := deleteKustomize(legacyDir); err != nil {
		return fmt.Errorf("uninstall the legacy overlay: %v", err)
	}
	if err := poll(90*time.Second, legacyResource+" allocatable 0 after uninstalling", func() (bool, error) {
		_, allocatable, _, err := nodeResources()
		return err == nil && allocatable["dev"] == 0, err
	}); err != nil {
		return err
	}
	if out, _ := kubectl("get", "events", "-n", ns, "-o", `jsonpath={range .items[?(@.reason=="UnexpectedAdmissionError")]}{.message}; {end}`); out != "" {
		return fmt.Errorf("admission errors: %s", out)
	}
	return nil
}
