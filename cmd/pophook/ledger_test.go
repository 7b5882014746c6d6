package main

import (
	"bufio"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/internal/testutil/syncbuf"
)

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestLedgerCommand: list, show, retry, forget and export, with the daemon
// down (the command opens the ledger) and up (it asks the daemon).
func TestLedgerCommand(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice", []byte("Subject: fine\nMessage-ID: <l1@x>\n\nok\n"))
	d.Deliver(t, "alice", []byte("Subject: reject me\nMessage-ID: <l2@x>\n\nno\n"))
	var reject atomic.Bool
	reject.Store(true)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var buf strings.Builder
		bufio.NewReader(r.Body).WriteTo(&buf)
		if reject.Load() && strings.Contains(buf.String(), "reject me") {
			http.Error(w, "unprocessable", http.StatusUnprocessableEntity)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer hook.Close()
	dir := t.TempDir()
	addr := freeAddr(t)
	env := dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"),
		"POPHOOK_SINKS=hook", "POPHOOK_ACCOUNT_SUPPORT_SINKS=hook", "POPHOOK_SINK_HOOK_TYPE=webhook",
		"POPHOOK_SINK_HOOK_URL="+hook.URL, "POPHOOK_HTTP_ADDR="+addr, "POPHOOK_ACCOUNT_SUPPORT_SCHEDULE=@every 1h")
	if out, code := runBin(t, env, "once"); code != 1 || !strings.Contains(out, "rejected it") {
		t.Fatalf("once: exit %d:\n%s", code, out)
	}

	// The daemon is down: the command opens the ledger itself.
	out, code := runBin(t, env, "ledger", "list")
	t.Logf("pophook ledger list (daemon down):\n%s", out)
	if code != 0 || !strings.Contains(out, "ACCOUNT") || !regexpMatch(`(?m)^support\s+0\s+1\s+1\s+0\s+1\s`, out) {
		t.Fatalf("ledger list: exit %d", code)
	}
	out, _, code = runBinOut(t, env, "ledger", "export")
	var uidl string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec struct {
			Account string `json:"account"`
			Entry   struct {
				UIDL  string `json:"uidl"`
				Sinks map[string]struct {
					Permanent bool `json:"permanent"`
				} `json:"sinks"`
			} `json:"entry"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Account != "support" {
			t.Fatalf("export line %q: %v", line, err)
		}
		if rec.Entry.Sinks["hook"].Permanent {
			uidl = rec.Entry.UIDL
		}
	}
	if code != 0 || uidl == "" {
		t.Fatalf("export: exit %d, no rejected entry:\n%s", code, out)
	}
	if out, code := runBin(t, env, "ledger", "show", "support", uidl); code != 0 || !strings.Contains(out, `"permanent": true`) || !strings.Contains(out, "HTTP 422") {
		t.Fatalf("show: exit %d:\n%s", code, out)
	}

	// The daemon is up and holds the ledger: the command asks it.
	daemon := exec.Command(pophookBinary(t), "run")
	daemon.Env = env
	dlog := &syncbuf.Buffer{}
	daemon.Stderr = dlog
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			daemon.Process.Signal(os.Interrupt)
			daemon.Wait()
		}
	}
	defer stop()
	waitFor(t, func() bool { return strings.Contains(dlog.String(), "fetch done") })
	out, code = runBin(t, env, "ledger", "list")
	t.Logf("pophook ledger list (daemon up):\n%s", out)
	if code != 0 || !regexpMatch(`(?m)^support\s+0\s+1\s+1\s+0\s+1\s`, out) {
		t.Fatalf("ledger list with the daemon up: exit %d\n%s", code, dlog)
	}
	out, code = runBin(t, env, "ledger", "retry", "support", uidl)
	t.Logf("pophook ledger retry (daemon up): %s", out)
	if code != 0 || !strings.Contains(out, "1 rejection(s) cleared") {
		t.Fatalf("retry: exit %d", code)
	}
	if out, code := runBin(t, env, "ledger", "retry", "support", uidl); code == 0 || !strings.Contains(out, "no rejection to retry") {
		t.Errorf("second retry: exit %d: %s", code, out)
	}
	if out, code := runBin(t, env, "ledger", "show", "support", "no-such-uidl"); code == 0 || !strings.Contains(out, "has no record") {
		t.Errorf("show unknown: exit %d: %s", code, out)
	}
	stop()

	// Retried, the receiver now takes it: the next run delivers and deletes.
	reject.Store(false)
	if out, code := runBin(t, env, "once"); code != 0 {
		t.Fatalf("once after retry: exit %d:\n%s", code, out)
	}
	if n := d.Count(t, "alice"); n != 0 {
		t.Errorf("%d on the server after the retried delivery", n)
	}
	// Forget drops the record (daemon down again).
	if out, code := runBin(t, env, "ledger", "forget", "support", uidl); code != 0 || !strings.Contains(out, "1 record(s) dropped") {
		t.Errorf("forget: exit %d: %s", code, out)
	}
}

func regexpMatch(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }

// The control API answers only with the token from the data dir.
func TestControlAPIToken(t *testing.T) {
	api, err := newControlAPI(t.TempDir(), &ledgerService{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	defer srv.Close()
	for token, want := range map[string]int{"": 401, "wrong": 401, api.token: 422} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/ledger", strings.NewReader(`{"op":"nonsense"}`))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("token %q: HTTP %d, want %d", token, resp.StatusCode, want)
		}
	}
}

// healthcheck answers for the local daemon: 0 when it is ready, 1 when it
// does not answer.
func TestHealthcheck(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	dir := t.TempDir()
	addr := freeAddr(t)
	env := dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"), "POPHOOK_HTTP_ADDR="+addr)
	if out, code := runBin(t, []string{"POPHOOK_HTTP_ADDR=" + addr}, "healthcheck"); code != 1 || !strings.Contains(out, "does not answer") {
		t.Errorf("no daemon: exit %d: %s", code, out)
	}
	daemon := exec.Command(pophookBinary(t), "run")
	daemon.Env = env
	dlog := &syncbuf.Buffer{}
	daemon.Stderr = dlog
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { daemon.Process.Signal(os.Interrupt); daemon.Wait() }()
	waitFor(t, func() bool { return strings.Contains(dlog.String(), "fetch done") })
	// Only POPHOOK_HTTP_ADDR is needed, as in a container's HEALTHCHECK.
	if out, code := runBin(t, []string{"POPHOOK_HTTP_ADDR=" + addr}, "healthcheck"); code != 0 {
		t.Errorf("daemon up: exit %d: %s", code, out)
	}
}

func TestVersion(t *testing.T) {
	out, code := runBin(t, nil, "version")
	if code != 0 || !regexpMatch(`^pophook \S+ \(commit \S+, go1\.\d+`, out) {
		t.Errorf("version: exit %d: %q", code, out)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&b)
	return resp.StatusCode, b.String()
}

// TestDaemonHTTP: the real daemon's metrics, readiness and status page.
func TestDaemonHTTP(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	for range 2 {
		d.Deliver(t, "alice", []byte("Subject: m\n\nbody\n"))
	}
	for _, tc := range []struct {
		name  string
		extra []string
		ready int
		says  []string
	}{
		{"good", nil, 200, []string{`pophook_messages_delivered_total{account="support"} 2`, `pophook_runs_total{account="support",outcome="ok"} 1`,
			`pophook_sink_deliveries_total{outcome="delivered",sink="archive"} 2`, `pophook_build_info{`}},
		{"wrong password", []string{"POPHOOK_ACCOUNT_SUPPORT_PASSWORD=wrong"}, 503, []string{`pophook_auth_consecutive_failures{account="support"} 1`,
			`pophook_runs_total{account="support",outcome="failed"} 1`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			addr := freeAddr(t)
			env := dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"), append([]string{"POPHOOK_HTTP_ADDR=" + addr}, tc.extra...)...)
			daemon := exec.Command(pophookBinary(t), "run")
			daemon.Env = env
			dlog := &syncbuf.Buffer{}
			daemon.Stderr = dlog
			if err := daemon.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { daemon.Process.Signal(os.Interrupt); daemon.Wait() }()
			waitFor(t, func() bool { return strings.Contains(dlog.String(), `msg="fetch `) })
			// The run's end is logged before the metrics and readiness
			// observe it: poll until they show it, then say what is
			// missing.
			var code int
			var body, metrics string
			eventually(func() bool {
				code, body = httpGet(t, "http://"+addr+"/readyz")
				_, metrics = httpGet(t, "http://"+addr+"/metrics")
				for _, want := range tc.says {
					if !strings.Contains(metrics, want) {
						return false
					}
				}
				return code == tc.ready
			})
			if code != tc.ready {
				t.Errorf("/readyz: HTTP %d %q, want %d", code, body, tc.ready)
			}
			for _, want := range tc.says {
				if !strings.Contains(metrics, want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
			if code, page := httpGet(t, "http://"+addr+"/"); code != 200 || !strings.Contains(page, "support") {
				t.Errorf("status page: HTTP %d", code)
			}
		})
	}
}
