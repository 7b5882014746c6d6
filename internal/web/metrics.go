package web

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/worker"
)

// BuildInfo is what pophook_build_info says about the binary.
type BuildInfo struct {
	Version   string // "v1.2.3", or "dev"
	Commit    string // VCS revision; exposed as the label revision, as Prometheus' own build_info does
	GoVersion string // runtime.Version()
}

// Run outcomes, the values of the label outcome of pophook_runs_total.
const (
	RunOK      = "ok"      // the session ran to its end (messages may still have had problems)
	RunSkipped = "skipped" // mailbox in use, login delay, auth back-off
	RunFailed  = "failed"  // the run failed as a whole (Event.Err)
)

// SinkLatencyBuckets are the bounds, in seconds, of
// pophook_sink_delivery_duration_seconds: from a Maildir write (a few
// milliseconds) to a webhook delivery that used its whole retry budget
// (BUDGET, 45 s by default).
var SinkLatencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 20, 30, 45, 60}

// Metrics holds pophook's Prometheus metrics. Every label value comes from
// the configuration (account and sink names) or from a fixed set
// (outcomes): never a UIDL, an address or a URL, so the number of series is
// bounded by the configuration. Its methods are safe for concurrent use.
type Metrics struct {
	runs           *prometheus.CounterVec
	fetched        *prometheus.CounterVec
	fetchedBytes   *prometheus.CounterVec
	delivered      *prometheus.CounterVec
	rejected       *prometheus.CounterVec
	deleted        *prometheus.CounterVec
	lastSuccess    *prometheus.GaugeVec
	authFailures   *prometheus.GaugeVec
	sinkDeliveries *prometheus.CounterVec
	sinkRetries    *prometheus.CounterVec
	sinkLatency    *prometheus.HistogramVec
	backoff        *backoffCollector
}

// NewMetrics creates the metrics and registers them with reg (which must
// not be nil; registering twice with one registry panics, as with
// promauto). The accounts and sinks named are given every series at 0 at
// once, so that rate() and absent() work from the first scrape; names
// first seen later in events get their series then.
func NewMetrics(reg prometheus.Registerer, build BuildInfo, accounts, sinkNames []string) *Metrics {
	account := []string{"account"}
	m := &Metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pophook_runs_total",
			Help: "Finished fetch runs per account, by outcome: ok (the session ran to its end), skipped (mailbox in use, login delay, auth back-off), failed.",
		}, []string{"account", "outcome"}),
		fetched: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pophook_messages_fetched_total",
			Help: "Messages retrieved from the POP3 server into the spool.",
		}, account),
		fetchedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pophook_fetched_bytes_total",
			Help: "Octets of the messages retrieved from the POP3 server.",
		}, account),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pophook_messages_delivered_total",
			Help: "Messages newly delivered to all of the account's sinks.",
		}, account),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pophook_messages_rejected_total",
			Help: "Rejections of a message by a sink; the message stays on the server and is offered again on a slow schedule.",
		}, account),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pophook_messages_deleted_total",
			Help: "Messages deleted from the POP3 server (confirmed by QUIT).",
		}, account),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pophook_last_success_timestamp_seconds",
			Help: "Unix time at which the account's last run with outcome ok ended; 0 before the first.",
		}, account),
		authFailures: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pophook_auth_consecutive_failures",
			Help: "Logins the server refused in a row (as the ledger keeps them); 0 after a login succeeded.",
		}, account),
		sinkDeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pophook_sink_deliveries_total",
			Help: "Messages handed to a sink, by outcome: delivered, temporary, rejected, unavailable.",
		}, []string{"sink", "outcome"}),
		sinkRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pophook_sink_retries_total",
			Help: "Attempts a sink repeated within one delivery.",
		}, []string{"sink"}),
		sinkLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pophook_sink_delivery_duration_seconds",
			Help:    "Time one sink took to take (or fail to take) one message, retries included.",
			Buckets: SinkLatencyBuckets,
		}, []string{"sink"}),
		backoff: &backoffCollector{
			desc: prometheus.NewDesc("pophook_backoff_seconds",
				"Seconds until the account may log in again (auth back-off or the server's login delay); 0 when it may now.",
				account, nil),
			until: map[string]time.Time{},
			now:   time.Now,
		},
	}
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "pophook_build_info",
		Help: "Always 1; the labels say which pophook is running.",
		ConstLabels: prometheus.Labels{
			"version":   build.Version,
			"revision":  build.Commit,
			"goversion": build.GoVersion,
		},
	})
	buildInfo.Set(1)
	reg.MustRegister(m.runs, m.fetched, m.fetchedBytes, m.delivered, m.rejected, m.deleted,
		m.lastSuccess, m.authFailures, m.backoff,
		m.sinkDeliveries, m.sinkRetries, m.sinkLatency, buildInfo)
	for _, a := range accounts {
		m.account(a)
	}
	for _, s := range sinkNames {
		m.sink(s)
	}
	return m
}

