package metrics

import (
	"context"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientmetrics "k8s.io/client-go/tools/metrics"
)

// client-go takes its adapters once per process, so its collectors are
// made once and registered in every Metrics' registry.
var (
	clientGoOnce    sync.Once
	clientLatency   *prometheus.HistogramVec
	clientResults   *prometheus.CounterVec
	clientRateLimit *prometheus.HistogramVec
)

func registerClientGo(reg *prometheus.Registry) {
	clientGoOnce.Do(func() {
		clientLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rest_client_request_duration_seconds", Help: "API server request latency, per verb.", Buckets: latencyBuckets,
		}, []string{"verb"})
		clientResults = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rest_client_requests_total", Help: "API server requests, per HTTP status code and method.",
		}, []string{"code", "method"})
		clientRateLimit = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "rest_client_rate_limiter_duration_seconds", Help: "Time API server requests waited in the client's rate limiter, per verb.", Buckets: latencyBuckets,
		}, []string{"verb"})
		clientmetrics.Register(clientmetrics.RegisterOpts{
			RequestLatency:     latencyAdapter{clientLatency},
			RateLimiterLatency: latencyAdapter{clientRateLimit},
			RequestResult:      resultAdapter{clientResults},
		})
	})
	reg.MustRegister(clientLatency, clientResults, clientRateLimit)
}

// The host and URL labels are left out: one API server, and paths carry
// object names (unbounded).
type latencyAdapter struct{ h *prometheus.HistogramVec }

func (a latencyAdapter) Observe(_ context.Context, verb string, _ url.URL, d time.Duration) {
	a.h.WithLabelValues(verb).Observe(d.Seconds())
}

type resultAdapter struct{ c *prometheus.CounterVec }

func (a resultAdapter) Increment(_ context.Context, code, method, _ string) {
	a.c.WithLabelValues(code, method).Inc()
}
