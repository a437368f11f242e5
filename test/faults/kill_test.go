//go:build faults

package faults

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/driver"
)

// callAsync starts the kubelet's call in the background.
func (s *suite) callAsync(prepare bool, set []*claim) <-chan result {
	ch := make(chan result, 1)
	go func() {
		if prepare {
			ch <- s.prepare(set)
		} else {
			ch <- s.unprepare(set)
		}
	}()
	return ch
}

// afterKill is what follows a kill -9 of the plugin during a call: the call ends, the DaemonSet starts the
// plugin again (Reconcile runs), the files must hold every claim the kubelet holds as prepared and nothing
// else, and the kubelet's retry of the call must succeed with the same answers.
// It returns how many claims of set the restarted plugin holds as prepared: where the kill landed.
func (s *suite) afterKill(label string, set []*claim, prepare bool, call <-chan result) int {
	<-call
	s.restart("after kill -9 " + label)
	s.verifyStarted("after kill -9 " + label + " and restart")
	held := 0
	if cp, _, err := driver.LoadCheckpoint(filepath.Join(s.data, driver.CheckpointFileName)); err == nil {
		for _, c := range set {
			if cp.Claims[c.uid] != nil {
				held++
			}
		}
	}
	if prepare {
		s.mustPrepare(set, "retry after kill -9 "+label)
	} else {
		s.mustUnprepare(set, "retry after kill -9 "+label)
	}
	s.verify("after the retry of the call killed " + label)
	s.runs(1)
	return held
}

func opName(prepare bool) string {
	if prepare {
		return "prepare"
	}
	return "unprepare"
}

// killTimed kills the plugin (release binary) with SIGKILL at a seeded random moment of a Prepare or Unprepare
// of size claims, runs times. The moment is drawn from the call's duration, measured first: up to 1.3 of it (a
// kill just after the answer counts too), for a 100-claim Prepare from the end of most of its GETs of the claims
// to 1.15 of it, so that most kills land in its disk work.
func (s *suite) killTimed(size int, prepare bool, runs int) {
	s.ensureRunning("before the kills")
	var sets [][]*claim
	if size == 1 {
		sets = [][]*claim{s.newClaims("kill1x", s.pick(1, 1)), s.newClaims("kill1s", s.pick(1, 0))}
	} else {
		sets = [][]*claim{s.newClaims("kill100", s.pick(size, 4))}
	}
	// The call's duration, without a kill; a Prepare first GETs the claims from the API server (what a
	// repeated Prepare of prepared claims mostly does), and the kills are spread over the rest and a little
	// before and after.
	var took, gets time.Duration
	for _, set := range sets {
		t0 := time.Now()
		s.mustPrepare(set, "calibration")
		if prepare {
			took = max(took, time.Since(t0))
			t0 = time.Now()
			s.mustPrepare(set, "calibration")
			gets = max(gets, time.Since(t0))
		}
		t0 = time.Now()
		s.mustUnprepare(set, "calibration")
		if !prepare {
			took = max(took, time.Since(t0))
		}
	}
	from, to := time.Duration(0), took*13/10
	if size > 1 && prepare && gets < took {
		from, to = gets*8/10, took*115/100
	}
	fmt.Printf("faults:   a %d-claim %s takes %s (the GETs of a repeated one %s); kills between %s and %s\n", size, opName(prepare),
		took.Round(10*time.Microsecond), gets.Round(10*time.Microsecond), from.Round(10*time.Microsecond), to.Round(10*time.Microsecond))
	var landed []string
	for i := 0; i < runs; i++ {
		set := sets[i%len(sets)]
		if !prepare {
			s.mustPrepare(set, "before the unprepare to kill")
		}
		delay := from + time.Duration(s.rng.Float64()*float64(to-from))
		call := s.callAsync(prepare, set)
		time.Sleep(delay)
		s.plugin.kill()
		label := fmt.Sprintf("%s into a %d-claim %s (run %d)", delay.Round(10*time.Microsecond), size, opName(prepare), i+1)
		held := s.afterKill(label, set, prepare, call)
		landed = append(landed, fmt.Sprintf("%.0f%%:%d", 100*float64(delay)/float64(took), held))
		if prepare {
			s.mustUnprepare(set, "after the run")
		}
	}
	fmt.Printf("faults:   kill moment (%% of the call) : claims recorded as prepared after the restart: %s\n", strings.Join(landed, " "))
}

