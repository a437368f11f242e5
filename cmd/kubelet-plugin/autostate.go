package main

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/driver"
)

// modeState is what each mode holds on this node that the other mode knows
// nothing of: prepared DRA claims, and pods holding device-plugin devices.
// --mode=auto never switches away from a mode that holds state: the other
// mode would offer those devices again.
type modeState struct {
	// DRADir is the DRA driver's data directory; DRAClaims the claims its
	// checkpoint records as prepared; DRAErr why it could not be read.
	DRADir    string
	DRAClaims int
	DRAErr    error
	// Allocations are the device-plugin allocations the kubelet knows;
	// AllocErr why they could not be read.
	Allocations deviceplugin.Allocations
	AllocErr    error
}

func readModeState(ctx context.Context, f pluginFlags) modeState {
	s := modeState{DRADir: filepath.Join(f.pluginsDir, driver.DriverName)}
	s.DRAClaims, s.DRAErr = driver.CheckpointClaims(s.DRADir)
	s.Allocations, s.AllocErr = deviceplugin.KubeletAllocations(ctx, f.podResourcesSocket, f.devicePluginDir)
	return s
}

func (s modeState) draHeld() (string, bool) {
	switch {
	case s.DRAErr != nil:
		return fmt.Sprintf("the DRA checkpoint in %s cannot be read (%v), so it may record prepared claims", s.DRADir, s.DRAErr), true
	case s.DRAClaims > 0:
		return fmt.Sprintf("the DRA checkpoint in %s records %d prepared claim(s)", s.DRADir, s.DRAClaims), true
	}
	return "", false
}

func (s modeState) devicePluginHeld() (string, bool) {
	a := s.Allocations
	switch {
	case s.AllocErr != nil:
		return fmt.Sprintf("the kubelet's device-plugin allocations cannot be read (%v), so pods may hold device-plugin devices", s.AllocErr), true
	case a.Total() == 0:
		return "", false
	}
	var per []string
	for r, n := range a.Pods {
		per = append(per, fmt.Sprintf("%s: %d", r, n))
	}
	sort.Strings(per)
	msg := fmt.Sprintf("the kubelet lists %d pod(s) holding device-plugin devices (%s; from %s)", a.Total(), strings.Join(per, ", "), a.Source)
	if !a.Exact {
		msg += ", a checkpoint that may still list pods that ended; the kubelet's pod-resources socket would tell exactly"
	}
	return msg, true
}

// keptMode is the mode this node's state holds --mode=auto to, with the
// reason, or "" when neither mode holds state and the cluster decides.
// When both hold state either mode would offer devices that pods of the
// other hold, so it refuses to choose.
func keptMode(s modeState) (mode, reason string, err error) {
	dra, inDRA := s.draHeld()
	dp, inDP := s.devicePluginHeld()
	switch {
	case inDRA && inDP:
		return "", "", fmt.Errorf("--mode=auto cannot choose: both modes hold state on this node: %s; and %s. "+
			"Either mode would offer devices that pods of the other hold. Let the pods of one mode end, or set "+
			"--mode (MODE) to dra or device-plugin explicitly (see docs/troubleshooting.md)", dra, dp)
	case inDRA:
		return modeDRA, "kept, whatever the API server serves: " + dra + "; the device plugin would offer their devices again. " +
			"To switch anyway, set --mode explicitly", nil
	case inDP:
		return modeDevicePlugin, "kept, whatever the API server serves: " + dp + "; DRA would publish those devices again. " +
			"To switch anyway, set --mode explicitly", nil
	}
	return "", "", nil
}
