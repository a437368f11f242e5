package metrics

import "time"

// DRA operations.
const (
	OpPrepare   = "prepare"
	OpUnprepare = "unprepare"
)

// ObserveRequest counts one NodePrepareResources or NodeUnprepareResources
// call: ok and failed claims, and the call's latency (result error when
// any claim failed or the call did).
func (m *Metrics) ObserveRequest(op string, ok, failed int, d time.Duration) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(op, ResultOK).Add(float64(ok))
	m.requests.WithLabelValues(op, ResultError).Add(float64(failed))
	r := ResultOK
	if failed > 0 {
		r = ResultError
	}
	m.requestSeconds.WithLabelValues(op, r).Observe(d.Seconds())
}

// SetClaimsPrepared sets the number of claims prepared now.
func (m *Metrics) SetClaimsPrepared(n int) {
	if m != nil {
		m.claimsPrepared.Set(float64(n))
	}
}

// ExclusivityConflict counts a claim refused because a device is held.
func (m *Metrics) ExclusivityConflict() {
	if m != nil {
		m.conflicts.Inc()
	}
}

// ExclusivityWait counts a claim that waited for a release; prepared says
// whether it got its devices.
func (m *Metrics) ExclusivityWait(prepared bool) {
	if m == nil {
		return
	}
	r := "gave_up"
	if prepared {
		r = "prepared"
	}
	m.waits.WithLabelValues(r).Inc()
}

// CheckpointWrite counts a checkpoint write.
func (m *Metrics) CheckpointWrite(err error) {
	if m != nil {
		m.checkpointWrite.WithLabelValues(result(err)).Inc()
	}
}

// CheckpointRecovered counts a checkpoint rebuilt from CDI spec files.
func (m *Metrics) CheckpointRecovered() {
	if m != nil {
		m.recoveries.Inc()
	}
}

// StaleClaimCollected counts a garbage-collected prepared claim.
func (m *Metrics) StaleClaimCollected() {
	if m != nil {
		m.staleCollected.Inc()
	}
}

// SlicePublication counts a ResourceSlice publication.
func (m *Metrics) SlicePublication(err error) {
	if m != nil {
		m.publications.WithLabelValues(result(err)).Inc()
	}
}

// BackgroundError counts an error the kubelet plugin helper reported.
func (m *Metrics) BackgroundError() {
	if m != nil {
		m.apiErrors.Inc()
	}
}