// killFailpoints kills the plugin at the fault points of the State (Prepare after a spec file, before the
// checkpoint; Unprepare before and after the checkpoint; inside the writes of spec files and the checkpoint and
// the removal of spec files; Restore after rewriting spec files), which a timer cannot hit,
// with the faultinject build of the plugin (POWER_DEV_PLUGIN_FAILPOINTS). First it checks that the release
// binary ignores that variable.
func (s *suite) killFailpoints() {
	one := s.newClaims("fp1", s.pick(1, 1))
	many := s.newClaims("fp100", s.pick(100, 4))

	// The release binary has no fault points: the variable changes nothing.
	s.plugin.stop()
	s.plugin = s.start(startOpts{why: "release binary with the failpoint variable set",
		env: []string{"POWER_DEV_PLUGIN_FAILPOINTS=prepare:after-spec=kill@1,unprepare:after-checkpoint=kill@1"}})
	if err := s.waitReady(s.plugin, 30*time.Second); err != nil {
		s.abortf("%v", err)
	}
	s.mustPrepare(one, "release binary with POWER_DEV_PLUGIN_FAILPOINTS")
	s.mustUnprepare(one, "release binary with POWER_DEV_PLUGIN_FAILPOINTS")
	if !s.plugin.alive() {
		s.count(kError, "", "the release binary acted on POWER_DEV_PLUGIN_FAILPOINTS")
	}
	s.runs(1)

	type run struct {
		set     []*claim
		prepare bool
		point   string
		nth     int
	}
	runs := []run{
		{one, true, "prepare:after-spec", 1},
		{many, true, "prepare:after-spec", 1 + s.rng.Intn(100)},
		{many, true, "prepare:after-spec", 1 + s.rng.Intn(100)},
		{one, true, "prepare:before-checkpoint", 1},
		{many, true, "prepare:before-checkpoint", 1},
		{one, false, "unprepare:after-checkpoint", 1},
		{many, false, "unprepare:after-checkpoint", 1},
		// inside the writes (pkg/atomicfile): the temporary file created (empty), and written but not renamed
		{many, true, "cdi:temp-created", 1 + s.rng.Intn(100)},
		{many, true, "cdi:temp-written", 1 + s.rng.Intn(100)},
		{one, true, "checkpoint:temp-created", 1},
		{many, false, "checkpoint:temp-written", 1},
		{one, false, "unprepare:before-checkpoint", 1},
		// an Unprepare removes two names per claim (.json, .yaml)
		{many, false, "cdi:remove", 1 + s.rng.Intn(200)},
	}
	for _, r := range runs {
		label := fmt.Sprintf("at %s=kill@%d in a %d-claim %s", r.point, r.nth, len(r.set), opName(r.prepare))
		if !r.prepare {
			s.mustPrepare(r.set, "before "+label)
		}
		s.plugin.stop()
		s.plugin = s.start(startOpts{why: label, failpoints: fmt.Sprintf("%s=kill@%d", r.point, r.nth), exitOK: true})
		if err := s.waitReady(s.plugin, 30*time.Second); err != nil {
			s.abortf("%v", err)
		}
		call := s.callAsync(r.prepare, r.set)
		s.expectFailpoint(label)
		s.afterKill(label, r.set, r.prepare, call)
		if r.prepare {
			s.mustUnprepare(r.set, "after "+label)
		}
	}

	// At start, Restore (after the first inventory) writes the spec files of prepared claims that are gone (a
	// reboot empties /var/run); killed right after, the next start must still have every claim.
	set := many[:10]
	s.mustPrepare(set, "before the restore kill")
	s.plugin.stop()
	for _, c := range set {
		_ = os.Remove(filepath.Join(s.cdi, specName(c)))
	}
	s.plugin = s.start(startOpts{why: "restore:after-rewrite=kill@1", failpoints: "restore:after-rewrite=kill@1", exitOK: true})
	s.expectFailpoint("restore:after-rewrite=kill@1 at start, after the spec files were removed")
	s.restart("after kill -9 in Restore")
	s.waitRestored(set, "after kill -9 in Restore at start")
	s.verifyStarted("after kill -9 in Restore at start")
	s.mustPrepare(set, "the kubelet's Prepare after the restart")
	s.verify("after kill -9 in Restore and the kubelet's Prepare")
	s.runs(1)
}

