package driver

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"

	resourceapi "k8s.io/api/resource/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

// An attribute read from a device (a VPD serial, a model string) may hold
// bytes that are not UTF-8, or control characters. JSON turns each bad byte
// into U+FFFD, three bytes, so a 64-byte serial reached the API server as
// 192 bytes and the whole slice was rejected (review 2026-12-04, finding
// 14). The values are cleaned first, then cut: they pass ValidateResources
// and the API's own validation, and come back unchanged from a JSON round
// trip, as the API server stores them.
func TestSliceBuildCleansInvalidUTF8(t *testing.T) {
	d := diskForTest("sdx", "/dev/sdx", 1<<30)
	d.Block.Serial = strings.Repeat("\xff", 64)                           // nothing but bad bytes
	d.Block.Model = "ST4000\x00NM\x01" + strings.Repeat("m", 60) + "\xc3" // NUL, control, a cut sequence
	d.Block.Vendor = strings.Repeat("é", 31) + "\xe2\x82"                 // 62 bytes of good runes, then half a rune
	d.Block.WWN = "naa.5000\tc500\n" + strings.Repeat("\xfe\xfe", 30)     // tab, newline, bad bytes
	res, err := BuildResources("n", inventoryForTest(groupForTest("g", d)))
	if err != nil {
		t.Fatal(err)
	}
	checkPublishable(t, res)
	dev := findDevice(t, res, "sdx")

	want := map[resourceapi.QualifiedName]string{
		AttrSerial: "\uFFFD",
		AttrModel:  "ST4000NM" + strings.Repeat("m", 56), // cut at 64 bytes, before U+FFFD
		AttrVendor: strings.Repeat("é", 31) + "",         // U+FFFD would make it 65 bytes
		AttrWWN:    "naa.5000c500\uFFFD",
	}
	for name, w := range want {
		a := dev.Attributes[name]
		if a.StringValue == nil || *a.StringValue != w {
			t.Errorf("%s: got %q, want %q", name, ptr.Deref(a.StringValue, "<unset>"), w)
		}
	}

	// What the API server gets: the JSON encoding of the slice.
	spec := resourceapi.ResourceSliceSpec{
		Driver: DriverName, NodeName: ptr.To("n"),
		Pool:    resourceapi.ResourcePool{Name: "n", Generation: 1, ResourceSliceCount: 1},
		Devices: res.Pools["n"].Slices[0].Devices,
	}
	wire, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	var got resourceapi.ResourceSliceSpec
	if err := json.Unmarshal(wire, &got); err != nil {
		t.Fatal(err)
	}
	sent := spec.Devices[0].Attributes
	for name, a := range got.Devices[0].Attributes {
		s := a.StringValue
		if s == nil {
			continue
		}
		if *s != *sent[name].StringValue {
			t.Errorf("%s: the JSON round trip changed %q into %q", name, *sent[name].StringValue, *s)
		}
		if len(*s) > resourceapi.DeviceAttributeMaxValueLength || !utf8.ValidString(*s) {
			t.Errorf("%s: %d bytes on the wire: %q", name, len(*s), *s)
		}
	}
	if errs := resourceapi.Validate_ResourceSliceSpec(context.Background(), declarativeCreate, field.NewPath("spec"), &got, nil); len(errs) > 0 {
		t.Errorf("the API server would reject the slice: %v", errs.ToAggregate())
	}
}

func TestTruncate(t *testing.T) {
	for in, want := range map[string]string{
		"":                                "",
		"S3Z1NB0K":                        "S3Z1NB0K",
		"WD Blue  ":                       "WD Blue  ", // spaces are printable
		"a\x00b\x7fc\u200bd":              "abcd",      // NUL, DEL, zero-width space
		"bad\xffbyte":                     "bad\uFFFDbyte",
		"run\xff\xfe\xfdof bad":           "run\uFFFDof bad",
		strings.Repeat("x", 70):           strings.Repeat("x", 64),
		strings.Repeat("x", 63) + "é":     strings.Repeat("x", 63),
		strings.Repeat("\x01", 100) + "k": "k",
	} {
		if got := truncate(in); got != want {
			t.Errorf("truncate(%q) = %q, want %q", in, got, want)
		}
	}
}
