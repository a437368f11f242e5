package v1alpha1

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// exampleYAML is the example of the package documentation.
const exampleYAML = `apiVersion: power-dev-plugin.io/v1alpha1
kind: DiscoveryConfig
groups:
- name: disks
  include: ["/dev/dm-*", "/dev/sd*"]
  exclude: ["/dev/sda*"]
  types: [block]            # optional: block, char
  permissions: rw           # optional, default rw
- name: nx-gzip
  include: ["/dev/crypto/nx-gzip"]
  sharing: {mode: shared, maxConsumers: 64}   # default {mode: exclusive}
- name: db2
  include: ["/dev/mapper/mpath*"]
  bundle: true
  unhealthyTaintEffect: NoExecute   # default NoSchedule
allowInUse: ["/dev/sdb"]    # exact paths only
`

const exampleJSON = `{
	"apiVersion": "power-dev-plugin.io/v1alpha1",
	"kind": "DiscoveryConfig",
	"groups": [
		{"name": "disks", "include": ["\/dev\/dm-*", "/dev/sd*"], "exclude": ["/dev/sda*"],
		 "types": ["block"], "permissions": "rw"},
		{"name": "nx-gzip", "include": ["/dev/crypto/nx-gzip"], "sharing": {"mode": "shared", "maxConsumers": 64}},
		{"name": "db2", "include": ["/dev/mapper/mpath*"], "bundle": true, "unhealthyTaintEffect": "NoExecute"}
	],
	"allowInUse": ["/dev/sdb"]
}`

func exampleConfig() *DiscoveryConfig {
	cfg := &DiscoveryConfig{
		Groups: []DeviceGroup{{
			Name:        "disks",
			Include:     []string{"/dev/dm-*", "/dev/sd*"},
			Exclude:     []string{"/dev/sda*"},
			Types:       []DeviceType{DeviceTypeBlock},
			Permissions: "rw",
			Sharing:     &Sharing{Mode: SharingExclusive},
		}, {
			Name:        "nx-gzip",
			Include:     []string{"/dev/crypto/nx-gzip"},
			Permissions: "rw",
			Sharing:     &Sharing{Mode: SharingShared, MaxConsumers: ptr[int32](64)},
		}, {
			Name:                 "db2",
			Include:              []string{"/dev/mapper/mpath*"},
			Permissions:          "rw",
			Bundle:               true,
			Sharing:              &Sharing{Mode: SharingExclusive},
			UnhealthyTaintEffect: TaintNoExecute,
		}},
		AllowInUse: []string{"/dev/sdb"},
	}
	cfg.APIVersion = "power-dev-plugin.io/v1alpha1"
	cfg.Kind = "DiscoveryConfig"
	return cfg
}

func TestDecodeDiscoveryConfigExample(t *testing.T) {
	for name, doc := range map[string]string{
		"yaml":                              exampleYAML,
		"json":                              exampleJSON,
		"yaml with BOM":                     "\xef\xbb\xbf" + exampleYAML,
		"yaml with trailing empty document": exampleYAML + "---\n# nothing\n",
		"yaml with anchors": `apiVersion: power-dev-plugin.io/v1alpha1
kind: DiscoveryConfig
groups:
- name: disks
  include: ["/dev/dm-*", "/dev/sd*"]
  exclude: ["/dev/sda*"]
  types: [block]
  permissions: &perm wr      # any order; decoded as "rw"
- name: nx-gzip
  include: &nx ["/dev/crypto/nx-gzip"]
  sharing: {mode: shared, maxConsumers: 0o100}
- name: db2
  include: ["/dev/mapper/mpath*"]
  bundle: true
  permissions: *perm
  unhealthyTaintEffect: NoExecute
allowInUse: ["/dev/sdb"]
`,
	} {
		t.Run(name, func(t *testing.T) {
			cfg, warns, err := DecodeDiscoveryConfig([]byte(doc))
			checkErr(t, err, nil)
			checkWarnings(t, warns)
			if want := exampleConfig(); !reflect.DeepEqual(cfg, want) {
				t.Errorf("got  %+v\nwant %+v", cfg, want)
			}
		})
	}
}

