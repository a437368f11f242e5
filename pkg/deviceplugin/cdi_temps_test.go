package deviceplugin

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/atomicfile"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/atomicfile/fsfault"
)

// At start the legacy mode removes the temp files its own interrupted
// writes of the spec left, and nothing else: not the CDI library's
// spec.<digits>.tmp (any writer's), not the DRA mode's temp files (it may
// be writing right now), not other vendors' specs.
func TestCDITempFilesAtStart(t *testing.T) {
	cdiDir := filepath.Join(shortDir(t), "cdi")
	if err := os.MkdirAll(cdiDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ours := ".power-dev-plugin.io-device.json.123.tmp"
	others := map[string]string{
		"spec.7.tmp":        `{"cdiVersion":"0.5.0","kind":"power-dev-plugin.io/device"}`,
		"other-vendor.json": `{"cdiVersion":"0.5.0","kind":"other.com/gpu","devices":[{"name":"0","containerEdits":{"env":["A=1"]}}]}`,
		".power-dev-plugin.io-claim_uid-x.json.1.tmp": "",
	}
	for name, content := range others {
		if err := os.WriteFile(filepath.Join(cdiDir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(cdiDir, ours), []byte(`{"cdiVersion":"0.5.0","kind":"power-dev-plugin.io/dev`), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, WithCDIDir(cdiDir))
	e.src.send(t, threeGroups())
	waitIDs(t, e.plugin(t, "power-dev-plugin/dev"), "sdb", "sdc")
	eventually(t, 5*time.Second, "the spec is written", func() bool {
		_, err := os.Stat(filepath.Join(cdiDir, CDISpecFile))
		return err == nil
	})
	if _, err := os.Stat(filepath.Join(cdiDir, ours)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("own temp file left: %v", err)
	}
	for name, content := range others {
		if got, err := os.ReadFile(filepath.Join(cdiDir, name)); err != nil || string(got) != content {
			t.Errorf("%s changed or removed: %v", name, err)
		}
	}
	entries, _ := os.ReadDir(cdiDir)
	for _, en := range entries {
		if atomicfile.IsTemp(en.Name()) && strings.HasPrefix(en.Name(), ".power-dev-plugin.io-device") {
			t.Errorf("temp file left by the write: %s", en.Name())
		}
	}
}

// A full CDI directory (a real size-limited tmpfs): the error says so and
// what to do, the spec as it was stays, no temp file stays.
func TestCDIWriteFull(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cdi")
	fsfault.Tmpfs(t, dir, 64<<10)
	w, err := newCDIWriter(dir)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := BuildCDISpec(BuildDeviceSets(threeGroups(), nil))
	if err != nil {
		t.Fatal(err)
	}
	fsfault.Fill(t, dir)
	_, _, err = w.write(spec)
	want := "write CDI spec " + w.path() + ": "
	if !errors.Is(err, unix.ENOSPC) || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), "The filesystem of "+dir+" is full (ENOSPC): free space on it") {
		t.Errorf("err = %v", err)
	}
	entries, _ := os.ReadDir(dir)
	for _, en := range entries {
		if en.Name() != "filler" {
			t.Errorf("left: %s", en.Name())
		}
	}
}
