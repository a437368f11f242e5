package v1alpha1

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// legacyGroup is the group both shipped config.json samples convert to.
func legacyGroup(maxConsumers *int32) DeviceGroup {
	return DeviceGroup{
		Name:        DefaultGroupName,
		Include:     []string{"/dev/dm-*", "/dev/crypto/nx-gzip"},
		Exclude:     []string{"/dev/dm-3"},
		Permissions: "rw",
		Bundle:      true,
		Sharing:     &Sharing{Mode: SharingShared, MaxConsumers: maxConsumers},
	}
}

func withTypeMeta(groups ...DeviceGroup) *DiscoveryConfig {
	cfg := &DiscoveryConfig{Groups: groups}
	cfg.APIVersion = APIVersion
	cfg.Kind = DiscoveryConfigKind
	return cfg
}

// The samples are copies of the old plugin's development manifest and README.
func TestLegacySamples(t *testing.T) {
	for _, tc := range []struct {
		file string
		want *DiscoveryConfig
	}{
		{"testdata/legacy/config-development.json", withTypeMeta(legacyGroup(ptr[int32](2)))},
		{"testdata/legacy/config-readme.json", withTypeMeta(legacyGroup(nil))},
	} {
		t.Run(tc.file, func(t *testing.T) {
			data, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			cfg, warns, err := DecodeDiscoveryConfig(data)
			checkErr(t, err, nil)
			if !reflect.DeepEqual(cfg, tc.want) {
				t.Errorf("got  %+v\nwant %+v", cfg.Groups, tc.want.Groups)
			}
			checkWarnings(t, warns, WarnLegacyFormat, WarnLegacyExclude, WarnLegacyIgnored)

			cfg, _, err = LoadDiscoveryConfig(tc.file)
			checkErr(t, err, nil)
			if !reflect.DeepEqual(cfg, tc.want) {
				t.Errorf("LoadDiscoveryConfig: got %+v", cfg.Groups)
			}
		})
	}
}

