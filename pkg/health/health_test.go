package health

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func get(addr string) (int, string, error) {
	resp, err := http.Get("http://" + addr + "/x")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/x", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	return mux
}

// A busy port (the replaced pod of a rolling update) is waited for.
func TestServeWaitsForBusyPort(t *testing.T) {
	retryInterval = 50 * time.Millisecond
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := busy.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	srv, err := Serve(ctx, addr, handler(), &wg)
	if err != nil {
		t.Fatalf("Serve on a busy port must not fail: %v", err)
	}
	busy.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, body, err := get(addr)
		if err == nil && code == http.StatusOK && body == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never served on %s: %d %q %v", addr, code, body, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	_ = srv.Close()
	wg.Wait()
}

// Shutdown while still waiting for the port ends the goroutine.
func TestServeStopsWhileWaiting(t *testing.T) {
	retryInterval = 50 * time.Millisecond
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if _, err := Serve(ctx, busy.Addr().String(), handler(), &wg); err != nil {
		t.Fatal(err)
	}
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("serving goroutine did not end with its context")
	}
}

func TestServeBadAddress(t *testing.T) {
	_, err := Serve(context.Background(), "not-an-address", handler(), nil)
	if err == nil || !strings.Contains(err.Error(), "health endpoint not-an-address") {
		t.Fatalf("err = %v", err)
	}
}

// Every failed check's reason is a line of its own (a joined error gives
// several); /readyz runs the Live checks too.
func TestEndpointsReasons(t *testing.T) {
	live := errors.New("live is broken")
	e := &Endpoints{
		Live:   []Check{func(context.Context) error { return live }},
		Ready:  []Check{func(context.Context) error { return errors.Join(errors.New("one"), errors.New("two")) }},
		Detail: func(w io.Writer) { _, _ = io.WriteString(w, "detail\n") },
	}
	srv := httptest.NewServer(e.Handler())
	defer srv.Close()
	check := func(path string, code int, want string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != code || string(b) != want {
			t.Errorf("%s: %d %q, want %d %q", path, resp.StatusCode, b, code, want)
		}
	}
	check("/healthz", http.StatusServiceUnavailable, "not live\n- live is broken\ndetail\n")
	check("/readyz", http.StatusServiceUnavailable, "not ready\n- live is broken\n- one\n- two\ndetail\n")
	live = nil
	e.Ready = nil
	check("/healthz", http.StatusOK, "ok\ndetail\n")
	check("/readyz", http.StatusOK, "ok\ndetail\n")
}

// A check that blocks beyond the timeout is a reason itself: the answer
// comes in time.
func TestEndpointsCheckThatBlocks(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	e := &Endpoints{Timeout: 100 * time.Millisecond, Live: []Check{
		func(context.Context) error { return errors.New("first") },
		func(context.Context) error { <-release; return nil },
	}}
	start := time.Now()
	got := e.Reasons(context.Background(), e.Live)
	if len(got) != 2 || got[0] != "first" || !strings.Contains(got[1], "the health checks did not finish within 100ms: the plugin is stuck") {
		t.Errorf("reasons %q", got)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("answered after %v", d)
	}
}

func TestLockWatchStuck(t *testing.T) {
	var w LockWatch
	if _, _, stuck := w.Stuck(0); stuck {
		t.Error("a free lock is not stuck")
	}
	w.Acquired("Prepare")
	if _, _, stuck := w.Stuck(time.Hour); stuck {
		t.Error("held within the limit is not stuck")
	}
	time.Sleep(20 * time.Millisecond)
	if holder, held, stuck := w.Stuck(10 * time.Millisecond); !stuck || holder != "Prepare" || held < 0 {
		t.Errorf("Stuck = %q %v %v", holder, held, stuck)
	}
	w.Released()
	if _, _, stuck := w.Stuck(0); stuck {
		t.Error("released is not stuck")
	}
}
