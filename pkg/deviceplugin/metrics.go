package deviceplugin

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/metrics"
)

// WithMetrics has the plugins count registrations, reconnects, ListAndWatch
// updates and Allocate calls in m, and the published devices. Nil: none.
func WithMetrics(m *metrics.Metrics) Option { return func(o *options) { o.metrics = m } }

// allocateResult is Allocate's result label: a refused ID set is invalid, a
// device something on the node holds is held.
func allocateResult(err error) string {
	switch status.Code(err) {
	case codes.OK:
		return metrics.ResultOK
	case codes.FailedPrecondition:
		return metrics.AllocateHeld
	default:
		return metrics.AllocateInvalid
	}
}
