package discovery

import (
	"slices"
	"testing"
)

// Every exclusion the fixture trees produce maps to a known class, and the
// rules name each class at most a handful of times.
func TestReasonClass(t *testing.T) {
	cases := map[string]string{
		"in use: mounted at /":                     "in_use",
		reasonUnknownUse + "cannot read mountinfo": "unknown_in_use",
		reasonKernel:      "kernel_interface",
		reasonNotIncluded: "not_included",
		`excluded from group "dev" by pattern "x"`:         "excluded",
		"empty: size 0 (no medium)":                        "empty",
		reasonHidden:                                       "hidden",
		"not ready: new device, published once":            "not_ready",
		"unchecked: cannot tell whether":                   "unchecked",
		"in use: carries an LVM physical volume signature": "in_use",
		"held for multipath: udev marks it":                "multipath",
		"held by dm-0 (LVM vg-lv)":                         "held",
		"partition sda1 is held by md0":                    "held",
		"no block device node at /dev/sdz":                 "node_problem",
		"not published in DRA mode: sda shares":            "dra_limit",
		"something new":                                    "other",
	}
	for reason, want := range cases {
		got := ReasonClass(reason)
		if got != want {
			t.Errorf("ReasonClass(%q) = %q, want %q", reason, got, want)
		}
		if !slices.Contains(ReasonClasses, got) {
			t.Errorf("ReasonClass(%q) = %q, not in ReasonClasses", reason, got)
		}
	}
}
