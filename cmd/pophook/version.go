package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/pophook/pophook/internal/config"
	"github.com/pophook/pophook/internal/web"
)

// commit is set at build time with -ldflags "-X main.commit=..." where the
// build has no .git to read it from (a Docker build).
var commit = ""

// buildInfo is "pophook VERSION (commit C, go1.26.8)".
func buildInfo() string {
	b := build()
	return fmt.Sprintf("pophook %s (commit %s, %s)", b.Version, b.Commit, b.GoVersion)
}

// build is the version stamped at build time, and the commit and Go
// version from the binary's build info.
func build() web.BuildInfo {
	rev, goVersion := "unknown", "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		dirty := ""
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value[:min(12, len(s.Value))]
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		if rev != "unknown" {
			rev += dirty
		}
		if version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version // go install ...@vX
		}
	}
	if commit != "" {
		rev = commit
	}
	return web.BuildInfo{Version: version, Commit: rev, GoVersion: goVersion}
}

// healthcheck asks the local daemon's /readyz, so a container image
// without a shell or curl can have a HEALTHCHECK. It reads only
// POPHOOK_HTTP_ADDR.
func healthcheck(ctx context.Context, stdout io.Writer) error {
	addr, set := os.LookupEnv("POPHOOK_HTTP_ADDR")
	addr = config.Unquote(addr)
	if !set {
		addr = "127.0.0.1:8080"
	}
	if addr == "" {
		return &exitError{code: 2, err: fmt.Errorf("healthcheck: POPHOOK_HTTP_ADDR is empty, so the daemon serves no /readyz")}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+loopbackAddr(addr)+"/readyz", nil)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("healthcheck: %w", err)}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return &exitError{code: 1, err: fmt.Errorf("healthcheck: the daemon does not answer on %s: %w", addr, err)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	text := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return &exitError{code: 1, err: fmt.Errorf("healthcheck: not ready: %s", text)}
	}
	fmt.Fprintln(stdout, text)
	return nil
}
