//go:build faults

package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1beta1 "k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin/kubelettest"
)

var legacyResources = []string{deviceplugin.ResourceName("excl"), deviceplugin.ResourceName("shared")}

// legacyStart stops the DRA plugin and runs the release binary in --mode=device-plugin against the test
// kubelet (pkg/deviceplugin/kubelettest: the kubelet's device manager's registration and ListAndWatch over real
// sockets) in a device-plugin directory of the suite's. The returned function stops both and checks what is
// left.
func (s *suite) legacyStart() (*kubelettest.Kubelet, func()) {
	if s.plugin != nil {
		s.plugin.stop()
	}
	k := kubelettest.New(s.dpDir())
	if err := k.Start(); err != nil {
		s.abortf("start the test kubelet: %v", err)
	}
	p := s.start(startOpts{why: "device-plugin mode", legacy: true})
	s.plugin = p
	for _, res := range legacyResources {
		s.waitLegacy(k, res, nil)
	}
	return k, func() {
		p.stop()
		k.Stop()
		s.verifyLegacy("device-plugin mode stopped", nil)
		_ = os.Remove(filepath.Join(s.cdi, deviceplugin.CDISpecFile))
		_ = os.RemoveAll(s.dpDir())
		s.plugin = nil
	}
}

// waitLegacy waits for res to be registered on a connection other than skip, with its devices listed.
func (s *suite) waitLegacy(k *kubelettest.Kubelet, res string, skip *kubelettest.Plugin) *kubelettest.Plugin {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var skips []*kubelettest.Plugin
	if skip != nil {
		skips = append(skips, skip)
	}
	pl, err := k.WaitPlugin(ctx, res, skips...)
	if err != nil {
		s.abortf("%s did not register with the test kubelet: %v; plugin log:\n%s", res, err, indent(s.logTail(s.plugin, 10)))
	}
	if _, err := pl.WaitDevices(ctx, func(d []*v1beta1.Device) bool { return len(d) > 0 }); err != nil {
		s.abortf("%s lists no devices: %v", res, err)
	}
	return pl
}

// allocateDP is the kubelet's Allocate for one container of id; it checks the answer gives exactly d's node.
func (s *suite) allocateDP(pl *kubelettest.Plugin, id string, d *loopDev) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := pl.Allocate(ctx, []string{id})
	if err != nil {
		return err
	}
	if len(resp.ContainerResponses) != 1 {
		return fmt.Errorf("Allocate(%s): %d container responses", id, len(resp.ContainerResponses))
	}
	var got []string
	for _, spec := range resp.ContainerResponses[0].Devices {
		got = append(got, spec.ContainerPath+"="+spec.HostPath+":"+spec.Permissions)
	}
	if want := d.path + "=" + d.path + ":rw"; strings.Join(got, ",") != want {
		return errChanged(fmt.Sprintf("Allocate(%s) gave %v, want [%s]", id, got, want))
	}
	return nil
}

type errChanged string

func (e errChanged) Error() string { return string(e) }

// legacyID is the device-plugin ID of d (a shared device has one per consumer: <name>_<k>).
func legacyID(d *loopDev) string {
	if d.exclusive {
		return d.name
	}
	return d.name + deviceplugin.ShareSeparator + "0"
}

// verifyLegacy checks that the device-plugin directory holds kubelet.sock and the sockets the plugin is
// registered on only, and the CDI directory only the device plugin's static spec. A socket of a registration in
// progress is given 10 s to be registered or removed.
func (s *suite) verifyLegacy(where string, k *kubelettest.Kubelet) {
	var extra []string
	_ = poll(10*time.Second, func() (bool, error) {
		current := map[string]bool{}
		if k != nil {
			for _, res := range legacyResources {
				for _, pl := range k.Endpoints(res) {
					current[pl.Endpoint] = true
				}
			}
		}
		extra = nil
		entries, _ := os.ReadDir(s.dpDir())
		for _, e := range entries {
			p := filepath.Join(s.dpDir(), e.Name())
			if e.Name() != "kubelet.sock" && !current[p] {
				extra = append(extra, p)
			}
		}
		return len(extra) == 0, nil
	})
	for _, p := range extra {
		s.count(kLeaked, "file "+p, "%s: %s left in the device-plugin directory (%s)", where, filepath.Base(p), describeFile(p))
	}
	entries, _ := os.ReadDir(s.cdi)
	for _, e := range entries {
		if e.Name() != deviceplugin.CDISpecFile {
			s.count(kLeaked, "file "+e.Name(), "%s: %s left in the CDI directory", where, e.Name())
		}
	}
}