// expectFailpoint waits for the faultinject plugin to kill itself at its failpoint.
func (s *suite) expectFailpoint(label string) {
	p := s.plugin
	if !p.waitExit(20 * time.Second) {
		s.count(kError, "", "%s: the failpoint was not reached in 20 s; killing the plugin", label)
		p.kill()
		return
	}
	if !strings.Contains(s.logOf(p), "FAILPOINT ") {
		s.count(kError, "", "%s: the plugin ended (%s) without reaching its failpoint:\n%s", label, p.exit, indent(s.logTail(p, 8)))
	}
}

func specName(c *claim) string { return driver.CDISpecName(c.uid) }

// waitRestored waits for the plugin's Restore, which runs after the first inventory, to write the spec files of
// set again; after 20 s verify counts what is missing.
func (s *suite) waitRestored(set []*claim, label string) {
	if err := s.waitReady(s.plugin, 30*time.Second); err != nil {
		s.abortf("%s: %v", label, err)
	}
	_ = poll(20*time.Second, func() (bool, error) {
		for _, c := range set {
			if _, err := os.Stat(filepath.Join(s.cdi, specName(c))); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
}

// killAtSpecWrite kills the plugin when it creates the temporary file of a spec (today the CDI library's
// spec.<digits>.tmp; any new file in the CDI directory counts, whatever its name: the moment between creating
// and renaming it), in a 1-claim and 100-claim Prepare, and in Restore at start (which writes
// the specs a reboot removed once the devices are found).
func (s *suite) killAtSpecWrite() {
	one := s.newClaims("open1", s.pick(1, 1))
	many := s.newClaims("open100", s.pick(100, 4))
	// A Prepare writes its claims' specs, then the helper writes each claim's metadata CDI spec: new files
	// 1..100 of a 100-claim Prepare are the driver's, 101..200 the helper's.
	runs := []struct {
		set []*claim
		nth int
	}{{one, 1}, {many, 1 + s.rng.Intn(100)}, {many, 1 + s.rng.Intn(100)}, {one, 2}, {many, 101 + s.rng.Intn(100)}}
	s.mustPrepare(one, "does the plugin write device metadata files?")
	s.mustUnprepare(one, "does the plugin write device metadata files?")
	if !s.metadataOn() {
		runs = runs[:3]
	}
	for _, r := range runs {
		s.killOnOpenDuring(s.cdi, "*", true, r.nth, r.set, true, fmt.Sprintf("at CDI spec write %d of a %d-claim prepare", r.nth, len(r.set)))
		s.mustUnprepare(r.set, "after the run")
	}

	// Restore at start, writing removed spec files again.
	set := many[:10]
	s.mustPrepare(set, "before the restore kill")
	s.plugin.stop()
	for _, c := range set {
		_ = os.Remove(filepath.Join(s.cdi, specName(c)))
	}
	nth := 1 + s.rng.Intn(len(set))
	k, err := killOnOpen(s.cdi, "*", nth, true)
	if err != nil {
		s.abortf("%v", err)
	}
	s.plugin = s.start(startOpts{why: "Restore, killed at a spec write", exitOK: true})
	select {
	case <-k.fired:
	case <-time.After(20 * time.Second):
		s.count(kError, "", "Restore at start did not write spec file %d in 20 s", nth)
	}
	k.close()
	s.plugin.kill()
	s.restart("after kill -9 at a spec write in Restore")
	s.waitRestored(set, "after kill -9 at a spec write in Restore")
	s.verifyStarted(fmt.Sprintf("after kill -9 at spec write %d of Restore at start", nth))
	s.mustPrepare(set, "the kubelet's Prepare after the restart")
	s.verify("after kill -9 in Restore's spec writes and the kubelet's Prepare")
	s.runs(1)
}

// killAtCheckpointWrite kills the plugin when it creates the checkpoint's temporary file (any new file in the
// data directory), opens the checkpoint to read it, or opens its lock file (the first thing a call does on disk,
// after the claims' GETs).
func (s *suite) killAtCheckpointWrite() {
	one := s.newClaims("cp1", s.pick(1, 1))
	many := s.newClaims("cp100", s.pick(100, 4))
	runs := []struct {
		set     []*claim
		prepare bool
		pattern string
		onlyNew bool
	}{
		{one, true, "*", true}, // the checkpoint's temporary file, the first file a call creates there
		{many, true, "*", true},
		{many, false, "*", true},
		{one, false, "*", true},
		{one, true, "*", true}, // (nth 2 below) the helper's metadata file, the next one
		{many, true, "*", true},
		{many, true, "state.lock", false},
		{one, false, driver.CheckpointFileName, false},
	}
	s.mustPrepare(one, "does the plugin write device metadata files?")
	s.mustUnprepare(one, "does the plugin write device metadata files?")
	for i, r := range runs {
		if (i == 4 || i == 5) && !s.metadataOn() {
			continue
		}
		if !r.prepare {
			s.mustPrepare(r.set, "before the run")
		}
		what, nth := "the checkpoint's temporary file (new file 1)", 1
		if !r.onlyNew {
			what = r.pattern
		}
		if i == 4 || i == 5 {
			// new files in a Prepare: the checkpoint's, then per claim the helper's metadata file
			nth = 2 + s.rng.Intn(len(r.set))
			what = fmt.Sprintf("a device metadata file (new file %d)", nth)
		}
		s.killOnOpenDuring(s.data, r.pattern, r.onlyNew, nth, r.set, r.prepare, fmt.Sprintf("at the open of %s in a %d-claim %s", what, len(r.set), opName(r.prepare)))
		if r.prepare {
			s.mustUnprepare(r.set, "after the run")
		}
	}
}

// killOnOpenDuring makes the call with an openKill armed, which must fire.
func (s *suite) killOnOpenDuring(dir, pattern string, onlyNew bool, nth int, set []*claim, prepare bool, label string) {
	s.ensureRunning("before " + label)
	// After the first inventory the plugin restores prepared claims (its lock, the checkpoint, maybe specs):
	// the open to kill at must be the call's.
	if err := s.waitReady(s.plugin, 30*time.Second); err != nil {
		s.abortf("%v", err)
	}
	k, err := killOnOpen(dir, pattern, nth, onlyNew)
	if err != nil {
		s.abortf("%v", err)
	}
	s.plugin.expected.Store(true)
	call := s.callAsync(prepare, set)
	select {
	case name := <-k.fired:
		fmt.Printf("faults:   killed %s: at the open of %s\n", label, strings.TrimPrefix(name, s.dir+"/"))
	case <-time.After(kubeletTimeout):
		s.count(kError, "", "%s: the plugin never opened (created: %v) %s number %d; killing it", label, onlyNew, pattern, nth)
	}
	k.close()
	s.plugin.kill()
	s.afterKill(label, set, prepare, call)
}

// foreignFiles puts other CDI writers' files into the CDI directory: another vendor's spec, a temporary file of
// another writer that uses the CDI library (holding its spec), and an empty one (a write of its in progress). The
// plugin, killed and started again and preparing and unpreparing meanwhile, must leave all three as they are:
// it cannot tell the library's temporary files of other writers from its own, so it must not touch any.
func (s *suite) foreignFiles() {
	s.runs(1)
	files := map[string]string{
		"vendor.example-gpu.json": `{"cdiVersion":"0.6.0","kind":"vendor.example/gpu","devices":[{"name":"0","containerEdits":{"deviceNodes":[{"path":"/dev/null"}]}}]}`,
		"spec.1234567890.tmp":     `{"cdiVersion":"0.6.0","kind":"vendor.example/gpu","devices":[{"name":"1","containerEdits":{"deviceNodes":[{"path":"/dev/zero"}]}}]}`,
		"spec.2345678901.tmp":     "",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(s.cdi, name), []byte(content), 0o644); err != nil {
			s.abortf("%v", err)
		}
		s.foreign[name] = true
	}
	defer func() {
		for name := range files {
			_ = os.Remove(filepath.Join(s.cdi, name))
			delete(s.foreign, name)
		}
	}()
	set := s.newClaims("foreign", s.pick(10, 2))
	s.plugin.kill()
	s.restart("with other writers' files in the CDI directory")
	s.mustPrepare(set, "with other writers' files")
	call := s.callAsync(false, set)
	time.Sleep(time.Millisecond)
	s.plugin.kill()
	s.afterKill("during an Unprepare, with other writers' files", set, false, call)
	s.plugin.stop()
	s.restart("again, with other writers' files")
	for name, content := range files {
		b, err := os.ReadFile(filepath.Join(s.cdi, name))
		if err != nil || string(b) != content {
			s.count(kError, "", "another writer's file %s was removed or changed (%v)", name, err)
		}
	}
}

// metadataOn says whether the plugin writes device metadata files (--device-metadata; FAULTS_METADATA=1 turns
// it on): some Prepare answered so far named one. Without them the kills at their writes are skipped.
func (s *suite) metadataOn() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	on := s.metaAnswers > 0
	if !on && !s.toldMetadata {
		s.toldMetadata = true
		fmt.Printf("faults:   no Prepare answer named a device metadata file (--device-metadata off): the kills at its writes are skipped\n")
	}
	return on
}
