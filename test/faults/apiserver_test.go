//go:build faults

package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The e2e cluster's API server: its pid file and binary (test/e2e/cluster/lib.sh), and up.sh, which starts
// whatever of the cluster is not running, with the same flags.
func e2eState() string { return envOr("E2E_STATE", "/var/lib/power-dev-plugin-e2e") }
func e2eCache() string { return envOr("E2E_CACHE", "/var/cache/power-dev-plugin-e2e") }

func apiServerPid() (int, error) {
	b, err := os.ReadFile(filepath.Join(e2eState(), "pids", "apiserver.pid"))
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, err
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return 0, fmt.Errorf("the API server (pid %d) is not running: %v", pid, err)
	}
	if want := filepath.Join(e2eCache(), "bin", "kube-apiserver"); strings.TrimSuffix(exe, " (deleted)") != want {
		return 0, fmt.Errorf("pid %d runs %s, not %s", pid, exe, want)
	}
	return pid, nil
}

// stopAPIServer stops the cluster's API server (SIGTERM, as a restart of its static pod would).
func (s *suite) stopAPIServer() {
	pid, err := apiServerPid()
	if err != nil {
		s.abortf("stop the API server: %v", err)
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	if poll(30*time.Second, func() (bool, error) { _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); return err != nil, nil }) != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// startAPIServer starts it again through up.sh and waits for it to be ready. up.sh goes on waiting for the node
// to be Ready, which can take a minute after an outage (the node lifecycle controller saw no lease renewal
// meanwhile); the suite does not need that and waits for up.sh only at its end.
func (s *suite) startAPIServer() error {
	log, err := os.OpenFile(s.outPath("up.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(s.repo, "test", "e2e", "cluster", "up.sh"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("test/e2e/cluster/up.sh: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		log.Close()
	}()
	s.t.Cleanup(func() {
		if err := <-done; err != nil {
			s.t.Errorf("test/e2e/cluster/up.sh (started to bring the API server back): %v; see %s", err, s.outPath("up.log"))
		}
	})
	return poll(2*time.Minute, func() (bool, error) {
		_, err := s.kube.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(s.t.Context())
		return err == nil, nil
	})
}

// apiServerDown stops the API server for longer than the kubelet's call timeout. While it is away, Prepare
// (which needs the claims from it) must fail with a message that says so, within the kubelet's timeout;
// Unprepare (which does not) must work, also after the plugin itself was restarted; the plugin must not die.
// Once it is back, Prepare must succeed and the slices must be there.
func (s *suite) apiServerDown() {
	s.runs(1)
	held := s.newClaims("api-held", []*loopDev{s.devs[0], s.devs[1], s.devs[4], s.devs[5]})
	waiting := s.newClaims("api-new", []*loopDev{s.devs[2], s.devs[6]})
	s.mustPrepare(held, "before the outage")

	s.stopAPIServer()
	down := time.Now()
	fmt.Printf("faults:   API server stopped\n")
	defer func() {
		if _, err := apiServerPid(); err != nil {
			if err := s.startAPIServer(); err != nil {
				s.count(kError, "", "the API server could not be started again: %v", err)
			}
		}
	}()

	tryPrepare := func(when string) {
		t0 := time.Now()
		r := s.prepare(waiting)
		took := time.Since(t0)
		msg := r.firstErr()
		switch {
		case len(r.ok) > 0:
			s.count(kError, "", "%s: Prepare succeeded without the API server", when)
		case took >= kubeletTimeout:
			s.count(kError, "", "%s: Prepare did not answer within the kubelet's timeout (%s)", when, took.Round(time.Second))
		case !strings.Contains(msg, waiting[0].name) || !(strings.Contains(msg, "connection refused") || strings.Contains(msg, "retrieve claim")):
			s.count(kError, "msg "+when, "%s: Prepare failed with a message that does not say the API server is unreachable: %q", when, msg)
		}
		fmt.Printf("faults:   %s: Prepare failed after %s: %.200s\n", when, took.Round(time.Millisecond), msg)
	}
	tryPrepare("API server down")
	if r := s.unprepare(held[:2]); r.err != nil || len(r.failed) > 0 {
		s.count(kError, "", "Unprepare failed while the API server was down: %s", r.firstErr())
	}
	s.verify("API server down, after Unprepare")

	// The DaemonSet's pod restarted meanwhile (a node reboot while the control plane is away): it must come up
	// far enough to serve Unprepare.
	s.plugin.kill()
	s.plugin = s.start(startOpts{why: "restart while the API server is down"})
	if err := s.waitServing(s.plugin, 20*time.Second); err != nil {
		s.count(kError, "", "the plugin started while the API server was down does not serve its socket: %v", err)
	}
	if r := s.unprepare(held[2:3]); r.err != nil || len(r.failed) > 0 {
		s.count(kError, "", "Unprepare failed on a plugin started while the API server was down: %s", r.firstErr())
	}
	s.verifyStarted("API server down, plugin restarted, after Unprepare")

	for time.Since(down) < kubeletTimeout+5*time.Second {
		time.Sleep(5 * time.Second)
		tryPrepare(fmt.Sprintf("API server down %s", time.Since(down).Round(time.Second)))
		fmt.Printf("faults:   plugin /healthz while the API server is down: %s\n", healthz())
	}
	if err := s.startAPIServer(); err != nil {
		s.abortf("start the API server again: %v", err)
	}
	back := time.Now()
	fmt.Printf("faults:   API server back after %s\n", back.Sub(down).Round(time.Second))
	s.mustPrepare(waiting, "after the API server came back")
	fmt.Printf("faults:   Prepare succeeded %s after the API server came back\n", time.Since(back).Round(time.Millisecond))
	if err := s.waitReady(s.plugin, 60*time.Second); err != nil {
		s.count(kError, "", "the plugin is not ready 60 s after the API server came back: %v", err)
	}
	fmt.Printf("faults:   the plugin (started while the API server was away) is ready %s after it came back\n", time.Since(back).Round(time.Millisecond))
	byPath, err := s.published(60 * time.Second)
	if err != nil {
		s.count(kError, "", "after the API server came back: %v", err)
	}
	for _, d := range s.devs {
		if byPath[d.path] != d.name {
			s.count(kError, "slice "+d.path, "after the API server came back, %s is published as %q, before as %q", d.path, byPath[d.path], d.name)
		}
	}
	s.verify("after the API server came back")
}
