package discovery_test

import (
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

func TestOpenBlockDeviceChecksNumbersAndExclusivity(t *testing.T) {
	dev, _ := discoverytest.LoopDevice(t, 1<<20)
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		t.Fatal(err)
	}
	maj, min := unix.Major(st.Rdev), unix.Minor(st.Rdev)

	f, err := discovery.OpenBlockDevice("/", dev, maj, min, true)
	if err != nil {
		t.Fatalf("exclusive open of an unused loop device: %v", err)
	}
	// While we hold it exclusively, a second exclusive open is refused by the kernel.
	_, err = discovery.OpenBlockDevice("/", dev, maj, min, true)
	if !discovery.IsBusy(err) {
		t.Errorf("second exclusive open: got %v, want EBUSY", err)
	}
	// A plain open still works: O_EXCL only excludes exclusive holders.
	g, err := discovery.OpenBlockDevice("/", dev, maj, min, false)
	if err != nil {
		t.Errorf("shared open while held exclusively: %v", err)
	} else {
		g.Close()
	}
	f.Close()

	_, err = discovery.OpenBlockDevice("/", dev, maj, min+1, false)
	if err == nil || !strings.Contains(err.Error(), "renumbered") {
		t.Errorf("open with other numbers: got %v, want a renumbered error", err)
	}
	_, err = discovery.OpenBlockDevice("/", "/dev/null", 1, 3, false)
	if err == nil || !strings.Contains(err.Error(), "no longer a block device") {
		t.Errorf("open of a char device: got %v", err)
	}
	if _, err := os.Stat(dev); err != nil {
		t.Fatal(err)
	}
}
