package driver

import (
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/dynamic-resource-allocation/kubeletplugin"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics"
)

// WithMetrics has the driver count its requests, publications, checkpoint
// writes and exclusivity waits in m. Nil: no metrics.
func WithMetrics(m *metrics.Metrics) Option { return func(o *options) { o.metrics = m } }

func withStateMetrics(m *metrics.Metrics) StateOption { return func(c *stateConfig) { c.metrics = m } }

func (d *Driver) observePrepare(start time.Time, res map[types.UID]kubeletplugin.PrepareResult) {
	failed := 0
	for _, r := range res {
		if r.Err != nil {
			failed++
		}
	}
	d.opts.metrics.ObserveRequest(metrics.OpPrepare, len(res)-failed, failed, time.Since(start))
}

func (d *Driver) observeUnprepare(start time.Time, res map[types.UID]error) {
	failed := 0
	for _, err := range res {
		if err != nil {
			failed++
		}
	}
	d.opts.metrics.ObserveRequest(metrics.OpUnprepare, len(res)-failed, failed, time.Since(start))
}
