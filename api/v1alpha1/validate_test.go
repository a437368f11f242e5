package v1alpha1

import (
	"strings"
	"testing"
)

func TestPermissions(t *testing.T) {
	for _, tc := range []struct {
		in    Permissions
		valid bool
		norm  Permissions
	}{
		{"r", true, "r"},
		{"w", true, "w"},
		{"m", true, "m"},
		{"rw", true, "rw"},
		{"wr", true, "rw"},
		{"mwr", true, "rwm"},
		{"rm", true, "rm"},
		{"wm", true, "wm"},
		{"rwm", true, "rwm"},
		{"", false, ""},
		{"RW", false, "RW"},
		{"rR", false, "rR"},
		{"rr", false, "rr"},
		{"rwmr", false, "rwmr"},
		{"rx", false, "rx"},
		{"r w", false, "r w"},
		{"rwx", false, "rwx"},
	} {
		err := tc.in.Validate()
		if (err == nil) != tc.valid {
			t.Errorf("Permissions(%q).Validate() = %v, want valid=%v", tc.in, err, tc.valid)
		}
		if err != nil {
			want := `invalid permissions "` + string(tc.in) + `": must be a combination of r, w and m (e.g. "rw"), each at most once`
			if err.Error() != want {
				t.Errorf("Permissions(%q).Validate() = %q, want %q", tc.in, err, want)
			}
		}
		if got := tc.in.Normalize(); got != tc.norm {
			t.Errorf("Permissions(%q).Normalize() = %q, want %q", tc.in, got, tc.norm)
		}
	}
}

