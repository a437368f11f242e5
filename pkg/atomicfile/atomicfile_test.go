package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"tags.cncf.io/container-device-interface/pkg/cdi"
	cdispec "tags.cncf.io/container-device-interface/specs-go"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/atomicfile/fsfault"
)

const specName = "power-dev-plugin.io-claim_uid-foo.json"

// Files that other writers put in a CDI directory. The CDI library names
// the temp files of every writer spec.<digits>.tmp.
var others = map[string]string{
	"spec.123.tmp":       `{"cdiVersion":"0.5.0","kind":"power-dev-plugin.io/claim"}`,
	"spec.456.tmp":       "",
	"other-vendor.json":  `{"cdiVersion":"0.5.0","kind":"other.com/gpu","devices":[{"name":"0","containerEdits":{"env":["A=1"]}}]}`,
	"power-dev-plugin.x": "not a temp file",
}

func writeOthers(t *testing.T, dir string) {
	t.Helper()
	for name, content := range others {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func checkOthers(t *testing.T, dir string) {
	t.Helper()
	for name, content := range others {
		if got, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(got) != content {
			t.Errorf("another writer's %s was changed or removed: %v", name, err)
		}
	}
}

// names lists dir, without the other writers' files.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if _, ok := others[e.Name()]; !ok {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func spec(device string) *cdispec.Spec {
	return &cdispec.Spec{Version: "0.5.0", Kind: "power-dev-plugin.io/claim", Devices: []cdispec.Device{{
		Name: device, ContainerEdits: cdispec.ContainerEdits{DeviceNodes: []*cdispec.DeviceNode{{Path: "/dev/null", Type: "c", Major: 1, Minor: 3}}},
	}}}
}

type crash struct{}

// crashAt runs fn and stops it at the fault point as a kill -9 would: the
// panic unwinds, no error path runs.
func crashAt(t *testing.T, point string, fn func(hook func(string) error)) {
	t.Helper()
	reached := false
	func() {
		defer func() {
			if r := recover(); r != nil {
				if _, ok := r.(crash); !ok {
					panic(r)
				}
				reached = true
			}
		}()
		fn(func(p string) error {
			if p == point {
				panic(crash{})
			}
			return nil
		})
	}()
	if !reached {
		t.Fatalf("never reached %s", point)
	}
}

func TestWriteCDISpec(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, specName)
	written, prev, err := WriteCDISpec(path, spec("a"), nil)
	if err != nil || !written || prev != nil {
		t.Fatalf("first write: %v %q %v", written, prev, err)
	}
	first, _ := os.ReadFile(path)
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	if written, prev, err = WriteCDISpec(path, spec("a"), nil); err != nil || written || string(prev) != string(first) {
		t.Errorf("same spec again: %v %q %v", written, prev, err)
	}
	if written, prev, err = WriteCDISpec(path, spec("b"), nil); err != nil || !written || string(prev) != string(first) {
		t.Errorf("new spec: %v %q %v", written, prev, err)
	}
	// The CDI library reads it as the runtime does.
	c, err := cdi.NewCache(cdi.WithSpecDirs(dir), cdi.WithAutoRefresh(false))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ListDevices(); len(got) != 1 || got[0] != "power-dev-plugin.io/claim=b" {
		t.Errorf("devices %q, errors %v", got, c.GetErrors())
	}
	if got := names(t, dir); len(got) != 1 {
		t.Errorf("left in the directory: %q", got)
	}
}

