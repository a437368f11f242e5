//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// 16. Back-to-back pods on one exclusive device (loop242, by path). The next pod is created while the previous
// one holds the device, and waits (Unschedulable); the previous one ends (exit 0) and is deleted at once; the
// next one must be Running within 60 s of that end. The scenario prints the time from the previous pod's end
// (its phase Succeeded, polled every 100 ms) to the next one Running, and from its deletion.
//
// E2E_REUSE_RUNS=N makes the chain N hand-overs long and prints min, median and max: the benchmark of
// docs/benchmarks.md, e.g. E2E_ONLY='^16-' E2E_REUSE_RUNS=20 make e2e.
func exclusiveReuse(t *testing.T) error {
	runs := 1
	if v := os.Getenv("E2E_REUSE_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("E2E_REUSE_RUNS=%q: want a number of hand-overs, at least 1", v)
		}
		runs = n
	}
	const bound = 60 * time.Second
	if err := apply(claimTemplate("pin-r", "block.power-dev-plugin.io", byPath(pinnedDev), "", nil)); err != nil {
		return err
	}
	script := listBlock + `[ "$devs" = "` + pinnedDev + `" ] || { echo "FAIL: got '$devs', want ` + pinnedDev + `"; exit 1; }
echo "device=$devs"; while [ ! -e /tmp/end ]; do sleep 0.1; done; echo ended`
	name := func(i int) string { return fmt.Sprintf("reuse-%d", i) }
	start := func(n string) error {
		if err := apply(pod(n, podOpts{templates: []string{"pin-r"}, script: script})); err != nil {
			return err
		}
		return nil
	}
	hasDevice := func(n string) error {
		if err := poll(30*time.Second, n+" to see "+pinnedDev, func() (bool, error) {
			l, err := logs(n)
			if strings.Contains(l, "FAIL") {
				return false, stopError{fmt.Errorf("%s: %s", n, lastLines(l, 2))}
			}
			return strings.Contains(l, "device="+pinnedDev), err
		}); err != nil {
			return fmt.Errorf("%v; %s", err, podReport(n))
		}
		return nil
	}
	if err := start(name(0)); err != nil {
		return err
	}
	if _, err := waitPhase(name(0), 120*time.Second, "Running"); err != nil {
		return err
	}
	if err := hasDevice(name(0)); err != nil {
		return err
	}
	var times []float64
	for i := 0; i < runs; i++ {
		cur, next := name(i), name(i+1)
		if err := start(next); err != nil {
			return err
		}
		if _, err := waitUnschedulable(next, 60*time.Second); err != nil {
			return fmt.Errorf("%s should wait for %s while %s holds it: %v", next, pinnedDev, cur, err)
		}
		if _, err := kubectl("-n", ns, "exec", cur, "--", "touch", "/tmp/end"); err != nil {
			return err
		}
		if err := pollEvery(100*time.Millisecond, 30*time.Second, cur+" to end", func() (bool, error) {
			p, err := phase(cur)
			return p == "Succeeded", err
		}); err != nil {
			return fmt.Errorf("%v; %s", err, podReport(cur))
		}
		ended := time.Now()
		if _, err := kubectl("-n", ns, "delete", "pod", cur, "--wait=false"); err != nil {
			return err
		}
		deleted := time.Now()
		if err := pollEvery(100*time.Millisecond, bound, next+" to run", func() (bool, error) {
			p, err := phase(next)
			if p == "Succeeded" || p == "Failed" {
				return false, stopError{fmt.Errorf("%s ended %s", next, p)}
			}
			return p == "Running", err
		}); err != nil {
			return fmt.Errorf("%s is not Running %s after %s ended, which held the same exclusive device %s: %v; %s",
				next, bound, cur, pinnedDev, err, podReport(next))
		}
		d := time.Since(ended).Seconds()
		times = append(times, d)
		fmt.Printf("e2e: measure: exclusive reuse %d/%d: %s Running %.1fs after %s ended (%.1fs after its deletion)\n",
			i+1, runs, next, d, cur, time.Since(deleted).Seconds())
		if bad, err := failedPrepareEvents([]string{next}); err == nil && bad != "" {
			fmt.Printf("e2e: measure: exclusive reuse %d/%d: %s\n", i+1, runs, oneLine(bad))
		}
		if err := hasDevice(next); err != nil {
			return err
		}
	}
	if runs > 1 {
		sort.Float64s(times)
		med := times[len(times)/2]
		if len(times)%2 == 0 {
			med = (times[len(times)/2-1] + times[len(times)/2]) / 2
		}
		var all []string
		for _, x := range times {
			all = append(all, fmt.Sprintf("%.1f", x))
		}
		fmt.Printf("e2e: measure: exclusive reuse, %d hand-overs: min %.1fs, median %.1fs, max %.1fs (sorted: %s)\n",
			runs, times[0], med, times[len(times)-1], strings.Join(all, " "))
	}
	return nil
}
