//go:build e2e

package e2e

import (
	"bytes"
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

// The devices of test/e2e/devices.sh, as the overlay's DiscoveryConfig groups them.
var (
	disks   = []string{"/dev/loop240", "/dev/loop241", "/dev/loop242"}
	scratch = []string{"/dev/loop246", "/dev/loop247"}
	bundle  = []string{"/dev/loop245p1", "/dev/loop245p2"}
	// kept out by the safety rules although the group "disks" includes them
	mountedLoop = "/dev/loop243"
	swapLoop    = "/dev/loop244"
)

const (
	notBundle = `!device.attributes["power-dev-plugin.io"].?bundle.orValue(false)`
	inDisks   = `device.attributes["power-dev-plugin.io"].group == "disks"`
)

// legacyScenario uninstalls the DRA driver: it runs last.
const legacyScenario = "18-legacy-device-plugin"

// TestE2E runs the scenarios in order, one at a time: they share the node's few devices.
func TestE2E(t *testing.T) {
	if err := apply(obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": ns}}); err != nil {
		t.Fatal(err)
	}
	if err := poll(60*time.Second, "the default ServiceAccount of "+ns, func() (bool, error) {
		_, err := kubectl("-n", ns, "get", "serviceaccount", "default")
		return err == nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := cleanNamespace(); err != nil {
		t.Fatal(err)
	}
	only := os.Getenv("E2E_ONLY") // a regexp over scenario names, for working on one
	measured := false
	for _, s := range []struct {
		name string
		fn   func(t *testing.T) error
	}{
		{"1-claim-template-write", claimTemplateWrite},
		{"2-non-root-uid-gid-mode", nonRoot},
		{"3-cel-selection-read-only", celSelection},
		{"4-all-and-bundle", allAndBundle},
		{"5-legacy-extended-resource", legacyExtendedResource},
		{"6-shared-fuse-max-consumers", sharedFuse},
		{"7-resourceslices-safety", sliceSafety},
		{"8-deviceconfig-errors", deviceConfigErrors},
		{"9-plugin-restart", pluginRestart},
		{"10-rolling-update", rollingUpdate},
		{"11-block-pv-in-use", blockPVInUse},                         // safety_test.go
		{"12-partition-overlap", partitionOverlap},                   // safety_test.go
		{"13-kubelet-restart", kubeletRestart},                       // restart_test.go
		{"14-reboot-renumbered-loops", rebootRenumbered},             // restart_test.go
		{"15-stale-claim-gc", staleClaimGC},                          // restart_test.go
		{"16-exclusive-reuse", exclusiveReuse},                       // reuse_test.go
		{"17-rolling-update-from-release", rollingUpdateFromRelease}, // release_test.go
		// last: it uninstalls the DRA driver (its DeviceClass maps the same extended resource)
		{legacyScenario, legacyDevicePlugin},
	} {
		if only != "" && !regexp.MustCompile(only).MatchString(s.name) {
			continue
		}
		if s.name == legacyScenario && !measured {
			measure() // the DRA plugin's numbers, while it is installed
			measured = true
		}
		scenario(t, s.name, s.fn)
	}
	if !measured {
		measure()
	}
}

// 1. A pod with a ResourceClaimTemplate gets one loop device, writes a pattern to it from inside the
// container, and the host reads the pattern back from the backing file.
func claimTemplateWrite(t *testing.T) error {
	buf := make([]byte, 8)
	_, _ = rand.Read(buf)
	pattern := "e2e-pattern-" + hex.EncodeToString(buf)
	const block = 2048 // write at 2048 * 512 bytes = 1 MiB into the device
	if err := apply(claimTemplate("one-disk", "block.power-dev-plugin.io", inDisks, "", nil)); err != nil {
		return err
	}
	script := listBlock + `set -e; n=$(echo $devs | wc -w); [ "$n" = 1 ] || { echo "FAIL: want 1 block device, got $n"; exit 1; }
printf '%s' "` + pattern + `" | dd of=$devs bs=512 seek=` + fmt.Sprint(block) + ` count=1 conv=sync,fsync 2>/dev/null
echo "device=$devs"`
	out, err := runPod("writer", podOpts{templates: []string{"one-disk"}, script: script})
	if err != nil {
		return err
	}
	m := regexp.MustCompile(`(?m)^device=(\S+)$`).FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("pod log has no device line: %s", lastLines(out, 4))
	}
	dev := m[1]
	if !contains(disks, dev) {
		return fmt.Errorf("pod got %s, not one of the group disks %v", dev, disks)
	}
	file := filepath.Join(e2eState, "devices", filepath.Base(dev)+".img")
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	got := make([]byte, len(pattern))
	if _, err := f.ReadAt(got, block*512); err != nil {
		return fmt.Errorf("read %s: %v", file, err)
	}
	if string(got) != pattern {
		return fmt.Errorf("backing file %s at 1 MiB holds %q, want %q (written through %s in the pod)", file, got, pattern, dev)
	}
	t.Logf("pattern %s written through %s, read back from %s", pattern, dev, file)
	return nil
}

// 2. A non-root pod opens its device read-write; with a DeviceConfig gid/fileMode a pod running as another
// uid opens it through that group, and the node in the container has exactly that owner, group and mode.
func nonRoot(t *testing.T) error {
	if err := apply(
		claimTemplate("plain", "block.power-dev-plugin.io", inDisks, "", nil),
		claimTemplate("owned", "block.power-dev-plugin.io", inDisks, "", obj{"uid": 1000, "gid": 3000, "fileMode": 0o660}),
	); err != nil {
		return err
	}
	rw := `dd if=$devs of=/dev/null bs=512 count=1 2>/dev/null || { echo "FAIL: $(id -u) cannot read $devs"; exit 1; }
dd if=/dev/zero of=$devs bs=512 seek=8 count=1 conv=notrunc,fsync 2>/dev/null || { echo "FAIL: $(id -u) cannot write $devs"; exit 1; }
echo "OK: $(id) read and wrote $devs: $(stat -c '%u %g %a' $devs)"`
	out, err := runPod("uid1000", podOpts{templates: []string{"plain"}, uid: i64(1000), gid: i64(1000), script: listBlock + rw})
	if err != nil {
		return fmt.Errorf("uid 1000 without DeviceConfig: %v", err)
	}
	t.Log(out)
	check := `s=$(stat -c '%u %g %a' $devs); [ "$s" = "1000 3000 660" ] || { echo "FAIL: $devs is $s, want 1000 3000 660"; exit 1; }
`
	out, err = runPod("uid2000-gid3000", podOpts{templates: []string{"owned"}, uid: i64(2000), gid: i64(3000), script: listBlock + check + rw})
	if err != nil {
		return fmt.Errorf("uid 2000 through gid 3000: %v", err)
	}
	t.Log(out)
	return nil
}

// 3. CEL selection by path and by serial/size; a request for a read-only device cannot write.
func celSelection(t *testing.T) error {
	// loop devices have no serial: the attribute is "" (every device carries every attribute)
	bySize := `device.attributes["power-dev-plugin.io"].serial == "" && device.capacity["power-dev-plugin.io"].size.compareTo(quantity("66Mi")) == 0`
	byPath := `device.attributes["power-dev-plugin.io"].?path.orValue("") == "/dev/loop241"`
	if err := apply(
		claimTemplate("by-path", "block.power-dev-plugin.io", byPath, "", nil),
		claimTemplate("by-size", "block.power-dev-plugin.io", bySize, "", nil),
		claimTemplate("read-only", "block.power-dev-plugin.io", `device.attributes["power-dev-plugin.io"].?path.orValue("") == "/dev/loop240"`, "", obj{"permissions": "r"}),
	); err != nil {
		return err
	}
	want := listBlock + `[ "$devs" = "WANT" ] || { echo "FAIL: got '$devs', want WHAT"; exit 1; }; echo OK`
	if _, err := runPod("by-path", podOpts{templates: []string{"by-path"}, script: expect(want, "/dev/loop241", "/dev/loop241")}); err != nil {
		return fmt.Errorf("by path: %v", err)
	}
	if _, err := runPod("by-size", podOpts{templates: []string{"by-size"}, script: expect(want, "/dev/loop242", "/dev/loop242 (66Mi)")}); err != nil {
		return fmt.Errorf("by serial and size: %v", err)
	}
	ro := listBlock + `[ "$devs" = /dev/loop240 ] || { echo "FAIL: got '$devs'"; exit 1; }
dd if=$devs of=/dev/null bs=512 count=1 2>/dev/null || { echo "FAIL: cannot read"; exit 1; }
if err=$(dd if=/dev/zero of=$devs bs=512 count=1 conv=notrunc 2>&1); then echo "FAIL: could write a read-only device"; exit 1; fi
echo "OK: write refused: $err"`
	out, err := runPod("read-only", podOpts{templates: []string{"read-only"}, script: ro})
	if err != nil {
		return fmt.Errorf("read-only: %v", err)
	}
	t.Log(out)
	return nil
}

// 4. allocationMode: All and a bundle group each give one pod every device of the group.
func allAndBundle(t *testing.T) error {
	if err := apply(
		claimTemplate("all-scratch", "block.power-dev-plugin.io", `device.attributes["power-dev-plugin.io"].group == "scratch"`, "All", nil),
		claimTemplate("the-bundle", "block.power-dev-plugin.io", `device.attributes["power-dev-plugin.io"].group == "bundle"`, "", nil),
	); err != nil {
		return err
	}
	want := listBlock + `[ "$devs" = "WANT" ] || { echo "FAIL: got '$devs', want 'WHAT'"; exit 1; }
for d in $devs; do dd if=$d of=/dev/null bs=512 count=1 2>/dev/null || { echo "FAIL: cannot read $d"; exit 1; }; done; echo OK`
	all := strings.Join(scratch, " ")
	if _, err := runPod("all", podOpts{templates: []string{"all-scratch"}, script: expect(want, all, all)}); err != nil {
		return fmt.Errorf("allocationMode All: %v", err)
	}
	b := strings.Join(bundle, " ")
	if _, err := runPod("bundle", podOpts{templates: []string{"the-bundle"}, script: expect(want, b, b)}); err != nil {
		return fmt.Errorf("bundle: %v", err)
	}
	return nil
}

// 5. An unchanged legacy pod with resources.limits power-dev-plugin/dev: 1 runs through the DeviceClass's
// extendedResourceName.
func legacyExtendedResource(t *testing.T) error {
	script := `std='^/dev/(null|zero|full|random|urandom|tty|console|ptmx|core|pts/.*|shm/.*|mqueue/.*|termination-log)$'
devs=$(find /dev \( -type b -o -type c \) | grep -Ev "$std" | sort | tr '\n' ' ')
[ -n "$devs" ] || { echo "FAIL: no device node from the driver"; exit 1; }
echo "OK: got $devs"`
	out, err := runPod("legacy", podOpts{limits: obj{"power-dev-plugin/dev": "1"}, script: script})
	if err != nil {
		return err
	}
	// the scheduler made a claim for the extended resource
	if _, err := claimUIDs("legacy"); err != nil {
		if s, _ := kubectl("-n", ns, "get", "pod", "legacy", "-o", "jsonpath={.status.extendedResourceClaimStatus.resourceClaimName}"); s == "" {
			return fmt.Errorf("the pod ran but shows no claim for power-dev-plugin/dev: %v", err)
		}
	}
	t.Log(out)
	return nil
}

// 6. A shared device (/dev/fuse) serves two pods at once; a third beyond maxConsumers stays Pending with the
// scheduler's reason.
func sharedFuse(t *testing.T) error {
	if err := apply(claimTemplate("fuse", "power-dev-plugin.io", `device.attributes["power-dev-plugin.io"].group == "fuse"`, "", nil)); err != nil {
		return err
	}
	script := `[ -c /dev/fuse ] || { echo "FAIL: no /dev/fuse"; exit 1; }; echo "OK: $(ls -l /dev/fuse)"; sleep 3600`
	for _, n := range []string{"fuse-a", "fuse-b"} {
		if err := apply(pod(n, podOpts{templates: []string{"fuse"}, script: script})); err != nil {
			return err
		}
	}
	for _, n := range []string{"fuse-a", "fuse-b"} {
		if _, err := waitPhase(n, 120*time.Second, "Running"); err != nil {
			return err
		}
	}
	for _, n := range []string{"fuse-a", "fuse-b"} {
		if err := poll(30*time.Second, n+" to see /dev/fuse", func() (bool, error) {
			l, err := logs(n)
			return strings.Contains(l, "OK: "), err
		}); err != nil {
			return fmt.Errorf("%v; %s", err, podReport(n))
		}
	}
	if err := apply(pod("fuse-c", podOpts{templates: []string{"fuse"}, script: script})); err != nil {
		return err
	}
	var reason, msg string
	if err := poll(60*time.Second, "fuse-c to be unschedulable", func() (bool, error) {
		out, err := kubectl("-n", ns, "get", "pod", "fuse-c", "-o",
			`jsonpath={.status.phase}|{.status.conditions[?(@.type=="PodScheduled")].reason}|{.status.conditions[?(@.type=="PodScheduled")].message}`)
		if err != nil {
			return false, err
		}
		f := strings.SplitN(out, "|", 3)
		if len(f) < 3 {
			return false, nil
		}
		if f[0] != "Pending" {
			return false, fmt.Errorf("fuse-c is %s, want Pending", f[0])
		}
		reason, msg = f[1], f[2]
		return reason == "Unschedulable", nil
	}); err != nil {
		return fmt.Errorf("%v; %s", err, podReport("fuse-c"))
	}
	// the scheduler's DRA plugin says it could not allocate the claim
	if !strings.Contains(msg, "claim") {
		return fmt.Errorf("fuse-c is Unschedulable but the message does not name the claims: %q", msg)
	}
	// and it stays so: give it a few more seconds
	time.Sleep(5 * time.Second)
	if p, _ := phase("fuse-c"); p != "Pending" {
		return fmt.Errorf("fuse-c is %s after 5 s more, want Pending", p)
	}
	t.Logf("fuse-c: %s: %s", reason, msg)
	return nil
}

// 7. The node's root disk, the mounted loop device and the swap loop device are in no ResourceSlice; the
// slices the driver wrote are accepted by the API server and owned by the node.
func sliceSafety(t *testing.T) error {
	rootDisks, err := rootDiskPaths()
	if err != nil {
		return err
	}
	sl, err := getJSON("get", "resourceslices", "--field-selector", "spec.driver="+driver)
	if err != nil {
		return err
	}
	node, err := getJSON("get", "node", "localhost")
	if err != nil {
		return err
	}
	nodeUID := str(path(node, "metadata", "uid"))
	items := list(path(sl, "items"))
	if len(items) == 0 {
		return fmt.Errorf("no ResourceSlice of %s", driver)
	}
	var paths []string
	for _, it := range items {
		name := str(path(it, "metadata", "name"))
		if n := str(path(it, "spec", "nodeName")); n != "localhost" {
			return fmt.Errorf("slice %s has nodeName %q", name, n)
		}
		owned := false
		for _, o := range list(path(it, "metadata", "ownerReferences")) {
			if str(path(o, "kind")) == "Node" && str(path(o, "name")) == "localhost" && str(path(o, "uid")) == nodeUID {
				owned = true
			}
		}
		if !owned {
			return fmt.Errorf("slice %s is not owned by node localhost (uid %s): %v", name, nodeUID, path(it, "metadata", "ownerReferences"))
		}
		for _, d := range list(path(it, "spec", "devices")) {
			p := str(path(d, "attributes", "path", "string"))
			if p == "" { // a bundle: the group names it
				p = "bundle:" + str(path(d, "attributes", "group", "string"))
			}
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, bad := range append(rootDisks, mountedLoop, swapLoop) {
		if contains(paths, bad) {
			return fmt.Errorf("%s is published (devices: %v)", bad, paths)
		}
	}
	want := append(append(append(append([]string{}, disks...), scratch...), parts...), "/dev/fuse", "bundle:bundle")
	sort.Strings(want)
	if strings.Join(paths, " ") != strings.Join(want, " ") {
		return fmt.Errorf("published %v, want %v", paths, want)
	}
	out, _ := kubectl("-n", pluginNS, "logs", "-l", pluginSel, "--tail=-1")
	if strings.Contains(out, "Not publishing") {
		return fmt.Errorf("the plugin refused to publish an inventory: %s", grepLines(out, "Not publishing"))
	}
	t.Logf("root disk %v, %s (mounted), %s (swap) absent; published %v", rootDisks, mountedLoop, swapLoop, paths)
	return nil
}

// rootDiskPaths names the block device of / and the disk it is on, e.g. [/dev/vda] or [/dev/sda1 /dev/sda].
func rootDiskPaths() ([]string, error) {
	out, err := exec.Command("findmnt", "-n", "-o", "SOURCE", "/").Output()
	if err != nil {
		return nil, fmt.Errorf("findmnt /: %v", err)
	}
	src := strings.TrimSpace(string(out))
	if i := strings.Index(src, "["); i > 0 { // btrfs subvolume
		src = src[:i]
	}
	if !strings.HasPrefix(src, "/dev/") {
		return nil, fmt.Errorf("/ is on %q, not a block device", src)
	}
	paths := []string{src}
	if out, err := exec.Command("lsblk", "-n", "-s", "-o", "PATH", src).Output(); err == nil {
		for _, l := range strings.Fields(string(out)) {
			if !contains(paths, l) {
				paths = append(paths, l)
			}
		}
	}
	return paths, nil
}

// 8. A malformed DeviceConfig is rejected at admission with the driver's message; one that passes admission
// but fails on the node shows the message in the pod's events.
func deviceConfigErrors(t *testing.T) error {
	// MsgPermissions in api/v1alpha1/messages.go
	const wantAdmission = `spec.spec.devices.config[0].opaque.parameters: permissions: Invalid value: "rx": must be a combination of r, w and m (e.g. "rw"), each at most once`
	b, _ := json.Marshal(claimTemplate("bad-permissions", "block.power-dev-plugin.io", inDisks, "", obj{"permissions": "rx"}))
	_, err := kubectlIn(string(b), "apply", "-f", "-")
	if err == nil {
		return fmt.Errorf("a DeviceConfig with permissions rx was admitted")
	}
	if !strings.Contains(err.Error(), wantAdmission) {
		return fmt.Errorf("rejected, but without the driver's message %q: %v", wantAdmission, err)
	}
	// containerPath needs a request that resolves to one node; the bundle has two. Only the driver knows.
	const wantNode = `only valid when the request resolves to exactly one device node, but it resolves to 2`
	if err := apply(claimTemplate("bundle-path", "block.power-dev-plugin.io", `device.attributes["power-dev-plugin.io"].group == "bundle"`, "", obj{"containerPath": "/dev/data"})); err != nil {
		return fmt.Errorf("a containerPath on a bundle request was refused at admission (the policy cannot know the device): %v", err)
	}
	if err := apply(pod("bundle-path", podOpts{templates: []string{"bundle-path"}, script: "ls -l /dev/data"})); err != nil {
		return err
	}
	var ev string
	if err := poll(90*time.Second, "the driver's message in the pod's events", func() (bool, error) {
		ev = podEvents("bundle-path")
		return strings.Contains(ev, wantNode), nil
	}); err != nil {
		return fmt.Errorf("%v; %s", err, podReport("bundle-path"))
	}
	if p, _ := phase("bundle-path"); p != "Pending" {
		return fmt.Errorf("bundle-path is %s, want Pending (the claim cannot be prepared)", p)
	}
	t.Logf("events: %s", ev)
	return nil
}

// 9. Restart the plugin (delete its pod) while claim-holding pods run: they keep running, a new pod can start,
// and deleting the old pods unprepares their claims (no CDI spec files left).
func pluginRestart(t *testing.T) error {
	if err := apply(claimTemplate("disk", "block.power-dev-plugin.io", inDisks, "", nil)); err != nil {
		return err
	}
	for _, n := range []string{"holder-1", "holder-2"} {
		if err := apply(pod(n, podOpts{templates: []string{"disk"}, script: holdScript})); err != nil {
			return err
		}
		if _, err := waitPhase(n, 120*time.Second, "Running"); err != nil {
			return err
		}
	}
	var uids []string
	for _, n := range []string{"holder-1", "holder-2"} {
		u, err := claimUIDs(n)
		if err != nil {
			return err
		}
		uids = append(uids, u...)
	}
	for _, u := range uids {
		if _, err := os.Stat(cdiSpecPath(u)); err != nil {
			return fmt.Errorf("prepared claim %s has no CDI spec: %v", u, err)
		}
	}
	old, err := pluginPods()
	if err != nil {
		return err
	}
	if _, err := kubectl("-n", pluginNS, "delete", "pod", "-l", pluginSel, "--wait=true", "--timeout=90s"); err != nil {
		return err
	}
	if err := waitPluginReady(old, 120*time.Second); err != nil {
		return err
	}
	for _, n := range []string{"holder-1", "holder-2"} {
		out, err := kubectl("-n", ns, "get", "pod", n, "-o", "jsonpath={.status.phase} {.status.containerStatuses[0].restartCount}")
		if err != nil {
			return err
		}
		if out != "Running 0" {
			return fmt.Errorf("%s is %q after the plugin restart, want Running 0; %s", n, out, podReport(n))
		}
	}
	if _, err := runPod("after-restart", podOpts{templates: []string{"disk"}, script: listBlock + `[ -n "$devs" ] && echo OK`}); err != nil {
		return fmt.Errorf("a new pod after the restart: %v", err)
	}
	if _, err := kubectl("-n", ns, "delete", "pod", "holder-1", "holder-2", "--wait=true", "--timeout=90s"); err != nil {
		return err
	}
	if err := waitCDIGone(uids); err != nil {
		return err
	}
	return nil
}

// waitPluginReady waits until exactly one plugin pod runs, none of old, and it is ready.
func waitPluginReady(old []string, timeout time.Duration) error {
	return poll(timeout, "a new ready plugin pod", func() (bool, error) {
		out, err := kubectl("-n", pluginNS, "get", "pods", "-l", pluginSel, "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
		if err != nil {
			return false, err
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 1 {
			return false, nil
		}
		f := strings.Fields(lines[0])
		return len(f) == 2 && !contains(old, f[0]) && f[1] == "True", nil
	})
}

// 10. A rolling update of the DaemonSet (new image tag) with claim-holding pods running: no failed prepare.
func rollingUpdate(t *testing.T) error {
	if err := apply(claimTemplate("disk", "block.power-dev-plugin.io", inDisks, "", nil)); err != nil {
		return err
	}
	if err := apply(pod("holder", podOpts{templates: []string{"disk"}, script: holdScript})); err != nil {
		return err
	}
	if _, err := waitPhase("holder", 120*time.Second, "Running"); err != nil {
		return err
	}
	holderUIDs, err := claimUIDs("holder")
	if err != nil {
		return err
	}
	cur, err := pluginImage()
	if err != nil {
		return err
	}
	newImage := image2
	if cur == image2 {
		newImage = strings.TrimSuffix(image2, "-2") // a second run: roll back to the first tag
	}
	pods, err := rollPlugin(t, newImage, "disk", nil)
	if err != nil {
		return err
	}
	out, err := kubectl("-n", ns, "get", "pod", "holder", "-o", "jsonpath={.status.phase} {.status.containerStatuses[0].restartCount}")
	if err != nil {
		return err
	}
	if out != "Running 0" {
		return fmt.Errorf("holder is %q after the rolling update, want Running 0; %s", out, podReport("holder"))
	}
	if bad, err := failedPrepareEvents(append(pods, "holder")); err != nil {
		return err
	} else if bad != "" {
		return fmt.Errorf("failed prepare during the rolling update: %s", bad)
	}
	if _, err := kubectl("-n", ns, "delete", "pod", "holder", "--wait=true", "--timeout=60s"); err != nil {
		return err
	}
	return waitCDIGone(holderUIDs)
}

// holdScript keeps reading the pod's one block device, once a second.
const holdScript = listBlock + `[ -n "$devs" ] || exit 1; while true; do dd if=$devs of=/dev/null bs=512 count=1 2>/dev/null || { echo "FAIL: lost $devs"; exit 1; }; sleep 1; done`

// pluginImage is the image of the plugin's DaemonSet.
func pluginImage() (string, error) {
	return kubectl("-n", pluginNS, "get", "ds", "power-dev-plugin", "-o", "jsonpath={.spec.template.spec.containers[0].image}")
}

// rollPlugin rolls the DaemonSet to image (maxSurge: 1) and, with template set, starts claim pods of that
// template one after another while it rolls and twice after it, each deleted once it succeeded; it returns their
// names. check, if set, runs after each such pod. It waits for the new plugin pod to be ready.
func rollPlugin(t *testing.T, image, template string, check func() error) ([]string, error) {
	old, err := pluginPods()
	if err != nil {
		return nil, err
	}
	// hostNetwork (the test overlay) puts both pods of the surge on the host's loopback: the new one needs
	// its own health address.
	healthAddr := "127.0.0.1:51516"
	if a, _ := kubectl("-n", pluginNS, "get", "ds", "power-dev-plugin", "-o",
		`jsonpath={.spec.template.spec.containers[0].env[?(@.name=="HEALTH_ADDRESS")].value}`); a == healthAddr {
		healthAddr = "127.0.0.1:51515"
	}
	start := time.Now()
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"plugin","image":%q,"env":[{"name":"HEALTH_ADDRESS","value":%q}]}]}}}}`, image, healthAddr)
	if _, err := kubectl("-n", pluginNS, "patch", "ds", "power-dev-plugin", "--type=strategic", "-p", patch); err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	go func() {
		_, err := kubectl("-n", pluginNS, "rollout", "status", "ds/power-dev-plugin", "--timeout=180s")
		done <- err
	}()
	var pods []string
	if template == "" {
		if err := <-done; err != nil {
			return nil, fmt.Errorf("rollout: %v", err)
		}
	} else {
		// while it rolls: new claim pods, one a second
		quick := listBlock + `[ -n "$devs" ] && echo OK`
		var rollErr error
		rolling := true
		for i := 0; rolling || i < 2; i++ {
			n := fmt.Sprintf("during-%d", i)
			if err := apply(pod(n, podOpts{templates: []string{template}, script: quick})); err != nil {
				return pods, err
			}
			pods = append(pods, n)
			// one at a time: the node has three disks and a holder may have one
			if _, err := waitPhase(n, 120*time.Second, "Succeeded"); err != nil {
				return pods, fmt.Errorf("during the rollout: %v", err)
			}
			if _, err := kubectl("-n", ns, "delete", "pod", n, "--wait=true", "--timeout=60s"); err != nil {
				return pods, err
			}
			if check != nil {
				if err := check(); err != nil {
					return pods, fmt.Errorf("during the rollout (after %s): %v", n, err)
				}
			}
			select {
			case rollErr = <-done:
				rolling = false
			default:
			}
			if i > 60 {
				return pods, fmt.Errorf("the rollout did not end")
			}
		}
		if rollErr != nil {
			return pods, fmt.Errorf("rollout: %v", rollErr)
		}
	}
	t.Logf("rolled to %s in %.0fs, %d claim pods ran during and after it", image, time.Since(start).Seconds(), len(pods))
	return pods, waitPluginReady(old, 60*time.Second)
}

// measure prints the plugin's memory and the kubelet's Prepare latency (not a scenario: numbers for the docs).
func measure() {
	for _, p := range pluginPIDs() {
		st, err := os.ReadFile("/proc/" + p + "/status")
		if err != nil {
			continue
		}
		fmt.Printf("e2e: measure: plugin pid %s %s, %s (%s, %s)\n", p, grepField(string(st), "VmRSS:"),
			grepField(string(st), "VmHWM:"), grepField(string(st), "RssAnon:"), grepField(string(st), "RssFile:"))
		if ws := cgroupMemory(p); ws != "" {
			fmt.Printf("e2e: measure: plugin container cgroup %s\n", ws)
		}
	}
	// The kubelet's DRA metrics (cumulative since it started), straight from its loopback port.
	pki := filepath.Join(e2eState, "pki")
	out, err := exec.Command("curl", "-sf", "--max-time", "10", "--cacert", pki+"/ca.crt",
		"--cert", pki+"/apiserver-kubelet-client.crt", "--key", pki+"/apiserver-kubelet-client.key",
		"https://127.0.0.1:10250/metrics").Output()
	if err != nil {
		fmt.Printf("e2e: measure: kubelet metrics: %v\n", err)
		return
	}
	sums := map[string]float64{}
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "dra_grpc_operations_duration_seconds_") || !strings.Contains(l, driver) || !strings.Contains(l, `grpc_status_code="OK"`) {
			continue
		}
		f := strings.Fields(l)
		var v float64
		fmt.Sscan(f[len(f)-1], &v)
		for _, m := range []string{"NodePrepareResources", "NodeUnprepareResources"} {
			if strings.Contains(l, m) {
				if strings.HasPrefix(l, "dra_grpc_operations_duration_seconds_sum") {
					sums[m+" sum"] = v
				} else if strings.HasPrefix(l, "dra_grpc_operations_duration_seconds_count") {
					sums[m+" count"] = v
				}
			}
		}
	}
	for _, m := range []string{"NodePrepareResources", "NodeUnprepareResources"} {
		if c := sums[m+" count"]; c > 0 {
			fmt.Printf("e2e: measure: kubelet -> plugin %s: %.0f calls, mean %.1f ms\n", m, c, 1000*sums[m+" sum"]/c)
		}
	}
}

// cgroupMemory reads the memory use of the process's (container's) memory cgroup, v1 or v2.
func cgroupMemory(pid string) string {
	b, err := os.ReadFile("/proc/" + pid + "/cgroup")
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[1] == "memory" { // v1
			u, err1 := os.ReadFile("/sys/fs/cgroup/memory" + f[2] + "/memory.usage_in_bytes")
			st, err2 := os.ReadFile("/sys/fs/cgroup/memory" + f[2] + "/memory.stat")
			if err1 != nil || err2 != nil {
				return ""
			}
			var usage, inactive float64
			fmt.Sscan(strings.TrimSpace(string(u)), &usage)
			fmt.Sscan(strings.TrimPrefix(grepField(string(st), "total_inactive_file"), "total_inactive_file "), &inactive)
			return fmt.Sprintf("usage %.1f MiB, working set %.1f MiB", usage/(1<<20), (usage-inactive)/(1<<20))
		}
		if f[0] == "0" && f[1] == "" { // v2
			u, err := os.ReadFile("/sys/fs/cgroup" + f[2] + "/memory.current")
			if err != nil {
				return ""
			}
			var usage float64
			fmt.Sscan(strings.TrimSpace(string(u)), &usage)
			return fmt.Sprintf("memory.current %.1f MiB", usage/(1<<20))
		}
	}
	return ""
}

// pluginPIDs finds the plugin's processes on the node by their command line.
func pluginPIDs() []string {
	var pids []string
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/cmdline")
		if err != nil {
			continue
		}
		if bytes.Equal(bytes.TrimRight(b, "\x00"), []byte("/usr/bin/power-dev-plugin")) {
			pids = append(pids, filepath.Base(d))
		}
	}
	return pids
}

func grepField(s, key string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, key) {
			return strings.Join(strings.Fields(l), " ")
		}
	}
	return key + " ?"
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, " | ")
}

// expect fills in a script's WANT and WHAT.
func expect(script, want, what string) string {
	return strings.NewReplacer("WANT", want, "WHAT", what).Replace(script)
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
