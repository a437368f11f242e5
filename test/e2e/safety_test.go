//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// Scenarios 11 and 12: the promise that a pod never gets what the node or another pod uses, seen from the
// cluster: a block-mode PersistentVolume of another pod, and a disk whose partitions are handed out.

var (
	// loop248 (devices.sh) is the local block PV of scenario 11; no group of the overlay names it.
	pvLoop = "/dev/loop248"
	// group parts: a GPT loop device and its two partitions; the disk overlaps both.
	partsDisk  = "/dev/loop249"
	partsParts = []string{"/dev/loop249p1", "/dev/loop249p2"}
	parts      = append([]string{partsDisk}, partsParts...)
)

const (
	pluginConfigMap = "power-dev-plugin-config"
	pluginConfigDir = "/etc/power-dev-plugin"
	kubeletRoot     = "/var/lib/kubelet/"
	pvGroup         = "pv"
	pvName          = "e2e-block-pv"
	pvClass         = "e2e-local-block"
	pvcName         = "block-pvc"
	pvPod           = "pv-user"
	inParts         = `device.attributes["power-dev-plugin.io"].group == "parts"`
)

// 11. A local PersistentVolume in block mode over loop248, used by a pod. The kubelet bind-mounts the device
// node under /var/lib/kubelet (the host's mountinfo shows devtmpfs with root /loop248) and attaches a loop
// device over it as its "fd lock". While the pod runs, neither loop248 nor that loop device may be in a slice,
// although the scenario's configuration includes both: loop248 by name, the kubelet's loop device (whatever
// number `losetup -f` gave it) through /dev/loop*. Before and after the pod, loop248 is published.
func blockPVInUse(t *testing.T) (err error) {
	if fi, err := os.Stat(pvLoop); err != nil || fi.Mode()&os.ModeDevice == 0 {
		return fmt.Errorf("%s is missing (devices.sh up makes it): %v", pvLoop, err)
	}
	if l := loopsOver(pvLoop); len(l) > 0 {
		return fmt.Errorf("%s is already the backing device of %v (a killed run? devices.sh down detaches them)", pvLoop, l)
	}
	base, err := pluginConfig()
	if err != nil {
		return err
	}
	// Group pv, last: loop248, and every loop device no group above takes (loop245 is the disk under the
	// bundle's partitions, not this scenario's business). Only for this scenario: other loop devices on the
	// machine then show up in group pv too, and scenario 7 wants the overlay's exact list.
	tmp, err := withGroup(base, obj{"name": pvGroup, "include": []any{pvLoop, "/dev/loop*"},
		"exclude": []any{"/dev/loop245"}, "types": []any{"block"}})
	if err != nil {
		return err
	}
	defer func() {
		if rerr := restorePluginConfig(base); rerr != nil && err == nil {
			err = rerr
		}
	}()
	if err := setPluginConfig(tmp); err != nil {
		return err
	}
	if _, err := waitPublished(120*time.Second, pvLoop+" published in group "+pvGroup+" (the scenario's configuration, before the pod)",
		true, func(pub map[string]string) bool { return pub[pvLoop] == pvGroup }); err != nil {
		return err
	}

	defer func() {
		if cerr := deleteBlockPV(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := apply(blockPVObjects()...); err != nil {
		return err
	}
	if _, err := waitPhase(pvPod, 120*time.Second, "Running"); err != nil {
		return err
	}
	if err := poll(30*time.Second, pvPod+" to read its volume", func() (bool, error) {
		l, err := logs(pvPod)
		return strings.Contains(l, "OK: "), err
	}); err != nil {
		return fmt.Errorf("%v; %s", err, podReport(pvPod))
	}

	// What the kubelet did on the host: without both the scenario would not test what it says.
	binds, err := deviceBindMounts(pvLoop)
	if err != nil {
		return err
	}
	if len(binds) == 0 {
		return fmt.Errorf("no bind mount of %s under %s in the host's mountinfo while %s runs", pvLoop, kubeletRoot, pvPod)
	}
	lock := loopsOver(pvLoop)
	if len(lock) != 1 {
		return fmt.Errorf("want one loop device over %s (the kubelet's fd lock) while %s runs, found %v", pvLoop, pvPod, lock)
	}
	held := []string{pvLoop, lock[0]}
	t.Logf("%s runs; the kubelet bind-mounted %s at %v and attached %s over it", pvPod, pvLoop, binds, lock[0])

	// Discovery's verdict (the plugin's own binary in its pod, with the same configuration file), and the slices.
	rep, derr := discoverInPlugin(pluginConfigDir + "/config.yaml")
	pub, perr := publishedDevices()
	if derr != nil || perr != nil {
		return fmt.Errorf("discover: %v; slices: %v", derr, perr)
	}
	var problems []string
	reasons := map[string]string{}
	for _, h := range held {
		published := false
		for _, d := range rep.Devices {
			if d.Path == h {
				published = true
				problems = append(problems, fmt.Sprintf("discover publishes %s in group %s", h, d.Group))
			}
		}
		for _, e := range rep.Excluded {
			if e.Path == h {
				reasons[h] = e.Reason
			}
		}
		if !published && reasons[h] == "" {
			problems = append(problems, fmt.Sprintf("discover neither publishes nor excludes %s", h))
		}
		if g, ok := pub[h]; ok {
			problems = append(problems, fmt.Sprintf("%s is in a ResourceSlice (group %s)", h, g))
		}
	}
	if len(problems) > 0 { // no point waiting for the slices: discovery itself hands them out
		return fmt.Errorf("while %s uses PV %s (%s, the kubelet's loop device %s over it): %s",
			pvPod, pvName, pvLoop, lock[0], strings.Join(problems, "; "))
	}
	// The kubelet's loop device sent a uevent, which makes the plugin rescan; the periodic rescan is a minute.
	if _, err := waitPublished(75*time.Second, pvLoop+" and "+lock[0]+" out of every slice while "+pvPod+" runs", false,
		func(pub map[string]string) bool { return !anyIn(pub, held) }); err != nil {
		return err
	}
	time.Sleep(5 * time.Second) // and they stay out
	if pub, err := publishedDevices(); err != nil {
		return err
	} else if anyIn(pub, held) {
		return fmt.Errorf("%v back in the slices while %s runs: %v", held, pvPod, pub)
	}
	if out, err := kubectl("-n", ns, "get", "pod", pvPod, "-o", "jsonpath={.status.phase} {.status.containerStatuses[0].restartCount}"); err != nil {
		return err
	} else if out != "Running 0" {
		return fmt.Errorf("%s is %q, want Running 0 (the checks above must hold while it runs); %s", pvPod, out, podReport(pvPod))
	}
	t.Logf("while %s runs: %s excluded (%s), %s excluded (%s)", pvPod, pvLoop, reasons[pvLoop], lock[0], reasons[lock[0]])

	// The pod gone, the kubelet lets go of the device, and it is published again.
	if err := deleteBlockPV(); err != nil {
		return err
	}
	if _, err := waitPublished(75*time.Second, pvLoop+" published again once "+pvPod+" and the PV are gone", false,
		func(pub map[string]string) bool { return pub[pvLoop] == pvGroup }); err != nil {
		return err
	}
	return nil
}

// blockPVObjects are the StorageClass, the local PV over loop248, its claim and the pod that uses it.
func blockPVObjects() []any {
	sc := obj{
		"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
		"metadata":          obj{"name": pvClass, "labels": obj{"e2e": "yes"}},
		"provisioner":       "kubernetes.io/no-provisioner",
		"volumeBindingMode": "WaitForFirstConsumer",
	}
	pv := obj{
		"apiVersion": "v1", "kind": "PersistentVolume",
		"metadata": obj{"name": pvName, "labels": obj{"e2e": "yes"}},
		"spec": obj{
			"capacity":                      obj{"storage": "20Mi"},
			"volumeMode":                    "Block",
			"accessModes":                   []any{"ReadWriteOnce"},
			"persistentVolumeReclaimPolicy": "Retain",
			"storageClassName":              pvClass,
			"local":                         obj{"path": pvLoop},
			"nodeAffinity": obj{"required": obj{"nodeSelectorTerms": []any{obj{"matchExpressions": []any{
				obj{"key": "kubernetes.io/hostname", "operator": "In", "values": []any{"localhost"}},
			}}}}},
		},
	}
	pvc := obj{
		"apiVersion": "v1", "kind": "PersistentVolumeClaim",
		"metadata": obj{"name": pvcName, "namespace": ns},
		"spec": obj{
			"storageClassName": pvClass,
			"volumeMode":       "Block",
			"accessModes":      []any{"ReadWriteOnce"},
			"resources":        obj{"requests": obj{"storage": "20Mi"}},
		},
	}
	p := pod(pvPod, podOpts{script: `[ -b /dev/pvdisk ] || { echo "FAIL: no /dev/pvdisk"; exit 1; }
dd if=/dev/pvdisk of=/dev/null bs=512 count=1 2>/dev/null || { echo "FAIL: cannot read /dev/pvdisk"; exit 1; }
echo "OK: read /dev/pvdisk"; sleep 3600`})
	spec := p["spec"].(obj)
	spec["volumes"] = []any{obj{"name": "disk", "persistentVolumeClaim": obj{"claimName": pvcName}}}
	spec["containers"].([]any)[0].(obj)["volumeDevices"] = []any{obj{"name": "disk", "devicePath": "/dev/pvdisk"}}
	return []any{sc, pv, pvc, p}
}

// deleteBlockPV deletes the pod, claim, PV and StorageClass of scenario 11 and waits until the kubelet has
// detached its loop device (devices.sh down and check-clean.sh would find it otherwise).
func deleteBlockPV() error {
	var errs []string
	for _, a := range [][]string{
		{"-n", ns, "delete", "pod", pvPod, "--grace-period=1"},
		{"-n", ns, "delete", "pvc", pvcName},
		{"delete", "pv", pvName},
		{"delete", "storageclass", pvClass},
	} {
		if _, err := kubectl(append(a, "--ignore-not-found", "--wait=true", "--timeout=90s")...); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if err := poll(60*time.Second, "the kubelet to detach its loop device over "+pvLoop, func() (bool, error) {
		return len(loopsOver(pvLoop)) == 0, nil
	}); err != nil {
		errs = append(errs, fmt.Sprintf("%v: %v", err, loopsOver(pvLoop)))
	}
	if len(errs) > 0 {
		return fmt.Errorf("cleanup of the block PV: %s", strings.Join(errs, "; "))
	}
	return nil
}

// loopsOver lists the loop devices whose backing file is the device dev (through any path to its node).
func loopsOver(dev string) []string {
	out, _ := exec.Command("losetup", "-l", "-n", "-O", "NAME", "-j", dev).Output()
	return strings.Fields(string(out))
}

// deviceBindMounts lists the host's mount points under the kubelet's directory that are bind mounts of the
// device node dev: devtmpfs mounts whose root is the node's name.
func deviceBindMounts(dev string) ([]string, error) {
	b, err := os.ReadFile("/proc/1/mountinfo")
	if err != nil {
		return nil, err
	}
	var mnts []string
	root := strings.TrimPrefix(dev, "/dev")
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(f) {
			continue
		}
		if f[sep+1] == "devtmpfs" && f[3] == root && strings.HasPrefix(f[4], kubeletRoot) {
			mnts = append(mnts, f[4])
		}
	}
	return mnts, nil
}

// 12. Two claims for "any block device" of the exclusive group parts (loop249 and its partitions p1 and p2)
// at the same time: both pods run, with one partition each (never the disk, which overlaps both), no prepare
// fails, and a third claim finds nothing left that does not overlap a device in use.
func partitionOverlap(t *testing.T) error {
	pub, err := publishedDevices()
	if err != nil {
		return err
	}
	for _, p := range parts {
		if pub[p] != "parts" {
			return fmt.Errorf("%s is not published in group parts (published: %v): the disk and both partitions must be candidates", p, pub)
		}
	}
	if err := apply(claimTemplate("a-part", "block.power-dev-plugin.io", inParts, "", nil)); err != nil {
		return err
	}
	hold := listBlock + `n=$(echo $devs | wc -w); [ "$n" = 1 ] || { echo "FAIL: want 1 block device, got $n"; exit 1; }
dd if=$devs of=/dev/null bs=512 count=1 2>/dev/null || { echo "FAIL: cannot read $devs"; exit 1; }
echo "device=$devs"; sleep 3600`
	pods := []string{"part-a", "part-b"}
	for _, n := range pods { // both at once: the scheduler allocates one while the other is in flight
		if err := apply(pod(n, podOpts{templates: []string{"a-part"}, script: hold})); err != nil {
			return err
		}
	}
	if err := waitRunningNoFailedPrepare(pods, 120*time.Second); err != nil {
		return fmt.Errorf("%v (allocated: %s)", err, allocations(pods))
	}
	got := map[string]string{}
	for _, n := range pods {
		if err := poll(30*time.Second, n+" to name its device", func() (bool, error) {
			l, err := logs(n)
			if m := regexp.MustCompile(`(?m)^device=(\S+)$`).FindStringSubmatch(l); m != nil {
				got[n] = m[1]
				return true, nil
			}
			return false, err
		}); err != nil {
			return fmt.Errorf("%v; %s", err, podReport(n))
		}
	}
	var problems []string
	if got["part-a"] == got["part-b"] {
		problems = append(problems, fmt.Sprintf("both pods got %s", got["part-a"]))
	}
	for _, n := range pods {
		switch d := got[n]; {
		case d == partsDisk:
			problems = append(problems, fmt.Sprintf("%s got the disk %s, which overlaps both partitions", n, d))
		case !contains(partsParts, d):
			problems = append(problems, fmt.Sprintf("%s got %s, not a partition of %s", n, d, partsDisk))
		}
	}
	if bad, err := failedPrepareEvents(pods); err != nil {
		return err
	} else if bad != "" {
		problems = append(problems, "failed prepare: "+bad)
	}
	if len(problems) > 0 {
		return fmt.Errorf("part-a has %s, part-b has %s: %s", got["part-a"], got["part-b"], strings.Join(problems, "; "))
	}
	// A third claim: the disk is all that is left, and it overlaps both.
	if err := apply(pod("part-c", podOpts{templates: []string{"a-part"}, script: hold})); err != nil {
		return err
	}
	msg, err := waitUnschedulable("part-c", 60*time.Second)
	if err != nil {
		if l, _ := logs("part-c"); l != "" {
			err = fmt.Errorf("%v (part-a has %s, part-b has %s; part-c's log: %s)", err, got["part-a"], got["part-b"], lastLines(l, 2))
		}
		return err
	}
	time.Sleep(5 * time.Second)
	if p, _ := phase("part-c"); p != "Pending" {
		return fmt.Errorf("part-c is %s after 5 s more, want Pending; %s", p, podReport("part-c"))
	}
	for _, n := range pods {
		out, err := kubectl("-n", ns, "get", "pod", n, "-o", "jsonpath={.status.phase} {.status.containerStatuses[0].restartCount}")
		if err != nil {
			return err
		}
		if out != "Running 0" {
			return fmt.Errorf("%s is %q, want Running 0; %s", n, out, podReport(n))
		}
	}
	t.Logf("part-a has %s, part-b has %s; part-c: %s", got["part-a"], got["part-b"], msg)
	return nil
}

// waitRunningNoFailedPrepare waits until every pod runs; a pod that ends, or a FailedPrepareDynamicResources
// event of any of them, fails at once (the kubelet would retry, but the scenario wants none).
func waitRunningNoFailedPrepare(pods []string, timeout time.Duration) error {
	var last string
	err := poll(timeout, strings.Join(pods, ", ")+" to be Running", func() (bool, error) {
		if bad, err := failedPrepareEvents(pods); err != nil {
			return false, err
		} else if bad != "" {
			return false, stopError{fmt.Errorf("failed prepare: %s", bad)}
		}
		var phases []string
		for _, n := range pods {
			p, err := phase(n)
			if err != nil {
				return false, err
			}
			if p == "Succeeded" || p == "Failed" {
				return false, stopError{fmt.Errorf("pod %s ended %s; %s", n, p, podReport(n))}
			}
			phases = append(phases, n+"="+p)
		}
		last = strings.Join(phases, " ")
		return !strings.Contains(last, "=Pending"), nil
	})
	if err != nil {
		return fmt.Errorf("%v (%s)", err, last)
	}
	return nil
}

// allocations names the devices allocated to each pod's claims, from the claims' status: "pod: dev,dev; ...".
func allocations(pods []string) string {
	var out []string
	for _, n := range pods {
		names, err := kubectl("-n", ns, "get", "pod", n, "-o", `jsonpath={range .status.resourceClaimStatuses[*]}{.resourceClaimName}{" "}{end}`)
		if err != nil {
			out = append(out, n+": "+err.Error())
			continue
		}
		var got []string
		for _, c := range strings.Fields(names) {
			d, _ := kubectl("-n", ns, "get", "resourceclaim", c, "-o", `jsonpath={.status.allocation.devices.results[*].device}`)
			got = append(got, strings.Fields(d)...)
		}
		out = append(out, fmt.Sprintf("%s: %s", n, strings.Join(got, ",")))
	}
	return strings.Join(out, "; ")
}

// waitUnschedulable waits until the pod is Pending with PodScheduled=False, reason Unschedulable, and returns
// the scheduler's message; a pod that gets past Pending fails at once.
func waitUnschedulable(name string, timeout time.Duration) (string, error) {
	var msg string
	err := poll(timeout, name+" to be unschedulable", func() (bool, error) {
		out, err := kubectl("-n", ns, "get", "pod", name, "-o",
			`jsonpath={.status.phase}|{.status.conditions[?(@.type=="PodScheduled")].reason}|{.status.conditions[?(@.type=="PodScheduled")].message}`)
		if err != nil {
			return false, err
		}
		f := strings.SplitN(out, "|", 3)
		if len(f) < 3 {
			return false, nil
		}
		if f[0] != "" && f[0] != "Pending" {
			return false, stopError{fmt.Errorf("%s is %s, want Pending", name, f[0])}
		}
		msg = f[2]
		return f[1] == "Unschedulable", nil
	})
	if err != nil {
		return "", fmt.Errorf("%v; %s", err, podReport(name))
	}
	return msg, nil
}

// --- the plugin's configuration and slices ----------------------------------------------------------

// publishedDevices maps each device in the driver's ResourceSlices to its group: by path, a bundle as
// "bundle:<group>".
func publishedDevices() (map[string]string, error) {
	sl, err := getJSON("get", "resourceslices", "--field-selector", "spec.driver="+driver)
	if err != nil {
		return nil, err
	}
	pub := map[string]string{}
	for _, it := range list(path(sl, "items")) {
		for _, d := range list(path(it, "spec", "devices")) {
			g := str(path(d, "attributes", "group", "string"))
			p := str(path(d, "attributes", "path", "string"))
			if p == "" {
				p = "bundle:" + g
			}
			pub[p] = g
		}
	}
	return pub, nil
}

func anyIn(pub map[string]string, paths []string) bool {
	for _, p := range paths {
		if _, ok := pub[p]; ok {
			return true
		}
	}
	return false
}

// waitPublished polls the slices until cond holds. With poke, it also pokes the plugin pod every 10 s, for a
// configuration change the kubelet has not written into the pod yet.
func waitPublished(timeout time.Duration, what string, poke bool, cond func(pub map[string]string) bool) (map[string]string, error) {
	var pub map[string]string
	lastPoke := time.Now()
	err := poll(timeout, what, func() (bool, error) {
		if poke && time.Since(lastPoke) > 10*time.Second {
			lastPoke = time.Now()
			if err := pokePlugin(); err != nil {
				return false, err
			}
		}
		var err error
		pub, err = publishedDevices()
		return err == nil && cond(pub), err
	})
	if err != nil {
		return pub, fmt.Errorf("%v; published: %s", err, describe(pub))
	}
	return pub, nil
}

// describe lists published devices as "path (group)", sorted.
func describe(pub map[string]string) string {
	var l []string
	for p, g := range pub {
		l = append(l, p+" ("+g+")")
	}
	sort.Strings(l)
	return strings.Join(l, ", ")
}

// pluginConfig is the DiscoveryConfig in the plugin's ConfigMap.
func pluginConfig() (string, error) {
	return kubectl("-n", pluginNS, "get", "configmap", pluginConfigMap, "-o", `jsonpath={.data.config\.yaml}`)
}

// withGroup appends a group to a DiscoveryConfig.
func withGroup(cfg string, group obj) (string, error) {
	var m map[string]any
	if err := yaml.Unmarshal([]byte(cfg), &m); err != nil {
		return "", fmt.Errorf("the plugin's configuration: %v", err)
	}
	groups, _ := m["groups"].([]any)
	m["groups"] = append(groups, group)
	b, err := yaml.Marshal(m)
	return string(b), err
}

// setPluginConfig puts cfg into the plugin's ConfigMap and has the kubelet write it into the pod now: the
// kubelet rewrites a pod's ConfigMap volumes whenever it syncs the pod, which an update of the pod triggers,
// instead of at its periodic sync a minute or more later. The plugin reloads the file when it changes.
func setPluginConfig(cfg string) error {
	b, err := json.Marshal(obj{"data": obj{"config.yaml": cfg}})
	if err != nil {
		return err
	}
	if _, err := kubectl("-n", pluginNS, "patch", "configmap", pluginConfigMap, "--type=merge", "-p", string(b)); err != nil {
		return err
	}
	return pokePlugin()
}

func pokePlugin() error {
	_, err := kubectl("-n", pluginNS, "annotate", "pods", "-l", pluginSel, "--overwrite",
		fmt.Sprintf("e2e.power-dev-plugin.io/config-sync=%d", time.Now().UnixNano()))
	return err
}

// restorePluginConfig puts the overlay's configuration back and waits until the slices hold no device of the
// scenario's group pv.
func restorePluginConfig(base string) error {
	if err := setPluginConfig(base); err != nil {
		return fmt.Errorf("restore the plugin's configuration: %v", err)
	}
	_, err := waitPublished(120*time.Second, "no device of group "+pvGroup+" (the overlay's configuration back)", true,
		func(pub map[string]string) bool {
			for _, g := range pub {
				if g == pvGroup {
					return false
				}
			}
			return true
		})
	return err
}

// discoverInPlugin runs `power-dev-plugin discover -o json` in the plugin's pod with the configuration file
// config (a path in the pod).
func discoverInPlugin(config string) (*discoverReport, error) {
	pods, err := pluginPods()
	if err != nil {
		return nil, err
	}
	if len(pods) != 1 {
		return nil, fmt.Errorf("want one plugin pod, have %v", pods)
	}
	out, err := kubectl("-n", pluginNS, "exec", pods[0], "-c", "plugin", "--", "/usr/bin/power-dev-plugin", "discover",
		"--host-root", "/host", "--config", config, "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("discover in the plugin pod: %v", err)
	}
	var rep discoverReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		return nil, fmt.Errorf("discover -o json: %v: %s", err, lastLines(out, 5))
	}
	return &rep, nil
}
