package deploy_test

import (
	"context"
	"slices"
	"testing"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	dracel "k8s.io/dynamic-resource-allocation/cel"
)

// Devices as the driver publishes them (pkg/driver/attributes.go): the
// attribute names are in the driver's domain.
func attrs(kv ...any) map[resourceapi.QualifiedName]resourceapi.DeviceAttribute {
	out := map[resourceapi.QualifiedName]resourceapi.DeviceAttribute{}
	for i := 0; i < len(kv); i += 2 {
		name := resourceapi.QualifiedName(kv[i].(string))
		switch v := kv[i+1].(type) {
		case string:
			out[name] = resourceapi.DeviceAttribute{StringValue: &v}
		case int:
			n := int64(v)
			out[name] = resourceapi.DeviceAttribute{IntValue: &n}
		case bool:
			out[name] = resourceapi.DeviceAttribute{BoolValue: &v}
		}
	}
	return out
}

var testDevices = map[string]dracel.Device{
	"disk": {Driver: driverName, Attributes: attrs("group", "dev", "path", "/dev/sdb", "type", "block", "major", 8, "minor", 16, "kind", "disk",
		"model", "ST4000NM", "rotational", true), Capacity: map[resourceapi.QualifiedName]resourceapi.DeviceCapacity{"size": {Value: resource.MustParse("4Ti")}}},
	"mpath":         {Driver: driverName, Attributes: attrs("group", "db2", "path", "/dev/dm-3", "type", "block", "kind", "mpath", "dmName", "mpatha")},
	"nx-gzip":       {Driver: driverName, Attributes: attrs("group", "dev", "path", "/dev/crypto/nx-gzip", "type", "char", "major", 246, "minor", 0)},
	"nx-gzip group": {Driver: driverName, Attributes: attrs("group", "nx-gzip", "path", "/dev/crypto/nx-gzip-1", "type", "char")},
	"fuse":          {Driver: driverName, Attributes: attrs("group", "fuse", "path", "/dev/fuse", "type", "char")},
	// A bundle of mixed node types has no "type" and no "path".
	"mixed bundle": {Driver: driverName, Attributes: attrs("group", "db2", "bundle", true, "nodes", 140)},
	"block bundle": {Driver: driverName, Attributes: attrs("group", "db2", "bundle", true, "nodes", 12, "type", "block")},
	// The same with uniform attributes (every attribute on every device,
	// empty where it does not apply), as pkg/driver is moving to.
	"mixed bundle, uniform": {Driver: driverName, Attributes: attrs("group", "db2", "bundle", true, "nodes", 140, "type", "", "path", "", "kind", "")},
	"fuse, uniform":         {Driver: driverName, Attributes: attrs("group", "fuse", "path", "/dev/fuse", "type", "char", "kind", "", "serial", "", "bundle", false, "nodes", 1)},
	"other driver":          {Driver: "gpu.example.com", Attributes: attrs("type", "block", "path", "/dev/crypto/nx-gzip")},
}

func TestDeviceClasses(t *testing.T) {
	want := map[string][]string{
		"power-dev-plugin.io":         {"block bundle", "disk", "fuse", "fuse, uniform", "mixed bundle", "mixed bundle, uniform", "mpath", "nx-gzip", "nx-gzip group"},
		"block.power-dev-plugin.io":   {"block bundle", "disk", "mpath"},
		"nx-gzip.power-dev-plugin.io": {"nx-gzip", "nx-gzip group"},
	}
	for _, m := range renderings(t) {
		classes := m.byKind("DeviceClass")
		if isLegacy(m) {
			if len(classes) > 0 {
				t.Errorf("%s: device-plugin mode has no use for DeviceClasses", m.what)
			}
			continue
		}
		var names []string
		for _, o := range classes {
			dc := o.typed(t).(*resourceapi.DeviceClass)
			names = append(names, dc.Name)
			if dc.Name == driverName {
				if dc.Spec.ExtendedResourceName == nil || *dc.Spec.ExtendedResourceName != "power-dev-plugin/dev" {
					t.Errorf("%s: %s: extendedResourceName must be power-dev-plugin/dev (the old plugin's resource)", m.what, dc.Name)
				}
			} else if dc.Spec.ExtendedResourceName != nil {
				t.Errorf("%s: %s: only one class may carry an extended resource name", m.what, dc.Name)
			}
			if len(dc.Spec.Config) > 0 {
				t.Errorf("%s: %s: unexpected config", m.what, dc.Name)
			}
			for _, features := range []dracel.Features{{}, {EnableConsumableCapacity: true, EnableListTypeAttributes: true}} {
				var compiled []dracel.CompilationResult
				for _, sel := range dc.Spec.Selectors {
					if sel.CEL == nil {
						t.Fatalf("%s: %s: a selector without CEL", m.what, dc.Name)
					}
					res := dracel.GetCompiler(features).CompileCELExpression(sel.CEL.Expression, dracel.Options{})
					if res.Error != nil {
						t.Fatalf("%s: %s: %v", m.what, dc.Name, res.Error)
					}
					if res.MaxCost > resourceapi.CELSelectorExpressionMaxCost {
						t.Errorf("%s: %s: estimated cost %d exceeds the API's limit %d", m.what, dc.Name, res.MaxCost, resourceapi.CELSelectorExpressionMaxCost)
					}
					compiled = append(compiled, res)
				}
				// A device belongs to the class when every selector holds.
				// A CEL error during allocation fails the claim: every
				// selector must evaluate without error on every device.
				var matched []string
				for name, dev := range testDevices {
					all := true
					for _, res := range compiled {
						ok, _, err := res.DeviceMatches(context.Background(), dev)
						if err != nil {
							t.Errorf("%s: %s on %s: %v", m.what, dc.Name, name, err)
						}
						all = all && ok
					}
					if all {
						matched = append(matched, name)
					}
				}
				slices.Sort(matched)
				if !slices.Equal(matched, want[dc.Name]) {
					t.Errorf("%s: %s (features %+v) selects %v, want %v", m.what, dc.Name, features, matched, want[dc.Name])
				}
			}
		}
		slices.Sort(names)
		if !slices.Equal(names, []string{"block.power-dev-plugin.io", "nx-gzip.power-dev-plugin.io", "power-dev-plugin.io"}) {
			t.Errorf("%s: DeviceClasses %v", m.what, names)
		}
	}
}
