//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// 19. While its pod runs, a claim's status.devices holds this driver's entry saying which host device the pod got
// (path, identity, size), and the container has the device metadata file with the same data (issue #12).
func claimStatusAndMetadata(t *testing.T) error {
	if err := apply(claimTemplate("status-disk", "block.power-dev-plugin.io", inDisks, "", nil)); err != nil {
		return err
	}
	const file = "/var/run/kubernetes.io/dra-device-attributes/resourceclaimtemplates/c0/dev/" + driver + "-metadata.json"
	script := listBlock + `echo "device=$devs"; if [ -r ` + file + ` ]; then echo "metadata=$(tr -d '\n' < ` + file + `)"; else echo "metadata=none"; ls -R /var/run/kubernetes.io 2>&1; fi; sleep 600`
	if err := apply(pod("status", podOpts{templates: []string{"status-disk"}, script: script})); err != nil {
		return err
	}
	defer func() {
		_, _ = kubectl("-n", ns, "delete", "pod", "status", "--wait=true", "--timeout=60s", "--grace-period=1")
	}()
	if _, err := waitPhase("status", 120*time.Second, "Running"); err != nil {
		return err
	}
	var out string
	if err := poll(30*time.Second, "the pod's device and metadata lines", func() (bool, error) {
		var err error
		out, err = logs("status")
		return strings.Contains(out, "metadata="), err
	}); err != nil {
		return err
	}
	m := regexp.MustCompile(`(?m)^device=(\S+)$`).FindStringSubmatch(out)
	if m == nil || !contains(disks, m[1]) {
		return fmt.Errorf("pod log has no device of the group disks: %s", lastLines(out, 6))
	}
	dev := m[1]

	p, err := getJSON("-n", ns, "get", "pod", "status")
	if err != nil {
		return err
	}
	claim := str(path(p, "status", "resourceClaimStatuses", 0, "resourceClaimName"))
	if claim == "" {
		return fmt.Errorf("pod status has no claim: %s", podReport("status"))
	}
	var data map[string]any
	if err := poll(60*time.Second, "the status.devices entry of "+driver+" on claim "+claim, func() (bool, error) {
		c, err := getJSON("-n", ns, "get", "resourceclaim", claim)
		if err != nil {
			return false, err
		}
		for _, d := range list(path(c, "status", "devices")) {
			if str(path(d, "driver")) == driver {
				data, _ = path(d, "data").(map[string]any)
				return data != nil, nil
			}
		}
		return false, nil
	}); err != nil {
		return err
	}
	if str(path(data, "kind")) != "DeviceStatus" || str(path(data, "nodes", 0, "path")) != dev ||
		str(path(data, "nodes", 0, "identity")) == "" || path(data, "sizeBytes") == nil {
		return fmt.Errorf("claim %s status data %v, want kind DeviceStatus, node path %s, an identity and a size", claim, data, dev)
	}
	t.Logf("claim %s: %v", claim, data)

	mm := regexp.MustCompile(`(?m)^metadata=(.*)$`).FindStringSubmatch(out)
	if mm == nil || mm[1] == "none" {
		return fmt.Errorf("no metadata file at %s in the container: %s", file, lastLines(out, 10))
	}
	// The file is a JSON stream; the first object is the newest version.
	var md map[string]any
	if err := json.NewDecoder(strings.NewReader(mm[1])).Decode(&md); err != nil {
		return fmt.Errorf("metadata file %s: %v: %s", file, err, mm[1])
	}
	status := str(path(md, "requests", 0, "devices", 0, "attributes", "status", "string"))
	if !strings.Contains(status, `"path":"`+dev+`"`) {
		return fmt.Errorf("metadata file %s has no status attribute naming %s: %s", file, dev, mm[1])
	}
	return nil
}
