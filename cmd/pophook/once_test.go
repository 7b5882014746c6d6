package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/internal/testutil/syncbuf"
)

func runBin(t *testing.T, env []string, args ...string) (stderr string, code int) {
	t.Helper()
	var buf bytes.Buffer
	cmd := exec.Command(pophookBinary(t), args...)
	cmd.Env = env
	cmd.Stderr = &buf
	cmd.Stdout = &buf
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return buf.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return buf.String(), 0
}

// runBinOut is runBin with standard output apart.
func runBinOut(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(pophookBinary(t), args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

func TestOnceDeliversAndExitsZero(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	for i := range 5 {
		d.Deliver(t, "alice", []byte("Subject: hello\nMessage-ID: <e2e-"+string(rune('a'+i))+"@x>\n\nbody\n"))
	}
	dir := t.TempDir()
	mdir := filepath.Join(dir, "Maildir")
	out, code := runBin(t, dovecotEnv(d, filepath.Join(dir, "data"), mdir), "once")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if n := d.Count(t, "alice"); n != 0 {
		t.Errorf("%d left on the server", n)
	}
	if ids := maildirIDs(t, mdir); len(ids) != 5 {
		t.Errorf("maildir has %d messages", len(ids))
	}
	// Data dir and ledger are private.
	fi, err := os.Stat(filepath.Join(dir, "data", "ledger.db"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ledger: %v %v", fi.Mode(), err)
	}
}

func TestOnceFailureSummaryAndNoSecretsInLogs(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice", []byte("Subject: x\n\ny\n"))
	dir := t.TempDir()
	const secret = "Sup3r-Secret-Passw0rd"
	env := dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"),
		"POPHOOK_ACCOUNT_SUPPORT_PASSWORD="+secret, "POPHOOK_LOG_LEVEL=debug")
	out, code := runBin(t, env, "once")
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, out)
	}
	if !strings.Contains(out, "pophook once: 1 problem(s):") || !strings.Contains(out, "authentication failed") {
		t.Errorf("summary missing:\n%s", out)
	}
	if strings.Contains(out, secret) {
		t.Errorf("the password appears in the output:\n%s", out)
	}
	if !strings.Contains(out, "PASS <redacted>") && !strings.Contains(out, "AUTH PLAIN <redacted>") {
		t.Errorf("debug log should carry the redacted POP3 trace:\n%s", out)
	}
	if d.Count(t, "alice") != 1 {
		t.Error("message gone after a failed login")
	}
}

func TestOnceSinkDownExitsNonZeroAndKeepsMail(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice", []byte("Subject: x\n\ny\n"))
	dir := t.TempDir()
	// The Maildir path is a file: New fails at start-up with a clear error.
	blocker := filepath.Join(dir, "not-a-dir")
	os.WriteFile(blocker, nil, 0o600)
	out, code := runBin(t, dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(blocker, "Maildir")), "once")
	if code == 0 || !strings.Contains(out, "not-a-dir") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if d.Count(t, "alice") != 1 {
		t.Error("message gone though the sink could not take it")
	}
}

func TestConfigProblemsNameTheVariable(t *testing.T) {
	env := []string{"PATH=" + os.Getenv("PATH"), "POPHOOK_ACCOUNTS=support", "POPHOOK_ACCOUNT_SUPPORT_PORT=99999", "POPHOOK_DATA_DIR=" + t.TempDir()}
	out, code := runBin(t, env, "once")
	if code != 2 {
		t.Fatalf("exit %d, want 2:\n%s", code, out)
	}
	for _, want := range []string{"POPHOOK_ACCOUNT_SUPPORT_HOST", "POPHOOK_ACCOUNT_SUPPORT_PORT", "POPHOOK_ACCOUNT_SUPPORT_USERNAME"} {
		if !strings.Contains(out, want) {
			t.Errorf("problems do not name %s:\n%s", want, out)
		}
	}
}

func TestSecondProcessGetsLedgerInUse(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	dir := t.TempDir()
	env := dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"), "POPHOOK_HTTP_ADDR=127.0.0.1:0")
	daemon := exec.Command(pophookBinary(t), "run")
	daemon.Env = env
	dlog := &syncbuf.Buffer{}
	daemon.Stderr = dlog
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		daemon.Process.Signal(os.Interrupt)
		if err := daemon.Wait(); err != nil {
			t.Errorf("daemon did not stop cleanly on SIGINT: %v\n%s", err, dlog.String())
		}
	}()
	waitFor(t, func() bool { return strings.Contains(dlog.String(), "pophook started") })
	out, code := runBin(t, env, "once")
	if code == 0 || !strings.Contains(out, "ledger is in use by another pophook") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// waitFor polls cond until it holds and fails the test if it does not
// within eventually's limit.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	if !eventually(cond) {
		t.Fatalf("condition not met in %v", eventuallyLimit)
	}
}

// eventuallyLimit is generous: a daemon's first run starts after a random
// delay of up to 5 s (the schedule's jitter), and a loaded machine adds
// its own.
const eventuallyLimit = 30 * time.Second

