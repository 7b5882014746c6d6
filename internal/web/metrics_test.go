package web

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/worker"
)

var testBuild = BuildInfo{Version: "v1.4.0", Commit: "0123abc", GoVersion: "go1.26.8"}

func newTestMetrics(t *testing.T) (*Metrics, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	m := NewMetrics(reg, testBuild, []string{"support", "billing"}, []string{"helpdesk", "archive"})
	m.backoff.now = clockAt(fixedNow)
	return m, reg
}

func compare(t *testing.T, reg prometheus.Gatherer, want string, names ...string) {
	t.Helper()
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
}

func TestMetricsFollowConventions(t *testing.T) {
	_, reg := newTestMetrics(t)
	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
}

// Every series of a configured account or sink exists at 0 before any
// event, so that rate() and alerts work from the first scrape.
func TestMetricsStartAtZero(t *testing.T) {
	_, reg := newTestMetrics(t)
	compare(t, reg, `
# HELP pophook_build_info Always 1; the labels say which pophook is running.
# TYPE pophook_build_info gauge
pophook_build_info{goversion="go1.26.8",revision="0123abc",version="v1.4.0"} 1
# HELP pophook_runs_total Finished fetch runs per account, by outcome: ok (the session ran to its end), skipped (mailbox in use, login delay, auth back-off), failed.
# TYPE pophook_runs_total counter
pophook_runs_total{account="billing",outcome="failed"} 0
pophook_runs_total{account="billing",outcome="ok"} 0
pophook_runs_total{account="billing",outcome="skipped"} 0
pophook_runs_total{account="support",outcome="failed"} 0
pophook_runs_total{account="support",outcome="ok"} 0
pophook_runs_total{account="support",outcome="skipped"} 0
# HELP pophook_sink_deliveries_total Messages handed to a sink, by outcome: delivered, temporary, rejected, unavailable.
# TYPE pophook_sink_deliveries_total counter
pophook_sink_deliveries_total{outcome="delivered",sink="archive"} 0
pophook_sink_deliveries_total{outcome="delivered",sink="helpdesk"} 0
pophook_sink_deliveries_total{outcome="rejected",sink="archive"} 0
pophook_sink_deliveries_total{outcome="rejected",sink="helpdesk"} 0
pophook_sink_deliveries_total{outcome="temporary",sink="archive"} 0
pophook_sink_deliveries_total{outcome="temporary",sink="helpdesk"} 0
pophook_sink_deliveries_total{outcome="unavailable",sink="archive"} 0
pophook_sink_deliveries_total{outcome="unavailable",sink="helpdesk"} 0
# HELP pophook_backoff_seconds Seconds until the account may log in again (auth back-off or the server's login delay); 0 when it may now.
# TYPE pophook_backoff_seconds gauge
pophook_backoff_seconds{account="billing"} 0
pophook_backoff_seconds{account="support"} 0
`, "pophook_build_info", "pophook_runs_total", "pophook_sink_deliveries_total", "pophook_backoff_seconds")

	// Per account: 3 runs + fetched, bytes, delivered, rejected, deleted,
	// last success, auth failures, backoff = 11; per sink: 4 outcomes +
	// retries + 1 histogram = 6; build info 1.
	if got, want := testutil.CollectAndCount(reg), 2*11+2*6+1; got != want {
		t.Errorf("%d series, want %d", got, want)
	}
}