// An empty document is refused: read as the default it would publish every
// unused block disk of the node where the operator meant to narrow or
// empty the configuration (review 2026-12-04, finding 9).
func TestDecodeDiscoveryConfigEmpty(t *testing.T) {
	for name, doc := range map[string]string{
		"nothing":                  "",
		"whitespace":               " \n\t\n",
		"comments only":            "# config\n# more\n",
		"all groups commented out": header + "#groups:\n#- name: disks\n#  include: [/dev/sdb]\n",
		"document mark":            "---\n",
		"null":                     "null\n",
		"BOM only":                 "\xef\xbb\xbf",
	} {
		t.Run(name, func(t *testing.T) {
			cfg, warns, err := DecodeDiscoveryConfig([]byte(doc))
			if name == "all groups commented out" {
				// apiVersion and kind are there: a valid config with no
				// groups, which publishes nothing.
				checkErr(t, err, nil)
				checkWarnings(t, warns, WarnNoGroups)
				if len(cfg.Groups) != 0 {
					t.Errorf("got groups %+v", cfg.Groups)
				}
				return
			}
			checkErr(t, err, []string{"the file is empty or holds only comments"})
			for _, hint := range []string{"groups: []", "unset --config"} {
				if !strings.Contains(err.Error(), hint) {
					t.Errorf("%q does not say what to write (%s)", err, hint)
				}
			}
			if !errors.Is(err, ErrEmptyConfig) {
				t.Errorf("errors.Is(%v, ErrEmptyConfig) is false", err)
			}
			if cfg != nil {
				t.Errorf("got a config with the error: %+v", cfg)
			}
			checkWarnings(t, warns)
		})
	}
}

// groups: [] is how a node publishes nothing.
func TestDecodeDiscoveryConfigNoGroups(t *testing.T) {
	cfg, warns, err := DecodeDiscoveryConfig([]byte(header + "groups: []\n"))
	checkErr(t, err, nil)
	checkWarnings(t, warns, WarnNoGroups)
	if cfg == nil || len(cfg.Groups) != 0 {
		t.Fatalf("got %+v, want a config without groups", cfg)
	}
	if errs := ValidateDiscoveryConfig(cfg); len(errs) > 0 {
		t.Errorf("not valid: %v", errs)
	}
}

func TestDecodeDiscoveryConfigWarnings(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{{
		name: "no groups, flow style YAML",
		doc:  `{apiVersion: power-dev-plugin.io/v1alpha1, kind: DiscoveryConfig, groups: []}`,
		want: []string{WarnNoGroups},
	}, {
		name: "groups null",
		doc:  `{"apiVersion": "power-dev-plugin.io/v1alpha1", "kind": "DiscoveryConfig", "groups": null}`,
		want: []string{WarnNoGroups},
	}, {
		name: "every node without types",
		doc:  "apiVersion: power-dev-plugin.io/v1alpha1\nkind: DiscoveryConfig\ngroups:\n- {name: all, include: [/dev/*]}\n",
		want: []string{`groups[0]: include "/dev/*" without types also matches character devices`},
	}, {
		name: "every block node",
		doc:  "apiVersion: power-dev-plugin.io/v1alpha1\nkind: DiscoveryConfig\ngroups:\n- {name: all, include: [/dev/*], types: [block]}\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, warns, err := DecodeDiscoveryConfig([]byte(tc.doc))
			checkErr(t, err, nil)
			checkWarnings(t, warns, tc.want...)
		})
	}
}

const header = "apiVersion: power-dev-plugin.io/v1alpha1\nkind: DiscoveryConfig\n"

// aliasBomb is a small document whose aliases expand to 10^7 values.
var aliasBomb = func() string {
	var b strings.Builder
	b.WriteString(header + "x0: &a0 [/dev/a, /dev/a, /dev/a, /dev/a, /dev/a, /dev/a, /dev/a, /dev/a, /dev/a, /dev/a]\n")
	for i := 1; i < 7; i++ {
		b.WriteString(fmt.Sprintf("x%d: &a%d [", i, i))
		for j := 0; j < 10; j++ {
			b.WriteString(fmt.Sprintf("*a%d, ", i-1))
		}
		b.WriteString("]\n")
	}
	return b.String()
}()

