//go:build faultinject

package driver

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// FailpointsEnv names the fault points at which the fault-injection build
// kills its own process with SIGKILL, as a kill -9 at that exact moment
// would: "point=kill@N" kills at the N-th time the point is reached (1 is
// the first), several separated by commas, e.g.
//
//	POWER_DEV_PLUGIN_FAILPOINTS=prepare:after-spec=kill@37,unprepare:after-checkpoint=kill@1
//
// The points are those of State.hit. test/faults uses this where a kill
// from outside cannot be timed.
const FailpointsEnv = "POWER_DEV_PLUGIN_FAILPOINTS"

func init() {
	spec := os.Getenv(FailpointsEnv)
	if spec == "" {
		return
	}
	at := map[string]int{}
	for _, item := range strings.Split(spec, ",") {
		point, action, ok := strings.Cut(strings.TrimSpace(item), "=")
		n, err := strconv.Atoi(strings.TrimPrefix(action, "kill@"))
		if !ok || !strings.HasPrefix(action, "kill@") || err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "%s: %q is not point=kill@N (N >= 1)\n", FailpointsEnv, item)
			os.Exit(2)
		}
		at[point] = n
	}
	var mu sync.Mutex
	hits := map[string]int{}
	failpoint = func(point string) {
		mu.Lock()
		hits[point]++
		kill := hits[point] == at[point]
		mu.Unlock()
		if !kill {
			return
		}
		// Written straight to the file, so that it is there before the kill.
		fmt.Fprintf(os.Stderr, "FAILPOINT %s=kill@%d: SIGKILL\n", point, at[point])
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		time.Sleep(time.Hour) // the signal is on its way; nothing else may run
	}
}