// events is what a job reports in a run that fetches two messages,
// delivers one to both sinks, sees the other rejected by the webhook,
// and deletes the delivered one; the UIDLs and errors carry the kind of
// strings that must never become label values.
func events(at time.Time) []worker.Event {
	url := errors.New(`POST https://user:secret@helpdesk.example.com/hooks/mail?token=t0ps3cret: 422 Unprocessable Entity`)
	return []worker.Event{
		{Kind: worker.EventFetched, Account: "support", UIDL: "000001a4f3e2", Size: 48213},
		{Kind: worker.EventSinkDone, Account: "support", UIDL: "000001a4f3e2", Sink: "helpdesk", Outcome: sinks.OutcomeDelivered, Took: 120 * time.Millisecond},
		{Kind: worker.EventSinkDone, Account: "support", UIDL: "000001a4f3e2", Sink: "archive", Outcome: sinks.OutcomeDelivered, Took: 3 * time.Millisecond},
		{Kind: worker.EventDelivered, Account: "support", UIDL: "000001a4f3e2", Size: 48213},
		{Kind: worker.EventFetched, Account: "support", UIDL: "https://evil.example/uidl", Size: 1787},
		{Kind: worker.EventSinkDone, Account: "support", UIDL: "https://evil.example/uidl", Sink: "helpdesk", Outcome: sinks.OutcomeRejected, Took: 7 * time.Second},
		{Kind: worker.EventProblem, Account: "support", Problem: worker.Problem{Kind: worker.ProblemRejected, UIDL: "https://evil.example/uidl", Sink: "helpdesk", Err: url}},
		{Kind: worker.EventProblem, Account: "support", Problem: worker.Problem{Kind: worker.ProblemWaiting, UIDL: "0000019", Sink: "helpdesk", Err: url}},
		{Kind: worker.EventRunDone, Account: "support", At: at, Result: &worker.Result{Account: "support", Listed: 3, Delivered: 1, Deleted: 1}},
	}
}

