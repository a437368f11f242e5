package soak

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The check the soak benchmarks rely on must fail on a leak: leak files,
// goroutines and memory on purpose, then give them back.
func TestCheckCatchesLeaks(t *testing.T) {
	tol := Tolerance{FDs: 2, Goroutines: 2, RSS: 16 << 20, Heap: 8 << 20}
	before, err := Baseline(0)
	if err != nil {
		t.Fatal(err)
	}
	if before.FDs < 3 || before.Goroutines < 1 || before.VmRSS == 0 || before.RssAnon == 0 || before.HeapInuse == 0 {
		t.Fatalf("implausible sample %v", before)
	}

	var files []*os.File
	for range 10 {
		f, err := os.Open("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	stop := make(chan struct{})
	done := make(chan struct{}, 10)
	for range 10 {
		go func() { <-stop; done <- struct{}{} }()
	}
	held := make([]byte, 64<<20)
	for i := 0; i < len(held); i += 4096 {
		held[i] = 1 // resident only once touched
	}

	leaked, err := After(before, tol, 0)
	runtime.KeepAlive(held) // and no longer live after this
	if err == nil {
		t.Fatalf("no leak found:\n%s", Table(before, leaked))
	}
	for _, want := range []string{"open files grew by 10", "goroutines grew by 10", "VmRSS grew", "RssAnon grew", "live heap grew"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the report does not say %q:\n%v", want, err)
		}
	}

	for _, f := range files {
		f.Close()
	}
	close(stop)
	for range 10 {
		<-done
	}
	if raceEnabled {
		tol.RSS = 1 << 40 // the race detector keeps the shadow of the freed memory
	}
	if after, err := After(before, tol, 5*time.Second); err != nil {
		t.Errorf("after giving everything back: %v\n%s", err, Table(before, after))
	}
}

func TestStatusKB(t *testing.T) {
	status := []byte("Name:\tx\nVmRSS:\t   41236 kB\nRssAnon:\t    7000 kB\n")
	if n, err := statusKB(status, "VmRSS"); err != nil || n != 41236*1024 {
		t.Errorf("VmRSS: %d, %v", n, err)
	}
	if _, err := statusKB(status, "RssFile"); err == nil {
		t.Error("a missing line is no error")
	}
	if _, err := statusKB([]byte("VmRSS: 12 MB\n"), "VmRSS"); err == nil {
		t.Error("a line in another unit is no error")
	}
}