// legacyKubeletRestart removes the kubelet's socket (the test kubelet stops: connections end, kubelet.sock
// goes) and brings it back after a seeded pause of up to 2 s, five times. The plugin must register again by
// itself, once per resource, Allocate must answer as before, and no stale socket may pile up.
func (s *suite) legacyKubeletRestart() {
	k, done := s.legacyStart()
	defer done()
	pls := map[string]*kubelettest.Plugin{}
	for _, res := range legacyResources {
		pls[res] = k.Plugin(res)
	}
	check := func(when string) {
		for i, res := range legacyResources {
			d := s.devs[i*4]
			if err := s.allocateDP(pls[res], legacyID(d), d); err != nil {
				s.count(kError, "", "%s: %v", when, err)
			}
		}
	}
	check("before the kubelet restarts")
	for i := 0; i < 5; i++ {
		s.runs(1)
		k.Stop()
		pause := time.Duration(s.rng.Intn(2000)) * time.Millisecond
		time.Sleep(pause)
		if !s.plugin.alive() {
			break
		}
		before := len(k.Requests())
		if err := k.Start(); err != nil {
			s.abortf("start the test kubelet: %v", err)
		}
		t0 := time.Now()
		for _, res := range legacyResources {
			pls[res] = s.waitLegacy(k, res, pls[res])
		}
		fmt.Printf("faults:   kubelet back after %s: the plugin registered again in %s\n", pause.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
		when := fmt.Sprintf("after kubelet restart %d", i+1)
		check(when)
		s.verifyLegacy(when, k)
		// One kubelet, one registration per resource: another one drops the connection the kubelet had just
		// opened, and an Allocate on it fails.
		time.Sleep(time.Second)
		got := map[string]int{}
		for _, r := range k.Requests()[before:] {
			got[r.ResourceName]++
		}
		for _, res := range legacyResources {
			if got[res] != 1 {
				s.count(kError, "", "%s: %s registered %d times with the one kubelet started", when, res, got[res])
			}
		}
	}
}

// legacyAllocateDuringRescan has two callers Allocate the devices that stay, as fast as they can, for 6 s while
// an exclusive and a shared device are unplugged and plugged back every 300 ms and the configuration file is
// rewritten (each a rescan, each a new ListAndWatch list). Every Allocate of a device that stays must succeed
// with its node; the unplugged devices must be listed again at the end.
func (s *suite) legacyAllocateDuringRescan() {
	k, done := s.legacyStart()
	defer done()
	s.runs(1)
	flip := []*loopDev{s.devs[3], s.devs[7]}
	stay := []*loopDev{s.devs[0], s.devs[1], s.devs[2], s.devs[4], s.devs[5], s.devs[6]}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Second)
	defer cancel()
	orig, _ := os.ReadFile(s.config)
	var wg sync.WaitGroup
	var flips atomic.Int32
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			for _, d := range flip {
				_ = s.detach(d)
			}
			time.Sleep(300 * time.Millisecond)
			for _, d := range flip {
				if err := s.attach(d); err != nil {
					s.count(kError, "", "attach %s again: %v", d.path, err)
				}
			}
			_ = os.WriteFile(s.config, orig, 0o644)
			flips.Add(1)
			time.Sleep(300 * time.Millisecond)
		}
	}()
	var calls, failed atomic.Int32
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each caller its own devices: the kubelet never hands one exclusive ID to two containers at once.
			for i := 0; ctx.Err() == nil; i++ {
				d := stay[(2*i+w)%len(stay)]
				res := legacyResources[0]
				if !d.exclusive {
					res = legacyResources[1]
				}
				calls.Add(1)
				err := s.allocateDP(k.Plugin(res), legacyID(d), d)
				if _, ok := err.(errChanged); ok {
					s.count(kChanged, "alloc "+d.path, "%v", err)
				} else if err != nil && ctx.Err() == nil {
					failed.Add(1)
					s.count(kLost, "alloc "+d.path, "Allocate of %s, which stayed, failed during a rescan: %v", d.path, err)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("faults:   %d Allocate calls during %d unplug/plug cycles and config rewrites, %d failed\n", calls.Load(), flips.Load(), failed.Load())
	for _, d := range flip {
		res := legacyResources[0]
		if !d.exclusive {
			res = legacyResources[1]
		}
		wctx, wcancel := context.WithTimeout(context.Background(), 15*time.Second)
		_, err := k.Plugin(res).WaitDevices(wctx, func(devs []*v1beta1.Device) bool {
			for _, dv := range devs {
				if dv.ID == legacyID(d) && dv.Health == v1beta1.Healthy {
					return true
				}
			}
			return false
		})
		wcancel()
		if err != nil {
			s.count(kError, "", "%s is not listed healthy again 15 s after it was plugged back: %v", d.path, err)
		} else if err := s.allocateDP(k.Plugin(res), legacyID(d), d); err != nil {
			s.count(kError, "", "Allocate of %s after it came back: %v", d.path, err)
		}
	}
	s.verifyLegacy("after the rescans", k)
}
