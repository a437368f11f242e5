package discovery

import "strings"

// ReasonClasses are the values ReasonClass returns: a small fixed set, so
// that a metric labelled by them stays bounded (reasons name devices).
var ReasonClasses = []string{
	"in_use", "unknown_in_use", "held", "multipath", "kernel_interface", "not_included", "excluded",
	"empty", "hidden", "not_ready", "unchecked", "node_problem", "dra_limit", "other",
}

// reasonPrefixes map the start of an exclusion reason to its class; the
// first match wins. Keep them in step with the reasons in discover.go,
// safety.go, stacks.go and the DRA driver's counters.go.
var reasonPrefixes = []struct{ prefix, class string }{
	{"in use: ", "in_use"},
	{reasonUnknownUse, "unknown_in_use"},
	{reasonKernel, "kernel_interface"},
	{reasonNotIncluded, "not_included"},
	{"excluded from group ", "excluded"},
	{"empty: ", "empty"},
	{reasonHidden, "hidden"},
	{"not ready: ", "not_ready"},
	{"unchecked: ", "unchecked"},
	{"held for multipath: ", "multipath"},
	{"held by ", "held"},
	{"partition ", "held"},
	{"no block device node", "node_problem"},
	{"sysfs has no device number", "node_problem"},
	{"device node ", "node_problem"},
	{"not published in DRA mode: ", "dra_limit"},
}

// ReasonClass maps an exclusion reason to one of ReasonClasses ("other"
// when no rule knows it).
func ReasonClass(reason string) string {
	for _, p := range reasonPrefixes {
		if strings.HasPrefix(reason, p.prefix) {
			return p.class
		}
	}
	return "other"
}