func TestMigrateLegacy(t *testing.T) {
	allBlock := func() DeviceGroup {
		return DeviceGroup{
			Name: DefaultGroupName, Include: []string{"/dev/*"}, Types: []DeviceType{DeviceTypeBlock},
			Permissions: "rw", Bundle: true, Sharing: &Sharing{Mode: SharingShared},
		}
	}
	for _, tc := range []struct {
		name  string
		old   *LegacyConfig
		want  DeviceGroup
		warns []string
	}{{
		name:  "nil",
		want:  allBlock(),
		warns: []string{WarnLegacyAllDevices},
	}, {
		name:  "empty",
		old:   &LegacyConfig{},
		want:  allBlock(),
		warns: []string{WarnLegacyAllDevices},
	}, {
		name: "nx-gzip alone is the default configuration, shared",
		old:  &LegacyConfig{NXGzip: true},
		want: func() DeviceGroup {
			g := allBlock()
			g.Include = append(g.Include, NXGzipPath)
			return g
		}(),
		warns: []string{WarnLegacyAllDevices},
	}, {
		name: "include without exclude, nx-gzip appended",
		old:  &LegacyConfig{NXGzip: true, IncludeDevices: []string{"/dev/mapper/mpath*"}},
		want: DeviceGroup{
			Name: "dev", Include: []string{"/dev/mapper/mpath*", NXGzipPath}, Permissions: "rw",
			Bundle: true, Sharing: &Sharing{Mode: SharingShared},
		},
	}, {
		name: "nx-gzip not added twice",
		old:  &LegacyConfig{NXGzip: true, IncludeDevices: []string{NXGzipPath}},
		want: DeviceGroup{
			Name: "dev", Include: []string{NXGzipPath}, Permissions: "rw", Bundle: true, Sharing: &Sharing{Mode: SharingShared},
		},
	}, {
		name: "exclude without include is honoured silently",
		old:  &LegacyConfig{ExcludeDevices: []string{"/dev/sda*"}},
		want: func() DeviceGroup {
			g := allBlock()
			g.Exclude = []string{"/dev/sda*"}
			return g
		}(),
		warns: []string{WarnLegacyAllDevices},
	}, {
		name: "upper case permissions",
		old:  &LegacyConfig{Permissions: "WR", IncludeDevices: []string{"/dev/sdb"}},
		want: DeviceGroup{
			Name: "dev", Include: []string{"/dev/sdb"}, Permissions: "rw", Bundle: true, Sharing: &Sharing{Mode: SharingShared},
		},
		warns: []string{`permissions "WR" were lower-cased to "rw"; upper case is accepted only in the old config.json`},
	}, {
		name: "mixed case rwm",
		old:  &LegacyConfig{Permissions: "rWm", IncludeDevices: []string{"/dev/sdb"}},
		want: DeviceGroup{
			Name: "dev", Include: []string{"/dev/sdb"}, Permissions: "rwm", Bundle: true, Sharing: &Sharing{Mode: SharingShared},
		},
		warns: []string{`permissions "rWm" were lower-cased to "rwm"`},
	}, {
		name: "upper-limit",
		old:  &LegacyConfig{UpperLimit: ptr[int64](100000), IncludeDevices: []string{"/dev/sdb"}},
		want: DeviceGroup{
			Name: "dev", Include: []string{"/dev/sdb"}, Permissions: "rw", Bundle: true,
			Sharing: &Sharing{Mode: SharingShared, MaxConsumers: ptr[int32](100000)},
		},
	}, {
		name: "upper-limit 1",
		old:  &LegacyConfig{UpperLimit: ptr[int64](1), IncludeDevices: []string{"/dev/sdb"}},
		want: DeviceGroup{
			Name: "dev", Include: []string{"/dev/sdb"}, Permissions: "rw", Bundle: true,
			Sharing: &Sharing{Mode: SharingShared, MaxConsumers: ptr[int32](1)},
		},
	}, {
		name: "upper-limit above the maximum",
		old:  &LegacyConfig{UpperLimit: ptr[int64](1 << 40), IncludeDevices: []string{"/dev/sdb"}},
		want: DeviceGroup{
			Name: "dev", Include: []string{"/dev/sdb"}, Permissions: "rw", Bundle: true, Sharing: &Sharing{Mode: SharingShared},
		},
		warns: []string{"upper-limit 1099511627776 is above the maximum of 1048576 consumers; the devices are shared without a limit"},
	}, {
		name: "discovery-strategy default",
		old:  &LegacyConfig{DiscoveryStrategy: "default", IncludeDevices: []string{"/dev/sdb"}},
		want: DeviceGroup{
			Name: "dev", Include: []string{"/dev/sdb"}, Permissions: "rw", Bundle: true, Sharing: &Sharing{Mode: SharingShared},
		},
		warns: []string{"discovery-strategy and scan-interval are ignored: discovery is now event-driven"},
	}, {
		name: "scan-interval below a minute",
		old:  &LegacyConfig{DiscoveryStrategy: "time", ScanInterval: "30s", IncludeDevices: []string{"/dev/sdb"}},
		want: DeviceGroup{
			Name: "dev", Include: []string{"/dev/sdb"}, Permissions: "rw", Bundle: true, Sharing: &Sharing{Mode: SharingShared},
		},
		warns: []string{`scan-interval "30s" is below the old plugin's minimum of 1m`, WarnLegacyIgnored},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, warns, err := MigrateLegacy(tc.old)
			checkErr(t, err, nil)
			checkWarnings(t, warns, tc.warns...)
			if want := withTypeMeta(tc.want); !reflect.DeepEqual(cfg, want) {
				t.Errorf("got  %+v\nwant %+v", cfg.Groups, want.Groups)
			}
			if errs := ValidateDiscoveryConfig(cfg); len(errs) > 0 {
				t.Errorf("result is invalid: %v", errs)
			}
		})
	}
}

func TestMigrateLegacyDoesNotAlias(t *testing.T) {
	old := &LegacyConfig{IncludeDevices: []string{"/dev/sda"}, ExcludeDevices: []string{"/dev/sdb"}}
	cfg, _, err := MigrateLegacy(old)
	checkErr(t, err, nil)
	cfg.Groups[0].Include[0], cfg.Groups[0].Exclude[0] = "/dev/x", "/dev/y"
	if old.IncludeDevices[0] != "/dev/sda" || old.ExcludeDevices[0] != "/dev/sdb" {
		t.Errorf("MigrateLegacy shares slices with its input: %+v", old)
	}
}

func TestMigrateLegacyErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		old  *LegacyConfig
		want []string
	}{
		{"invalid permissions", &LegacyConfig{Permissions: "rx"}, []string{
			`permissions: Invalid value: "rx": must be a combination of r, w and m (e.g. "rw"), each at most once`}},
		{"repeated permissions", &LegacyConfig{Permissions: "RWr"}, []string{
			`permissions: Invalid value: "RWr": must be a combination of r, w and m`}},
		{"upper-limit zero", &LegacyConfig{UpperLimit: ptr[int64](0)}, []string{
			`upper-limit: Invalid value: 0: must be at least 1 (the number of claims that may share the devices at once)`}},
		{"upper-limit negative", &LegacyConfig{UpperLimit: ptr[int64](-5)}, []string{
			`upper-limit: Invalid value: -5: must be at least 1`}},
		{"unknown discovery-strategy", &LegacyConfig{DiscoveryStrategy: "watch"}, []string{
			`discovery-strategy: Unsupported value: "watch": supported values: "default", "time"`}},
		{"bad scan-interval", &LegacyConfig{ScanInterval: "60"}, []string{
			`scan-interval: Invalid value: "60": must be a duration such as "1m" or "60m"`}},
		{"include outside /dev", &LegacyConfig{IncludeDevices: []string{"/dev/sda", "/host/dev/sdb"}}, []string{
			`include-devices[1]: Invalid value: "/host/dev/sdb": must start with "/dev/"`}},
		{"include bad glob", &LegacyConfig{IncludeDevices: []string{"/dev/sd[a"}}, []string{
			`include-devices[0]: Invalid value: "/dev/sd[a": bad glob pattern: syntax error in pattern`}},
		{"exclude with ..", &LegacyConfig{IncludeDevices: []string{"/dev/sda"}, ExcludeDevices: []string{"/dev/../sdb"}}, []string{
			`exclude-devices[0]: Invalid value: "/dev/../sdb": must not contain ".." elements`}},
		{"everything at once", &LegacyConfig{
			Permissions: "x", UpperLimit: ptr[int64](0), DiscoveryStrategy: "x", ScanInterval: "x",
			IncludeDevices: []string{"sda"}, ExcludeDevices: []string{"sdb"},
		}, []string{
			`permissions: Invalid value: "x"`,
			`upper-limit: Invalid value: 0`,
			`discovery-strategy: Unsupported value: "x"`,
			`scan-interval: Invalid value: "x"`,
			`include-devices[0]: Invalid value: "sda": must start with "/dev/"`,
			`exclude-devices[0]: Invalid value: "sdb": must start with "/dev/"`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := MigrateLegacy(tc.old)
			checkErr(t, err, tc.want)
			if cfg != nil {
				t.Errorf("got a config with the error: %+v", cfg)
			}
		})
	}
}

// Decoding errors of a config.json name its keys.
func TestDecodeLegacyErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{"nx-gzip a string", `{"nx-gzip": "true"}`, []string{"nx-gzip: must be true or false, not a string (line 1)"}},
		{"upper-limit a string", `{"upper-limit": "2"}`, []string{"upper-limit: must be an integer, not a string (line 1)"}},
		{"upper-limit a fraction", `{"upper-limit": 2.5}`, []string{"upper-limit: must be an integer, not 2.5 (line 1)"}},
		{"include-devices a string", "{\n  \"include-devices\": \"/dev/sd*\"\n}", []string{
			"include-devices: must be a list, not a string (line 2)"}},
		{"duplicate key", "{\"permissions\": \"rw\",\n \"permissions\": \"r\"}", []string{"permissions: duplicate field (line 2)"}},
		{"YAML config.json", "permissions: rx\n", []string{`permissions: Invalid value: "rx": must be a combination of r, w and m`}},
		{"migration error", `{"upper-limit": 0}`, []string{"upper-limit: Invalid value: 0: must be at least 1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, err := DecodeDiscoveryConfig([]byte(tc.doc))
			checkErr(t, err, tc.want)
			if cfg != nil {
				t.Errorf("got a config with the error: %+v", cfg)
			}
		})
	}
}

func TestDecodeLegacyEmptyObject(t *testing.T) {
	cfg, warns, err := DecodeDiscoveryConfig([]byte(`{}`))
	checkErr(t, err, nil)
	checkWarnings(t, warns, WarnLegacyFormat, WarnLegacyAllDevices)
	want := withTypeMeta(DeviceGroup{
		Name: "dev", Include: []string{"/dev/*"}, Types: []DeviceType{DeviceTypeBlock},
		Permissions: "rw", Bundle: true, Sharing: &Sharing{Mode: SharingShared},
	})
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got %+v", cfg.Groups)
	}
}

// An empty config.json is refused like any empty configuration file: the
// old ConfigMap emptied by mistake must not publish every unused disk.
func TestLoadLegacyEmptyFile(t *testing.T) {
	for name, content := range map[string]string{"empty": "", "whitespace": "\n \n"} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "config.json")
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, _, err := LoadDiscoveryConfig(p)
			if !errors.Is(err, ErrEmptyConfig) || !strings.HasPrefix(err.Error(), "config "+p+": ") {
				t.Errorf("got %v, want the empty-file error naming %s", err, p)
			}
			if cfg != nil {
				t.Errorf("got a config with the error: %+v", cfg.Groups)
			}
		})
	}
}
