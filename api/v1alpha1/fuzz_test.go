package v1alpha1

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	yaml "go.yaml.in/yaml/v3"
)

// The seeds below and the corpus in testdata/fuzz/ hold good and bad inputs.
var discoverySeeds = []string{
	exampleYAML,
	exampleJSON,
	"",
	"# nothing\n",
	`{"nx-gzip": true, "permissions": "RW", "include-devices": ["/dev/dm-*"], "exclude-devices": ["/dev/dm-3"], "discovery-strategy": "time", "scan-interval": "1m", "upper-limit": 2}`,
	"nx-gzip: true\nupper-limit: 0\n",
	header + "groups:\n- name: a\n  inclde: [/dev/sd*]\n",
	header + "groups:\n- name: a\n  name: a\n",
	header + "base: &b {include: [/dev/sd*]}\ngroups:\n- <<: *b\n  name: a\n",
	header + "groups: &g [*g]\n",
	header + "groups:\n- {name: a, include: [\"/dev/[ab\"], sharing: {maxConsumers: 3}}\n",
	header + "allowInUse: [/dev/sd*, /dev/sdb, /dev/sdb]\n",
	`{"apiVersion": "power-dev-plugin.io/v1alpha1", "kind": "DiscoveryConfig", "groups": [{"name": "a", "include": ["/dev/sd*"], "sharing": {"mode": "shared", "maxConsumers": 1e3}}]}`,
	"a: 1\n---\nb: 2\n",
	"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
}

var deviceSeeds = []string{
	`{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig","permissions":"r","containerPath":"/dev/data","uid":1000,"gid":2000,"fileMode":432}`,
	"apiVersion: power-dev-plugin.io/v1alpha1\nkind: DeviceConfig\nfileMode: 0660\n",
	`{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig","permissions":"wr"}`,
	`{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig","fileMode":2541,"uid":-1}`,
	`{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig","containerPath":"/dev/../etc"}`,
	`{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig","uid":1,"uid":2}`,
	`{"permissions":"r"}`,
	"",
	"null",
}

// yamlRoundTrip re-encodes a decoded object as YAML, going through its JSON
// form so that the JSON field names are used.
func yamlRoundTrip(t *testing.T, obj any) []byte {
	t.Helper()
	j, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	var generic any
	if err := json.Unmarshal(j, &generic); err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(generic)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

func checkFuzzError(t *testing.T, err error) {
	t.Helper()
	var ce *ConfigError
	if !errors.As(err, &ce) || len(ce.Errs) == 0 || ce.Error() == "" {
		t.Fatalf("error %T %q is not a non-empty *ConfigError", err, err)
	}
}

func FuzzDecodeDiscoveryConfig(f *testing.F) {
	for _, s := range discoverySeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, _, err := DecodeDiscoveryConfig(data)
		if err != nil {
			if cfg != nil {
				t.Fatalf("config %+v returned with error %v", cfg, err)
			}
			checkFuzzError(t, err)
			return
		}
		if errs := ValidateDiscoveryConfig(cfg); len(errs) > 0 {
			t.Fatalf("decoded config is invalid: %v", errs)
		}
		j, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for name, doc := range map[string][]byte{"JSON": j, "YAML": yamlRoundTrip(t, cfg)} {
			again, _, err := DecodeDiscoveryConfig(doc)
			if err != nil {
				t.Fatalf("%s re-encoding does not decode: %v\n%s", name, err, doc)
			}
			if !reflect.DeepEqual(cfg, again) {
				t.Fatalf("%s round trip changed the config:\n got %+v\nwant %+v\n%s", name, again, cfg, doc)
			}
		}
	})
}

func FuzzDecodeDeviceConfig(f *testing.F) {
	for _, s := range deviceSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := DecodeDeviceConfig(data)
		if err != nil {
			if c != nil {
				t.Fatalf("config %+v returned with error %v", c, err)
			}
			checkFuzzError(t, err)
			return
		}
		if errs := ValidateDeviceConfig(c); len(errs) > 0 {
			t.Fatalf("decoded config is invalid: %v", errs)
		}
		j, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		for name, doc := range map[string][]byte{"JSON": j, "YAML": yamlRoundTrip(t, c)} {
			again, err := DecodeDeviceConfig(doc)
			if err != nil {
				t.Fatalf("%s re-encoding does not decode: %v\n%s", name, err, doc)
			}
			if !reflect.DeepEqual(c, again) {
				t.Fatalf("%s round trip changed the config:\n got %+v\nwant %+v\n%s", name, again, c, doc)
			}
		}
		// Merging a config onto nothing gives it back.
		if merged := MergeDeviceConfigs(nil, c); !reflect.DeepEqual(merged, c) {
			t.Fatalf("MergeDeviceConfigs(nil, c) = %+v, want %+v", merged, c)
		}
	})
}

// The committed corpus files are named good-* (must decode) or bad-* (must
// not), unless the fuzzer found them (other names).
func TestFuzzCorpusNames(t *testing.T) {
	for fuzzer, decode := range map[string]func([]byte) error{
		"FuzzDecodeDiscoveryConfig": func(b []byte) error { _, _, err := DecodeDiscoveryConfig(b); return err },
		"FuzzDecodeDeviceConfig":    func(b []byte) error { _, err := DecodeDeviceConfig(b); return err },
	} {
		files, err := filepath.Glob(filepath.Join("testdata", "fuzz", fuzzer, "*"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no corpus for %s: %v", fuzzer, err)
		}
		for _, file := range files {
			content, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.SplitN(strings.TrimSpace(string(content)), "\n", 2)
			if len(lines) != 2 || lines[0] != "go test fuzz v1" ||
				!strings.HasPrefix(lines[1], "[]byte(") || !strings.HasSuffix(lines[1], ")") {
				t.Errorf("%s: not a one-value go test fuzz v1 file", file)
				continue
			}
			data, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
			if err != nil {
				t.Errorf("%s: %v", file, err)
				continue
			}
			err = decode([]byte(data))
			switch name := filepath.Base(file); {
			case strings.HasPrefix(name, "good-") && err != nil:
				t.Errorf("%s: %v", file, err)
			case strings.HasPrefix(name, "bad-") && err == nil:
				t.Errorf("%s: decoded without error", file)
			}
		}
	}
}
