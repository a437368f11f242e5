package metrics

import "time"

// Causes of a device plugin's new registration.
const (
	CauseSocketRemoved  = "socket_removed"
	CauseKubeletRestart = "kubelet_restart"
	CauseStreamLost     = "stream_lost"
)

// Allocate results besides ok.
const (
	AllocateInvalid = "invalid"
	AllocateHeld    = "held"
)

// Registration counts a registration attempt of group's plugin.
func (m *Metrics) Registration(group string, err error) {
	if m != nil {
		m.registrations.WithLabelValues(group, result(err)).Inc()
	}
}

// Reconnect counts a registration lost for cause (one of the Cause values).
func (m *Metrics) Reconnect(group, cause string) {
	if m != nil {
		m.reconnects.WithLabelValues(group, cause).Inc()
	}
}

// ListAndWatchUpdate counts a device list sent to the kubelet.
func (m *Metrics) ListAndWatchUpdate(group string) {
	if m != nil {
		m.listAndWatch.WithLabelValues(group).Inc()
	}
}

// Allocate counts an Allocate call and its latency.
func (m *Metrics) Allocate(group, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.allocate.WithLabelValues(group, result).Inc()
	m.allocateSeconds.WithLabelValues(result).Observe(d.Seconds())
}
