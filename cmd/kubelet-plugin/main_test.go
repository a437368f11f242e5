package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/driver"
)

const mib = 1 << 20

// hostTree lays out a small host: a root disk vda with a mounted partition,
// a free disk sdb with a serial and an (unmounted) xfs file system, an
// unbound loop device and /dev/mem.
func hostTree(t *testing.T) *discoverytest.Tree {
	t.Helper()
	return hostTreeWithSDB(t, discoverytest.DevNum{Major: 8, Minor: 16})
}

// hostTreeWithSDB is hostTree with sdb's device numbers: a test that hands
// sdb out gives those of a real device, which Allocate opens.
func hostTreeWithSDB(t *testing.T, sdb discoverytest.DevNum) *discoverytest.Tree {
	t.Helper()
	tr := discoverytest.New(t)
	if tr.Fake() {
		// The CLI has no flag for the test-only stat hook; mknod needs
		// CAP_MKNOD, which CI (root) has.
		t.Skip("needs root to create device nodes in the fixture tree")
	}
	tr.AddBlock(discoverytest.Block{Name: "vda", Dev: discoverytest.DevNum{Major: 254, Minor: 0}, Size: 64 * mib})
	tr.AddBlock(discoverytest.Block{Name: "vda1", Dev: discoverytest.DevNum{Major: 254, Minor: 1}, Size: 32 * mib, Parent: "vda"})
	tr.AddBlock(discoverytest.Block{Name: "sdb", Dev: sdb, Size: 128 * mib,
		Model: "Virtual Disk", Serial: "SER-0001", WWID: "naa.5000c500a1b2c3d4",
		Udev: map[string]string{"ID_FS_TYPE": "xfs", "ID_FS_USAGE": "filesystem"}})
	tr.AddBlock(discoverytest.Block{Name: "loop3", Dev: discoverytest.DevNum{Major: 7, Minor: 3}})
	tr.CharNode("/dev/mem", 1, 1)
	tr.Mount("/dev/vda1", discoverytest.DevNum{Major: 254, Minor: 1}, "/", "ext4")
	return tr
}

func runCmd(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestDiscoverJSON(t *testing.T) {
	tr := hostTree(t)
	out, _, err := runCmd(t, "discover", "--host-root", tr.Root, "-o", "json")
	if err != nil {
		t.Fatalf("discover: %v", err)
	}
	var rep struct {
		Devices []struct {
			Group, Name, Path, Type string
			Major, Minor            uint32
			Attributes              map[string]any
		}
		Excluded []struct{ Path, Reason string }
	}
	dec := json.NewDecoder(strings.NewReader(out))
	if err := dec.Decode(&rep); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	if len(rep.Devices) != 1 {
		t.Fatalf("want exactly sdb published, got %+v", rep.Devices)
	}
	d := rep.Devices[0]
	if d.Group != "dev" || d.Name != "sdb" || d.Path != "/dev/sdb" || d.Type != "block" || d.Major != 8 || d.Minor != 16 {
		t.Errorf("device: %+v", d)
	}
	if d.Attributes["serial"] != "SER-0001" || d.Attributes["size"] != float64(128*mib) || d.Attributes["kind"] != "disk" ||
		d.Attributes["fsType"] != "xfs" {
		t.Errorf("attributes: %v", d.Attributes)
	}
	reasons := map[string]string{}
	for _, e := range rep.Excluded {
		reasons[e.Path] = e.Reason
	}
	for path, want := range map[string]string{
		"/dev/vda":   "in use: partition vda1 is mounted at /",
		"/dev/vda1":  "in use: mounted at /",
		"/dev/loop3": "empty: size 0",
	} {
		if !strings.HasPrefix(reasons[path], want) {
			t.Errorf("%s: reason %q, want prefix %q", path, reasons[path], want)
		}
	}
	if _, listed := reasons["/dev/mem"]; listed {
		// /dev/mem is not named by the default config's globs (block
		// only), so it is not a candidate at all.
		t.Errorf("/dev/mem should not be a candidate of the default config")
	}
}

func TestDiscoverTableAndYAML(t *testing.T) {
	tr := hostTree(t)
	out, _, err := runCmd(t, "discover", "--host-root", tr.Root)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"GROUP dev: 1 device(s)", "sdb", "/dev/sdb", "8:16", "serial=SER-0001", "fsType=xfs", "LEFT OUT: 3", "in use: mounted at /"} {
		if !strings.Contains(out, want) {
			t.Errorf("table output lacks %q:\n%s", want, out)
		}
	}
	out, _, err = runCmd(t, "discover", "--host-root", tr.Root, "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "path: /dev/sdb") || !strings.Contains(out, "excluded:") {
		t.Errorf("yaml output:\n%s", out)
	}
}

