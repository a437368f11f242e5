// Package metrics defines every Prometheus metric of the plugin, once, and
// serves them. Both modes get a *Metrics through an option; its methods do
// nothing on a nil *Metrics, so code and tests without metrics pass nil.
package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/power-dev-plugin/power-dev-plugin/pkg/discovery"
)

// Namespace prefixes every metric of the plugin.
const Namespace = "power_dev_plugin"

// Result label values.
const (
	ResultOK    = "ok"
	ResultError = "error"
)

// latencyBuckets span 1 ms to ~33 s: a prepare may wait for a released
// device up to the kubelet's deadline.
var latencyBuckets = prometheus.ExponentialBuckets(0.001, 2, 16)

// Metrics holds the plugin's collectors and the registry that serves them.
type Metrics struct {
	reg *prometheus.Registry
	own []Family // the plugin's own families, in definition order

	devicesPublished *prometheus.GaugeVec
	devicesExcluded  *prometheus.GaugeVec
	discoveryScans   *prometheus.CounterVec
	discoverySeconds *prometheus.HistogramVec

	requests        *prometheus.CounterVec
	requestSeconds  *prometheus.HistogramVec
	claimsPrepared  prometheus.Gauge
	conflicts       prometheus.Counter
	waits           *prometheus.CounterVec
	checkpointWrite *prometheus.CounterVec
	recoveries      prometheus.Counter
	staleCollected  prometheus.Counter
	publications    *prometheus.CounterVec
	apiErrors       prometheus.Counter

	registrations   *prometheus.CounterVec
	reconnects      *prometheus.CounterVec
	listAndWatch    *prometheus.CounterVec
	allocate        *prometheus.CounterVec
	allocateSeconds *prometheus.HistogramVec
}

// New returns the plugin's metrics on a registry of their own, with the Go
// and process collectors and client-go's request metrics.
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	fq := func(name, typ string) string {
		m.own = append(m.own, Family{Name: Namespace + "_" + name, Type: typ})
		return name
	}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: Namespace, Name: fq(name, "gauge"), Help: help}, labels)
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: Namespace, Name: fq(name, "counter"), Help: help}, labels)
	}
	histogram := func(name, help string, labels ...string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: Namespace, Name: fq(name, "histogram"), Help: help, Buckets: latencyBuckets}, labels)
	}
	m.devicesPublished = gauge("devices_published", "Devices the last inventory publishes, per mode (dra, deviceplugin), group and type (block, char).", "mode", "group", "type")
	m.devicesExcluded = gauge("devices_excluded", "Devices the last inventory leaves out, per mode and reason class (see the README's Monitoring section).", "mode", "reason")
	m.discoveryScans = counter("discovery_scans_total", "Discovery scans, per trigger (initial, event, settle, interval) and result (ok, error).", "trigger", "result")
	m.discoverySeconds = histogram("discovery_scan_duration_seconds", "How long a discovery scan took, per trigger.", "trigger")

	m.requests = counter("dra_requests_total", "NodePrepareResources and NodeUnprepareResources claims, per operation (prepare, unprepare) and result (ok, error).", "operation", "result")
	m.requestSeconds = histogram("dra_request_duration_seconds", "Latency of NodePrepareResources and NodeUnprepareResources calls, per operation and result (error when any claim failed).", "operation", "result")
	m.claimsPrepared = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: Namespace, Name: fq("dra_claims_prepared", "gauge"), Help: "Claims prepared on this node now (checkpoint entries)."})
	m.conflicts = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: fq("dra_exclusivity_conflicts_total", "counter"), Help: "Claims refused at first because another prepared claim holds one of their devices."})
	m.waits = counter("dra_exclusivity_waits_total", "Claims that waited for a holder being released, per result (prepared, gave_up).", "result")
	m.checkpointWrite = counter("dra_checkpoint_writes_total", "Checkpoint file writes, per result (ok, error).", "result")
	m.recoveries = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: fq("dra_checkpoint_recoveries_total", "counter"), Help: "Checkpoints rebuilt from the CDI spec files (checkpoint corrupt or missing)."})
	m.staleCollected = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: fq("dra_stale_claims_collected_total", "counter"), Help: "Prepared claims garbage-collected because their ResourceClaim is gone or no longer allocated here."})
	m.publications = counter("dra_slice_publications_total", "ResourceSlice publications handed to the kubelet plugin helper, per result (ok, error).", "result")
	m.apiErrors = prometheus.NewCounter(prometheus.CounterOpts{Namespace: Namespace, Name: fq("dra_background_errors_total", "counter"), Help: "Errors the kubelet plugin helper reported in the background (mostly syncing ResourceSlices with the API server)."})

	m.registrations = counter("deviceplugin_registrations_total", "Device-plugin registrations with the kubelet, per group and result (ok, error).", "group", "result")
	m.reconnects = counter("deviceplugin_kubelet_reconnects_total", "Times a device plugin registered again, per group and cause (socket_removed, kubelet_restart, stream_lost).", "group", "cause")
	m.listAndWatch = counter("deviceplugin_list_and_watch_updates_total", "Device lists sent on ListAndWatch streams, per group.", "group")
	m.allocate = counter("deviceplugin_allocate_requests_total", "Allocate calls, per group and result (ok, invalid, held).", "group", "result")
	m.allocateSeconds = histogram("deviceplugin_allocate_duration_seconds", "Latency of Allocate calls, per result.", "result")

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.devicesPublished, m.devicesExcluded, m.discoveryScans, m.discoverySeconds,
		m.requests, m.requestSeconds, m.claimsPrepared, m.conflicts, m.waits, m.checkpointWrite,
		m.recoveries, m.staleCollected, m.publications, m.apiErrors,
		m.registrations, m.reconnects, m.listAndWatch, m.allocate, m.allocateSeconds,
	)
	registerClientGo(m.reg)
	m.initLabels()
	return m
}

