package health

import (
	"context"
	"io"
	"net"
	"net/http"
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