func TestDiscoverConfigAndAllowInUse(t *testing.T) {
	tr := hostTree(t)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte(`apiVersion: power-dev-plugin.io/v1alpha1
kind: DiscoveryConfig
groups:
- name: raw
  include: ["/dev/vda", "/dev/mem", "/dev/sd*"]
  exclude: ["/dev/sdb"]
allowInUse: ["/dev/vda"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCmd(t, "discover", "--host-root", tr.Root, "--config", cfg, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"path": "/dev/vda"`, `"reason": "kernel interface: never published"`, `excluded from group \"raw\" by pattern \"/dev/sdb\"`} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %s:\n%s", want, out)
		}
	}
}

// TestDiscoverExplainsNewReasons: discover says what to do about a missing
// mount table (no block device published, exit 0), a pod's block-mode
// volume and the kubelet's loop device over it.
func TestDiscoverExplainsNewReasons(t *testing.T) {
	tr := hostTree(t)
	tr.Remove("/proc/1/mountinfo")
	out, _, err := runCmd(t, "discover", "--host-root", tr.Root)
	if err != nil {
		t.Fatalf("discover without a mount table: %v", err)
	}
	for _, want := range []string{
		"WARNING: the host's mount table " + tr.Root + "/proc/1/mountinfo cannot be read",
		"mount the host's /proc/1/mountinfo and /proc/swaps read-only at " + tr.Root + "/proc/1/mountinfo",
		"GROUP dev: 0 device(s)",
		"/dev/sdb    unknown whether in use: the host's mount table",
		"WHAT TO DO\n  /dev/loop3, /dev/sdb, /dev/vda, /dev/vda1:\n    The plugin cannot read the host's mount table",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	tr.Mount("/dev/vda1", discoverytest.DevNum{Major: 254, Minor: 1}, "/", "ext4")
	vol := "/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/pv-1/dev/pod-uid"
	tr.BindNode("/dev/sdb", vol)
	tr.AddBlock(discoverytest.Block{Name: "loop4", Dev: discoverytest.DevNum{Major: 7, Minor: 4}, Size: mib, BackingFile: vol})
	out, _, err = runCmd(t, "discover", "--host-root", tr.Root, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Excluded []struct{ Path, Reason, Advice string }
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("decode %q: %v", out, err)
	}
	advice := map[string]string{}
	for _, e := range rep.Excluded {
		advice[e.Path] = e.Advice
	}
	if a := advice["/dev/sdb"]; !strings.Contains(a, "block-mode volume") {
		t.Errorf("/dev/sdb: advice %q", a)
	}
	if a := advice["/dev/loop4"]; !strings.Contains(a, "losetup") {
		t.Errorf("/dev/loop4: advice %q", a)
	}
}

func TestDiscoverBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("apiVersion: power-dev-plugin.io/v1alpha1\nkind: DiscoveryConfig\ngroups:\n- name: g\n  include: [\"/dev/[x\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantMsg  []string
	}{
		{"bad glob names file and field", []string{"discover", "--config", bad}, exitUsage, []string{bad, "groups[0].include[0]", "bad glob pattern"}},
		{"missing file", []string{"discover", "--config", filepath.Join(dir, "nope.yaml")}, exitUsage, []string{"nope.yaml"}},
		{"bad output format", []string{"discover", "-o", "xml"}, exitUsage, []string{"--output", "table, yaml or json"}},
		{"unknown flag", []string{"discover", "--bogus"}, exitUsage, []string{"bogus"}},
		{"stray argument", []string{"discover", "extra"}, exitUsage, []string{"unexpected arguments: extra"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runCmd(t, tc.args...)
			var ee *exitError
			if !errors.As(err, &ee) {
				t.Fatalf("want an exitError, got %v", err)
			}
			if ee.code != tc.wantCode {
				t.Errorf("exit code %d, want %d (%v)", ee.code, tc.wantCode, err)
			}
			for _, m := range tc.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("message %q lacks %q", err, m)
				}
			}
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	out, _, err := runCmd(t, "version")
	if err != nil || !strings.HasPrefix(out, "power-dev-plugin ") {
		t.Errorf("version: %q, %v", out, err)
	}
	out, _, err = runCmd(t, "help")
	if err != nil || !strings.Contains(out, "discover") {
		t.Errorf("help: %q, %v", out, err)
	}
}

func TestPluginFlagsValidation(t *testing.T) {
	t.Setenv("NODE_NAME", "")
	_, _, err := runCmd(t, "--mode", "dra")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != exitUsage || !strings.Contains(err.Error(), "--node-name") {
		t.Errorf("missing node name: %v", err)
	}
	_, _, err = runCmd(t, "--mode", "nonsense", "--node-name", "n")
	if !errors.As(err, &ee) || ee.code != exitUsage || !strings.Contains(err.Error(), "must be dra, device-plugin or auto") {
		t.Errorf("bad mode: %v", err)
	}
}

func TestEnvFallback(t *testing.T) {
	t.Setenv("NODE_NAME", "from-env")
	var f pluginFlags
	fs := newFlagSet("t")
	f.register(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if f.nodeName != "from-env" {
		t.Errorf("node name from env: %q", f.nodeName)
	}
	if err := fs.Parse([]string{"--node-name", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	if f.nodeName != "from-flag" {
		t.Errorf("flag must win over env: %q", f.nodeName)
	}
}

func TestStaleClaimAndReleaseWaitFlags(t *testing.T) {
	parse := func(args ...string) pluginFlags {
		t.Helper()
		var f pluginFlags
		fs := newFlagSet("t")
		f.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return f
	}
	if f := parse(); f.staleInterval != driver.DefaultStaleClaimInterval || f.releaseWait != driver.DefaultReleaseWait {
		t.Errorf("defaults: stale-claim-interval %s, release-wait %s", f.staleInterval, f.releaseWait)
	}
	t.Setenv("STALE_CLAIM_INTERVAL", "30s")
	t.Setenv("RELEASE_WAIT", "0")
	if f := parse(); f.staleInterval != 30*time.Second || f.releaseWait != 0 {
		t.Errorf("from env: stale-claim-interval %s, release-wait %s", f.staleInterval, f.releaseWait)
	}
	if f := parse("--stale-claim-interval", "0", "--release-wait", "10s"); f.staleInterval != 0 || f.releaseWait != 10*time.Second {
		t.Errorf("flags over env: stale-claim-interval %s, release-wait %s", f.staleInterval, f.releaseWait)
	}
}

// discover uses the old plugin's config.json when it exists, as the plugin
// does, and says so.
func TestDiscoverLegacyConfigPath(t *testing.T) {
	tr := hostTree(t)
	old := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(old, []byte(`{"include-devices": ["/dev/sd*"], "permissions": "r"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := runCmd(t, "discover", "--host-root", tr.Root, "--legacy-config", old, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "using the old plugin's "+old) {
		t.Errorf("stderr does not say the old config is used: %q", errOut)
	}
	if !strings.Contains(out, `"bundle": "dev"`) || !strings.Contains(out, `"permissions": "r"`) {
		t.Errorf("the old config should give a bundle group dev with permissions r:\n%s", out)
	}
	// A missing old file: the default configuration.
	out, _, err = runCmd(t, "discover", "--host-root", tr.Root, "--legacy-config", filepath.Join(t.TempDir(), "none.json"), "-o", "json")
	if err != nil || strings.Contains(out, `"bundle": "dev"`) {
		t.Errorf("without the old file: %v\n%s", err, out)
	}
}

// Only the absence of a configuration file means the built-in default: the
// plugin does not start on an empty, comment-only or unreadable file (its
// own or the old plugin's config.json), and says which file and what to
// write.
func TestPluginRefusesUnusableConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	empty := write("empty.yaml", "")
	comments := write("comments.yaml", "# groups:\n# - name: disks\n")
	oldEmpty := write("config.json", "\n")
	for _, tc := range []struct {
		name, config, legacy string
		want                 []string
	}{
		{"empty --config", empty, "", []string{"config " + empty + ": the file is empty", "groups: []"}},
		{"comment-only --config", comments, "", []string{"config " + comments + ": the file is empty", "groups: []"}},
		{"missing --config", filepath.Join(dir, "nope.yaml"), "", []string{"nope.yaml: cannot read the file"}},
		{"empty old config.json", "", oldEmpty, []string{"config " + oldEmpty + ": the file is empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, cmd := range [][]string{
				{"--mode", "device-plugin", "--device-plugin-dir", t.TempDir(), "--cdi-dir", t.TempDir(), "--health-address", ""},
				{"discover"},
			} {
				args := append(cmd, "--config", tc.config, "--legacy-config", tc.legacy, "--host-root", dir)
				// Cancelled: without the refusal the plugin would stop
				// at once instead of running.
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				var out, errOut bytes.Buffer
				err := run(ctx, args, &out, &errOut)
				var ee *exitError
				if !errors.As(err, &ee) || ee.code != exitUsage {
					t.Errorf("%s: want exit code %d, got %v", cmd[0], exitUsage, err)
					continue
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: %q lacks %q", cmd[0], err, w)
					}
				}
			}
		})
	}
}

func TestDeviceMetadataFlag(t *testing.T) {
	parse := func(args ...string) pluginFlags {
		t.Helper()
		var f pluginFlags
		fs := newFlagSet("t")
		f.register(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return f
	}
	if parse().deviceMetadata {
		t.Error("the metadata file must be off by default (the helper keys it by claim name)")
	}
	t.Setenv("DEVICE_METADATA", "true")
	if !parse().deviceMetadata {
		t.Error("DEVICE_METADATA=true must turn it on")
	}
	if parse("--device-metadata=false").deviceMetadata {
		t.Error("the flag must win over the environment")
	}
}
