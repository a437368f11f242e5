//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// 17. A rolling update from the current release with a claim prepared. The DaemonSet is rolled to the release's
// image (run.sh builds it from E2E_RELEASE_COMMIT; this first roll is a downgrade of a plugin with no claim), a
// claim pod started under the release; then the DaemonSet is rolled to the image under test, with claim pods
// started one after another while it rolls (scenario 10's machinery). The holder keeps running, its CDI spec
// stays all along, the new plugin keeps the claim in its checkpoint (it reads what the release wrote), no
// prepare fails, deleting the holder removes its CDI spec and checkpoint entry, and a new claim pod runs.
func rollingUpdateFromRelease(t *testing.T) (err error) {
	if out, err := ctr("images", "ls", "-q"); err != nil {
		return err
	} else if !contains(strings.Fields(out), releaseImage) {
		return fmt.Errorf("the release image %s is not in containerd: run.sh builds it from commit %s and imports it (see _output/e2e/release-image.log)",
			releaseImage, releaseCommit)
	}
	cur, err := pluginImage()
	if err != nil {
		return err
	}
	target := cur // the image under test, under either of its tags
	if cur == releaseImage {
		target = strings.TrimSuffix(image2, "-2") // an earlier run stopped half way
	}
	defer func() {
		// a failure half way leaves the release running: put the image under test back
		if img, _ := pluginImage(); err != nil && img == releaseImage {
			if _, rerr := rollPlugin(t, target, "", nil); rerr != nil {
				fmt.Printf("e2e: cleanup after 17: roll back to %s: %v\n", target, rerr)
			}
		}
	}()
	if _, err := rollPlugin(t, releaseImage, "", nil); err != nil {
		return fmt.Errorf("roll to the release image %s: %v", releaseImage, err)
	}
	if img, err := kubectl("-n", pluginNS, "get", "pods", "-l", pluginSel, "-o", "jsonpath={.items[*].spec.containers[0].image}"); err != nil {
		return err
	} else if img != releaseImage {
		return fmt.Errorf("the plugin pod runs %q, want the release image %s", img, releaseImage)
	}
	if err := apply(claimTemplate("disk", "block.power-dev-plugin.io", inDisks, "", nil)); err != nil {
		return err
	}
	if err := apply(pod("holder", podOpts{templates: []string{"disk"}, script: holdScript})); err != nil {
		return err
	}
	if _, err := waitPhase("holder", 120*time.Second, "Running"); err != nil {
		return fmt.Errorf("a claim pod under the release: %v", err)
	}
	uids, err := claimUIDs("holder")
	if err != nil {
		return err
	}
	uid := uids[0]
	kept := func() error {
		if _, err := os.Stat(cdiSpecPath(uid)); err != nil {
			return fmt.Errorf("the holder's CDI spec: %v", err)
		}
		if has, err := checkpointHas(uid); err != nil || !has {
			return fmt.Errorf("the holder's claim %s is not in the checkpoint %s (%v)", uid, checkpointPath, err)
		}
		out, err := kubectl("-n", ns, "get", "pod", "holder", "-o", "jsonpath={.status.phase} {.status.containerStatuses[0].restartCount}")
		if err != nil {
			return err
		}
		if out != "Running 0" {
			return fmt.Errorf("holder is %q, want Running 0; %s", out, podReport("holder"))
		}
		return nil
	}
	if err := kept(); err != nil {
		return fmt.Errorf("under the release: %v", err)
	}
	pods, err := rollPlugin(t, target, "disk", kept)
	if err != nil {
		return fmt.Errorf("roll from the release to %s: %v", target, err)
	}
	if err := kept(); err != nil {
		return fmt.Errorf("after the roll from the release to %s: %v", target, err)
	}
	if bad, err := failedPrepareEvents(append(pods, "holder")); err != nil {
		return err
	} else if bad != "" {
		return fmt.Errorf("failed prepare during the roll from the release: %s", bad)
	}
	if _, err := kubectl("-n", ns, "delete", "pod", "holder", "--wait=true", "--timeout=60s"); err != nil {
		return err
	}
	if err := waitCDIGone(uids); err != nil {
		return err
	}
	if err := poll(30*time.Second, "the holder's claim to leave the checkpoint", func() (bool, error) {
		has, err := checkpointHas(uid)
		return !has, err
	}); err != nil {
		return err
	}
	if _, err := runPod("after-release", podOpts{templates: []string{"disk"}, script: listBlock + `[ -n "$devs" ] && echo "OK: $devs"`}); err != nil {
		return fmt.Errorf("a new claim pod after the roll from the release: %v", err)
	}
	return nil
}
