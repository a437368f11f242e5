package health

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The rules both plugin modes share: liveness fails only when a restart
// would help (the plugin itself is stuck), never because the API server or
// the kubelet is away; readiness lists every reason it is not ready.
// docs/design.md has the reasoning.

const (
	// StuckAfter is how long a plugin's lock may stay held before liveness
	// fails. The longest hold on purpose is a DRA call waiting for the file
	// lock another plugin instance holds, which ends with the call's
	// deadline (the kubelet's 45 s); only a stuck holder (a disk write that
	// does not return, a deadlock) goes past this.
	StuckAfter = 2 * time.Minute
	// ProbeTimeout bounds the checks of one health request; the healthcheck
	// command waits 5 s for the answer.
	ProbeTimeout = 3 * time.Second
)

// Check is one condition of liveness or readiness: nil when it holds, else
// a sentence saying what is wrong and what to do, or several joined by
// errors.Join.
type Check func(ctx context.Context) error

// Endpoints serves /healthz (the Live checks) and /readyz (the Live and
// Ready checks). Each answers 200 "ok", or 503 "not live"/"not ready" and
// every failed check's reason on a line of its own; then Detail's lines.
type Endpoints struct {
	Live, Ready []Check
	// Detail (optional) writes status lines after the verdict.
	Detail func(w io.Writer)
	// Timeout bounds one request's checks; 0: ProbeTimeout.
	Timeout time.Duration
}

// Handler returns the HTTP handler of both endpoints.
func (e *Endpoints) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		e.answer(w, r, "not live", e.Live)
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		e.answer(w, r, "not ready", append(append([]Check(nil), e.Live...), e.Ready...))
	})
	return mux
}

// Reasons runs checks and returns the reasons of those that fail. Checks
// that do not return within the timeout are a reason too: a check that
// blocks means a stuck plugin.
func (e *Endpoints) Reasons(ctx context.Context, checks []Check) []string {
	timeout := e.Timeout
	if timeout <= 0 {
		timeout = ProbeTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		mu      sync.Mutex
		reasons []string
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, c := range checks {
			if err := c(ctx); err != nil {
				mu.Lock()
				// A check with several reasons joins them (errors.Join).
				reasons = append(reasons, strings.Split(err.Error(), "\n")...)
				mu.Unlock()
			}
		}
	}()
	// A check that ends with ctx gets a little longer to say why.
	t := time.NewTimer(timeout + timeout/4)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
	finished := false
	select {
	case <-done:
		finished = true
	default:
	}
	mu.Lock()
	out := append([]string(nil), reasons...)
	mu.Unlock()
	if !finished {
		out = append(out, fmt.Sprintf("the health checks did not finish within %s: the plugin is stuck; a restart starts it afresh", timeout))
	}
	return out
}

func (e *Endpoints) answer(w http.ResponseWriter, r *http.Request, verdict string, checks []Check) {
	reasons := e.Reasons(r.Context(), checks)
	var b strings.Builder
	if len(reasons) == 0 {
		b.WriteString("ok\n")
	} else {
		b.WriteString(verdict + "\n")
		for _, s := range reasons {
			b.WriteString("- " + s + "\n")
		}
	}
	if e.Detail != nil {
		e.Detail(&b)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(reasons) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = io.WriteString(w, b.String())
}

// LockWatch records who holds a lock and since when, so that liveness can
// tell a stuck holder from a busy one without taking the lock. The lock's
// owner calls Acquired right after taking it and Released right before
// letting it go; the zero value is ready to use.
type LockWatch struct {
	mu     sync.Mutex
	holder string
	since  time.Time
}

// Acquired notes that holder (a name for messages) took the lock now.
func (w *LockWatch) Acquired(holder string) {
	w.mu.Lock()
	w.holder, w.since = holder, time.Now()
	w.mu.Unlock()
}

// Released notes that the lock is free.
func (w *LockWatch) Released() {
	w.mu.Lock()
	w.holder, w.since = "", time.Time{}
	w.mu.Unlock()
}

// Held returns the holder and for how long it has held the lock; "" when
// the lock is free.
func (w *LockWatch) Held() (string, time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.holder == "" {
		return "", 0
	}
	return w.holder, time.Since(w.since)
}

// Stuck reports the holder and for how long, when the lock has been held
// for longer than limit: the one rule of both modes. The caller words the
// error, since only it knows what the holder may be stuck in.
func (w *LockWatch) Stuck(limit time.Duration) (holder string, held time.Duration, stuck bool) {
	holder, held = w.Held()
	return holder, held.Round(time.Second), holder != "" && held > limit
}

// CallUnix connects to the gRPC server on the unix socket at path and runs
// call within ctx. The error says that the server does not answer.
func CallUnix(ctx context.Context, path string, call func(context.Context, *grpc.ClientConn) error) error {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("the gRPC server on %s cannot be reached: %w", path, err)
	}
	defer func() { _ = conn.Close() }()
	if err := call(ctx, conn); err != nil {
		return fmt.Errorf("the gRPC server on %s does not answer: %w", path, err)
	}
	return nil
}
