//go:build e2e

// Package e2e holds the cluster tests of power-dev-plugin: scenarios run against the real single-node cluster
// of test/e2e/cluster with the driver installed from test/e2e/overlay and the devices of test/e2e/devices.sh.
// test/e2e/run.sh (make e2e) prepares all of that and then runs this package's test binary; the tests only
// talk to the cluster through kubectl and look at the node's files (they run on the node, as root).
//
// Every scenario prints one line "e2e: <name>: ok" or "e2e: <name>: FAIL <reason>", and the run ends with
// "N passed, M failed".
package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	ns        = "e2e"
	driver    = "power-dev-plugin.io"
	pluginNS  = "power-dev-plugin"
	pluginSel = "app.kubernetes.io/name=power-dev-plugin"
	cdiDir    = "/var/run/cdi"
)

var (
	busybox  = envOr("E2E_BUSYBOX_IMAGE", "docker.io/library/busybox:e2e")
	e2eState = envOr("E2E_STATE", "/var/lib/power-dev-plugin-e2e")
	// the second image tag for the rolling update (run.sh tags the imported image)
	image2 = envOr("E2E_IMAGE2", "ghcr.io/power-dev-plugin/power-dev-plugin:e2e-2")
	// the current release's image for scenario 17 (run.sh builds it from E2E_RELEASE_COMMIT)
	releaseImage  = envOr("E2E_RELEASE_IMAGE", "ghcr.io/power-dev-plugin/power-dev-plugin:e2e-release")
	releaseCommit = envOr("E2E_RELEASE_COMMIT", "the current release")

	resultsMu sync.Mutex
	results   []string
	passed    int
	failed    int
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	if os.Getenv("KUBECONFIG") == "" {
		fmt.Fprintln(os.Stderr, "e2e: KUBECONFIG is not set: run through test/e2e/run.sh (make e2e)")
		os.Exit(2)
	}
	code := m.Run()
	resultsMu.Lock()
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	resultsMu.Unlock()
	if failed > 0 && code == 0 {
		code = 1
	}
	os.Exit(code)
}

// scenario runs fn as the subtest name and records and prints its result line.
func scenario(t *testing.T, name string, fn func(t *testing.T) error) {
	t.Helper()
	var err error
	start := time.Now()
	t.Run(name, func(t *testing.T) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		err = fn(t)
		if err != nil {
			t.Error(err)
		}
	})
	line := fmt.Sprintf("e2e: %s: ok", name)
	resultsMu.Lock()
	if err != nil {
		line = fmt.Sprintf("e2e: %s: FAIL %s", name, oneLine(err.Error()))
		failed++
	} else {
		passed++
	}
	results = append(results, line)
	resultsMu.Unlock()
	fmt.Println(line)
	t.Logf("%s took %.1fs", name, time.Since(start).Seconds())
	// each scenario leaves the namespace empty for the next one, whatever happened
	if cerr := cleanNamespace(); cerr != nil {
		fmt.Printf("e2e: cleanup after %s: %v\n", name, cerr)
	}
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 600 {
		s = s[:600] + "..."
	}
	return s
}

// --- kubectl ---------------------------------------------------------------------------------------