// A spec the CDI library refuses never replaces the file: the library's
// validation runs on the temp file, before the rename.
func TestWriteCDISpecRefusesInvalid(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, specName)
	if _, _, err := WriteCDISpec(path, spec("a"), nil); err != nil {
		t.Fatal(err)
	}
	good, _ := os.ReadFile(path)
	for name, bad := range map[string]*cdispec.Spec{
		"no devices":   {Version: "0.5.0", Kind: "power-dev-plugin.io/claim"},
		"bad name":     spec("a/b"),
		"bad kind":     {Version: "0.5.0", Kind: "no-class", Devices: spec("a").Devices},
		"no node path": {Version: "0.5.0", Kind: "power-dev-plugin.io/claim", Devices: []cdispec.Device{{Name: "x", ContainerEdits: cdispec.ContainerEdits{DeviceNodes: []*cdispec.DeviceNode{{Type: "c"}}}}}},
	} {
		written, _, err := WriteCDISpec(path, bad, nil)
		if err == nil || written || !strings.Contains(err.Error(), "the CDI library refuses the spec") {
			t.Errorf("%s: written %v, err %v", name, written, err)
		}
		if got, _ := os.ReadFile(path); string(got) != string(good) {
			t.Errorf("%s: the good spec was replaced", name)
		}
		if got := names(t, dir); len(got) != 1 {
			t.Errorf("%s: left in the directory: %q", name, got)
		}
	}
}

// A crash in the middle of a write leaves the old file and a temp file
// that carries the plugin's prefix; the CDI cache (the runtime) does not
// read it, and RemoveTemps removes it and nothing else.
func TestWriteCrashLeavesOnlyOwnTemp(t *testing.T) {
	for _, point := range []string{PointTempCreated, PointTempWritten} {
		t.Run(point, func(t *testing.T) {
			dir := t.TempDir()
			writeOthers(t, dir)
			path := filepath.Join(dir, specName)
			if _, _, err := WriteCDISpec(path, spec("a"), nil); err != nil {
				t.Fatal(err)
			}
			good, _ := os.ReadFile(path)
			crashAt(t, point, func(hook func(string) error) { _, _, _ = WriteCDISpec(path, spec("b"), hook) })
			if got, _ := os.ReadFile(path); string(got) != string(good) {
				t.Errorf("the spec changed: %s", got)
			}
			left := names(t, dir)
			if len(left) != 2 || !strings.HasPrefix(left[0], ".power-dev-plugin.io-claim_uid-foo.json.") || !strings.HasSuffix(left[0], ".tmp") || !IsTemp(left[0]) {
				t.Fatalf("after the crash: %q, want the spec and one temp file of ours", left)
			}
			c, err := cdi.NewCache(cdi.WithSpecDirs(dir), cdi.WithAutoRefresh(false))
			if err != nil {
				t.Fatal(err)
			}
			for p, errs := range c.GetErrors() {
				if strings.Contains(p, left[0]) {
					t.Errorf("the CDI cache read the temp file: %v", errs)
				}
			}
			if got := strings.Join(c.ListDevices(), " "); got != "other.com/gpu=0 power-dev-plugin.io/claim=a" {
				t.Errorf("devices %q", got)
			}
			// Another kind of file of the plugin's keeps its temp files.
			removed, err := RemoveTemps(dir, "power-dev-plugin.io-device.json")
			if err != nil || len(removed) != 0 {
				t.Errorf("RemoveTemps of another file: %q, %v", removed, err)
			}
			removed, err = RemoveTemps(dir, "power-dev-plugin.io-claim_")
			if err != nil || len(removed) != 1 || filepath.Base(removed[0]) != left[0] {
				t.Errorf("RemoveTemps = %q, %v", removed, err)
			}
			if got := names(t, dir); len(got) != 1 || got[0] != specName {
				t.Errorf("left: %q", got)
			}
			checkOthers(t, dir)
		})
	}
}

// A temp file that a write holds (another process writing right now) is
// not removed.
func TestRemoveTempsLeavesWriteInProgress(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, ".power-dev-plugin.io-checkpoint.json.1.tmp")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if removed, err := RemoveTemps(dir, "checkpoint.json"); err != nil || len(removed) != 0 {
		t.Errorf("while held: %q, %v", removed, err)
	}
	_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
	if removed, err := RemoveTemps(dir, "checkpoint.json"); err != nil || len(removed) != 1 {
		t.Errorf("after: %q, %v", removed, err)
	}
	if removed, err := RemoveTemps(filepath.Join(dir, "missing"), ""); err != nil || removed != nil {
		t.Errorf("missing directory: %q, %v", removed, err)
	}
}

