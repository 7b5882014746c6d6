package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
	buildDir  string
)

// TestMain removes the binary built for the subprocess tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// pophookBinary builds cmd/pophook once per test process, for tests that
// must run it as a real process (crash safety, exit status, memory).
func pophookBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "pophook-bin-")
		if buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "pophook")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = &buildError{err, string(out)}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "go build: " + e.err.Error() + "\n" + e.out }

// dovecotEnv is the environment for one account "support" on d delivering
// to a Maildir sink "archive" at maildirPath. extra entries override.
func dovecotEnv(d *dovecottest.Server, dataDir, maildirPath string, extra ...string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"POPHOOK_DATA_DIR=" + dataDir,
		"POPHOOK_HTTP_ADDR=",
		"POPHOOK_ACCOUNTS=support",
		"POPHOOK_SINKS=archive",
		"POPHOOK_ACCOUNT_SUPPORT_HOST=" + d.Host,
		"POPHOOK_ACCOUNT_SUPPORT_PORT=" + strconv.Itoa(d.TLSPort),
		"POPHOOK_ACCOUNT_SUPPORT_TLS_CA_FILE=" + d.CAFile,
		"POPHOOK_ACCOUNT_SUPPORT_USERNAME=alice",
		"POPHOOK_ACCOUNT_SUPPORT_PASSWORD=" + d.Users["alice"],
		"POPHOOK_ACCOUNT_SUPPORT_SINKS=archive",
		"POPHOOK_SINK_ARCHIVE_TYPE=maildir",
		"POPHOOK_SINK_ARCHIVE_PATH=" + maildirPath,
	}
	for _, e := range extra {
		k, _, _ := strings.Cut(e, "=")
		for i, have := range env {
			if strings.HasPrefix(have, k+"=") {
				env = append(env[:i], env[i+1:]...)
				break
			}
		}
		env = append(env, e)
	}
	return env
}