// kubectl runs kubectl with args (stdin when not empty) and returns stdout; the error carries stderr.
func kubectlIn(stdin string, args ...string) (string, error) {
	cmd := exec.Command("kubectl", args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func kubectl(args ...string) (string, error) { return kubectlIn("", args...) }

// apply applies objects given as Go values (marshalled to JSON, one kubectl call each).
func apply(objs ...any) error {
	for _, o := range objs {
		b, err := json.Marshal(o)
		if err != nil {
			return err
		}
		if _, err := kubectlIn(string(b), "apply", "-f", "-"); err != nil {
			return err
		}
	}
	return nil
}

// getJSON reads one object (or list) into a generic map.
func getJSON(args ...string) (map[string]any, error) {
	out, err := kubectl(append(args, "-o", "json")...)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		return nil, fmt.Errorf("decode %s: %v", strings.Join(args, " "), err)
	}
	return m, nil
}

// path walks nested maps and lists: path(m, "status", "phase"), path(m, "items", 0, "metadata").
func path(v any, keys ...any) any {
	for _, k := range keys {
		switch k := k.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

// stopError ends a poll at once.
type stopError struct{ error }

// poll calls cond once a second until it returns true or an error, or timeout passes.
func poll(timeout time.Duration, what string, cond func() (bool, error)) error {
	return pollEvery(time.Second, timeout, what, cond)
}

// pollEvery is poll with another interval (for timing).
func pollEvery(interval, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ok, err := cond()
		if err == nil && ok {
			return nil
		}
		var stop stopError
		if errors.As(err, &stop) {
			return stop.error
		}
		if err != nil {
			lastErr = err
		}
		if time.Now().After(deadline) {
			if lastErr != nil {
				return fmt.Errorf("timed out after %s waiting for %s (last error: %v)", timeout, what, lastErr)
			}
			return fmt.Errorf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(interval)
	}
}

// --- objects ---------------------------------------------------------------------------------------

type obj = map[string]any

// claimTemplate is a ResourceClaimTemplate with one request "dev" of class, narrowed by cel (if not empty),
// with allocationMode mode ("" = ExactCount 1) and the DeviceConfig parameters params (nil = none).
func claimTemplate(name, class, cel, mode string, params obj) obj {
	exactly := obj{"deviceClassName": class}
	if cel != "" {
		exactly["selectors"] = []any{obj{"cel": obj{"expression": cel}}}
	}
	if mode != "" {
		exactly["allocationMode"] = mode
	}
	devices := obj{"requests": []any{obj{"name": "dev", "exactly": exactly}}}
	if params != nil {
		p := obj{"apiVersion": "power-dev-plugin.io/v1alpha1", "kind": "DeviceConfig"}
		for k, v := range params {
			p[k] = v
		}
		devices["config"] = []any{obj{"requests": []any{"dev"}, "opaque": obj{"driver": driver, "parameters": p}}}
	}
	return obj{
		"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
		"metadata": obj{"name": name, "namespace": ns},
		"spec":     obj{"spec": obj{"devices": devices}},
	}
}

// podOpts shape a test pod: hostNetwork, restartPolicy Never, busybox, every capability dropped.
type podOpts struct {
	templates []string // one claim per template, named c0, c1, ...
	uid, gid  *int64   // runAsUser / runAsGroup
	limits    obj      // container resources.limits
	script    string
}

func i64(v int64) *int64 { return &v }

func pod(name string, o podOpts) obj {
	var claims, refs []any
	for i, t := range o.templates {
		n := fmt.Sprintf("c%d", i)
		claims = append(claims, obj{"name": n, "resourceClaimTemplateName": t})
		refs = append(refs, obj{"name": n})
	}
	sc := obj{"allowPrivilegeEscalation": false, "capabilities": obj{"drop": []any{"ALL"}}, "privileged": false}
	if o.uid != nil {
		sc["runAsUser"] = *o.uid
		sc["runAsNonRoot"] = *o.uid != 0
	}
	if o.gid != nil {
		sc["runAsGroup"] = *o.gid
	}
	res := obj{}
	if refs != nil {
		res["claims"] = refs
	}
	if o.limits != nil {
		res["limits"] = o.limits
	}
	spec := obj{
		"hostNetwork":                   true,
		"restartPolicy":                 "Never",
		"terminationGracePeriodSeconds": 1,
		"containers": []any{obj{
			"name": "c", "image": busybox, "imagePullPolicy": "Never",
			"command":         []any{"sh", "-c", o.script},
			"securityContext": sc,
			"resources":       res,
		}},
	}
	if claims != nil {
		spec["resourceClaims"] = claims
	}
	return obj{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": obj{"name": name, "namespace": ns, "labels": obj{"e2e": "yes"}},
		"spec":     spec,
	}
}

// listBlock is a shell snippet that sets $devs to the container's block devices, sorted.
const listBlock = `devs=$(find /dev -type b | sort | tr '\n' ' '); devs=${devs% }; echo "block devices: $devs"; `

// phase returns the pod's phase.
func phase(name string) (string, error) {
	return kubectl("-n", ns, "get", "pod", name, "-o", "jsonpath={.status.phase}")
}

// waitPhase waits until the pod reaches one of phases; a terminal phase that was not asked for fails early.
func waitPhase(name string, timeout time.Duration, phases ...string) (string, error) {
	var got string
	err := poll(timeout, "pod "+name+" to be "+strings.Join(phases, "/"), func() (bool, error) {
		p, err := phase(name)
		if err != nil {
			return false, err
		}
		got = p
		for _, want := range phases {
			if p == want {
				return true, nil
			}
		}
		if p == "Succeeded" || p == "Failed" {
			return false, stopError{fmt.Errorf("pod %s ended %s", name, p)}
		}
		return false, nil
	})
	if err != nil {
		return got, fmt.Errorf("%v; %s", err, podReport(name))
	}
	return got, nil
}

// runPod creates the pod, waits for it to succeed and returns its log.
func runPod(name string, o podOpts) (string, error) {
	if err := apply(pod(name, o)); err != nil {
		return "", err
	}
	if _, err := waitPhase(name, 120*time.Second, "Succeeded"); err != nil {
		return "", err
	}
	return logs(name)
}

func logs(name string) (string, error) { return kubectl("-n", ns, "logs", name) }

// podReport sums up why a pod is where it is: phase, log tail, conditions and events.
func podReport(name string) string {
	var b strings.Builder
	p, _ := phase(name)
	fmt.Fprintf(&b, "pod %s phase %q", name, p)
	if l, err := logs(name); err == nil && l != "" {
		fmt.Fprintf(&b, "; log: %s", lastLines(l, 6))
	}
	if c, err := kubectl("-n", ns, "get", "pod", name, "-o",
		`jsonpath={range .status.conditions[?(@.status=="False")]}{.type}={.reason}: {.message}; {end}`); err == nil && c != "" {
		fmt.Fprintf(&b, "; conditions: %s", c)
	}
	if e := podEvents(name); e != "" {
		fmt.Fprintf(&b, "; events: %s", e)
	}
	return b.String()
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, " | ")
}

// podEvents lists the pod's events as "Reason: message; ...".
func podEvents(name string) string {
	out, err := kubectl("-n", ns, "get", "events", "--field-selector", "involvedObject.name="+name,
		"-o", `jsonpath={range .items[*]}{.reason}: {.message}; {end}`)
	if err != nil {
		return ""
	}
	return out
}

// claimUIDs returns the UIDs of the ResourceClaims a pod holds.
func claimUIDs(name string) ([]string, error) {
	p, err := getJSON("-n", ns, "get", "pod", name)
	if err != nil {
		return nil, err
	}
	var uids []string
	for _, s := range list(path(p, "status", "resourceClaimStatuses")) {
		cn := str(path(s, "resourceClaimName"))
		if cn == "" {
			continue
		}
		uid, err := kubectl("-n", ns, "get", "resourceclaim", cn, "-o", "jsonpath={.metadata.uid}")
		if err != nil {
			return nil, err
		}
		uids = append(uids, uid)
	}
	if len(uids) == 0 {
		return nil, fmt.Errorf("pod %s has no resource claim in its status", name)
	}
	return uids, nil
}

func cdiSpecPath(uid string) string { return cdiDir + "/" + driver + "-claim_" + uid + ".json" }

// waitCDIGone waits until no CDI spec of the claims is left on the node.
func waitCDIGone(uids []string) error {
	return poll(60*time.Second, "CDI specs of claims "+strings.Join(uids, ",")+" to be removed", func() (bool, error) {
		for _, u := range uids {
			if _, err := os.Stat(cdiSpecPath(u)); err == nil {
				return false, nil
			}
		}
		return true, nil
	})
}

// cleanNamespace deletes every pod, claim and template of the test namespace and waits for the claims to go
// (a claim is deallocated and unprepared before it is deleted), so the next scenario finds every device free.
func cleanNamespace() error {
	if _, err := kubectl("-n", ns, "delete", "pods", "--all", "--wait=true", "--timeout=90s", "--grace-period=1"); err != nil {
		return err
	}
	if _, err := kubectl("-n", ns, "delete", "resourceclaims,resourceclaimtemplates", "--all", "--wait=true", "--timeout=90s"); err != nil {
		return err
	}
	return poll(90*time.Second, "the namespace's claims to be gone", func() (bool, error) {
		out, err := kubectl("-n", ns, "get", "resourceclaims", "-o", "name")
		return err == nil && strings.TrimSpace(out) == "", err
	})
}

// pluginPods lists the names of the plugin's pods.
func pluginPods() ([]string, error) {
	out, err := kubectl("-n", pluginNS, "get", "pods", "-l", pluginSel, "-o", "jsonpath={.items[*].metadata.name}")
	if err != nil {
		return nil, err
	}
	return strings.Fields(out), nil
}

// failedPrepareEvents returns the events about failed claim preparation of the pods named.
func failedPrepareEvents(pods []string) (string, error) {
	out, err := kubectl("-n", ns, "get", "events", "-o",
		`jsonpath={range .items[*]}{.reason} {.involvedObject.name}: {.message}{"\n"}{end}`)
	if err != nil {
		return "", err
	}
	var bad []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || !contains(pods, strings.TrimSuffix(f[1], ":")) {
			continue
		}
		if strings.HasPrefix(l, "FailedPrepareDynamicResources") || strings.Contains(l, "PrepareResources failed") {
			bad = append(bad, l)
		}
	}
	return strings.Join(bad, "; "), nil
}
