package v1alpha1

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	sigsyaml "sigs.k8s.io/yaml"
)

var deviceTypeMeta = metav1.TypeMeta{APIVersion: APIVersion, Kind: DeviceConfigKind}

func TestDecodeDeviceConfig(t *testing.T) {
	full := &DeviceConfig{
		TypeMeta:      deviceTypeMeta,
		Permissions:   ptr[Permissions]("r"),
		ContainerPath: "/dev/data",
		UID:           ptr[int64](1000),
		GID:           ptr[int64](2000),
		FileMode:      ptr[uint32](0o660),
	}
	for _, tc := range []struct {
		name string
		doc  string
		want *DeviceConfig
	}{
		{"JSON", `{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig","permissions":"r","containerPath":"/dev/data","uid":1000,"gid":2000,"fileMode":432}`, full},
		{"YAML, octal fileMode", `apiVersion: power-dev-plugin.io/v1alpha1
kind: DeviceConfig
permissions: r
containerPath: /dev/data
uid: 1000
gid: 2000
fileMode: 0660
`, full},
		{"YAML, 0o fileMode", "apiVersion: power-dev-plugin.io/v1alpha1\nkind: DeviceConfig\nfileMode: 0o660\n",
			&DeviceConfig{TypeMeta: deviceTypeMeta, FileMode: ptr[uint32](432)}},
		{"YAML, decimal fileMode", "apiVersion: power-dev-plugin.io/v1alpha1\nkind: DeviceConfig\nfileMode: 432\n",
			&DeviceConfig{TypeMeta: deviceTypeMeta, FileMode: ptr[uint32](432)}},
		{"only type meta", `{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig"}`, &DeviceConfig{TypeMeta: deviceTypeMeta}},
		{"permissions made canonical", `{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig","permissions":"mwr"}`,
			&DeviceConfig{TypeMeta: deviceTypeMeta, Permissions: ptr[Permissions]("rwm")}},
		{"zero ids and mode", `{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig","uid":0,"gid":0,"fileMode":0}`,
			&DeviceConfig{TypeMeta: deviceTypeMeta, UID: ptr[int64](0), GID: ptr[int64](0), FileMode: ptr[uint32](0)}},
		{"largest ids and mode", `{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig","uid":4294967294,"gid":4294967294,"fileMode":511}`,
			&DeviceConfig{TypeMeta: deviceTypeMeta, UID: ptr[int64](MaxID), GID: ptr[int64](MaxID), FileMode: ptr[uint32](0o777)}},
		{"nulls leave fields unset", `{"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig","uid":null,"permissions":null}`,
			&DeviceConfig{TypeMeta: deviceTypeMeta}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeDeviceConfig([]byte(tc.doc))
			checkErr(t, err, nil)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// sigs.k8s.io/yaml (YAML 1.1) reads fileMode: 0660 as octal, and so does
// DecodeDeviceConfig: the same file means the same thing to both.
func TestOctalFileModeMatchesSigsYAML(t *testing.T) {
	doc := []byte("apiVersion: power-dev-plugin.io/v1alpha1\nkind: DeviceConfig\nfileMode: 0660\n")
	var viaSigs DeviceConfig
	if err := sigsyaml.UnmarshalStrict(doc, &viaSigs); err != nil {
		t.Fatal(err)
	}
	if viaSigs.FileMode == nil || *viaSigs.FileMode != 432 {
		t.Fatalf("sigs.k8s.io/yaml read fileMode 0660 as %v, want 432", viaSigs.FileMode)
	}
	ours, err := DecodeDeviceConfig(doc)
	checkErr(t, err, nil)
	if !reflect.DeepEqual(ours, &viaSigs) {
		t.Errorf("DecodeDeviceConfig gave %+v, sigs.k8s.io/yaml %+v", ours, &viaSigs)
	}
}

func TestDecodeDeviceConfigErrors(t *testing.T) {
	const tm = `"apiVersion":"power-dev-plugin.io/v1alpha1","kind":"DeviceConfig",`
	for _, tc := range []struct {
		name string
		doc  string
		want []string
	}{
		{"empty", "", []string{MsgEmptyDeviceConfig}},
		{"null", "null", []string{MsgEmptyDeviceConfig}},
		{"not an object", `["r"]`, []string{"the document must be an object (a YAML mapping), not a list (line 1)"}},
		{"bad JSON", `{"apiVersion": "power-dev-plugin.io/v1alpha1",}`, []string{"invalid JSON at line 1, column 47: invalid character '}'"}},
		{"bad YAML", "apiVersion: [\n", []string{"invalid YAML: "}},
		{"missing apiVersion and kind", `{"permissions": "r"}`, []string{
			`apiVersion: Required value: must be "power-dev-plugin.io/v1alpha1"`, `kind: Required value: must be "DeviceConfig"`}},
		{"wrong apiVersion", `{"apiVersion": "gpu.example.com/v1", "kind": "DeviceConfig"}`, []string{
			`apiVersion: Unsupported value: "gpu.example.com/v1": supported values: "power-dev-plugin.io/v1alpha1"`}},
		{"wrong kind", `{"apiVersion": "power-dev-plugin.io/v1alpha1", "kind": "DiscoveryConfig"}`, []string{
			`kind: Unsupported value: "DiscoveryConfig": supported values: "DeviceConfig"`}},
		{"kind not a string", `{"apiVersion": "power-dev-plugin.io/v1alpha1", "kind": {}}`, []string{"kind: must be a string, not an object (line 1)"}},
		{"unknown field", `{` + tm + `"mode": 432}`, []string{"mode: unknown field (line 1)"}},
		{"duplicate field", `{` + tm + "\n" + `"uid": 1, "uid": 2}`, []string{"uid: duplicate field (line 2)"}},
		{"permissions not a string", `{` + tm + `"permissions": ["r"]}`, []string{"permissions: must be a string, not a list (line 1)"}},
		{"uid a string", `{` + tm + `"uid": "1000"}`, []string{"uid: must be an integer, not a string (line 1)"}},
		{"gid a fraction", `{` + tm + `"gid": 1e3}`, []string{"gid: must be an integer, not 1e3 (line 1)"}},
		{"uid beyond int64", `{` + tm + `"uid": 9223372036854775808}`, []string{
			"uid: must be an integer between -9223372036854775808 and 9223372036854775807 (line 1)"}},
		{"negative fileMode", `{` + tm + `"fileMode": -1}`, []string{"fileMode: must be an integer between 0 and 4294967295 (line 1)"}},
		{"fileMode a string", "apiVersion: power-dev-plugin.io/v1alpha1\nkind: DeviceConfig\nfileMode: \"0660\"\n", []string{
			"fileMode: must be an integer, not a string (line 3)"}},
		{"validation problems together", `{` + tm + `"permissions": "rwx", "containerPath": "dev/x", "uid": -1, "gid": 4294967295, "fileMode": 2541}`, []string{
			`permissions: Invalid value: "rwx": must be a combination of r, w and m (e.g. "rw"), each at most once`,
			`containerPath: Invalid value: "dev/x": must start with "/dev/"`,
			`uid: Invalid value: -1: must be between 0 and 4294967294`,
			`gid: Invalid value: 4294967295: must be between 0 and 4294967294`,
			`fileMode: Invalid value: 04755: only permission bits are allowed (at most 0777; no setuid, setgid or sticky bit)`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeDeviceConfig([]byte(tc.doc))
			checkErr(t, err, tc.want)
			if got != nil {
				t.Errorf("got a config with the error: %+v", got)
			}
		})
	}
}

func TestValidateDeviceConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    *DeviceConfig
		want []string
	}{
		{"nil", nil, nil},
		{"empty", &DeviceConfig{}, nil},
		{"valid", &DeviceConfig{
			TypeMeta: deviceTypeMeta, Permissions: ptr[Permissions]("rw"), ContainerPath: "/dev/disk/data",
			UID: ptr[int64](0), GID: ptr[int64](MaxID), FileMode: ptr[uint32](0o600),
		}, nil},
		{"wrong apiVersion", &DeviceConfig{TypeMeta: metav1.TypeMeta{APIVersion: "v1"}}, []string{
			`apiVersion: Unsupported value: "v1": supported values: "power-dev-plugin.io/v1alpha1"`}},
		{"wrong kind", &DeviceConfig{TypeMeta: metav1.TypeMeta{Kind: "Pod"}}, []string{
			`kind: Unsupported value: "Pod": supported values: "DeviceConfig"`}},
		{"empty permissions", &DeviceConfig{Permissions: ptr[Permissions]("")}, []string{
			`permissions: Invalid value: "": must be a combination of r, w and m (e.g. "rw"), each at most once`}},
		{"upper case permissions", &DeviceConfig{Permissions: ptr[Permissions]("R")}, []string{
			`permissions: Invalid value: "R": must be a combination of r, w and m`}},
		{"containerPath relative", &DeviceConfig{ContainerPath: "data"}, []string{
			`containerPath: Invalid value: "data": must start with "/dev/"`}},
		{"containerPath outside /dev", &DeviceConfig{ContainerPath: "/data/sda"}, []string{
			`containerPath: Invalid value: "/data/sda": must start with "/dev/"`}},
		{"containerPath /dev", &DeviceConfig{ContainerPath: "/dev"}, []string{
			`containerPath: Invalid value: "/dev": must name a node below /dev, not /dev itself`}},
		{"containerPath /dev/", &DeviceConfig{ContainerPath: "/dev/"}, []string{
			`containerPath: Invalid value: "/dev/": must name a node below /dev, not /dev itself`}},
		{"containerPath with ..", &DeviceConfig{ContainerPath: "/dev/../etc/passwd"}, []string{
			`containerPath: Invalid value: "/dev/../etc/passwd": must not contain ".." elements`}},
		{"containerPath not clean", &DeviceConfig{ContainerPath: "/dev/disk//data"}, []string{
			`containerPath: Invalid value: "/dev/disk//data": must be a clean path (no "//", "." elements or trailing "/")`}},
		{"containerPath trailing /", &DeviceConfig{ContainerPath: "/dev/data/"}, []string{
			`containerPath: Invalid value: "/dev/data/": must be a clean path`}},
		{"uid negative", &DeviceConfig{UID: ptr[int64](-1)}, []string{`uid: Invalid value: -1: must be between 0 and 4294967294`}},
		{"uid too large", &DeviceConfig{UID: ptr[int64](1 << 32)}, []string{`uid: Invalid value: 4294967296: must be between 0 and 4294967294`}},
		{"gid -1 as unsigned", &DeviceConfig{GID: ptr[int64](1<<32 - 1)}, []string{`gid: Invalid value: 4294967295: must be between 0 and 4294967294`}},
		{"setuid", &DeviceConfig{FileMode: ptr[uint32](0o4660)}, []string{
			`fileMode: Invalid value: 04660: only permission bits are allowed (at most 0777; no setuid, setgid or sticky bit)`}},
		{"setgid", &DeviceConfig{FileMode: ptr[uint32](0o2660)}, []string{`fileMode: Invalid value: 02660: only permission bits`}},
		{"sticky", &DeviceConfig{FileMode: ptr[uint32](0o1777)}, []string{`fileMode: Invalid value: 01777: only permission bits`}},
		{"file type bits", &DeviceConfig{FileMode: ptr[uint32](0o60660)}, []string{`fileMode: Invalid value: 060660: only permission bits`}},
		{"660 meant as octal", &DeviceConfig{FileMode: ptr[uint32](660)}, []string{`fileMode: Invalid value: 01224: only permission bits`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			errs := ValidateDeviceConfig(tc.c)
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

func TestMergeDeviceConfigs(t *testing.T) {
	group := &DeviceConfig{Permissions: ptr[Permissions]("rw"), FileMode: ptr[uint32](0o660)}
	class := &DeviceConfig{TypeMeta: deviceTypeMeta, UID: ptr[int64](1000), GID: ptr[int64](1000), ContainerPath: "/dev/data"}
	claim := &DeviceConfig{TypeMeta: deviceTypeMeta, Permissions: ptr[Permissions]("r"), GID: ptr[int64](0)}

	got := MergeDeviceConfigs(group, nil, class, claim)
	want := &DeviceConfig{
		TypeMeta:      deviceTypeMeta,
		Permissions:   ptr[Permissions]("r"),
		ContainerPath: "/dev/data",
		UID:           ptr[int64](1000),
		GID:           ptr[int64](0),
		FileMode:      ptr[uint32](0o660),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}

	// The result shares no memory with the inputs.
	*got.Permissions, *got.UID, *got.GID, *got.FileMode = "m", 1, 1, 1
	if *claim.Permissions != "r" || *class.UID != 1000 || *claim.GID != 0 || *group.FileMode != 0o660 {
		t.Errorf("MergeDeviceConfigs aliases its inputs")
	}

	if got := MergeDeviceConfigs(); !reflect.DeepEqual(got, &DeviceConfig{TypeMeta: deviceTypeMeta}) {
		t.Errorf("MergeDeviceConfigs() = %+v", got)
	}
	if got := MergeDeviceConfigs(nil, &DeviceConfig{}); !reflect.DeepEqual(got, &DeviceConfig{TypeMeta: deviceTypeMeta}) {
		t.Errorf("MergeDeviceConfigs(nil, empty) = %+v", got)
	}
}

// A containerPath may not shadow what every container needs (review
// 2026-12-04, finding 15: with /dev/null the claim's disk would receive
// every "> /dev/null" of the container).
func TestValidateDeviceConfigReservedContainerPaths(t *testing.T) {
	for _, p := range []string{
		"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/console", "/dev/ptmx",
		"/dev/pts", "/dev/pts/0", "/dev/pts/ptmx", "/dev/shm", "/dev/shm/data", "/dev/fd", "/dev/fd/0",
		"/dev/stdin", "/dev/stdout", "/dev/stderr", "/dev/mqueue", "/dev/mqueue/q", "/dev/core", "/dev/termination-log",
	} {
		errs := ValidateDeviceConfig(&DeviceConfig{ContainerPath: p})
		reserved := p
		for _, r := range ReservedContainerPaths() {
			if strings.HasPrefix(p, r+"/") {
				reserved = r
			}
		}
		want := `containerPath: Invalid value: "` + p + `": must not be ` + reserved + ` or below it: every container needs ` + reserved +
			` (the container runtime or the kubelet provides it) and a device node there would replace it; choose another path under /dev/`
		if len(errs) != 1 || errs[0].Error() != want {
			t.Errorf("%s:\n got %v\nwant %s", p, errs, want)
		}
	}
	// Neighbours of reserved names are fine.
	for _, p := range []string{"/dev/nullable", "/dev/tty0-data", "/dev/ptsdisk", "/dev/shmdisk", "/dev/data/null", "/dev/disk/by-id/null"} {
		if errs := ValidateDeviceConfig(&DeviceConfig{ContainerPath: p}); len(errs) > 0 {
			t.Errorf("%s: %v", p, errs)
		}
	}
	// The list is sorted (the admission policy's copy is compared to it).
	if l := ReservedContainerPaths(); !slices.IsSorted(l) {
		t.Errorf("ReservedContainerPaths() is not sorted: %q", l)
	}
}
