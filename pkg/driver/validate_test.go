package driver

import (
	"fmt"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/dynamic-resource-allocation/resourceslice"
	"k8s.io/utils/ptr"
)

// validBaseForTest is a valid node pool "node-1" with two slices: slice 0
// holds disk-0000..disk-0127, slice 1 holds disk-0128 (exclusive) and
// "shared" (a shared disk with maxConsumers 4).
func validBaseForTest(t *testing.T) resourceslice.DriverResources {
	t.Helper()
	res, err := BuildResources("node-1", inventoryForTest(
		groupForTest("disks", manyDisksForTest(129)...),
		sharedGroupForTest("shared", 4, diskForTest("shared", "/dev/shared", 100<<30)),
	))
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateResources(res); err != nil {
		t.Fatalf("base is not valid: %v", err)
	}
	return res
}

func deviceForTest(res resourceslice.DriverResources, slice, index int) *resourceapi.Device {
	return &res.Pools["node-1"].Slices[slice].Devices[index]
}

// exclusive is slice 1's first device, shared its second.
func exclusiveForTest(res resourceslice.DriverResources) *resourceapi.Device {
	return deviceForTest(res, 1, 0)
}

func sharedForTest(res resourceslice.DriverResources) *resourceapi.Device {
	return deviceForTest(res, 1, 1)
}

func q(s string) *resource.Quantity { return ptr.To(resource.MustParse(s)) }

func setPool(res *resourceslice.DriverResources, name string, p resourceslice.Pool) {
	res.Pools = map[string]resourceslice.Pool{name: p}
}

