package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestHelperProcess is the plugin's main in a process of its own (logging
// is set up once per process), run by the tests below.
func TestHelperProcess(t *testing.T) {
	if os.Getenv("PDP_HELPER_PROCESS") != "1" {
		t.Skip("run by TestLoggingFlags")
	}
	args := strings.Fields(os.Getenv("PDP_HELPER_ARGS"))
	err := run(context.Background(), args, os.Stdout, os.Stderr)
	if err != nil {
		os.Stderr.WriteString("ERROR: " + err.Error() + "\n")
		os.Exit(3)
	}
	os.Exit(0)
}

func helper(t *testing.T, env []string, args ...string) (stderr string, err error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), append(env, "PDP_HELPER_PROCESS=1", "PDP_HELPER_ARGS="+strings.Join(args, " "))...)
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	err = cmd.Run()
	return errOut.String(), err
}

// --logging-format=json makes every log line JSON, and the first lines say
// the version and every flag's effective value. The DRA mode without a
// node name stops right after them.
func TestLoggingFlags(t *testing.T) {
	out, err := helper(t, []string{"NODE_NAME=", "METRICS_ADDRESS=127.0.0.1:0"}, "--logging-format=json", "-v=2", "--mode=dra")
	if err == nil || !strings.Contains(out, "--node-name (or NODE_NAME) is required") {
		t.Fatalf("want the missing node name, got %v:\n%s", err, out)
	}
	var flags map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "ERROR: ") || strings.HasPrefix(line, "PASS") || line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("not a JSON log line: %q", line)
			continue
		}
		if rec["msg"] == "Effective flags" {
			flags = rec
		}
	}
	if flags == nil {
		t.Fatalf("no \"Effective flags\" line:\n%s", out)
	}
	for k, want := range map[string]string{"logging-format": "json", "v": "2", "mode": "dra", "metrics-address": "127.0.0.1:0", "health-address": "127.0.0.1:51515"} {
		if flags[k] != want {
			t.Errorf("Effective flags: %s=%v, want %q", k, flags[k], want)
		}
	}

	// The environment sets the defaults (Helm's logVerbosity, logFormat).
	out, _ = helper(t, []string{"NODE_NAME=", "LOG_FORMAT=json", "LOG_VERBOSITY=4"}, "--mode=dra")
	if !strings.Contains(out, `"logging-format":"json"`) || !strings.Contains(out, `"v":"4"`) {
		t.Errorf("LOG_FORMAT=json LOG_VERBOSITY=4 not in force:\n%s", out)
	}

	for _, tc := range []struct {
		env, args []string
		want      string
	}{
		{nil, []string{"--logging-format=xml"}, "logging flags"},
		{[]string{"LOG_VERBOSITY=loud"}, nil, "LOG_VERBOSITY=\"loud\""},
	} {
		out, err := helper(t, tc.env, tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%v %v: want a refusal naming %q, got %v:\n%s", tc.env, tc.args, tc.want, err, out)
		}
	}
}

// --metrics-address serves the metrics while the plugin runs, with the
// discovery scans of both modes' watcher counted.
func TestMetricsAddress(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	tr := hostTree(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		var out, errOut bytes.Buffer
		done <- run(ctx, []string{"--mode", "device-plugin", "--device-plugin-dir", shortTempDir(t), "--cdi-dir", t.TempDir(),
			"--health-address", "", "--host-root", tr.Root, "--config", "", "--legacy-config", "", "--metrics-address", addr}, &out, &errOut)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		fams, err := scrape("http://" + addr + "/metrics")
		if err == nil && strings.Contains(fams, `power_dev_plugin_discovery_scans_total{result="ok",trigger="initial"} 1`) &&
			strings.Contains(fams, `power_dev_plugin_devices_published{group="dev",mode="deviceplugin",type="block"}`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics on %s: %v\n%s", addr, err, fams)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func scrape(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// shortTempDir is a temporary directory with a path short enough for unix
// sockets (108 bytes).
func shortTempDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "pdp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