func TestMetricsObserve(t *testing.T) {
	m, reg := newTestMetrics(t)
	end := time.Date(2026, 12, 3, 12, 14, 30, 500_000_000, time.UTC)
	for _, e := range events(end) {
		m.Observe(e)
	}
	// billing: a refused login, then a run skipped for the back-off.
	m.Observe(worker.Event{Kind: worker.EventRunDone, Account: "billing", At: fixedNow.Add(-2 * time.Minute),
		Result: &worker.Result{Account: "billing", LoginRefused: true, LoginFailures: 3, NextAttempt: fixedNow.Add(25 * time.Minute)},
		Err:    errors.New("account billing: authentication failed")})
	m.Observe(worker.Event{Kind: worker.EventRunDone, Account: "billing", At: fixedNow.Add(-time.Minute),
		Result: &worker.Result{Account: "billing", Skipped: worker.SkipAuthBackoff, LoginFailures: 3, NextAttempt: fixedNow.Add(25 * time.Minute)}})
	m.SinkRetry("helpdesk")
	m.SinkRetry("helpdesk")

	compare(t, reg, fmt.Sprintf(`
# HELP pophook_runs_total Finished fetch runs per account, by outcome: ok (the session ran to its end), skipped (mailbox in use, login delay, auth back-off), failed.
# TYPE pophook_runs_total counter
pophook_runs_total{account="billing",outcome="failed"} 1
pophook_runs_total{account="billing",outcome="ok"} 0
pophook_runs_total{account="billing",outcome="skipped"} 1
pophook_runs_total{account="support",outcome="failed"} 0
pophook_runs_total{account="support",outcome="ok"} 1
pophook_runs_total{account="support",outcome="skipped"} 0
# HELP pophook_messages_fetched_total Messages retrieved from the POP3 server into the spool.
# TYPE pophook_messages_fetched_total counter
pophook_messages_fetched_total{account="billing"} 0
pophook_messages_fetched_total{account="support"} 2
# HELP pophook_fetched_bytes_total Octets of the messages retrieved from the POP3 server.
# TYPE pophook_fetched_bytes_total counter
pophook_fetched_bytes_total{account="billing"} 0
pophook_fetched_bytes_total{account="support"} 50000
# HELP pophook_messages_delivered_total Messages newly delivered to all of the account's sinks.
# TYPE pophook_messages_delivered_total counter
pophook_messages_delivered_total{account="billing"} 0
pophook_messages_delivered_total{account="support"} 1
# HELP pophook_messages_rejected_total Rejections of a message by a sink; the message stays on the server and is offered again on a slow schedule.
# TYPE pophook_messages_rejected_total counter
pophook_messages_rejected_total{account="billing"} 0
pophook_messages_rejected_total{account="support"} 1
# HELP pophook_messages_deleted_total Messages deleted from the POP3 server (confirmed by QUIT).
# TYPE pophook_messages_deleted_total counter
pophook_messages_deleted_total{account="billing"} 0
pophook_messages_deleted_total{account="support"} 1
# HELP pophook_last_success_timestamp_seconds Unix time at which the account's last run with outcome ok ended; 0 before the first.
# TYPE pophook_last_success_timestamp_seconds gauge
pophook_last_success_timestamp_seconds{account="billing"} 0
pophook_last_success_timestamp_seconds{account="support"} %d.5
# HELP pophook_auth_consecutive_failures Logins the server refused in a row (as the ledger keeps them); 0 after a login succeeded.
# TYPE pophook_auth_consecutive_failures gauge
pophook_auth_consecutive_failures{account="billing"} 3
pophook_auth_consecutive_failures{account="support"} 0
# HELP pophook_backoff_seconds Seconds until the account may log in again (auth back-off or the server's login delay); 0 when it may now.
# TYPE pophook_backoff_seconds gauge
pophook_backoff_seconds{account="billing"} 1500
pophook_backoff_seconds{account="support"} 0
# HELP pophook_sink_deliveries_total Messages handed to a sink, by outcome: delivered, temporary, rejected, unavailable.
# TYPE pophook_sink_deliveries_total counter
pophook_sink_deliveries_total{outcome="delivered",sink="archive"} 1
pophook_sink_deliveries_total{outcome="delivered",sink="helpdesk"} 1
pophook_sink_deliveries_total{outcome="rejected",sink="archive"} 0
pophook_sink_deliveries_total{outcome="rejected",sink="helpdesk"} 1
pophook_sink_deliveries_total{outcome="temporary",sink="archive"} 0
pophook_sink_deliveries_total{outcome="temporary",sink="helpdesk"} 0
pophook_sink_deliveries_total{outcome="unavailable",sink="archive"} 0
pophook_sink_deliveries_total{outcome="unavailable",sink="helpdesk"} 0
# HELP pophook_sink_retries_total Attempts a sink repeated within one delivery.
# TYPE pophook_sink_retries_total counter
pophook_sink_retries_total{sink="archive"} 0
pophook_sink_retries_total{sink="helpdesk"} 2
`, end.Unix()),
		"pophook_runs_total", "pophook_messages_fetched_total", "pophook_fetched_bytes_total",
		"pophook_messages_delivered_total", "pophook_messages_rejected_total", "pophook_messages_deleted_total",
		"pophook_last_success_timestamp_seconds", "pophook_auth_consecutive_failures", "pophook_backoff_seconds",
		"pophook_sink_deliveries_total", "pophook_sink_retries_total")

	// The latency histogram, by sink: 120 ms and 7 s for the webhook, 3 ms
	// for the Maildir.
	buckets := func(sink string, in func(le float64) int, count int, sum string) string {
		var b strings.Builder
		for _, le := range SinkLatencyBuckets {
			fmt.Fprintf(&b, "pophook_sink_delivery_duration_seconds_bucket{sink=%q,le=\"%g\"} %d\n", sink, le, in(le))
		}
		fmt.Fprintf(&b, "pophook_sink_delivery_duration_seconds_bucket{sink=%q,le=\"+Inf\"} %d\n", sink, count)
		fmt.Fprintf(&b, "pophook_sink_delivery_duration_seconds_sum{sink=%q} %s\n", sink, sum)
		fmt.Fprintf(&b, "pophook_sink_delivery_duration_seconds_count{sink=%q} %d\n", sink, count)
		return b.String()
	}
	upTo := func(obs ...float64) func(float64) int {
		return func(le float64) (n int) {
			for _, o := range obs {
				if o <= le {
					n++
				}
			}
			return n
		}
	}
	compare(t, reg, `
# HELP pophook_sink_delivery_duration_seconds Time one sink took to take (or fail to take) one message, retries included.
# TYPE pophook_sink_delivery_duration_seconds histogram
`+buckets("archive", upTo(0.003), 1, "0.003")+buckets("helpdesk", upTo(0.12, 7), 2, "7.12"),
		"pophook_sink_delivery_duration_seconds")

	// The back-off counts down between runs and stops at 0.
	m.backoff.now = clockAt(fixedNow.Add(20 * time.Minute))
	compare(t, reg, `
# HELP pophook_backoff_seconds Seconds until the account may log in again (auth back-off or the server's login delay); 0 when it may now.
# TYPE pophook_backoff_seconds gauge
pophook_backoff_seconds{account="billing"} 300
pophook_backoff_seconds{account="support"} 0
`, "pophook_backoff_seconds")
	m.backoff.now = clockAt(fixedNow.Add(time.Hour))
	compare(t, reg, `
# HELP pophook_backoff_seconds Seconds until the account may log in again (auth back-off or the server's login delay); 0 when it may now.
# TYPE pophook_backoff_seconds gauge
pophook_backoff_seconds{account="billing"} 0
pophook_backoff_seconds{account="support"} 0
`, "pophook_backoff_seconds")

	// A successful login ends the back-off and the failure count.
	m.Observe(worker.Event{Kind: worker.EventRunDone, Account: "billing", At: fixedNow, Result: &worker.Result{Account: "billing"}})
	if got := testutil.ToFloat64(m.authFailures.WithLabelValues("billing")); got != 0 {
		t.Errorf("auth failures after a successful run = %v, want 0", got)
	}
	if got := testutil.ToFloat64(m.lastSuccess.WithLabelValues("billing")); got != float64(fixedNow.Unix()) {
		t.Errorf("billing's last success = %v, want %d", got, fixedNow.Unix())
	}
}

