package web

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pophook/pophook/worker"
)

func get(t *testing.T, h http.Handler, path string) (int, string, http.Header) {
	t.Helper()
	return do(t, h, httptest.NewRequest("GET", path, nil))
}

func do(t *testing.T, h http.Handler, req *http.Request) (int, string, http.Header) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	body, err := io.ReadAll(rec.Result().Body)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Code, string(body), rec.Result().Header
}

func TestHealthz(t *testing.T) {
	// Alive even when nothing else is.
	h := New(Options{Ready: func() error { return errors.New("ledger not open") }})
	code, body, _ := get(t, h, "/healthz")
	if code != 200 || body != "ok\n" {
		t.Errorf("GET /healthz: %d %q, want 200 \"ok\\n\"", code, body)
	}
}

// Runs as jobs report them, and as Status shows them.
var (
	runOK      = &worker.Result{Listed: 2, Delivered: 2}
	runProblem = &worker.Result{Listed: 2, Problems: []worker.Problem{{Kind: worker.ProblemRejected, UIDL: "17", Sink: "helpdesk"}}}
	runInUse   = &worker.Result{Skipped: worker.SkipInUse, SkipDetail: "-ERR [IN-USE] locked"}
	runDelay   = &worker.Result{Skipped: worker.SkipLoginDelay, NextAttempt: fixedNow.Add(5 * time.Minute)}
	runRefused = &worker.Result{LoginRefused: true, LoginFailures: 3, NextAttempt: time.Date(2026, 12, 3, 12, 40, 0, 0, time.UTC)}
	runBackoff = &worker.Result{Skipped: worker.SkipAuthBackoff, LoginFailures: 3, NextAttempt: time.Date(2026, 12, 3, 12, 40, 0, 0, time.UTC)}
	errRefused = errors.New("account support: authentication failed: check the user name and password (refused 3 time(s); next attempt at 2026-12-03T12:40:00Z): -ERR [AUTH] Authentication failed")
	errDial    = errors.New("account billing: dial tcp 203.0.113.7:995: connect: connection refused")
)

type run struct {
	account string
	res     *worker.Result
	err     error
}

func TestReadiness(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ready    error          // from Options.Ready
		accounts []string       // nil: Options.Accounts unset
		observed []run          // through Handler.Observe, in order
		status   map[string]run // the last run in Status (not observed)
		running  string         // an account in its first run
		want     string         // "" for ready, else the whole reason
	}{
		{name: "no run finished yet", accounts: []string{"support", "billing"}},
		{name: "no accounts", accounts: []string{}},
		{name: "accounts unknown", observed: []run{{"support", runRefused, errRefused}}},
		{name: "ledger not open", ready: errors.New("ledger not open"), accounts: []string{"support"},
			observed: []run{{"support", runOK, nil}}, want: "ledger not open"},
		{name: "one failing, the other not finished", accounts: []string{"support", "billing"},
			observed: []run{{"support", runRefused, errRefused}}, running: "billing"},
		{name: "one failing, one fine", accounts: []string{"support", "billing"},
			observed: []run{{"support", runRefused, errRefused}, {"billing", runOK, nil}}},
		{name: "only account refused", accounts: []string{"support"},
			observed: []run{{"support", runRefused, errRefused}},
			want:     "account support: authentication failed 3 times; next attempt 12:40 UTC"},
		{name: "only account backing off", accounts: []string{"support"},
			observed: []run{{"support", runRefused, errRefused}, {"support", runBackoff, nil}},
			want:     "account support: authentication failed 3 times; next attempt 12:40 UTC"},
		{name: "every account failing", accounts: []string{"support", "billing"},
			observed: []run{{"support", runRefused, errRefused}, {"billing", &worker.Result{}, errDial}, {"support", runBackoff, nil}},
			want:     "every account has failed since start: account support: authentication failed 3 times; next attempt 12:40 UTC; account billing: dial tcp 203.0.113.7:995: connect: connection refused"},
		{name: "mailbox in use is not a failure", accounts: []string{"support"},
			observed: []run{{"support", runInUse, nil}}},
		{name: "login delay is not a failure", accounts: []string{"support"},
			observed: []run{{"support", runDelay, nil}}},
		{name: "a rejected message is not a failing account", accounts: []string{"support"},
			observed: []run{{"support", runProblem, nil}}},
		{name: "a success since start keeps it ready", accounts: []string{"support", "billing"},
			observed: []run{{"support", runOK, nil}, {"billing", &worker.Result{}, errDial}, {"support", runRefused, errRefused}}},
		{name: "runs seen only in Status", accounts: []string{"support", "billing"},
			status: map[string]run{"support": {"support", runBackoff, nil}, "billing": {"billing", &worker.Result{}, errDial}},
			want:   "every account has failed since start: account support: authentication failed 3 times; next attempt 12:40 UTC; account billing: dial tcp 203.0.113.7:995: connect: connection refused"},
		{name: "a success seen only in Status", accounts: []string{"support", "billing"},
			observed: []run{{"billing", &worker.Result{}, errDial}},
			status:   map[string]run{"support": {"support", runOK, nil}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			last := map[string]run{}
			opts := Options{Now: clockAt(fixedNow)}
			if tc.ready != nil {
				opts.Ready = func() error { return tc.ready }
			}
			if tc.accounts != nil {
				opts.Accounts = func() []worker.Status {
					var out []worker.Status
					for _, a := range tc.accounts {
						s := worker.Status{Account: a, Running: a == tc.running}
						if r, ok := last[a]; ok {
							s.Last, s.LastErr = r.res, r.err
						}
						out = append(out, s)
					}
					return out
				}
			}
			h := New(opts)
			for _, r := range tc.observed {
				last[r.account] = r
				h.Observe(worker.Event{Kind: worker.EventRunDone, Account: r.account, Result: r.res, Err: r.err})
			}
			for a, r := range tc.status {
				last[a] = r
			}

			code, body, hd := get(t, h, "/readyz")
			if ct := hd.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			if tc.want == "" {
				if code != 200 || body != "ready\n" {
					t.Errorf("GET /readyz: %d %q, want 200 \"ready\\n\"", code, body)
				}
				return
			}
			if code != 503 || body != tc.want+"\n" {
				t.Errorf("GET /readyz: %d %q\nwant 503 %q", code, body, tc.want+"\n")
			}
		})
	}
}

