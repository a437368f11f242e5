// Package soak measures what a process that runs for years must not pile up
// (open files, goroutines, resident and heap memory) before and after a
// soak, and says whether it stayed flat. The soak benchmarks
// (`make bench-soak`, docs/benchmarks.md) use it; it is test code only.
package soak

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// EnvVar turns the soak benchmarks on. They are skipped otherwise, so that
// `go test ./...` (make test) stays fast while they are still compiled and vetted.
const EnvVar = "PDP_SOAK"

// Require skips t unless the soak benchmarks were asked for.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvVar) == "" {
		t.Skipf("soak benchmark: run it with `make bench-soak` (or %s=1 go test -run Soak)", EnvVar)
	}
}

// Sample is what the process holds at one moment.
type Sample struct {
	FDs        int    // entries in /proc/self/fd
	Goroutines int    // runtime.NumGoroutine
	VmRSS      uint64 // bytes resident, including the binary's file-backed pages
	RssAnon    uint64 // bytes resident that are anonymous: heap, stacks
	HeapInuse  uint64 // runtime.MemStats.HeapInuse: spans in use, after a GC
	HeapLive   uint64 // runtime.MemStats.HeapAlloc: bytes of objects, right after a GC the live ones
}

// Tolerance is how much a Sample may grow over a soak.
type Tolerance struct {
	FDs        int
	Goroutines int
	RSS        uint64 // bytes, for VmRSS and for RssAnon
	// Heap is for the live heap: it counts bytes of objects, where heap
	// in use counts 8 KiB spans and hides a small leak.
	Heap uint64
}

func (t Tolerance) String() string {
	return fmt.Sprintf("open files +%d, goroutines +%d, VmRSS and RssAnon +%s, live heap +%d KiB",
		t.FDs, t.Goroutines, MiB(t.RSS), t.Heap>>10)
}

// Read samples the process without collecting garbage first.
func Read() (Sample, error) {
	s := Sample{Goroutines: runtime.NumGoroutine()}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return s, fmt.Errorf("count open files: %w", err)
	}
	// ReadDir's own descriptor is listed too while it reads.
	s.FDs = len(fds) - 1
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return s, fmt.Errorf("read memory figures: %w", err)
	}
	if s.VmRSS, err = statusKB(status, "VmRSS"); err != nil {
		return s, err
	}
	if s.RssAnon, err = statusKB(status, "RssAnon"); err != nil {
		return s, err
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.HeapInuse = ms.HeapInuse
	s.HeapLive = ms.HeapAlloc
	return s, nil
}

// statusKB reads a "Name:   123 kB" line of /proc/<pid>/status, in bytes.
func statusKB(status []byte, name string) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || key != name {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc/self/status: unexpected %s line %q", name, sc.Text())
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/self/status: %s: %w", name, err)
		}
		return n * 1024, nil
	}
	return 0, fmt.Errorf("/proc/self/status has no %s line", name)
}

// Settled collects garbage and returns freed memory to the kernel, then
// samples: what remains is what the process still holds.
func Settled() (Sample, error) {
	runtime.GC()
	runtime.GC() // the first one may leave finalizer-freed objects behind
	debug.FreeOSMemory()
	return Read()
}

// Baseline waits settle, collects garbage and samples: the figures a soak
// is compared with.
func Baseline(settle time.Duration) (Sample, error) {
	time.Sleep(settle)
	return Settled()
}

// After samples until the figures are back within tol of before, or wait
// has passed: goroutines and connections of the last calls take a moment
// to end. It returns the last sample and, if it is still over, why.
func After(before Sample, tol Tolerance, wait time.Duration) (Sample, error) {
	deadline := time.Now().Add(wait)
	for {
		after, err := Settled()
		if err != nil {
			return after, err
		}
		err = Check(before, after, tol)
		if err == nil || time.Now().After(deadline) {
			return after, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Check says which figures grew by more than tol from before to after.
func Check(before, after Sample, tol Tolerance) error {
	var errs []error
	if d := after.FDs - before.FDs; d > tol.FDs {
		errs = append(errs, fmt.Errorf("open files grew by %d (%d -> %d), more than the %d allowed: a file, socket or pipe is not closed",
			d, before.FDs, after.FDs, tol.FDs))
	}
	if d := after.Goroutines - before.Goroutines; d > tol.Goroutines {
		errs = append(errs, fmt.Errorf("goroutines grew by %d (%d -> %d), more than the %d allowed: a goroutine does not end",
			d, before.Goroutines, after.Goroutines, tol.Goroutines))
	}
	mem := func(what string, b, a, limit uint64) {
		if a > b && a-b > limit {
			errs = append(errs, fmt.Errorf("%s grew by %s (%s -> %s), more than the %s allowed: memory is kept",
				what, MiB(a-b), MiB(b), MiB(a), MiB(limit)))
		}
	}
	mem("VmRSS", before.VmRSS, after.VmRSS, tol.RSS)
	mem("RssAnon", before.RssAnon, after.RssAnon, tol.RSS)
	if a, b := after.HeapLive, before.HeapLive; a > b && a-b > tol.Heap {
		errs = append(errs, fmt.Errorf("the live heap grew by %d KiB (%d KiB -> %d KiB), more than the %d KiB allowed: memory is kept",
			(a-b)>>10, b>>10, a>>10, tol.Heap>>10))
	}
	return errors.Join(errs...)
}

// MiB formats bytes as MiB with one decimal.
func MiB(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Table is a Markdown table of the figures before and after, for the log
// and for docs/benchmarks.md.
func Table(before, after Sample) string {
	var b strings.Builder
	b.WriteString("| | before | after | change |\n|---|---|---|---|\n")
	row := func(name string, x, y int) {
		fmt.Fprintf(&b, "| %s | %d | %d | %+d |\n", name, x, y, y-x)
	}
	mem := func(name string, x, y uint64) {
		fmt.Fprintf(&b, "| %s | %s | %s | %+.1f MiB |\n", name, MiB(x), MiB(y), (float64(y)-float64(x))/(1<<20))
	}
	row("open files (/proc/self/fd)", before.FDs, after.FDs)
	row("goroutines", before.Goroutines, after.Goroutines)
	mem("VmRSS", before.VmRSS, after.VmRSS)
	mem("RssAnon", before.RssAnon, after.RssAnon)
	mem("heap in use (after GC)", before.HeapInuse, after.HeapInuse)
	fmt.Fprintf(&b, "| live heap (after GC) | %d KiB | %d KiB | %+d KiB |\n", before.HeapLive>>10, after.HeapLive>>10, (int64(after.HeapLive)-int64(before.HeapLive))/1024)
	return b.String()
}

// String is a one-line summary, for progress lines.
func (s Sample) String() string {
	return fmt.Sprintf("fds=%d goroutines=%d VmRSS=%s RssAnon=%s heap in use=%s live heap=%d KiB",
		s.FDs, s.Goroutines, MiB(s.VmRSS), MiB(s.RssAnon), MiB(s.HeapInuse), s.HeapLive>>10)
}