// No label value is a UIDL, a URL or anything else that grows without
// bound: label names are from a fixed set and values are configured names,
// outcomes or build info.
func TestMetricsLabelsBounded(t *testing.T) {
	m, reg := newTestMetrics(t)
	for range 3 {
		for _, e := range events(fixedNow) {
			m.Observe(e)
		}
	}
	m.Observe(worker.Event{Kind: worker.EventRunDone, Account: "billing", Err: errors.New("dial tcp pop.example.com:995: refused"), Result: &worker.Result{}})
	m.SinkRetry("archive")

	allowed := map[string][]string{
		"account":   {"support", "billing"},
		"sink":      {"helpdesk", "archive"},
		"outcome":   {"ok", "skipped", "failed", "delivered", "temporary", "rejected", "unavailable"},
		"le":        nil, // histogram bounds, checked below
		"version":   {testBuild.Version},
		"revision":  {testBuild.Commit},
		"goversion": {testBuild.GoVersion},
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, f := range families {
		if !strings.HasPrefix(f.GetName(), "pophook_") {
			t.Errorf("metric %s lacks the pophook_ prefix", f.GetName())
		}
		for _, mt := range f.GetMetric() {
			series++
			for _, l := range mt.GetLabel() {
				values, ok := allowed[l.GetName()]
				switch {
				case !ok:
					t.Errorf("%s has label %s", f.GetName(), l.GetName())
				case values != nil && !slices.Contains(values, l.GetValue()):
					t.Errorf("%s{%s=%q}: not a bounded value", f.GetName(), l.GetName(), l.GetValue())
				}
				if v := l.GetValue(); strings.Contains(v, "://") || strings.Contains(v, "uidl") || strings.Contains(v, "000001a4f3e2") {
					t.Errorf("%s{%s=%q}: a URL or UIDL as a label value", f.GetName(), l.GetName(), v)
				}
			}
			for _, b := range mt.GetHistogram().GetBucket() {
				if !slices.Contains(SinkLatencyBuckets, b.GetUpperBound()) {
					t.Errorf("%s: unexpected bucket %v", f.GetName(), b.GetUpperBound())
				}
			}
		}
	}
	if want := 2*11 + 2*6 + 1; series != want {
		t.Errorf("%d series after events, want the %d that exist from the start", series, want)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	m, reg := newTestMetrics(t)
	m.Observe(worker.Event{Kind: worker.EventDelivered, Account: "support"})
	h := New(Options{Gatherer: reg, Now: clockAt(fixedNow)})
	code, body, hd := get(t, h, "/metrics")
	if code != 200 {
		t.Fatalf("GET /metrics: %d %s", code, body)
	}
	if !strings.HasPrefix(hd.Get("Content-Type"), "text/plain") {
		t.Errorf("Content-Type %q", hd.Get("Content-Type"))
	}
	for _, want := range []string{
		`pophook_messages_delivered_total{account="support"} 1`,
		`pophook_build_info{goversion="go1.26.8",revision="0123abc",version="v1.4.0"} 1`,
		`pophook_sink_delivery_duration_seconds_bucket{sink="helpdesk",le="60"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if code, _, _ := get(t, New(Options{}), "/metrics"); code != 404 {
		t.Errorf("GET /metrics without a Gatherer: %d, want 404", code)
	}
}
