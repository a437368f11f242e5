//go:build faults

package faults

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// proc is one run of the plugin binary.
type proc struct {
	n        int
	why      string
	legacy   bool
	cmd      *exec.Cmd
	pid      int
	logStart int64 // where its output starts in plugin.log
	logEnd   atomic.Int64
	done     chan struct{}
	// expected is set before the suite kills or stops it: any other exit is a death.
	expected atomic.Bool
	exit     string
}

type startOpts struct {
	why        string
	failpoints string   // POWER_DEV_PLUGIN_FAILPOINTS for the faultinject build; "" runs the release binary
	legacy     bool     // --mode=device-plugin
	extra      []string // more flags
	env        []string
	// exitOK: the process is expected to end by itself (a failpoint, a refused start).
	exitOK bool
}

func (s *suite) legacy(p *proc) bool { return p.legacy }

// start runs the plugin as the DaemonSet does (root without any capability: the shipped pod drops ALL), with
// the suite's directories, logging into plugin.log.
func (s *suite) start(o startOpts) *proc {
	bin := s.bin
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "POWER_DEV_PLUGIN_FAILPOINTS=") {
			env = append(env, e)
		}
	}
	if o.failpoints != "" {
		if s.fpBin == "" {
			s.abortf("FAULTS_FAILPOINT_BIN is not set: the faultinject build is needed")
		}
		bin = s.fpBin
		env = append(env, "POWER_DEV_PLUGIN_FAILPOINTS="+o.failpoints)
	}
	env = append(env, o.env...)
	args := []string{"--bounding-set=-all", "--inh-caps=-all", "--", bin,
		"--config=" + s.config, "--legacy-config=", "--host-root=" + s.host, "--health-address=" + healthAddr,
		"--rescan-interval=2s", "--v=2",
		// The plugin's client-side rate limit (50/s, burst 100) would make every 100-claim Prepare after the
		// first spend 2 s on its GETs of the claims, and the timed kills would all land there.
		"--kube-api-qps=1000", "--kube-api-burst=2000"}
	if os.Getenv("FAULTS_METADATA") == "1" && !o.legacy {
		args = append(args, "--device-metadata=true")
	}
	if o.legacy {
		args = append(args, "--mode=device-plugin", "--device-plugin-dir="+s.dpDir(), "--cdi-dir="+s.cdi)
	} else {
		args = append(args, "--mode=dra", "--node-name="+nodeName, "--kubeconfig="+os.Getenv("KUBECONFIG"),
			"--cdi-dir="+s.cdi, "--kubelet-registrar-dir="+s.reg, "--kubelet-plugins-dir="+s.plugins)
	}
	args = append(args, o.extra...)
	s.starts++
	p := &proc{n: s.starts, why: o.why, legacy: o.legacy, done: make(chan struct{})}
	off, _ := s.log.Seek(0, io.SeekEnd)
	p.logStart = off
	if s.last != nil {
		s.last.logEnd.Store(off)
	}
	s.last = p
	fmt.Fprintf(s.log, "\n=== %s start #%d (%s): %s %s\n", time.Now().Format("15:04:05.000"), p.n, o.why,
		strings.Join(o.env, " "), strings.Join(args[3:], " "))
	if o.failpoints != "" {
		fmt.Fprintf(s.log, "=== POWER_DEV_PLUGIN_FAILPOINTS=%s\n", o.failpoints)
	}
	p.cmd = exec.Command("setpriv", args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = s.log, s.log
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		s.abortf("start the plugin: %v", err)
	}
	p.pid = p.cmd.Process.Pid
	if o.exitOK {
		p.expected.Store(true)
	}
	go func() {
		err := p.cmd.Wait()
		p.exit = "exit 0"
		if err != nil {
			p.exit = err.Error()
		}
		if !p.expected.Load() {
			s.count(kDeath, fmt.Sprintf("start#%d", p.n), "plugin #%d (%s) ended by itself: %s; its last lines:\n%s",
				p.n, p.why, p.exit, indent(s.logTail(p, 12)))
		}
		close(p.done)
	}()
	return p
}

func indent(s string) string {
	return "      " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n      ")
}

func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill is kill -9.
func (p *proc) kill() {
	p.expected.Store(true)
	_ = syscall.Kill(p.pid, syscall.SIGKILL)
	<-p.done
}