// An error at any step leaves the file as it was and no temp file.
func TestWriteErrorLeavesNothing(t *testing.T) {
	for _, point := range []string{PointTempCreated, PointTempWritten} {
		dir := t.TempDir()
		path := filepath.Join(dir, "checkpoint.json")
		if err := Write(path, []byte("old"), Options{}); err != nil {
			t.Fatal(err)
		}
		injected := errors.New("injected")
		err := Write(path, []byte("new"), Options{Hook: func(p string) error {
			if p == point {
				return injected
			}
			return nil
		}})
		if !errors.Is(err, injected) {
			t.Errorf("%s: err = %v", point, err)
		}
		if got, _ := os.ReadFile(path); string(got) != "old" {
			t.Errorf("%s: content %q", point, got)
		}
		if got := names(t, dir); len(got) != 1 {
			t.Errorf("%s: left %q", point, got)
		}
	}
}

// A full filesystem (a real size-limited tmpfs) and a read-only one: the
// error says which and what to do, the old file stays, no temp file stays.
func TestWriteFullAndReadOnly(t *testing.T) {
	fsfault.NeedRoot(t)
	for _, tc := range []struct {
		name, want string
		fault      func(t *testing.T, dir string)
		is         error
	}{
		{"full", "is full (ENOSPC): free space on it", func(t *testing.T, dir string) { fsfault.Fill(t, dir) }, unix.ENOSPC},
		{"read-only", "is on a read-only filesystem (EROFS): the plugin must be able to write there", func(t *testing.T, dir string) { fsfault.ReadOnly(t, dir) }, unix.EROFS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "cdi")
			fsfault.Tmpfs(t, dir, 64<<10)
			writeOthers(t, dir)
			path := filepath.Join(dir, specName)
			if _, _, err := WriteCDISpec(path, spec("a"), nil); err != nil {
				t.Fatal(err)
			}
			good, _ := os.ReadFile(path)
			tc.fault(t, dir)
			_, _, err := WriteCDISpec(path, spec(strings.Repeat("b", 100)), nil)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), dir+" "+tc.want) {
				t.Errorf("err = %v", err)
			}
			if got, _ := os.ReadFile(path); string(got) != string(good) {
				t.Errorf("content changed: %s", got)
			}
			for _, n := range names(t, dir) {
				if IsTemp(n) {
					t.Errorf("temp file left: %s", n)
				}
			}
			if tc.name == "read-only" {
				err := Remove(path, nil)
				if !errors.Is(err, unix.EROFS) || !strings.Contains(err.Error(), "remove "+path+": read-only file system. "+dir+" "+tc.want) {
					t.Errorf("Remove: %v", err)
				}
			}
			checkOthers(t, dir)
		})
	}
}

func TestExplain(t *testing.T) {
	for errno, want := range map[unix.Errno]string{
		unix.ENOSPC: "The filesystem of /d is full (ENOSPC): free space on it",
		unix.EDQUOT: "(EDQUOT)",
		unix.EROFS:  "/d is on a read-only filesystem (EROFS): the plugin must be able to write there; check the hostPath volume",
		unix.EACCES: "The plugin may not write in /d (EACCES)",
		unix.EPERM:  "The plugin may not write in /d (EPERM)",
		unix.EIO:    "(EIO): check the disk and the kernel log",
		unix.EINVAL: "",
	} {
		err := fmt.Errorf("write x: %w", &os.PathError{Op: "open", Path: "/d/x", Err: errno})
		got := Explain(err, "/d")
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("%v: %q, want %q", errno, got, want)
		}
		if w := WithAdvice(err, "/d"); !errors.Is(w, errno) {
			t.Errorf("%v: WithAdvice does not wrap", errno)
		}
	}
}

// Without root, a directory without write permission gives EACCES (as root
// it does not stop anything; the read-only mount above stands for it).
func TestWriteNoPermission(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root may write anywhere; TestWriteFullAndReadOnly covers a directory that cannot be written")
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(dir, 0o700) })
	err := Write(filepath.Join(dir, "x"), []byte("x"), Options{})
	if !errors.Is(err, unix.EACCES) || !strings.Contains(err.Error(), "The plugin may not write in "+dir+" (EACCES)") {
		t.Errorf("err = %v", err)
	}
}
