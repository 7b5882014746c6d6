package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/internal/testutil/faultrow"
	"github.com/pophook/pophook/internal/testutil/syncbuf"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker/pop3"
)

// Issue 13, point 5, as processes: the login back-off that `pophook once`
// keeps in the ledger holds across processes, the daemon honours it from
// tick to tick, [IN-USE] is not a wrong password, and OAuth2 tokens that
// the server or the provider stop accepting. The simulated day (1440
// ticks on an injected clock) is in worker/authfault_test.go: a process
// cannot be given a fake clock, so here the ledger's back-off record is
// the seam: it is moved into the past to let the next attempt through.

// ftProxy is a TCP proxy in front of a server that counts the connections
// made through it: for pophook, every login attempt is one connection.
type ftProxy struct {
	ln     net.Listener
	target string
	n      atomic.Int32
	wg     sync.WaitGroup
}

func ftStartProxy(t *testing.T, target string) *ftProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &ftProxy{ln: ln, target: target}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.n.Add(1)
			p.wg.Go(func() { p.forward(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *ftProxy) forward(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(s, c); s.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, s); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

func (p *ftProxy) port() string { return strconv.Itoa(p.ln.Addr().(*net.TCPAddr).Port) }

// ftMeta reads an account's metadata from the ledger in dataDir (no
// pophook may hold it).
func ftMeta(t *testing.T, dataDir, host, user string) state.AccountMeta {
	t.Helper()
	l, err := state.Open(dataDir, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	m, err := l.Account(state.AccountID(host, user)).Meta()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ftEndBackoff moves the recorded back-off into the past: what the clock
// would do by waiting it out.
func ftEndBackoff(t *testing.T, dataDir, host, user string) {
	t.Helper()
	l, err := state.Open(dataDir, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a := l.Account(state.AccountID(host, user))
	m, err := a.Meta()
	if err != nil {
		t.Fatal(err)
	}
	m.Login.NotBefore = time.Now().Add(-time.Second)
	if err := a.SetMeta(m); err != nil {
		t.Fatal(err)
	}
}

// ftBackoff is the documented back-off after the n-th refused login in a
// row: 1 min doubling to 1 h.
func ftBackoff(n int) time.Duration { return min(time.Hour, time.Minute<<min(n-1, 10)) }

// Repeated `pophook once` with a wrong password, as cron calls it: each
// refused login records a back-off in the ledger, and every process
// started before it ends leaves the server alone. Waiting out the
// back-off is simulated by moving the ledger's record into the past; the
// waits recorded follow 1 min doubling to 1 h. A changed password ends the
// back-off at once.
func TestAuthFaultOnceHonoursLedgerBackoff(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice", []byte("Subject: waiting\n\nfor the right password\n"))
	p := ftStartProxy(t, d.TLSAddr())
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	env := dovecotEnv(d, data, filepath.Join(dir, "Maildir"),
		"POPHOOK_ACCOUNT_SUPPORT_HOST=127.0.0.1", "POPHOOK_ACCOUNT_SUPPORT_PORT="+p.port(),
		"POPHOOK_ACCOUNT_SUPPORT_PASSWORD=Wrong-Password-1")
	const failures = 8
	var waits []string
	processes := 0
	for i := 1; i <= failures; i++ {
		before := time.Now()
		out, code := runBin(t, env, "once")
		after := time.Now()
		processes++
		if code != 1 || !strings.Contains(out, "authentication failed: check the user name and password") ||
			!strings.Contains(out, fmt.Sprintf("refused %d time(s)", i)) {
			t.Fatalf("once #%d: exit %d, want 1 and the refusal counted:\n%s", i, code, out)
		}
		if got := int(p.n.Load()); got != i {
			t.Fatalf("after %d refused logins the server saw %d attempts", i, got)
		}
		m := ftMeta(t, data, "127.0.0.1", "alice")
		wait := ftBackoff(i)
		if m.Login.Failures != i || m.Login.NotBefore.Add(-wait).Before(before) || m.Login.NotBefore.Add(-wait).After(after) {
			t.Fatalf("ledger after refusal %d: %+v; want %d failures and a back-off of %s from the refusal (between %s and %s)",
				i, m.Login, i, wait, before.Format(time.RFC3339Nano), after.Format(time.RFC3339Nano))
		}
		waits = append(waits, wait.String())
		// The next cron tick, within the back-off: no connection at all.
		out, code = runBin(t, env, "once")
		processes++
		if code != 1 || !strings.Contains(out, "nothing fetched: backing off after refused logins") || !strings.Contains(out, "next attempt at") {
			t.Fatalf("once within back-off %d: exit %d:\n%s", i, code, out)
		}
		if got := int(p.n.Load()); got != i {
			t.Fatalf("a process within the back-off logged in: %d attempts after %d refusals", got, i)
		}
		ftEndBackoff(t, data, "127.0.0.1", "alice")
	}
	// The back-off is at its 1 h ceiling; the right password is tried at
	// once and ends it.
	env = append(env, "POPHOOK_ACCOUNT_SUPPORT_PASSWORD="+d.Users["alice"])
	m := ftMeta(t, data, "127.0.0.1", "alice")
	m.Login.NotBefore = time.Now().Add(time.Hour)
	{
		l, err := state.Open(data, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		l.Account(state.AccountID("127.0.0.1", "alice")).SetMeta(m)
		l.Close()
	}
	out, code := runBin(t, env, "once")
	processes++
	if code != 0 || d.Count(t, "alice") != 0 {
		t.Fatalf("with the right password during the back-off: exit %d, %d on the server:\n%s", code, d.Count(t, "alice"), out)
	}
	if m := ftMeta(t, data, "127.0.0.1", "alice"); m.Login.Failures != 0 || !m.Login.NotBefore.IsZero() {
		t.Errorf("ledger after a good login: %+v", m.Login)
	}
	t.Logf("%d processes, %d logins; back-off recorded after each refusal: %v", processes, p.n.Load(), waits)
	faultrow.Report(t, faultrow.Row{Area: "auth", Fault: "wrong password, `pophook once` from cron",
		Injection: "Dovecot refuses the password; a second `once` inside each back-off; the ledger's back-off moved into the past to end it",
		Rounds:    processes, Messages: 1,
		Result: fmt.Sprintf("%d logins for %d processes (none inside a back-off); back-off kept in the ledger: %s; right password tried at once and delivered",
			p.n.Load(), processes, strings.Join(waits, ", "))})
}

// ftDaemon is a `pophook run` process.
type ftDaemon struct {
	cmd *exec.Cmd
	log *syncbuf.Buffer
}

func ftStartDaemon(t *testing.T, env []string) *ftDaemon {
	t.Helper()
	d := &ftDaemon{cmd: exec.Command(pophookBinary(t), "run"), log: &syncbuf.Buffer{}}
	d.cmd.Env, d.cmd.Stderr, d.cmd.Stdout = env, d.log, d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stop sends SIGINT and waits; later calls do nothing.
func (d *ftDaemon) stop(t *testing.T) {
	if d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(os.Interrupt)
	if err := d.cmd.Wait(); err != nil {
		t.Errorf("daemon did not stop cleanly: %v\n%s", err, d.log.String())
	}
}

// wait polls until cond holds on the daemon's log, up to limit.
func (d *ftDaemon) wait(t *testing.T, limit time.Duration, what string, cond func(log string) bool) {
	t.Helper()
	for deadline := time.Now().Add(limit); !cond(d.log.String()); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) || d.cmd.ProcessState != nil {
			t.Fatalf("daemon: no %s within %s:\n%s", what, limit, d.log.String())
		}
	}
}

var listenRE = regexp.MustCompile(`HTTP endpoints listening.*addr=([0-9.:\[\]]+)`)

// httpAddr is the address the daemon's log says it listens on.
func (d *ftDaemon) httpAddr(t *testing.T) string {
	t.Helper()
	d.wait(t, 10*time.Second, "HTTP listener", func(l string) bool { return listenRE.MatchString(l) })
	return listenRE.FindStringSubmatch(d.log.String())[1]
}

func ftGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// The daemon with a wrong password and a schedule of every second: tick
// after tick is skipped while the back-off lasts, and the server sees one
// login. /metrics says so.
func TestAuthFaultDaemonBacksOff(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice", []byte("Subject: waiting\n\nfor the right password\n"))
	p := ftStartProxy(t, d.TLSAddr())
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	env := dovecotEnv(d, data, filepath.Join(dir, "Maildir"),
		"POPHOOK_ACCOUNT_SUPPORT_HOST=127.0.0.1", "POPHOOK_ACCOUNT_SUPPORT_PORT="+p.port(),
		"POPHOOK_ACCOUNT_SUPPORT_PASSWORD=Wrong-Password-1", "POPHOOK_ACCOUNT_SUPPORT_SCHEDULE=@every 1s",
		"POPHOOK_HTTP_ADDR=127.0.0.1:0")
	start := time.Now()
	daemon := ftStartDaemon(t, env)
	addr := daemon.httpAddr(t)
	const skips = 3
	daemon.wait(t, 40*time.Second, fmt.Sprintf("%d skipped runs", skips), func(l string) bool {
		return strings.Count(l, "backing off after refused logins") >= skips
	})
	metrics := ftGet(t, "http://"+addr+"/metrics")
	daemon.stop(t)
	elapsed := time.Since(start)
	log := daemon.log.String()
	// The policy allows one login in the first minute, two in three...
	allowed := 0
	for at := time.Duration(0); at <= elapsed; at += ftBackoff(allowed) {
		allowed++
	}
	ticks := strings.Count(log, "fetch skipped") + strings.Count(log, "fetch failed")
	t.Logf("%s: %d runs (%d skipped), %d login(s) at the server (the policy allows %d)", elapsed.Round(time.Second), ticks, strings.Count(log, "fetch skipped"), p.n.Load(), allowed)
	if got := int(p.n.Load()); got < 1 || got > allowed {
		t.Errorf("the server saw %d logins in %s; the back-off allows %d", got, elapsed, allowed)
	}
	if strings.Count(log, "authentication failed: check the user name and password; backing off") != int(p.n.Load()) {
		t.Errorf("each refusal should be logged as an error once:\n%s", log)
	}
	if !regexp.MustCompile(`pophook_auth_consecutive_failures\{account="support"\} 1\b`).MatchString(metrics) ||
		!regexp.MustCompile(`pophook_backoff_seconds\{account="support"\} [1-9]`).MatchString(metrics) {
		t.Errorf("/metrics does not show the back-off:\n%s", ftGrepLines(metrics, "pophook_auth", "pophook_backoff"))
	}
	if m := ftMeta(t, data, "127.0.0.1", "alice"); m.Login.Failures != int(p.n.Load()) {
		t.Errorf("ledger: %+v", m.Login)
	}
	faultrow.Report(t, faultrow.Row{Area: "auth", Fault: "wrong password, `pophook run` ticking every second",
		Injection: "Dovecot refuses the password; SCHEDULE=@every 1s (with the daemon's 5 s jitter)",
		Rounds:    ticks, Messages: 1,
		Result: fmt.Sprintf("%d login(s) in %d runs over %s; the rest skipped for the back-off; shown in /metrics", p.n.Load(), ticks, elapsed.Round(time.Second))})
}

// ftMaildirCount counts the messages in a Maildir's new/ and cur/.
func ftMaildirCount(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		n += len(ents)
	}
	return n
}

func ftGrepLines(s string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}

// [IN-USE] against Dovecot with pop3_lock_session = yes, through `pophook
// once`: reported as the mailbox in use, not as a wrong password, no
// back-off recorded, and the next run (at once) fetches.
func TestAuthFaultInUseOnce(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{ExtraConfig: "protocol pop3 {\n  pop3_lock_session = yes\n}\n"})
	d.Deliver(t, "alice", []byte("Subject: locked\n\nbody\n"))
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	env := dovecotEnv(d, data, filepath.Join(dir, "Maildir"))
	ctx := t.Context()
	other, err := pop3.Dial(ctx, d.TLSAddr(), pop3.Options{TLSConfig: d.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Authenticate(ctx, pop3.MechAuto, "alice", d.Users["alice"]); err != nil {
		t.Fatal(err)
	}
	out, code := runBin(t, env, "once") // Dovecot waits about 10s for the lock
	t.Logf("once while another session holds the mailbox (exit %d):\n%s", code, out)
	if code != 1 || !strings.Contains(out, "nothing fetched: mailbox in use by another session") || !strings.Contains(out, "[IN-USE]") {
		t.Fatalf("exit %d, want 1 and the mailbox in use", code)
	}
	for _, wrong := range []string{"authentication failed", "check the user name", "backing off", "PASSWORD"} {
		if strings.Contains(out, wrong) {
			t.Errorf("[IN-USE] reported like a wrong password (%q)", wrong)
		}
	}
	if m := ftMeta(t, data, d.Host, "alice"); m.Login.Failures != 0 || !m.Login.NotBefore.IsZero() {
		t.Errorf("ledger after [IN-USE]: %+v; want no back-off", m.Login)
	}
	if err := other.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	out, code = runBin(t, env, "once")
	if code != 0 || d.Count(t, "alice") != 0 || ftMaildirCount(t, filepath.Join(dir, "Maildir")) != 1 {
		t.Fatalf("the next run: exit %d, %d on the server:\n%s", code, d.Count(t, "alice"), out)
	}
	faultrow.Report(t, faultrow.Row{Area: "auth", Fault: "[IN-USE] through `pophook once`",
		Injection: "Dovecot with pop3_lock_session = yes and another client logged in",
		Rounds:    2, Messages: 1,
		Result: "exit 1 \"nothing fetched: mailbox in use by another session\", no back-off in the ledger; the next run delivered"})
}

// ftProvider is a token endpoint: refresh tokens work once and rotate;
// each access token it issues is made valid at Dovecot's introspection
// endpoint when register is set.
type ftProvider struct {
	mu       sync.Mutex
	in       *dovecottest.Introspection
	user     string
	prefix   string
	expires  int  // seconds
	register bool // make issued access tokens valid at Dovecot
	secret   string
	valid    map[string]bool
	n        int
	requests int
	issued   []string
}

func newFTProvider(t *testing.T, in *dovecottest.Introspection, user, prefix, first string) (*ftProvider, string) {
	p := &ftProvider{in: in, user: user, prefix: prefix, expires: 3600, register: true, valid: map[string]bool{first: true}}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL + "/token"
}

func (p *ftProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests++
	r.ParseForm()
	w.Header().Set("Content-Type", "application/json")
	if p.secret != "" && r.Form.Get("client_secret") != p.secret {
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(map[string]string{"error": "invalid_client", "error_description": "AADSTS7000215: Invalid client secret provided."})
		return
	}
	rt := r.Form.Get("refresh_token")
	if r.Form.Get("grant_type") != "refresh_token" || !p.valid[rt] {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": "AADSTS70008: The refresh token has expired or is invalid."})
		return
	}
	delete(p.valid, rt)
	p.n++
	access, next := fmt.Sprintf("%saccess-%d", p.prefix, p.n), fmt.Sprintf("%srefresh-%d", p.prefix, p.n)
	p.valid[next] = true
	p.issued = append(p.issued, access, next)
	if p.register {
		p.in.SetToken(access, p.user)
	}
	json.NewEncoder(w).Encode(map[string]any{"access_token": access, "refresh_token": next, "token_type": "Bearer", "expires_in": p.expires})
}

func (p *ftProvider) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.requests
}

func ftOAuthEnv(d *dovecottest.Server, dir, tokenURL, refresh string, extra ...string) []string {
	return dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"), append([]string{
		"POPHOOK_ACCOUNT_SUPPORT_PASSWORD=", "POPHOOK_ACCOUNT_SUPPORT_AUTH=xoauth2",
		"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_CLIENT_ID=client-1", "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_TOKEN_URL=" + tokenURL,
		"POPHOOK_ACCOUNT_SUPPORT_OAUTH2_REFRESH_TOKEN=" + refresh}, extra...)...)
}

// ftIntrospected lists the tokens Dovecot asked about, with "+" for
// accepted and "-" for refused.
func ftIntrospected(in *dovecottest.Introspection) []string {
	var out []string
	for _, r := range in.Requests() {
		mark := "-"
		if r.Active {
			mark = "+"
		}
		out = append(out, mark+r.Token)
	}
	return out
}

// An access token revoked at the server while unexpired by its expiry
// time (pophook keeps it for reuse until a minute before it expires): the
// server refuses it, pophook gets one fresh token, logs in with it and
// delivers; nothing counts as a refused login, nothing backs off. Covered
// elsewhere and not repeated here: expiry across runs with rotation
// (oauth_e2e_test.go), a revoked refresh token's advice (internal/oauth),
// the retry with a fake credential (worker/regress_test.go).
func TestAuthFaultOAuthAccessTokenRevokedEarly(t *testing.T) {
	in := dovecottest.StartIntrospection(t, nil)
	d := dovecottest.Start(t, dovecottest.Options{OAuth2: in.OAuth2Options("post")})
	p, tokenURL := newFTProvider(t, in, "alice", "", "refresh-0")
	dir := t.TempDir()
	env := ftOAuthEnv(d, dir, tokenURL, "refresh-0")
	d.Deliver(t, "alice", []byte("Subject: first\n\nbody\n"))
	if out, code := runBin(t, env, "once"); code != 0 {
		t.Fatalf("first run: exit %d:\n%s", code, out)
	}
	in.Revoke("access-1") // an hour left by its expiry time
	d.Deliver(t, "alice", []byte("Subject: second\n\nbody\n"))
	out, code := runBin(t, env, "once")
	if code != 0 || d.Count(t, "alice") != 0 {
		t.Fatalf("run with the revoked token: exit %d, %d on the server:\n%s", code, d.Count(t, "alice"), out)
	}
	if !strings.Contains(out, "the server refused the access token; trying once more with a fresh one") {
		t.Errorf("the retry is not logged:\n%s", out)
	}
	if m := ftMeta(t, filepath.Join(dir, "data"), d.Host, "alice"); m.Login.Failures != 0 || !m.Login.NotBefore.IsZero() {
		t.Errorf("ledger: %+v; want no refusal counted", m.Login)
	}
	// A third run reuses the fresh token: no request to the provider.
	d.Deliver(t, "alice", []byte("Subject: third\n\nbody\n"))
	if out, code := runBin(t, env, "once"); code != 0 {
		t.Fatalf("third run: exit %d:\n%s", code, out)
	}
	seen := ftIntrospected(in)
	t.Logf("token requests %d; Dovecot checked %v", p.count(), seen)
	if want := "[+access-1 -access-1 +access-2 +access-2]"; fmt.Sprint(seen) != want || p.count() != 2 {
		t.Errorf("Dovecot checked %v, want %s; %d token requests, want 2", seen, want, p.count())
	}
	if n := ftMaildirCount(t, filepath.Join(dir, "Maildir")); n != 3 {
		t.Errorf("%d delivered, want 3", n)
	}
	faultrow.Report(t, faultrow.Row{Area: "auth", Fault: "OAuth2 access token revoked at the server before its expiry time",
		Injection: "Dovecot's oauth2 passdb: the introspection endpoint starts answering active=false for the kept token",
		Rounds:    3, Messages: 3,
		Result: "one refusal, one refresh, logged in with the new token in the same run; no back-off; the new token reused next run"})
}

// A fresh token the server refuses too: one retry, then a refused login
// that backs off, and the next process spares both the server and the
// token endpoint.
func TestAuthFaultOAuthFreshTokenRefusedToo(t *testing.T) {
	in := dovecottest.StartIntrospection(t, nil)
	d := dovecottest.Start(t, dovecottest.Options{OAuth2: in.OAuth2Options("post")})
	p, tokenURL := newFTProvider(t, in, "alice", "", "refresh-0")
	p.register = false // the mailbox no longer takes this app's tokens
	p.expires = 60     // would be refreshed at every run
	dir := t.TempDir()
	env := ftOAuthEnv(d, dir, tokenURL, "refresh-0")
	d.Deliver(t, "alice", []byte("Subject: waiting\n\nbody\n"))
	out, code := runBin(t, env, "once")
	if code != 1 || !strings.Contains(out, "authentication failed") || !strings.Contains(out, "refused 1 time(s)") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	logins, tokens := len(in.Requests()), p.count()
	if logins != 2 || tokens != 2 {
		t.Errorf("first run: %d logins, %d token requests; want 2 and 2 (one retry with a fresh token)", logins, tokens)
	}
	for range 2 {
		out, code = runBin(t, env, "once")
		if code != 1 || !strings.Contains(out, "backing off after refused logins") {
			t.Fatalf("within the back-off: exit %d:\n%s", code, out)
		}
	}
	if len(in.Requests()) != logins || p.count() != tokens {
		t.Errorf("within the back-off: %d logins, %d token requests (were %d, %d)", len(in.Requests()), p.count(), logins, tokens)
	}
	faultrow.Report(t, faultrow.Row{Area: "auth", Fault: "OAuth2: the fresh token is refused too",
		Injection: "the provider issues tokens Dovecot's introspection does not know",
		Rounds:    3, Messages: 1,
		Result: fmt.Sprintf("%d logins and %d token requests in 3 runs: one retry, then a back-off that spares the server and the token endpoint", len(in.Requests()), p.count())})
}

// A refresh token the provider revoked: the run says to sign in again,
// does not contact the server, backs off without asking the provider
// again, and a newly configured refresh token ends the back-off at once.
func TestAuthFaultOAuthRefreshTokenRevoked(t *testing.T) {
	in := dovecottest.StartIntrospection(t, nil)
	d := dovecottest.Start(t, dovecottest.Options{OAuth2: in.OAuth2Options("post")})
	p, tokenURL := newFTProvider(t, in, "alice", "", "refresh-new")
	dir := t.TempDir()
	env := ftOAuthEnv(d, dir, tokenURL, "refresh-revoked")
	d.Deliver(t, "alice", []byte("Subject: waiting\n\nbody\n"))
	out, code := runBin(t, env, "once")
	if code != 1 || !strings.Contains(out, "revoked or has expired") || !strings.Contains(out, "pophook oauth login support") {
		t.Fatalf("exit %d, want the advice to sign in again:\n%s", code, out)
	}
	out2, code := runBin(t, env, "once")
	if code != 1 || !strings.Contains(out2, "backing off after refused logins") {
		t.Fatalf("second run: exit %d:\n%s", code, out2)
	}
	if len(in.Requests()) != 0 || p.count() != 1 {
		t.Errorf("%d logins at the server, %d token requests; want 0 and 1", len(in.Requests()), p.count())
	}
	env = append(env, "POPHOOK_ACCOUNT_SUPPORT_OAUTH2_REFRESH_TOKEN=refresh-new")
	if out, code := runBin(t, env, "once"); code != 0 || d.Count(t, "alice") != 0 {
		t.Fatalf("with a new refresh token: exit %d:\n%s", code, out)
	}
	faultrow.Report(t, faultrow.Row{Area: "auth", Fault: "OAuth2 refresh token revoked by the provider",
		Injection: "the token endpoint answers invalid_grant",
		Rounds:    3, Messages: 1,
		Result: "\"revoked or has expired: get a new one (pophook oauth login support ...)\"; no login attempted; back-off spared the provider; a new refresh token delivered at once"})
}