// eventually polls cond until it holds or eventuallyLimit passes.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(eventuallyLimit); !cond(); time.Sleep(25 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// A configuration that cannot work creates nothing on disk: no data dir,
// no ledger, no Maildir. Each case is wrong in a way only wiring the sinks
// or accounts finds, after the variables themselves parsed.
func TestInvalidConfigTouchesNoDisk(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice", []byte("Subject: x\n\ny\n"))
	for name, extra := range map[string][]string{
		"relay CA file without a certificate": {"POPHOOK_SINKS=archive,relay", "POPHOOK_ACCOUNT_SUPPORT_SINKS=archive,relay",
			"POPHOOK_SINK_RELAY_TYPE=smtp", "POPHOOK_SINK_RELAY_HOST=smtp.example.com", "POPHOOK_SINK_RELAY_TO=t@example.com",
			"POPHOOK_SINK_RELAY_TLS_CA_FILE=/dev/null"},
		"webhook credentials twice": {"POPHOOK_SINKS=archive,hook", "POPHOOK_ACCOUNT_SUPPORT_SINKS=archive,hook",
			"POPHOOK_SINK_HOOK_TYPE=webhook", "POPHOOK_SINK_HOOK_URL=https://u:p@hooks.example.com/in",
			"POPHOOK_SINK_HOOK_HEADERS=Authorization: Bearer x"},
		"CA file without a certificate": {"POPHOOK_ACCOUNT_SUPPORT_TLS_CA_FILE=/dev/null"},
		"misspelt safety variable":      {"POPHOOK_ACCOUNT_SUPPORT_SKIP_EXISTNG=true"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			data, mdir := filepath.Join(dir, "data"), filepath.Join(dir, "Maildir")
			out, code := runBin(t, dovecotEnv(d, data, mdir, extra...), "once")
			if code != 2 {
				t.Fatalf("exit %d, want 2:\n%s", code, out)
			}
			if !strings.Contains(out, "POPHOOK_") {
				t.Errorf("the error does not name a variable:\n%s", out)
			}
			for _, p := range []string{data, mdir} {
				if _, err := os.Stat(p); !os.IsNotExist(err) {
					t.Errorf("%s was created (%v)", p, err)
				}
			}
			if d.Count(t, "alice") != 1 {
				t.Error("the message left the server")
			}
		})
	}
}

// A misspelt SKIP_EXISTING once let existing mail be delivered and
// deleted after a warning; now it stops start-up and says what was meant.
func TestMisspeltVariableStopsStartUp(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	d.Deliver(t, "alice", []byte("Subject: old\n\nthere before\n"))
	dir := t.TempDir()
	out, code := runBin(t, dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"),
		"POPHOOK_ACCOUNT_SUPPORT_SKIP_EXISTNG=true"), "once")
	if code != 2 || !strings.Contains(out, "did you mean POPHOOK_ACCOUNT_SUPPORT_SKIP_EXISTING?") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if d.Count(t, "alice") != 1 {
		t.Error("the existing message left the server")
	}
}

// `once` says when a backed-off account may try again.
func TestOnceReportsTheBackoff(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	dir := t.TempDir()
	env := dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"), "POPHOOK_ACCOUNT_SUPPORT_PASSWORD=wrong")
	if out, code := runBin(t, env, "once"); code != 1 || !strings.Contains(out, "check the user name and password") {
		t.Fatalf("first run: exit %d:\n%s", code, out)
	}
	out, code := runBin(t, env, "once")
	if code != 1 || !strings.Contains(out, "nothing fetched: backing off after refused logins") || !strings.Contains(out, "next attempt at") {
		t.Fatalf("second run: exit %d:\n%s", code, out)
	}
}

// A data dir pophook cannot write is reported as such, not as a corrupt
// ledger: run as an unprivileged user against a root-owned data dir.
func TestDataDirNotWritable(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the binary as another user")
	}
	d := dovecottest.Start(t, dovecottest.Options{})
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil { // root's, not writable by nobody
		t.Fatal(err)
	}
	bin := pophookBinary(t)
	os.Chmod(filepath.Dir(bin), 0o755)
	cmd := exec.Command(bin, "once")
	mdir := filepath.Join(dir, "Maildir") // writable by nobody: only the data dir is not
	if err := os.Mkdir(mdir, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(mdir, 0o777)
	cmd.Env = dovecotEnv(d, data, mdir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("once as nobody succeeded:\n%s", out)
	}
	if !strings.Contains(string(out), "permission denied") || !strings.Contains(string(out), "must be writable by the user pophook runs as, uid 65534") ||
		strings.Contains(string(out), "corrupt") {
		t.Errorf("output:\n%s", out)
	}
}

// Two replicas with POPHOOK_SHARD=0/2 and 1/2 each fetch their share of
// the accounts: together every account once.
func TestShardsSplitAccounts(t *testing.T) {
	names := []string{"a1", "a2", "a3", "a4", "a5", "a6"}
	env := []string{"PATH=" + os.Getenv("PATH"), "POPHOOK_HTTP_ADDR=", "POPHOOK_ACCOUNTS=" + strings.Join(names, ","),
		"POPHOOK_SINKS=archive", "POPHOOK_SINK_ARCHIVE_TYPE=maildir"}
	for _, n := range names {
		p := "POPHOOK_ACCOUNT_" + strings.ToUpper(n) + "_"
		env = append(env, p+"HOST=127.0.0.1", p+"PORT=1", p+"USERNAME="+n+"@example.com", p+"PASSWORD=x", p+"SINKS=archive")
	}
	seen := map[string]int{}
	for _, shard := range []string{"0/2", "1/2"} {
		dir := t.TempDir()
		out, _ := runBin(t, append(env, "POPHOOK_SHARD="+shard, "POPHOOK_DATA_DIR="+filepath.Join(dir, "data"),
			"POPHOOK_SINK_ARCHIVE_PATH="+filepath.Join(dir, "Maildir")), "once")
		for _, n := range names {
			if strings.Contains(out, "account "+n+":") {
				seen[n]++
			}
		}
	}
	for _, n := range names {
		if seen[n] != 1 {
			t.Errorf("account %s fetched by %d shards, want 1", n, seen[n])
		}
	}
}