// The reason is one line, whatever the server put into its error.
func TestReadinessOneLine(t *testing.T) {
	h := New(Options{
		Now:      clockAt(fixedNow),
		Accounts: func() []worker.Status { return []worker.Status{{Account: "support"}} },
	})
	h.Observe(worker.Event{Kind: worker.EventRunDone, Account: "support", Result: &worker.Result{},
		Err: errors.New("account support: -ERR line one\r\nline two\x1b[31m red " + strings.Repeat("x", 2000))})
	code, body, _ := get(t, h, "/readyz")
	if code != 503 {
		t.Fatalf("GET /readyz: %d", code)
	}
	if strings.Count(body, "\n") != 1 || strings.ContainsAny(body, "\r\x1b") {
		t.Errorf("reason is not one clean line: %q", body)
	}
	if !strings.HasPrefix(body, "account support: -ERR line one line two [31m red xxx") || len(body) > 400 {
		t.Errorf("reason %q (%d bytes)", body[:min(len(body), 80)], len(body))
	}
}

func TestRoutes(t *testing.T) {
	extra := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "api "+r.Method+" "+r.URL.Path) })
	h := New(Options{Extra: extra, Now: clockAt(fixedNow)})
	for _, tc := range []struct {
		method, path string
		header       map[string]string
		code         int
		body         string
	}{
		{"GET", "/healthz", nil, 200, "ok\n"},
		{"HEAD", "/healthz", nil, 200, ""},
		{"POST", "/healthz", nil, 405, ""},
		{"GET", "/readyz", nil, 200, "ready\n"},
		{"GET", "/nothing", nil, 404, ""},
		{"GET", "/index.html", nil, 404, ""},
		{"GET", "/metrics", nil, 404, ""},
		{"GET", "/api/accounts", nil, 200, "api GET /api/accounts"},
		{"POST", "/api/retry", nil, 200, "api POST /api/retry"},
		{"POST", "/api/retry", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403, ""},
		{"POST", "/api/retry", map[string]string{"Origin": "https://evil.example"}, 403, ""},
	} {
		req := httptest.NewRequest(tc.method, tc.path, nil)
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		code, body, _ := do(t, h, req)
		if code != tc.code || (tc.body != "" && body != tc.body) {
			t.Errorf("%s %s %v: %d %q, want %d %q", tc.method, tc.path, tc.header, code, body, tc.code, tc.body)
		}
	}
	if code, _, _ := get(t, New(Options{}), "/api/x"); code != 404 {
		t.Errorf("GET /api/x without Extra: %d, want 404", code)
	}
}

// Jobs report events from their goroutines while the endpoints are
// being read (run with -race).
func TestConcurrentUse(t *testing.T) {
	m, reg := newTestMetrics(t)
	opts := realistic()
	opts.Gatherer = reg
	h := New(opts)
	var wg sync.WaitGroup
	for _, account := range []string{"support", "billing", "sales"} {
		wg.Go(func() {
			for i := range 50 {
				for _, e := range events(fixedNow) {
					e.Account = account
					m.Observe(e)
					h.Observe(e)
				}
				m.SinkRetry("helpdesk")
				if i%10 == 0 {
					for _, path := range []string{"/", "/readyz", "/metrics"} {
						if code, body, _ := get(t, h, path); code != 200 {
							t.Errorf("GET %s: %d %s", path, code, body)
						}
					}
				}
			}
		})
	}
	wg.Wait()
	if got := testutil.ToFloat64(m.runs.WithLabelValues("sales", RunOK)); got != 50 {
		t.Errorf("sales ok runs = %v, want 50", got)
	}
}
