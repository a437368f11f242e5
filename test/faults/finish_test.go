//go:build faults

package faults

import (
	"os"
	"path/filepath"

	"k8s.io/apimachinery/pkg/types"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/driver"
)

// finish ends a fault: every claim the kubelet may hold is unprepared, the plugin is restarted (SIGTERM, then
// start: Reconcile runs) and nothing may be left. Whatever is left anyway is counted, then wiped, so that the
// next fault starts clean; the claims are deleted.
func (s *suite) finish() {
	s.ensureRunning("after the fault")
	var todo []*claim
	s.mu.Lock()
	for _, c := range s.claims {
		if c.state != stNone {
			todo = append(todo, c)
		}
	}
	s.mu.Unlock()
	if len(todo) > 0 {
		s.mustUnprepare(todo, "cleanup after the fault")
	}
	s.restart("graceful restart after the fault")
	s.verifyStarted("after the fault, everything unprepared and the plugin restarted")

	cp, _, err := driver.LoadCheckpoint(filepath.Join(s.data, driver.CheckpointFileName))
	dirty := err != nil || len(cp.Claims) > 0
	for _, dir := range []string{s.cdi, s.reg} {
		if entries, _ := os.ReadDir(dir); len(entries) > 0 && dir == s.cdi {
			dirty = true
		}
	}
	if entries, _ := os.ReadDir(s.data); len(entries) > 0 {
		for _, e := range entries {
			if !dataAllowed[e.Name()] || e.Name() == fillerName {
				dirty = true
			}
		}
	}
	if dirty {
		s.plugin.stop()
		for _, dir := range []string{s.cdi, s.data, s.reg} {
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				_ = os.RemoveAll(filepath.Join(dir, e.Name()))
			}
		}
		s.restart("clean start after wiping what the fault left")
	}
	var all []*claim
	s.mu.Lock()
	for _, c := range s.claims {
		all = append(all, c)
	}
	s.claims = map[types.UID]*claim{}
	s.mu.Unlock()
	s.deleteClaims(all)
}