// initLabels creates the series whose label values are known in advance,
// so that they are exported (as 0) before anything happened: a rate over
// them works from the start and an alert sees no gap.
func (m *Metrics) initLabels() {
	for _, r := range []string{ResultOK, ResultError} {
		for _, op := range []string{OpPrepare, OpUnprepare} {
			m.requests.WithLabelValues(op, r)
			m.requestSeconds.WithLabelValues(op, r)
		}
		m.checkpointWrite.WithLabelValues(r)
		m.publications.WithLabelValues(r)
		for _, t := range discovery.ScanTriggers {
			m.discoveryScans.WithLabelValues(t, r)
		}
	}
	for _, t := range discovery.ScanTriggers {
		m.discoverySeconds.WithLabelValues(t)
	}
	m.waits.WithLabelValues("prepared")
	m.waits.WithLabelValues("gave_up")
}

// Family is a metric family the plugin exports: its name and type
// (counter, gauge, histogram, summary, untyped).
type Family struct{ Name, Type string }

// Families returns every metric family the plugin exports: its own,
// client-go's and the Go and process collectors'. A histogram's series add
// _bucket, _sum and _count to its name.
func (m *Metrics) Families() []Family {
	fams := append([]Family{}, m.own...)
	fams = append(fams,
		Family{"rest_client_request_duration_seconds", "histogram"},
		Family{"rest_client_requests_total", "counter"},
		Family{"rest_client_rate_limiter_duration_seconds", "histogram"})
	seen := map[string]bool{}
	for _, f := range fams {
		seen[f.Name] = true
	}
	gathered, _ := m.reg.Gather()
	for _, f := range gathered {
		if !seen[f.GetName()] {
			seen[f.GetName()] = true
			fams = append(fams, Family{f.GetName(), strings.ToLower(f.GetType().String())})
		}
	}
	return fams
}

// Names returns the names of Families.
func (m *Metrics) Names() []string {
	var names []string
	for _, f := range m.Families() {
		names = append(names, f.Name)
	}
	return names
}

// Registry is where the metrics are registered (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func result(err error) string {
	if err != nil {
		return ResultError
	}
	return ResultOK
}

// ObserveInventory sets the published and excluded device gauges of mode
// from inv; withheld are further devices the mode leaves out.
func (m *Metrics) ObserveInventory(mode string, inv *discovery.Inventory, withheld []discovery.Exclusion) {
	if m == nil || inv == nil {
		return
	}
	m.devicesPublished.DeletePartialMatch(prometheus.Labels{"mode": mode})
	m.devicesExcluded.DeletePartialMatch(prometheus.Labels{"mode": mode})
	held := make(map[string]bool, len(withheld))
	for _, w := range withheld {
		held[w.Path] = true
	}
	for _, g := range inv.Groups {
		for _, t := range []string{"block", "char"} {
			m.devicesPublished.WithLabelValues(mode, g.Name, t).Set(0)
		}
		for _, d := range g.Devices {
			if !held[d.Path] {
				m.devicesPublished.WithLabelValues(mode, g.Name, string(d.Type)).Inc()
			}
		}
	}
	for _, c := range discovery.ReasonClasses {
		m.devicesExcluded.WithLabelValues(mode, c).Set(0)
	}
	for _, list := range [][]discovery.Exclusion{inv.Excluded, withheld} {
		for _, e := range list {
			m.devicesExcluded.WithLabelValues(mode, discovery.ReasonClass(e.Reason)).Inc()
		}
	}
}

// ObserveScan counts a discovery scan; discovery.WithScanObserver takes it.
func (m *Metrics) ObserveScan(trigger string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.discoveryScans.WithLabelValues(trigger, result(err)).Inc()
	m.discoverySeconds.WithLabelValues(trigger).Observe(d.Seconds())
}

// Modes, the mode label's values.
const (
	ModeDRA          = "dra"
	ModeDevicePlugin = "deviceplugin"
)