func TestDecodeDiscoveryConfigErrors(t *testing.T) {
	deep := strings.Repeat("[", 40) + strings.Repeat("]", 40)
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		// Syntax.
		{"bad YAML", header + "groups: [\n", []string{"invalid YAML: line 3: did not find expected node content"}},
		{"bad YAML indentation", header + "groups:\n- name: a\n include: [x]\n", []string{"invalid YAML: line 4: did not find expected key"}},
		{"bad JSON", "{\"apiVersion\": \"power-dev-plugin.io/v1alpha1\",\n \"kind\": }", []string{
			"invalid JSON at line 2, column 10: invalid character '}' looking for beginning of value"}},
		{"truncated JSON", `{"apiVersion": "power-dev-plugin.io/v1alpha1"`, []string{"invalid JSON: unexpected end of input"}},
		{"JSON with trailing data", `{"apiVersion": "power-dev-plugin.io/v1alpha1", "kind": "DiscoveryConfig"} {}`, []string{
			"invalid JSON at line 1, column 75: unexpected content after the top-level value"}},
		{"JSON missing value is not YAML null", `{"apiVersion": "power-dev-plugin.io/v1alpha1", "kind": "DiscoveryConfig", "allowInUse": }`, []string{
			"invalid JSON at line 1, column 89: invalid character '}' looking for beginning of value"}},
		{"JSON trailing comma", `{"apiVersion": "power-dev-plugin.io/v1alpha1", "kind": "DiscoveryConfig",}`, []string{
			"invalid JSON at line 1, column 74: invalid character '}' looking for beginning of object key string"}},
		{"list document", "- name: a\n", []string{"the document must be an object (a YAML mapping), not a list (line 1)"}},
		{"scalar document", "hello\n", []string{"the document must be an object (a YAML mapping), not a string (line 1)"}},
		{"JSON list document", `[{"name": "a"}]`, []string{"the document must be an object (a YAML mapping), not a list (line 1)"}},
		{"two documents", header + "---\n" + header, []string{MsgMultipleDocuments + " (line 3)"}},
		{"broken second document", header + "---\n[\n", []string{"invalid YAML: "}},
		{"nested too deeply, YAML", header + "groups: " + deep + "\n", []string{MsgTooDeep}},
		{"nested too deeply, JSON", `{"groups": ` + deep + `}`, []string{MsgTooDeep + " (line 1)"}},
		{"alias bomb", aliasBomb, []string{MsgTooManyValues}},
		{"self-referencing anchor", header + "groups: &g [*g]\n", []string{`invalid YAML: anchor "g" refers to itself (line 3)`}},
		{"unknown anchor", header + "groups: *g\n", []string{"invalid YAML: unknown anchor 'g' referenced"}},

		// apiVersion and kind.
		{"neither apiVersion/kind nor config.json", "groups: []\nfoo: 1\ngroups: []\n", []string{
			`missing apiVersion/kind (expected power-dev-plugin.io/v1alpha1 DiscoveryConfig, or the old plugin's config.json keys nx-gzip, permissions, include-devices, exclude-devices, discovery-strategy, scan-interval, upper-limit); not config.json keys: "groups", "foo"`}},
		{"config.json keys mixed with others", `{"nx-gzip": true, "Permissions": "rw"}`, []string{`not config.json keys: "Permissions"`}},
		{"missing apiVersion", "kind: DiscoveryConfig\n", []string{`apiVersion: Required value: must be "power-dev-plugin.io/v1alpha1"`}},
		{"missing kind", "apiVersion: power-dev-plugin.io/v1alpha1\n", []string{`kind: Required value: must be "DiscoveryConfig"`}},
		{"null kind", "apiVersion: power-dev-plugin.io/v1alpha1\nkind: null\n", []string{`kind: Required value: must be "DiscoveryConfig"`}},
		{"wrong apiVersion", "apiVersion: power-dev-plugin.io/v1beta1\nkind: DiscoveryConfig\ngroups: {}\n", []string{
			`apiVersion: Unsupported value: "power-dev-plugin.io/v1beta1": supported values: "power-dev-plugin.io/v1alpha1"`}},
		{"wrong kind", "apiVersion: power-dev-plugin.io/v1alpha1\nkind: DeviceConfig\n", []string{
			`kind: Unsupported value: "DeviceConfig": supported values: "DiscoveryConfig"`}},
		{"apiVersion not a string", "apiVersion: 1\nkind: [DiscoveryConfig]\n", []string{
			"apiVersion: must be a string, not a number (line 1)", "kind: must be a string, not a list (line 2)"}},

		// Strict decoding.
		{"unknown top-level field", header + "group: []\n", []string{"group: unknown field (line 3)"}},
		{"unknown group field", header + "groups:\n- name: a\n  inclde: [/dev/sd*]\n", []string{"groups[0].inclde: unknown field (line 5)"}},
		{"unknown sharing field", header + "groups:\n- name: a\n  include: [/dev/sd*]\n  sharing: {mode: shared, max: 3}\n", []string{
			"groups[0].sharing.max: unknown field (line 6)"}},
		{"odd unknown key is quoted", header + "\"a.b\": 1\n\"\": 2\n", []string{`"a.b": unknown field (line 3)`, `"": unknown field (line 4)`}},
		{"duplicate YAML field", header + "groups:\n- name: a\n  name: b\n  include: [/dev/sd*]\n", []string{"groups[0].name: duplicate field (line 5)"}},
		{"duplicate JSON field", `{"apiVersion": "power-dev-plugin.io/v1alpha1", "kind": "DiscoveryConfig",` + "\n" + `"allowInUse": [], "allowInUse": []}`, []string{
			"allowInUse: duplicate field (line 2)"}},
		{"duplicate kind", header + "kind: DiscoveryConfig\n", []string{"kind: duplicate field (line 3)"}},
		{"groups not a list", header + "groups: {name: a}\n", []string{"groups: must be a list, not an object (line 3)"}},
		{"group not an object", header + "groups: [a]\n", []string{"groups[0]: must be an object, not a string (line 3)"}},
		{"include not a list", header + "groups:\n- name: a\n  include: /dev/sd*\n", []string{"groups[0].include: must be a list, not a string (line 5)"}},
		{"name not a string", header + "groups:\n- name: 123\n  include: [/dev/sd*]\n", []string{"groups[0].name: must be a string, not a number (line 4)"}},
		{"pattern not a string", header + "groups:\n- name: a\n  include: [true]\n", []string{"groups[0].include[0]: must be a string, not a boolean (line 5)"}},
		{"bundle not a boolean", header + "groups:\n- name: a\n  include: [/dev/sd*]\n  bundle: yes\n", []string{
			"groups[0].bundle: must be true or false, not a string (line 6)"}},
		{"maxConsumers a string", header + "groups:\n- name: a\n  include: [/dev/sd*]\n  sharing: {mode: shared, maxConsumers: \"64\"}\n", []string{
			"groups[0].sharing.maxConsumers: must be an integer, not a string (line 6)"}},
		{"maxConsumers a fraction", header + "groups:\n- name: a\n  include: [/dev/sd*]\n  sharing: {mode: shared, maxConsumers: 1.5}\n", []string{
			"groups[0].sharing.maxConsumers: must be an integer, not 1.5 (line 6)"}},
		{"maxConsumers beyond int32", header + "groups:\n- name: a\n  include: [/dev/sd*]\n  sharing: {mode: shared, maxConsumers: 99999999999999999999}\n", []string{
			"groups[0].sharing.maxConsumers: must be an integer between -2147483648 and 2147483647 (line 6)"}},
		{"maxConsumers beyond int32, JSON", `{"apiVersion": "power-dev-plugin.io/v1alpha1", "kind": "DiscoveryConfig", "groups": [{"name": "a", "include": ["/dev/sd*"], "sharing": {"mode": "shared", "maxConsumers": 2147483648}}]}`, []string{
			"groups[0].sharing.maxConsumers: must be an integer between -2147483648 and 2147483647 (line 1)"}},
		{"timestamp", header + "groups:\n- name: 2024-01-01\n  include: [/dev/sd*]\n", []string{"groups[0].name: must be a string, not a timestamp (line 4)"}},
		{"explicit !!bool that is not a boolean", header + "groups:\n- name: a\n  include: [/dev/sd*]\n  bundle: !!bool yes\n", []string{
			`groups[0].bundle: must be true or false, not "yes" tagged !!bool (line 6)`}},
		{"explicit !!str", header + "groups:\n- name: !!str 123\n  include: [/dev/sd*]\n  bundle: !!int 1\n", []string{
			"groups[0].bundle: must be true or false, not a number (line 6)"}},
		{"custom tag", header + "groups:\n- name: !disk a\n  include: [/dev/sd*]\n", []string{"groups[0].name: must be a string, not a value tagged !disk (line 4)"}},
		{"merge key", header + "base: &b {include: [/dev/sd*]}\ngroups:\n- <<: *b\n  name: a\n", []string{
			"base: unknown field (line 3)", "groups[0]: " + MsgMergeKey + " (line 5)"}},
		{"list as key", header + "groups:\n- name: a\n  include: [/dev/sd*]\n  ? [x]\n  : 1\n", []string{"groups[0]: keys must be strings (line 6)"}},
		{"all problems reported", header + "groups:\n- nme: a\n  include: x\nallowInUse: [1, 2]\n", []string{
			"groups[0].nme: unknown field (line 4)",
			"groups[0].include: must be a list, not a string (line 5)",
			"allowInUse[0]: must be a string, not a number (line 6)",
			"allowInUse[1]: must be a string, not a number (line 6)"}},

		// Validation.
		{"bad glob", header + "groups:\n- name: a\n- name: b\n  include: [\"/dev/[ab\"]\n", []string{
			`groups[0].include: Required value: at least one pattern is required, e.g. "/dev/sd*"`,
			`groups[1].include[0]: Invalid value: "/dev/[ab": bad glob pattern: syntax error in pattern`}},
		{"every validation problem together", header + `groups:
- name: Disks
  include: ["sd*", "/dev/../etc/*", "/dev//sda"]
  exclude: ["/dev/x\\"]
  types: [block, disk, block]
  permissions: rx
  sharing: {mode: exclusive, maxConsumers: 2}
- name: disks
  include: [/dev/sd*]
  sharing: {mode: pooled}
  unhealthyTaintEffect: noexecute
- name: disks
  include: [/dev/dm-*]
  sharing: {mode: shared, maxConsumers: 0}
allowInUse: [/dev/sd*, /dev/sdb, /dev/sdb, sdc]
`, []string{
			`groups[0].name: Invalid value: "Disks": a lowercase RFC 1123 label must consist of`,
			`groups[0].include[0]: Invalid value: "sd*": must start with "/dev/"`,
			`groups[0].include[1]: Invalid value: "/dev/../etc/*": must not contain ".." elements`,
			`groups[0].include[2]: Invalid value: "/dev//sda": must be a clean path (no "//", "." elements or trailing "/")`,
			`groups[0].exclude[0]: Invalid value: "/dev/x\\": bad glob pattern: syntax error in pattern`,
			`groups[0].types[1]: Unsupported value: "disk": supported values: "block", "char"`,
			`groups[0].types[2]: Duplicate value: "block"`,
			`groups[0].permissions: Invalid value: "rx": must be a combination of r, w and m (e.g. "rw"), each at most once`,
			`groups[0].sharing.maxConsumers: Forbidden: only allowed with mode "shared"`,
			`groups[1].unhealthyTaintEffect: Unsupported value: "noexecute": supported values: "NoSchedule", "NoExecute"`,
			`groups[1].sharing.mode: Unsupported value: "pooled": supported values: "exclusive", "shared"`,
			`groups[2].sharing.maxConsumers: Invalid value: 0: must be between 1 and 1048576`,
			`groups[2].name: Duplicate value: "disks"`,
			`allowInUse[0]: Invalid value: "/dev/sd*": exact paths only, not globs (no *, ?, [ or \)`,
			`allowInUse[2]: Duplicate value: "/dev/sdb"`,
			`allowInUse[3]: Invalid value: "sdc": must start with "/dev/"`}},
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

func TestConfigErrorMessage(t *testing.T) {
	_, _, err := DecodeDiscoveryConfig([]byte(header + "groups:\n- name: a\n  inclde: [x]\n  include: [/dev/sd*]\n"))
	if got, want := err.Error(), "groups[0].inclde: unknown field (line 5)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	_, _, err = DecodeDiscoveryConfig([]byte(header + "a: 1\nb: 2\n"))
	if got, want := err.Error(), "2 errors: a: unknown field (line 3); b: unknown field (line 4)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	var many strings.Builder
	many.WriteString(header)
	for i := range 12 {
		many.WriteString(strings.Repeat("x", i+1) + ": 1\n")
	}
	_, _, err = DecodeDiscoveryConfig([]byte(many.String()))
	if got := err.Error(); !strings.HasPrefix(got, "12 errors: x: unknown field (line 3); ") ||
		!strings.HasSuffix(got, "xxxxxxxxxx: unknown field (line 12); and 2 more") {
		t.Errorf("got %q", got)
	}
}

func TestLoadDiscoveryConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}

	t.Run("example", func(t *testing.T) {
		cfg, warns, err := LoadDiscoveryConfig(write("ok.yaml", exampleYAML))
		checkErr(t, err, nil)
		checkWarnings(t, warns)
		if !reflect.DeepEqual(cfg, exampleConfig()) {
			t.Errorf("got %+v", cfg)
		}
	})
	for name, content := range map[string]string{"empty file": "", "comment-only file": "# groups removed\n"} {
		t.Run(name, func(t *testing.T) {
			p := write("empty.yaml", content)
			cfg, _, err := LoadDiscoveryConfig(p)
			if want := "config " + p + ": the file is empty or holds only comments"; err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("got %v, want prefix %s", err, want)
			}
			if cfg != nil {
				t.Errorf("got a config with the error: %+v", cfg)
			}
		})
	}
	t.Run("invalid file", func(t *testing.T) {
		p := write("bad.yaml", header+"groups:\n- name: a\n- name: b\n  include: [\"/dev/[ab\"]\n")
		_, _, err := LoadDiscoveryConfig(p)
		want := "config " + p + `: 2 errors: groups[0].include: Required value: at least one pattern is required, e.g. "/dev/sd*"; ` +
			`groups[1].include[0]: Invalid value: "/dev/[ab": bad glob pattern: syntax error in pattern`
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("got %v\nwant prefix %s", err, want)
		}
	})
	t.Run("unknown field", func(t *testing.T) {
		p := write("unknown.yaml", header+"groups:\n- name: a\n  inclde: [x]\n")
		_, _, err := LoadDiscoveryConfig(p)
		if want := "config " + p + ": groups[0].inclde: unknown field (line 5)"; err == nil || err.Error() != want {
			t.Errorf("got %v, want %s", err, want)
		}
	})
	t.Run("legacy config.json", func(t *testing.T) {
		p := write("config.json", `{"nx-gzip": true}`)
		cfg, warns, err := LoadDiscoveryConfig(p)
		checkErr(t, err, nil)
		checkWarnings(t, warns, WarnLegacyFormat, WarnLegacyAllDevices)
		if len(cfg.Groups) != 1 || !cfg.Groups[0].Bundle {
			t.Errorf("got %+v", cfg.Groups)
		}
	})
	t.Run("legacy config.json with errors", func(t *testing.T) {
		p := write("bad-config.json", `{"nx-gzip": true, "upper-limit": 0}`)
		_, warns, err := LoadDiscoveryConfig(p)
		if want := "config " + p + ": upper-limit: Invalid value: 0: must be at least 1"; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("got %v, want prefix %s", err, want)
		}
		checkWarnings(t, warns, WarnLegacyFormat, WarnLegacyAllDevices)
	})
	t.Run("missing file", func(t *testing.T) {
		p := filepath.Join(dir, "missing.yaml")
		_, _, err := LoadDiscoveryConfig(p)
		if want := "config " + p + ": cannot read the file: no such file or directory"; err == nil || err.Error() != want {
			t.Errorf("got %v, want %s", err, want)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("errors.Is(%v, fs.ErrNotExist) is false", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		_, _, err := LoadDiscoveryConfig(dir)
		if want := "config " + dir + ": not a regular file (d---------)"; err == nil || err.Error() != want {
			t.Errorf("got %v, want %s", err, want)
		}
	})
	t.Run("too large", func(t *testing.T) {
		p := write("large.yaml", header+"# "+strings.Repeat("x", MaxConfigSize)+"\n")
		_, _, err := LoadDiscoveryConfig(p)
		if want := "config " + p + ": the file is larger than 1048576 bytes"; err == nil || err.Error() != want {
			t.Errorf("got %v, want %s", err, want)
		}
	})
}