func TestValidateDiscoveryConfig(t *testing.T) {
	valid := func() DeviceGroup {
		return DeviceGroup{Name: "disks", Include: []string{"/dev/sd*"}}
	}
	for _, tc := range []struct {
		name   string
		mutate func(cfg *DiscoveryConfig)
		want   []string
	}{
		{"valid, not defaulted", func(*DiscoveryConfig) {}, nil},
		{"valid, defaulted", func(cfg *DiscoveryConfig) { SetDefaults(cfg) }, nil},
		{"valid, everything set", func(cfg *DiscoveryConfig) {
			cfg.Groups[0] = DeviceGroup{
				Name: "nx-gzip", Include: []string{NXGzipPath, "/dev/[a-c]?", `/dev/\*`}, Exclude: []string{"/dev/x*"},
				Types: []DeviceType{DeviceTypeChar, DeviceTypeBlock}, Permissions: "mwr", Bundle: true,
				Sharing: &Sharing{Mode: SharingShared, MaxConsumers: ptr[int32](MaxConsumersLimit)},
			}
			cfg.AllowInUse = []string{"/dev/sda", "/dev/mapper/root"}
		}, nil},
		{"zero groups", func(cfg *DiscoveryConfig) { cfg.Groups = nil }, nil},
		{"sharing with empty mode", func(cfg *DiscoveryConfig) { cfg.Groups[0].Sharing = &Sharing{} }, nil},
		{"wrong apiVersion", func(cfg *DiscoveryConfig) { cfg.APIVersion = "v1" }, []string{
			`apiVersion: Unsupported value: "v1": supported values: "power-dev-plugin.io/v1alpha1"`}},
		{"wrong kind", func(cfg *DiscoveryConfig) { cfg.Kind = "Config" }, []string{
			`kind: Unsupported value: "Config": supported values: "DiscoveryConfig"`}},
		{"missing name", func(cfg *DiscoveryConfig) { cfg.Groups[0].Name = "" }, []string{
			`groups[0].name: Required value: a DNS label such as "disks" is required`}},
		{"name not a DNS label", func(cfg *DiscoveryConfig) { cfg.Groups[0].Name = "my_disks" }, []string{
			`groups[0].name: Invalid value: "my_disks": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'`}},
		{"name too long", func(cfg *DiscoveryConfig) { cfg.Groups[0].Name = strings.Repeat("a", 64) }, []string{
			`groups[0].name: Invalid value: "` + strings.Repeat("a", 64) + `": must be no more than 63 characters`}},
		{"duplicate name", func(cfg *DiscoveryConfig) { cfg.Groups = append(cfg.Groups, valid(), valid()) }, []string{
			`groups[1].name: Duplicate value: "disks"`, `groups[2].name: Duplicate value: "disks"`}},
		{"no include", func(cfg *DiscoveryConfig) { cfg.Groups[0].Include = nil }, []string{
			`groups[0].include: Required value: at least one pattern is required, e.g. "/dev/sd*"`}},
		{"relative include", func(cfg *DiscoveryConfig) { cfg.Groups[0].Include = []string{"sd*"} }, []string{
			`groups[0].include[0]: Invalid value: "sd*": must start with "/dev/"`}},
		{"empty include", func(cfg *DiscoveryConfig) { cfg.Groups[0].Include = []string{""} }, []string{
			`groups[0].include[0]: Invalid value: "": must start with "/dev/"`}},
		{"include outside /dev", func(cfg *DiscoveryConfig) { cfg.Groups[0].Include = []string{"/sys/block/*"} }, []string{
			`groups[0].include[0]: Invalid value: "/sys/block/*": must start with "/dev/"`}},
		{"include /dev itself", func(cfg *DiscoveryConfig) { cfg.Groups[0].Include = []string{"/dev"} }, []string{
			`groups[0].include[0]: Invalid value: "/dev": must start with "/dev/"`}},
		{"include with ..", func(cfg *DiscoveryConfig) { cfg.Groups[0].Include = []string{"/dev/../etc/shadow"} }, []string{
			`groups[0].include[0]: Invalid value: "/dev/../etc/shadow": must not contain ".." elements`}},
		{"include ending in ..", func(cfg *DiscoveryConfig) { cfg.Groups[0].Include = []string{"/dev/disk/.."} }, []string{
			`groups[0].include[0]: Invalid value: "/dev/disk/..": must not contain ".." elements`}},
		{"include with //", func(cfg *DiscoveryConfig) { cfg.Groups[0].Include = []string{"/dev//sd*"} }, []string{
			`groups[0].include[0]: Invalid value: "/dev//sd*": must be a clean path (no "//", "." elements or trailing "/")`}},
		{"include with trailing /", func(cfg *DiscoveryConfig) { cfg.Groups[0].Include = []string{"/dev/disk/"} }, []string{
			`groups[0].include[0]: Invalid value: "/dev/disk/": must be a clean path`}},
		{"include with .", func(cfg *DiscoveryConfig) { cfg.Groups[0].Include = []string{"/dev/./sda"} }, []string{
			`groups[0].include[0]: Invalid value: "/dev/./sda": must be a clean path`}},
		{"include bad glob", func(cfg *DiscoveryConfig) { cfg.Groups[0].Include = []string{"/dev/sd[a"} }, []string{
			`groups[0].include[0]: Invalid value: "/dev/sd[a": bad glob pattern: syntax error in pattern`}},
		{"include with several problems", func(cfg *DiscoveryConfig) { cfg.Groups[0].Include = []string{"[ab"} }, []string{
			`groups[0].include[0]: Invalid value: "[ab": must start with "/dev/"`,
			`groups[0].include[0]: Invalid value: "[ab": bad glob pattern: syntax error in pattern`}},
		{"exclude outside /dev", func(cfg *DiscoveryConfig) { cfg.Groups[0].Exclude = []string{"/dev/sda", "sdb"} }, []string{
			`groups[0].exclude[1]: Invalid value: "sdb": must start with "/dev/"`}},
		{"exclude with ..", func(cfg *DiscoveryConfig) { cfg.Groups[0].Exclude = []string{"/dev/x/../sda"} }, []string{
			`groups[0].exclude[0]: Invalid value: "/dev/x/../sda": must not contain ".." elements`}},
		{"exclude not clean", func(cfg *DiscoveryConfig) { cfg.Groups[0].Exclude = []string{"/dev/sda/"} }, []string{
			`groups[0].exclude[0]: Invalid value: "/dev/sda/": must be a clean path`}},
		{"exclude bad glob", func(cfg *DiscoveryConfig) { cfg.Groups[0].Exclude = []string{`/dev/sda\`} }, []string{
			`groups[0].exclude[0]: Invalid value: "/dev/sda\\": bad glob pattern: syntax error in pattern`}},
		{"unknown type", func(cfg *DiscoveryConfig) { cfg.Groups[0].Types = []DeviceType{"Block"} }, []string{
			`groups[0].types[0]: Unsupported value: "Block": supported values: "block", "char"`}},
		{"duplicate type", func(cfg *DiscoveryConfig) { cfg.Groups[0].Types = []DeviceType{"char", "block", "char"} }, []string{
			`groups[0].types[2]: Duplicate value: "char"`}},
		{"bad permissions", func(cfg *DiscoveryConfig) { cfg.Groups[0].Permissions = "RW" }, []string{
			`groups[0].permissions: Invalid value: "RW": must be a combination of r, w and m (e.g. "rw"), each at most once`}},
		{"repeated permission", func(cfg *DiscoveryConfig) { cfg.Groups[0].Permissions = "rr" }, []string{
			`groups[0].permissions: Invalid value: "rr": must be a combination of r, w and m`}},
		{"unknown sharing mode", func(cfg *DiscoveryConfig) { cfg.Groups[0].Sharing = &Sharing{Mode: "Shared"} }, []string{
			`groups[0].sharing.mode: Unsupported value: "Shared": supported values: "exclusive", "shared"`}},
		{"maxConsumers when exclusive", func(cfg *DiscoveryConfig) {
			cfg.Groups[0].Sharing = &Sharing{Mode: SharingExclusive, MaxConsumers: ptr[int32](2)}
		}, []string{`groups[0].sharing.maxConsumers: Forbidden: only allowed with mode "shared"`}},
		{"maxConsumers with the default mode", func(cfg *DiscoveryConfig) {
			cfg.Groups[0].Sharing = &Sharing{MaxConsumers: ptr[int32](2)}
		}, []string{`groups[0].sharing.maxConsumers: Forbidden: only allowed with mode "shared"`}},
		{"maxConsumers zero", func(cfg *DiscoveryConfig) {
			cfg.Groups[0].Sharing = &Sharing{Mode: SharingShared, MaxConsumers: ptr[int32](0)}
		}, []string{`groups[0].sharing.maxConsumers: Invalid value: 0: must be between 1 and 1048576`}},
		{"maxConsumers negative", func(cfg *DiscoveryConfig) {
			cfg.Groups[0].Sharing = &Sharing{Mode: SharingShared, MaxConsumers: ptr[int32](-1)}
		}, []string{`groups[0].sharing.maxConsumers: Invalid value: -1: must be between 1 and 1048576`}},
		{"maxConsumers too large", func(cfg *DiscoveryConfig) {
			cfg.Groups[0].Sharing = &Sharing{Mode: SharingShared, MaxConsumers: ptr[int32](MaxConsumersLimit + 1)}
		}, []string{`groups[0].sharing.maxConsumers: Invalid value: 1048577: must be between 1 and 1048576`}},
		{"allowInUse glob", func(cfg *DiscoveryConfig) { cfg.AllowInUse = []string{"/dev/sda", "/dev/sd?"} }, []string{
			`allowInUse[1]: Invalid value: "/dev/sd?": exact paths only, not globs (no *, ?, [ or \)`}},
		{"allowInUse with [ and \\", func(cfg *DiscoveryConfig) { cfg.AllowInUse = []string{"/dev/sd[ab]", `/dev/sd\a`} }, []string{
			`allowInUse[0]: Invalid value: "/dev/sd[ab]": exact paths only, not globs`,
			`allowInUse[1]: Invalid value: "/dev/sd\\a": exact paths only, not globs`}},
		{"allowInUse relative", func(cfg *DiscoveryConfig) { cfg.AllowInUse = []string{"sda"} }, []string{
			`allowInUse[0]: Invalid value: "sda": must start with "/dev/"`}},
		{"allowInUse with ..", func(cfg *DiscoveryConfig) { cfg.AllowInUse = []string{"/dev/../sda"} }, []string{
			`allowInUse[0]: Invalid value: "/dev/../sda": must not contain ".." elements`}},
		{"allowInUse not clean", func(cfg *DiscoveryConfig) { cfg.AllowInUse = []string{"/dev//sda"} }, []string{
			`allowInUse[0]: Invalid value: "/dev//sda": must be a clean path`}},
		{"allowInUse duplicate", func(cfg *DiscoveryConfig) { cfg.AllowInUse = []string{"/dev/sda", "/dev/sdb", "/dev/sda"} }, []string{
			`allowInUse[2]: Duplicate value: "/dev/sda"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &DiscoveryConfig{Groups: []DeviceGroup{valid()}}
			tc.mutate(cfg)
			errs := ValidateDiscoveryConfig(cfg)
			if len(errs) != len(tc.want) {
				t.Fatalf("got %d errors %v, want %d matching %q", len(errs), errs, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(errs[i].Error(), w) {
					t.Errorf("error %d:\n got: %s\nwant substring: %s", i, errs[i], w)
				}
			}
		})
	}
}

func TestValidateDiscoveryConfigNil(t *testing.T) {
	if errs := ValidateDiscoveryConfig(nil); len(errs) != 0 {
		t.Errorf("ValidateDiscoveryConfig(nil) = %v", errs)
	}
}

func TestDefaultDiscoveryConfigIsValid(t *testing.T) {
	if errs := ValidateDiscoveryConfig(DefaultDiscoveryConfig()); len(errs) != 0 {
		t.Errorf("the default configuration is invalid: %v", errs)
	}
}

func TestMaxConsumersMessage(t *testing.T) {
	if want := "must be between 1 and 1048576"; MaxConsumersLimit != 1048576 || MsgMaxConsumersRange != want {
		t.Errorf("MsgMaxConsumersRange %q does not match MaxConsumersLimit %d", MsgMaxConsumersRange, MaxConsumersLimit)
	}
}

func TestPermissionsWithin(t *testing.T) {
	for _, tc := range []struct {
		p, ceiling Permissions
		want       bool
	}{
		{"r", "r", true}, {"r", "rw", true}, {"wr", "rw", true}, {"m", "rwm", true}, {"rwm", "mwr", true},
		{"rw", "r", false}, {"rm", "rw", false}, {"w", "r", false}, {"rwm", "rw", false}, {"m", "rw", false},
	} {
		if got := tc.p.Within(tc.ceiling); got != tc.want {
			t.Errorf("%q.Within(%q) = %v, want %v", tc.p, tc.ceiling, got, tc.want)
		}
	}
}