func TestValidateResourcesRejects(t *testing.T) {
	str := func(s string) resourceapi.DeviceAttribute { return resourceapi.DeviceAttribute{StringValue: &s} }
	tests := []struct {
		name   string
		mutate func(res *resourceslice.DriverResources)
		// want are substrings of the error, each of which must appear.
		want []string
	}{
		{
			name:   "device name not a DNS label",
			mutate: func(res *resourceslice.DriverResources) { exclusiveForTest(*res).Name = "Disk_1" },
			want:   []string{`pool "node-1", slice 1, device "Disk_1": devices[0].name: a lowercase RFC 1123 label`},
		},
		{
			name:   "device name too long",
			mutate: func(res *resourceslice.DriverResources) { exclusiveForTest(*res).Name = strings.Repeat("a", 64) },
			want:   []string{"devices[0].name: must be no more than 63"},
		},
		{
			name:   "duplicate device name across slices",
			mutate: func(res *resourceslice.DriverResources) { exclusiveForTest(*res).Name = "disk-0005" },
			want:   []string{`pool "node-1", slice 1, device "disk-0005": duplicate device name in the pool (also in slice 0)`},
		},
		{
			name: "string that is not UTF-8",
			mutate: func(res *resourceslice.DriverResources) {
				exclusiveForTest(*res).Attributes[AttrSerial] = str(strings.Repeat("\xff", 64))
			},
			want: []string{`slice 1, device "disk-0128": devices[0].attributes[serial]: string value "\xff\xff`, `is not valid UTF-8`},
		},
		{
			name: "65-byte string",
			mutate: func(res *resourceslice.DriverResources) {
				exclusiveForTest(*res).Attributes[AttrSerial] = str(strings.Repeat("s", 65))
			},
			want: []string{`slice 1, device "disk-0128": devices[0].attributes[serial]: string value is 65 bytes, more than 64`},
		},
		{
			name: "33 attributes and capacities",
			mutate: func(res *resourceslice.DriverResources) {
				d := exclusiveForTest(*res)
				for i := 0; len(d.Attributes)+len(d.Capacity) < 33; i++ {
					d.Attributes[resourceapi.QualifiedName(fmt.Sprintf("extra%d", i))] = str("x")
				}
			},
			want: []string{`device "disk-0128": devices[0].attributes, capacity: 33 attributes and capacities, more than the 32 allowed`},
		},
		{
			name: "49 attribute values",
			mutate: func(res *resourceslice.DriverResources) {
				d := exclusiveForTest(*res)
				d.Attributes["aliases"] = resourceapi.DeviceAttribute{StringValues: make([]string, 49-len(d.Attributes))}
			},
			want: []string{"devices[0].attributes: 49 attribute values, more than the 48 allowed"},
		},
		{
			name: "129 devices in a slice",
			mutate: func(res *resourceslice.DriverResources) {
				p := res.Pools["node-1"]
				p.Slices[0].Devices = append(p.Slices[0].Devices, p.Slices[1].Devices[0])
				p.Slices = p.Slices[:1]
				res.Pools["node-1"] = p
			},
			want: []string{`pool "node-1", slice 0: devices: 129 devices, more than the 128 allowed`},
		},
		{
			name: "65 devices in a slice with one tainted device",
			mutate: func(res *resourceslice.DriverResources) {
				p := res.Pools["node-1"]
				p.Slices[0].Devices = p.Slices[0].Devices[:65]
				p.Slices[0].Devices[64].Taints = []resourceapi.DeviceTaint{{Key: "example.com/broken", Effect: resourceapi.DeviceTaintEffectNoSchedule}}
			},
			want: []string{`slice 0: devices: 65 devices, more than the 64 allowed`},
		},
		{
			name: "65 devices in a slice with consumesCounters",
			mutate: func(res *resourceslice.DriverResources) {
				p := res.Pools["node-1"]
				p.Slices[0].Devices = p.Slices[0].Devices[:65]
				p.Slices[0].Devices[0].ConsumesCounters = []resourceapi.DeviceCounterConsumption{{CounterSet: "cs", Counters: map[string]resourceapi.Counter{"c": {Value: *q("1")}}}}
			},
			want: []string{`slice 0: devices: 65 devices, more than the 64 allowed`},
		},
		{
			name: "attribute with two values",
			mutate: func(res *resourceslice.DriverResources) {
				a := str("x")
				a.IntValue = ptr.To[int64](1)
				exclusiveForTest(*res).Attributes[AttrModel] = a
			},
			want: []string{"attributes[model]: exactly one value must be specified, found 2"},
		},
		{
			name: "attribute without value",
			mutate: func(res *resourceslice.DriverResources) {
				exclusiveForTest(*res).Attributes[AttrModel] = resourceapi.DeviceAttribute{}
			},
			want: []string{"attributes[model]: exactly one value must be specified, found 0"},
		},
		{
			name: "empty list value",
			mutate: func(res *resourceslice.DriverResources) {
				exclusiveForTest(*res).Attributes["aliases"] = resourceapi.DeviceAttribute{StringValues: []string{}}
			},
			want: []string{"attributes[aliases]: strings must not be empty if specified"},
		},
		{
			name: "bad version",
			mutate: func(res *resourceslice.DriverResources) {
				exclusiveForTest(*res).Attributes["fw"] = resourceapi.DeviceAttribute{VersionValue: ptr.To("v1.2")}
			},
			want: []string{`attributes[fw]: version value "v1.2" is not a semantic version`},
		},
		{
			name: "attribute names",
			mutate: func(res *resourceslice.DriverResources) {
				a := exclusiveForTest(*res).Attributes
				clear(a)
				a["1st"] = str("x")
				a[resourceapi.QualifiedName(strings.Repeat("i", 33))] = str("x")
				a["Bad_Domain.io/x"] = str("x")
				a[resourceapi.QualifiedName(strings.Repeat("d", 64)+"/x")] = str("x")
				a["a/b/c"] = str("x")
				a["/x"] = str("x")
				a["example.com/"] = str("x")
				a["power-dev-plugin.io/path"] = str("/dev/sdz") // valid
			},
			want: []string{
				`attributes[1st]: name: identifier "1st" must be a C identifier`,
				`name: identifier "iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii" is 33 characters, more than 32`,
				`attributes[Bad_Domain.io/x]: name: domain: a lowercase RFC 1123 subdomain`,
				"name: domain is 64 characters, more than 63",
				"attributes[a/b/c]: name: must not contain more than one slash",
				"attributes[/x]: name: the domain must not be empty",
				"attributes[example.com/]: name: the identifier must not be empty",
			},
		},
		{
			name: "capacity name",
			mutate: func(res *resourceslice.DriverResources) {
				d := exclusiveForTest(*res)
				d.Capacity["size-bytes"] = d.Capacity[CapSize]
			},
			want: []string{`capacity[size-bytes]: name: identifier "size-bytes" must be a C identifier`},
		},
		{
			name:   "empty pool name",
			mutate: func(res *resourceslice.DriverResources) { setPool(res, "", res.Pools["node-1"]) },
			want:   []string{`pool "": name: must not be empty`},
		},
		{
			name:   "pool name not a DNS subdomain",
			mutate: func(res *resourceslice.DriverResources) { setPool(res, "Node_1", res.Pools["node-1"]) },
			want:   []string{`pool "Node_1": name: "Node_1": a lowercase RFC 1123 subdomain`},
		},
		{
			name:   "pool name with slashes, one part bad",
			mutate: func(res *resourceslice.DriverResources) { setPool(res, "rack-1/node-1/", res.Pools["node-1"]) },
			want:   []string{`name: "": a lowercase RFC 1123 subdomain`},
		},
		{
			name:   "pool name too long",
			mutate: func(res *resourceslice.DriverResources) { setPool(res, strings.Repeat("n", 254), res.Pools["node-1"]) },
			want:   []string{"name: 254 characters, more than 253"},
		},
		{
			name:   "no slices",
			mutate: func(res *resourceslice.DriverResources) { setPool(res, "node-1", resourceslice.Pool{}) },
			want:   []string{`pool "node-1": has no slices`},
		},
		{
			name: "too many slices",
			mutate: func(res *resourceslice.DriverResources) {
				setPool(res, "node-1", resourceslice.Pool{Slices: make([]resourceslice.Slice, MaxSlicesPerPool+1)})
			},
			want: []string{fmt.Sprintf(`pool "node-1": %d slices, more than the %d allowed`, MaxSlicesPerPool+1, MaxSlicesPerPool)},
		},
		{
			name: "nodeSelector and allNodes",
			mutate: func(res *resourceslice.DriverResources) {
				p := res.Pools["node-1"]
				p.AllNodes, p.NodeSelector = true, &v1.NodeSelector{}
				res.Pools["node-1"] = p
			},
			want: []string{"at most one of nodeSelector and allNodes"},
		},
		{
			name: "devices and shared counters in one slice",
			mutate: func(res *resourceslice.DriverResources) {
				res.Pools["node-1"].Slices[1].SharedCounters = []resourceapi.CounterSet{{Name: "cs"}}
			},
			want: []string{"slice 1: only one of devices and sharedCounters may be set"},
		},
		{
			name:   "per-device node name without perDeviceNodeSelection",
			mutate: func(res *resourceslice.DriverResources) { exclusiveForTest(*res).NodeName = ptr.To("node-1") },
			want:   []string{"nodeName, nodeSelector, allNodes: may only be set with perDeviceNodeSelection"},
		},
		{
			name: "17 taints",
			mutate: func(res *resourceslice.DriverResources) {
				exclusiveForTest(*res).Taints = make([]resourceapi.DeviceTaint, 17)
			},
			want: []string{"taints: 17 taints, more than the 16 allowed"},
		},
		{
			name: "negative capacity",
			mutate: func(res *resourceslice.DriverResources) {
				exclusiveForTest(*res).Capacity[CapSize] = resourceapi.DeviceCapacity{Value: *q("-1")}
			},
			want: []string{"capacity[size]: value -1 must not be negative"},
		},
		{
			name: "requestPolicy on an exclusive device",
			mutate: func(res *resourceslice.DriverResources) {
				d := exclusiveForTest(*res)
				c := d.Capacity[CapSize]
				c.RequestPolicy = &resourceapi.CapacityRequestPolicy{Default: q("0")}
				d.Capacity[CapSize] = c
			},
			want: []string{`device "disk-0128": devices[0].capacity[size].requestPolicy: only allowed when allowMultipleAllocations is true`},
		},
		{
			name: "consumers: default outside validRange",
			mutate: func(res *resourceslice.DriverResources) {
				sharedForTest(*res).Capacity[CapConsumers].RequestPolicy.Default = q("2")
			},
			want: []string{`device "shared": devices[1].capacity[consumers].requestPolicy: default 2 is more than validRange.max 1`},
		},
		{
			name: "consumers: default missing",
			mutate: func(res *resourceslice.DriverResources) {
				sharedForTest(*res).Capacity[CapConsumers].RequestPolicy.Default = nil
			},
			want: []string{"capacity[consumers].requestPolicy: default is required when validRange is set"},
		},
		{
			name: "consumers: min above value, max above value",
			mutate: func(res *resourceslice.DriverResources) {
				r := sharedForTest(*res).Capacity[CapConsumers].RequestPolicy
				r.Default, r.ValidRange.Min, r.ValidRange.Max = q("5"), q("5"), q("6")
			},
			want: []string{"validRange.min 5 is larger than the capacity value 4", "validRange.max 6 is larger than the capacity value 4", "default 5 is larger than the capacity value 4"},
		},
		{
			name: "consumers: min above max, min missing",
			mutate: func(res *resourceslice.DriverResources) {
				r := sharedForTest(*res).Capacity[CapConsumers].RequestPolicy
				r.ValidRange.Min = q("2")
				c := sharedForTest(*res).Capacity[CapSize]
				c.RequestPolicy.ValidRange.Min = nil
				sharedForTest(*res).Capacity[CapSize] = c
			},
			want: []string{"validRange.min 2 is larger than validRange.max 1", "default 1 is less than validRange.min 2", "capacity[size].requestPolicy: validRange.min is required"},
		},
		{
			name: "step misaligned",
			mutate: func(res *resourceslice.DriverResources) {
				r := sharedForTest(*res).Capacity[CapSize].RequestPolicy
				r.ValidRange.Step = q("3Gi")
				r.ValidRange.Max = q("10Gi")
				r.Default = q("1Gi")
			},
			want: []string{"default 1Gi is not min 0 plus a multiple of step 3Gi", "validRange.max 10Gi is not min 0 plus a multiple of step 3Gi"},
		},
		{
			name: "step zero, step beyond value",
			mutate: func(res *resourceslice.DriverResources) {
				sharedForTest(*res).Capacity[CapSize].RequestPolicy.ValidRange.Step = q("0")
				sharedForTest(*res).Capacity[CapConsumers].RequestPolicy.ValidRange = &resourceapi.CapacityRequestPolicyRange{Min: q("1"), Step: q("4")}
			},
			want: []string{"capacity[size].requestPolicy: validRange.step 0 must be greater than zero", "capacity[consumers].requestPolicy: validRange.min + step = 5 is larger than the capacity value 4"},
		},
		{
			name: "validValues and validRange",
			mutate: func(res *resourceslice.DriverResources) {
				sharedForTest(*res).Capacity[CapConsumers].RequestPolicy.ValidValues = []resource.Quantity{*q("1")}
			},
			want: []string{"capacity[consumers].requestPolicy: only one of validValues and validRange may be set"},
		},
		{
			name: "validValues rules",
			mutate: func(res *resourceslice.DriverResources) {
				r := sharedForTest(*res).Capacity[CapConsumers].RequestPolicy
				r.ValidRange = nil
				r.Default = q("3")
				r.ValidValues = []resource.Quantity{*q("2"), *q("1"), *q("1"), *q("9")}
			},
			want: []string{
				"validValues[1]: 1 is not in ascending order",
				"validValues[2]: duplicate value 1",
				"validValues[3]: 9 is larger than the capacity value 4",
				"default 3 is not one of validValues",
			},
		},
		{
			name: "validValues: more than 10, no default",
			mutate: func(res *resourceslice.DriverResources) {
				c := sharedForTest(*res).Capacity[CapSize]
				c.RequestPolicy = &resourceapi.CapacityRequestPolicy{}
				for i := range 11 {
					c.RequestPolicy.ValidValues = append(c.RequestPolicy.ValidValues, *resource.NewQuantity(int64(i), resource.BinarySI))
				}
				sharedForTest(*res).Capacity[CapSize] = c
			},
			want: []string{"default is required when validValues is set", "validValues: 11 entries, more than 10"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := validBaseForTest(t)
			tc.mutate(&res)
			err := ValidateResources(res)
			if err == nil {
				t.Fatalf("ValidateResources accepted the mutated resources")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestValidateResourcesAccepts(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(res *resourceslice.DriverResources)
	}{
		{name: "as built"},
		{name: "validValues", mutate: func(res *resourceslice.DriverResources) {
			r := sharedForTest(*res).Capacity[CapConsumers].RequestPolicy
			r.ValidRange = nil
			r.ValidValues = []resource.Quantity{*q("1"), *q("2"), *q("4")}
		}},
		{name: "aligned step", mutate: func(res *resourceslice.DriverResources) {
			r := sharedForTest(*res).Capacity[CapSize].RequestPolicy
			r.ValidRange = &resourceapi.CapacityRequestPolicyRange{Min: q("1Gi"), Max: q("7Gi"), Step: q("2Gi")}
			r.Default = q("3Gi")
		}},
		{name: "policy with only a default", mutate: func(res *resourceslice.DriverResources) {
			r := sharedForTest(*res).Capacity[CapSize].RequestPolicy
			r.ValidRange = nil
		}},
		{name: "64 devices with a taint and a list attribute", mutate: func(res *resourceslice.DriverResources) {
			p := res.Pools["node-1"]
			p.Slices[0].Devices = p.Slices[0].Devices[:64]
			p.Slices[0].Devices[0].Taints = []resourceapi.DeviceTaint{{Key: "example.com/broken", Effect: resourceapi.DeviceTaintEffectNoSchedule}}
			p.Slices[0].Devices[1].Attributes["aliases"] = resourceapi.DeviceAttribute{StringValues: []string{"/dev/mapper/a"}}
		}},
		{name: "semver version", mutate: func(res *resourceslice.DriverResources) {
			exclusiveForTest(*res).Attributes["fw"] = resourceapi.DeviceAttribute{VersionValue: ptr.To("1.2.3-rc.1+build.5")}
		}},
		{name: "fully qualified attribute name", mutate: func(res *resourceslice.DriverResources) {
			exclusiveForTest(*res).Attributes["power-dev-plugin.io/extra"] = resourceapi.DeviceAttribute{IntValue: ptr.To[int64](1)}
		}},
		{name: "pool name with slash", mutate: func(res *resourceslice.DriverResources) {
			setPool(res, "rack-1/node-1", res.Pools["node-1"])
		}},
		{name: "empty pool is one empty slice", mutate: func(res *resourceslice.DriverResources) {
			setPool(res, "node-1", resourceslice.Pool{Slices: []resourceslice.Slice{{}}})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := validBaseForTest(t)
			if tc.mutate != nil {
				tc.mutate(&res)
			}
			if err := ValidateResources(res); err != nil {
				t.Errorf("ValidateResources: %v", err)
			}
		})
	}
}

// A systematic mistake is reported with a bounded number of messages.
func TestValidateResourcesCapsMessages(t *testing.T) {
	res := validBaseForTest(t)
	for i := range res.Pools["node-1"].Slices[0].Devices {
		deviceForTest(res, 0, i).Name = fmt.Sprintf("Bad_%d", i)
	}
	err := ValidateResources(res)
	if err == nil {
		t.Fatal("accepted 128 invalid names")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != maxReportedErrors+1 {
		t.Errorf("got %d lines, want %d", len(lines), maxReportedErrors+1)
	}
	if want := fmt.Sprintf("... and %d more problems", 128-maxReportedErrors); lines[len(lines)-1] != want {
		t.Errorf("last line: got %q, want %q", lines[len(lines)-1], want)
	}
}
