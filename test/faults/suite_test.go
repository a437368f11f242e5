//go:build faults

// Package faults drives the real plugin binary through its DRA socket the way the kubelet does, against the
// e2e cluster's API server, while faults are injected: kill -9 at timed moments, at the plugin's fault points
// (its faultinject build) and at its file opens (fanotify); the API server stopped; the CDI and data
// directories full and read-only; the configuration file broken; devices removed; racing callers; claims
// replaced; and the legacy device-plugin mode against a test kubelet. Per fault it counts prepares lost or
// changed, devices in two claims, files leaked, plugin deaths and calls that failed when they should not have,
// prints a table, and fails unless every count is 0. test/faults/run.sh (make test-faults) sets it up.
package faults

import (
	"fmt"
	"math/rand"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getuid() != 0 {
		fmt.Fprintln(os.Stderr, "faults: needs root (loop devices, mounts, fanotify): run test/faults/run.sh (make test-faults)")
		os.Exit(2)
	}
	if os.Getenv("KUBECONFIG") == "" || os.Getenv("FAULTS_BIN") == "" {
		fmt.Fprintln(os.Stderr, "faults: KUBECONFIG and FAULTS_BIN are not set: run test/faults/run.sh (make test-faults)")
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// fault is one row of the result table.
type fault struct {
	name string
	runs int
	// The counts that must all be 0.
	lost, changed, doubled, leaked, deaths, errors int
	notes                                          []string
	seen                                           map[string]bool
	dur                                            time.Duration
}

// count kinds
const (
	kLost    = "lost"
	kChanged = "changed"
	kDoubled = "doubled"
	kLeaked  = "leaked"
	kDeath   = "death"
	kError   = "error"
)

// count records one problem of kind in the current fault; key makes the same problem seen again (say a leaked
// file found by every later check) count once.
func (s *suite) count(kind, key, format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.cur
	if f == nil {
		return
	}
	if key != "" {
		if f.seen[kind+" "+key] {
			return
		}
		f.seen[kind+" "+key] = true
	}
	switch kind {
	case kLost:
		f.lost++
	case kChanged:
		f.changed++
	case kDoubled:
		f.doubled++
	case kLeaked:
		f.leaked++
	case kDeath:
		f.deaths++
	default:
		f.errors++
	}
	msg := kind + ": " + fmt.Sprintf(format, args...)
	f.notes = append(f.notes, msg)
	fmt.Printf("faults:   %s: %s\n", f.name, msg)
}

// abort ends the current fault early: something the fault needs could not be done.
type abort struct{ msg string }

func (s *suite) abortf(format string, args ...any) {
	panic(abort{fmt.Sprintf(format, args...)})
}

// run runs one fault as a row of the table, then puts the node back as it was (finish).
func (s *suite) run(name string, fn func()) {
	if only := os.Getenv("FAULTS_ONLY"); only != "" && !regexp.MustCompile(only).MatchString(name) {
		return
	}
	f := &fault{name: name, seen: map[string]bool{}}
	s.mu.Lock()
	s.cur = f
	s.faults = append(s.faults, f)
	s.mu.Unlock()
	fmt.Printf("faults: == %s\n", name)
	t0 := time.Now()
	func() {
		defer func() {
			if r := recover(); r != nil {
				if a, ok := r.(abort); ok {
					s.count(kError, "", "aborted: %s", a.msg)
					return
				}
				s.count(kError, "", "panic: %v", r)
				s.t.Logf("panic in %s: %v", name, r)
			}
		}()
		s.ensureRunning("before the fault")
		fn()
	}()
	func() {
		defer func() {
			if r := recover(); r != nil {
				s.count(kError, "", "cleanup: %v", r)
			}
		}()
		s.finish()
	}()
	f.dur = time.Since(t0)
	fmt.Printf("faults: == %s: %d runs, %s\n", name, f.runs, f.dur.Round(100*time.Millisecond))
}

func (s *suite) runs(n int) {
	s.mu.Lock()
	s.cur.runs += n
	s.mu.Unlock()
}

// table prints the results; it returns false when any count is not 0.
func (s *suite) table(total time.Duration) bool {
	ok := true
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-58s %5s %5s %7s %7s %6s %6s %6s %7s  %s\n", "fault", "runs", "lost", "changed", "doubled", "leaked", "deaths", "errors", "time", "result")
	for _, f := range s.faults {
		res := "ok"
		if f.lost+f.changed+f.doubled+f.leaked+f.deaths+f.errors > 0 {
			res, ok = "FAIL", false
		}
		fmt.Fprintf(&b, "%-58s %5d %5d %7d %7d %6d %6d %6d %6.1fs  %s\n", f.name, f.runs, f.lost, f.changed, f.doubled,
			f.leaked, f.deaths, f.errors, f.dur.Seconds(), res)
	}
	fmt.Fprintf(&b, "seed %d (FAULTS_SEED=%d reproduces the seeded choices), %d faults in %s; %d Prepare answers checked, %d with a device metadata file\n",
		s.seed, s.seed, len(s.faults), total.Round(time.Second), s.answers, s.metaAnswers)
	var details []string
	for _, f := range s.faults {
		for _, n := range f.notes {
			details = append(details, fmt.Sprintf("  %s: %s", f.name, n))
		}
	}
	if len(details) > 0 {
		b.WriteString("\nWhat failed:\n")
		b.WriteString(strings.Join(details, "\n"))
		b.WriteString("\n")
	}
	fmt.Print(b.String())
	_ = os.WriteFile(s.outPath("results.txt"), []byte(b.String()), 0o644)
	return ok
}

func TestFaults(t *testing.T) {
	t0 := time.Now()
	seed := time.Now().UnixNano() % 1000000
	if v := os.Getenv("FAULTS_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("FAULTS_SEED=%q: %v", v, err)
		}
		seed = n
	}
	fmt.Printf("faults: seed %d\n", seed)
	s := newSuite(t, seed, rand.New(rand.NewSource(seed)))

	// Every fault below starts and ends with the plugin running, nothing prepared and the directories empty.
	s.run("kill -9 during 1-claim prepare (timed, seeded)", func() { s.killTimed(1, true, 10) })
	s.run("kill -9 during 1-claim unprepare (timed, seeded)", func() { s.killTimed(1, false, 10) })
	s.run("kill -9 during 100-claim prepare (timed, seeded)", func() { s.killTimed(100, true, 6) })
	s.run("kill -9 during 100-claim unprepare (timed, seeded)", func() { s.killTimed(100, false, 6) })
	s.run("kill -9 at fault points (faultinject build)", s.killFailpoints)
	s.run("kill -9 at CDI spec writes (fanotify, on open)", s.killAtSpecWrite)
	s.run("kill -9 at checkpoint writes and lock (fanotify)", s.killAtCheckpointWrite)
	s.run("other CDI writers' files left alone (kill -9, restarts)", s.foreignFiles)
	s.run("API server stopped 50 s (> kubelet timeout), restarted", s.apiServerDown)
	s.run("CDI directory full (tmpfs)", func() { s.dirFault(s.cdi, "full") })
	s.run("CDI directory read-only", func() { s.dirFault(s.cdi, "ro") })
	s.run("plugin data directory full (tmpfs)", func() { s.dirFault(s.data, "full") })
	s.run("plugin data directory read-only", func() { s.dirFault(s.data, "ro") })
	s.run("config file replaced by garbage", func() { s.configFault("garbage") })
	s.run("config file emptied", func() { s.configFault("empty") })
	s.run("config file deleted", func() { s.configFault("deleted") })
	s.run("config file unreadable (mode 000)", func() { s.configFault("unreadable") })
	s.run("device removed and re-added while prepared", s.deviceRemoved)
	s.run("24 callers prepare one exclusive device at once", s.racingCallers)
	s.run("claim deleted and recreated under the same name", s.claimReplaced)
	s.run("legacy: kubelet socket gone and back", s.legacyKubeletRestart)
	s.run("legacy: Allocate during rescans", s.legacyAllocateDuringRescan)

	if !s.table(time.Since(t0)) {
		t.Fail()
	}
}
