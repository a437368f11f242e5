package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/deviceplugin/kubelettest"
	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery/discoverytest"
)

// BenchmarkDevicePluginBinary runs the built binary (as `make build` builds
// it) in device-plugin mode against the test kubelet, on a fixture host like
// the old plugin's users had (928 device-mapper devices, the NX-GZIP
// accelerator) with the old README config.json: power-dev-plugin/dev with
// 929 IDs, each granting all 929 nodes (and the 928 multipath devices also
// under their /dev/mapper names). It times Allocate from another
// process over the unix socket, and reports the plugin's resident memory
// (VmRSS) once registered (rss-idle-MiB) and after the Allocates
// (rss-MiB), its peak (hwm-MiB), and the anonymous and file-backed parts
// of the final RSS (anon-MiB, file-MiB). Needs root (device nodes in the
// fixture) and the go tool.
func BenchmarkDevicePluginBinary(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc")
	}
	tr := discoverytest.New(b)
	if tr.Fake() {
		b.Skip("needs root to create the fixture's device nodes")
	}
	const dms = 928
	for i := 0; i < dms; i++ {
		tr.AddBlock(discoverytest.Block{Name: fmt.Sprintf("dm-%d", i), Dev: discoverytest.DevNum{Major: 253, Minor: uint32(i)},
			Size: 100 << 30, DMName: fmt.Sprintf("mpath%d", i)})
	}
	tr.CharNode("/dev/crypto/nx-gzip", 10, 121)
	tr.AddBlock(discoverytest.Block{Name: "vda", Dev: discoverytest.DevNum{Major: 254, Minor: 0}, Size: 10 << 30})
	tr.Mount("/dev/vda", discoverytest.DevNum{Major: 254, Minor: 0}, "/", "xfs")

	base, err := os.MkdirTemp("", "dpb")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(base) })
	bin := filepath.Join(base, "power-dev-plugin")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	config := filepath.Join(base, "config.json")
	if err := os.WriteFile(config, []byte(`{"nx-gzip": true, "permissions": "rw", "include-devices": ["/dev/dm-*", "/dev/crypto/nx-gzip"]}`), 0o644); err != nil {
		b.Fatal(err)
	}

	dir := filepath.Join(base, "dp")
	k := kubelettest.New(dir)
	if err := k.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(k.Stop)
	cmd := exec.Command(bin, "--mode", "device-plugin", "--host-root", tr.Root, "--legacy-config", config,
		"--device-plugin-dir", dir, "--cdi-dir", filepath.Join(base, "cdi"), "--health-address", "127.0.0.1:0")
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				b.Errorf("plugin exit: %v", err)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			b.Error("the plugin did not stop on SIGTERM")
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := k.WaitPlugin(ctx, "power-dev-plugin/dev")
	if err != nil {
		b.Fatal(err)
	}
	if n := len(p.Devices()); n != dms+1 {
		b.Fatalf("%d IDs, want %d (one per matched device, as the old plugin)", n, dms+1)
	}
	time.Sleep(500 * time.Millisecond) // let the start settle
	idle := procStatusMiB(b, cmd.Process.Pid, "VmRSS")

	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := p.Allocate(ctx, []string{"dev_" + strconv.Itoa(i%dms)})
		if err != nil {
			b.Fatal(err)
		}
		// Every node, and the multipath devices also as /dev/mapper/<name>.
		if n := len(resp.ContainerResponses[0].Devices); n != 2*dms+1 {
			b.Fatalf("%d DeviceSpecs, want %d", n, 2*dms+1)
		}
	}
	b.StopTimer()
	b.ReportMetric(idle, "rss-idle-MiB")
	b.ReportMetric(procStatusMiB(b, cmd.Process.Pid, "VmRSS"), "rss-MiB")
	b.ReportMetric(procStatusMiB(b, cmd.Process.Pid, "VmHWM"), "hwm-MiB")
	// VmRSS = RssAnon (heap, stacks: the process's own) + RssFile (pages
	// of the binary it touched, shared and reclaimable).
	b.ReportMetric(procStatusMiB(b, cmd.Process.Pid, "RssAnon"), "anon-MiB")
	b.ReportMetric(procStatusMiB(b, cmd.Process.Pid, "RssFile"), "file-MiB")
}

// procStatusMiB reads a kB field of /proc/<pid>/status in MiB.
func procStatusMiB(b *testing.B, pid int, field string) float64 {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
		if err != nil {
			b.Fatal(err)
		}
		return kb / 1024
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
