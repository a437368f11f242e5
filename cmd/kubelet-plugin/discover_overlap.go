package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/driver"
)

// reportStack is a published block device with the published devices it
// is built on: they share blocks (discovery.Overlaps).
type reportStack struct {
	Path    string   `json:"path"`
	BuiltOn []string `json:"builtOn"`
}

// addOverlaps says which published devices share blocks and what each mode
// does about it.
func addOverlaps(rep *discoverReport, inv *discovery.Inventory) {
	for _, s := range discovery.FindOverlaps(inv).Stacks {
		rs := reportStack{Path: s.Top.Path}
		for _, b := range s.Below {
			rs.BuiltOn = append(rs.BuiltOn, b.Path)
		}
		rep.SharedBlocks = append(rep.SharedBlocks, rs)
	}
	for _, s := range deviceplugin.BuildDeviceSets(inv, nil) {
		rep.HeldBack = append(rep.HeldBack, s.HeldBack...)
	}
	// The pool's name does not change what is withheld.
	if _, withheld, err := driver.BuildResourcesWithheld("discover", inv); err == nil {
		rep.Withheld = withheld
	}
}

func writeOverlaps(w io.Writer, rep *discoverReport) {
	if len(rep.SharedBlocks) == 0 {
		return
	}
	fmt.Fprintf(w, "\nSHARE BLOCKS: %d device(s) built on other published devices. DRA: the scheduler never allocates two that share blocks at once (shared counters, Kubernetes 1.36+). Device plugin: only the top of each stack is offered.\n", len(rep.SharedBlocks))
	fmt.Fprintln(w, "  PATH\tBUILT ON")
	for _, s := range rep.SharedBlocks {
		fmt.Fprintf(w, "  %s\t%s\n", s.Path, strings.Join(s.BuiltOn, ", "))
	}
	for _, l := range []struct {
		title string
		list  []discovery.Exclusion
	}{{"NOT PUBLISHED IN DRA MODE", rep.Withheld}, {"NOT OFFERED IN DEVICE-PLUGIN MODE", rep.HeldBack}} {
		if len(l.list) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s: %d\n  PATH\tREASON\n", l.title, len(l.list))
		for _, e := range l.list {
			fmt.Fprintf(w, "  %s\t%s\n", e.Path, e.Reason)
		}
	}
}