// account creates every series of account a.
func (m *Metrics) account(a string) {
	for _, o := range []string{RunOK, RunSkipped, RunFailed} {
		m.runs.WithLabelValues(a, o)
	}
	for _, v := range []*prometheus.CounterVec{m.fetched, m.fetchedBytes, m.delivered, m.rejected, m.deleted} {
		v.WithLabelValues(a)
	}
	m.lastSuccess.WithLabelValues(a)
	m.authFailures.WithLabelValues(a)
	m.backoff.set(a, time.Time{}, false)
}

// sink creates every series of sink s.
func (m *Metrics) sink(s string) {
	for _, o := range []sinks.Outcome{sinks.OutcomeDelivered, sinks.OutcomeTemporary, sinks.OutcomeRejected, sinks.OutcomeUnavailable} {
		m.sinkDeliveries.WithLabelValues(s, o.String())
	}
	m.sinkRetries.WithLabelValues(s)
	m.sinkLatency.WithLabelValues(s)
}

// Observe is a worker.Job OnEvent hook: it counts what the event reports.
func (m *Metrics) Observe(e worker.Event) {
	a := e.Account
	switch e.Kind {
	case worker.EventFetched:
		m.fetched.WithLabelValues(a).Inc()
		if e.Size > 0 {
			m.fetchedBytes.WithLabelValues(a).Add(float64(e.Size))
		}
	case worker.EventSinkDone:
		m.sinkDeliveries.WithLabelValues(e.Sink, e.Outcome.String()).Inc()
		m.sinkLatency.WithLabelValues(e.Sink).Observe(e.Took.Seconds())
	case worker.EventDelivered:
		m.delivered.WithLabelValues(a).Inc()
	case worker.EventProblem:
		if e.Problem.Kind == worker.ProblemRejected {
			m.rejected.WithLabelValues(a).Inc()
		}
	case worker.EventRunDone:
		r := e.Result
		if r == nil {
			r = &worker.Result{}
		}
		outcome := RunOK
		switch {
		case e.Err != nil:
			outcome = RunFailed
		case r.Skipped != worker.SkipNone:
			outcome = RunSkipped
		}
		m.runs.WithLabelValues(a, outcome).Inc()
		if r.Deleted > 0 {
			m.deleted.WithLabelValues(a).Add(float64(r.Deleted))
		}
		if outcome == RunOK {
			at := e.At
			if at.IsZero() {
				at = time.Now()
			}
			m.lastSuccess.WithLabelValues(a).Set(float64(at.UnixMilli()) / 1e3)
		}
		m.authFailures.WithLabelValues(a).Set(float64(r.LoginFailures))
		m.backoff.set(a, r.NextAttempt, true)
	}
}

// SinkRetry counts one repeated attempt of sink within a delivery: the
// sinks' retry hook.
func (m *Metrics) SinkRetry(sink string) {
	m.sinkRetries.WithLabelValues(sink).Inc()
}

// backoffCollector exposes pophook_backoff_seconds computed at scrape
// time from each account's next allowed attempt, so that the value counts
// down between runs instead of standing still at what it was when the
// last run ended.
type backoffCollector struct {
	desc  *prometheus.Desc
	now   func() time.Time
	mu    sync.Mutex
	until map[string]time.Time // account -> next allowed attempt; zero: now
}

// set records account a's next allowed attempt; with replace false it only
// makes sure the account has a series.
func (c *backoffCollector) set(a string, until time.Time, replace bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.until[a]; ok && !replace {
		return
	}
	c.until[a] = until
}

func (c *backoffCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *backoffCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	for a, until := range c.until {
		v := 0.0
		if !until.IsZero() && until.After(now) {
			v = until.Sub(now).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, a)
	}
}
