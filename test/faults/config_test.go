//go:build faults

package faults

import (
	"fmt"
	"maps"
	"os"
	"strings"
	"time"
)

const configUnusable = "The configuration file cannot be used"

// configFault breaks the configuration file under a running plugin (kind: garbage, empty, deleted,
// unreadable — mode 000 stops the plugin, which runs as root without capabilities like the shipped pod, but not
// a root with CAP_DAC_OVERRIDE). The plugin must say so in its log, keep publishing what the last good
// configuration gave, and keep preparing with it; started with the broken file it must refuse to run (exit 2,
// naming the file) and touch nothing. Then the file is put back.
func (s *suite) configFault(kind string) {
	s.runs(1)
	held := s.newClaims("cfg-held", []*loopDev{s.devs[0], s.devs[4]})
	s.mustPrepare(held, "before the fault")
	before, err := s.slices()
	if err != nil {
		s.abortf("list slices: %v", err)
	}
	p := s.plugin
	seen := strings.Count(s.logOf(p), configUnusable)
	orig, err := os.ReadFile(s.config)
	if err != nil {
		s.abortf("%v", err)
	}
	restore := func() {
		_ = os.WriteFile(s.config, orig, 0o644)
		_ = os.Chmod(s.config, 0o644)
	}
	defer restore()
	switch kind {
	case "garbage":
		err = os.WriteFile(s.config, []byte("groups: [{name: \"excl\", include: [\"/dev/loop23[0-3]\"\n\x00\x01\xfe garbage }}}"), 0o644)
	case "empty":
		err = os.WriteFile(s.config, nil, 0o644)
	case "deleted":
		err = os.Remove(s.config)
	case "unreadable":
		err = os.Chmod(s.config, 0)
	}
	if err != nil {
		s.abortf("break the config file: %v", err)
	}
	if err := poll(15*time.Second, func() (bool, error) { return strings.Count(s.logOf(p), configUnusable) > seen, nil }); err != nil {
		s.count(kError, "", "%s config: the plugin did not log %q within 15 s", kind, configUnusable)
	}
	time.Sleep(2500 * time.Millisecond) // another rescan
	after, err := s.slices()
	if err != nil {
		s.count(kError, "", "list slices: %v", err)
	} else if !maps.Equal(before, after) {
		s.count(kError, "", "%s config: the published devices changed from %v to %v", kind, before, after)
	}
	s.verify(kind + " config")
	fresh := s.newClaims("cfg-new", []*loopDev{s.devs[1], s.devs[5]})
	s.mustPrepare(fresh, kind+" config: a new claim")
	s.mustUnprepare(fresh, kind+" config: a new claim")
	s.verify(kind + " config, after a new claim came and went")

	// A start with the broken file is refused and changes nothing.
	s.plugin.stop()
	p = s.start(startOpts{why: "start with a " + kind + " config file", exitOK: true})
	if !p.waitExit(15 * time.Second) {
		s.count(kError, "", "%s config: the plugin started with it (still running after 15 s)", kind)
		p.kill()
	} else if out := s.logOf(p); p.exit != "exit status 2" || !strings.Contains(out, s.config) {
		s.count(kError, "", "%s config: the plugin ended with %q, want exit status 2 and a message naming %s:\n%s", kind, p.exit, s.config, indent(s.logTail(p, 5)))
	} else {
		fmt.Printf("faults:   %s config at start: %s: %s\n", kind, p.exit, strings.TrimSpace(s.logTail(p, 1)))
	}
	s.verify(kind + " config, after the refused start")
	restore()
	s.restart("config file restored")
	s.verify(kind + " config restored")
}