// stop is what the kubelet does to a pod: SIGTERM, SIGKILL after 30 s.
func (p *proc) stop() {
	if !p.alive() {
		return
	}
	p.expected.Store(true)
	_ = syscall.Kill(p.pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(p.pid, syscall.SIGKILL)
		<-p.done
	}
}

// waitExit waits for a process that is to end by itself.
func (p *proc) waitExit(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// logOf is what p wrote so far (one plugin runs at a time: its output ends where the next one's starts).
func (s *suite) logOf(p *proc) string {
	f, err := os.Open(s.log.Name())
	if err != nil {
		return ""
	}
	defer f.Close()
	end := p.logEnd.Load()
	if end == 0 {
		end = 1 << 40
	}
	b, _ := io.ReadAll(io.NewSectionReader(f, p.logStart, end-p.logStart))
	return string(b)
}

func (s *suite) logTail(p *proc, n int) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(s.logOf(p), "\n"), "\n") {
		if !strings.Contains(l, "Feature gate default state") {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	for i, l := range lines {
		if len(l) > 400 {
			lines[i] = l[:400] + "..."
		}
	}
	return strings.Join(lines, "\n")
}

// waitReady registers p (waitServing) and waits until it says on /readyz that it is ready: it published its
// devices (and so has an inventory).
func (s *suite) waitReady(p *proc, timeout time.Duration) error {
	if !s.legacy(p) {
		if err := s.waitServing(p, timeout); err != nil {
			return err
		}
	}
	c := &http.Client{Timeout: time.Second}
	var last string
	err := poll(timeout, func() (bool, error) {
		if !p.alive() {
			return false, fmt.Errorf("the plugin ended: %s", p.exit)
		}
		resp, err := c.Get("http://" + healthAddr + "/readyz")
		if err != nil {
			last = err.Error()
			return false, nil
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		last = strings.TrimSpace(string(b))
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		return fmt.Errorf("%v (readyz: %s); last lines:\n%s", err, last, indent(s.logTail(p, 10)))
	}
	return nil
}

// healthz returns the plugin's /healthz status line.
func healthz() string {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + healthAddr + "/healthz")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
}

// restart starts a new plugin after p ended (killed or stopped) and waits for it; it is the DaemonSet's pod
// coming back.
func (s *suite) restart(why string) {
	if s.plugin != nil && s.plugin.alive() {
		s.plugin.stop()
	}
	s.plugin = s.start(startOpts{why: why})
	if err := s.waitServing(s.plugin, 30*time.Second); err != nil {
		s.abortf("the plugin did not come back (%s): %v", why, err)
	}
}

// waitServing waits until p accepts connections on its DRA socket, and registers it as the kubelet's plugin
// watcher does when the registration socket appears (GetInfo, then NotifyRegistrationStatus). Reconcile is done
// by then; devices may still be being discovered (the kubelet's retry covers that).
func (s *suite) waitServing(p *proc, timeout time.Duration) error {
	sock := filepath.Join(s.data, "dra.sock")
	regSock := filepath.Join(s.reg, driverName+"-reg.sock")
	var last error
	err := poll(timeout, func() (bool, error) {
		if !p.alive() {
			return false, fmt.Errorf("the plugin ended: %s", p.exit)
		}
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err != nil {
			return false, nil
		}
		c.Close()
		last = register(regSock, sock)
		return last == nil, nil
	})
	if err != nil {
		return fmt.Errorf("%v (registration: %v); last lines:\n%s", err, last, indent(s.logTail(p, 10)))
	}
	return nil
}

// register is the kubelet's side of a DRA plugin's registration.
func register(regSock, draSock string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix:"+regSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	cl := registerapi.NewRegistrationClient(conn)
	info, err := cl.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		return err
	}
	if info.Name != driverName || info.Endpoint != draSock {
		_, _ = cl.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{Error: "unexpected plugin info"})
		return fmt.Errorf("GetInfo says name %q, endpoint %q", info.Name, info.Endpoint)
	}
	_, err = cl.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true})
	return err
}

// ensureRunning starts the plugin if it is not running.
func (s *suite) ensureRunning(why string) {
	if s.plugin == nil || !s.plugin.alive() {
		s.restart(why)
	}
}

func (s *suite) dpDir() string { return filepath.Join(s.dir, "device-plugins") }
