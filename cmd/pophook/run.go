package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pophook/pophook/internal/config"
	"github.com/pophook/pophook/internal/demo"
	"github.com/pophook/pophook/internal/web"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage:
  pophook [run]              fetch on every account's schedule until SIGTERM
  pophook once [ACCOUNT...]  one pass over the accounts (all by default) and exit;
                             exit status 1 if any account or message failed
  pophook check [ACCOUNT...] connect, log in and probe the sinks; fetches, delivers and deletes nothing
  pophook ledger ...         what the ledger holds; retry or forget a message (pophook ledger for more)
  pophook oauth login --provider microsoft|google ACCOUNT
                             sign in once (Microsoft: a device code; Google: the browser)
                             and keep the refresh token
  pophook healthcheck        exit 0 when the local daemon is ready (for Docker HEALTHCHECK)
  pophook demo [--keep]      a complete run on this machine with sample mail: nothing to set up
  pophook version            print the version

Configuration comes from POPHOOK_* environment variables: see .env.example.`

// Run is the whole program; main only turns its error into an exit status.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "run"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, buildInfo())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	case "healthcheck":
		return healthcheck(ctx, stdout)
	case "demo":
		// A self-contained run: no configuration, no network, no root.
		return demo.Run(ctx, stdout, demo.Options{Version: version, Keep: slices.Contains(args, "--keep")})
	case "run", "once", "check", "ledger", "oauth":
	default:
		return &exitError{code: 2, err: fmt.Errorf("unknown command %q\n%s", cmd, usage)}
	}
	if cmd == "run" && len(args) > 0 {
		return &exitError{code: 2, err: fmt.Errorf("run takes no arguments\n%s", usage)}
	}

	cfg, warnings, err := config.Load()
	if err != nil {
		fmt.Fprintf(stderr, "pophook: the configuration has problems:\n%s\n", indent(err.Error()))
		return &exitError{code: 2, err: errors.New("invalid configuration"), quiet: true}
	}
	logger := newLogger(cfg, stderr)
	for _, w := range warnings {
		logger.Warn(w)
	}

	if cmd == "ledger" {
		return ledgerCommand(ctx, cfg, args, stdout)
	}
	if cmd == "oauth" {
		return oauthCommand(ctx, cfg, args, stdout, discoverServer)
	}
	if cmd == "once" || cmd == "check" {
		for _, n := range args {
			if strings.HasPrefix(n, "-") {
				continue
			}
			if !slices.ContainsFunc(cfg.Accounts, func(a config.Account) bool { return a.Name == n }) {
				return &exitError{code: 2, err: fmt.Errorf("once: no account %q in POPHOOK_ACCOUNTS", n)}
			}
		}
	}
	// Everything that can be checked without touching the disk is
	// checked before anything is created: a wrong configuration leaves no
	// data dir, ledger or Maildir behind.
	w, err := wire(cfg, logger)
	if err != nil {
		return err
	}
	if cmd == "check" {
		return w.check(ctx, args, stdout)
	}
	app, err := w.open(ctx)
	if err != nil {
		return err
	}
	defer app.close()

	if cmd == "once" {
		return app.once(ctx, args, stderr)
	}
	return app.run(ctx)
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// once runs the named accounts (all by default) once and reports every
// problem, one line each.
func (a *app) once(ctx context.Context, names []string, stderr io.Writer) error {
	jobs := a.jobs
	if len(names) > 0 {
		jobs = nil
		for _, n := range names {
			i := slices.IndexFunc(a.jobs, func(j *worker.Job) bool { return j.Account.Name == n })
			if i < 0 { // Run checked the name exists
				return &exitError{code: 2, err: fmt.Errorf("once: account %q belongs to another shard than %s (POPHOOK_SHARD)", n, a.cfg.Shard)}
			}
			jobs = append(jobs, a.jobs[i])
		}
	}
	s := &worker.Scheduler{Jobs: jobs, Concurrency: a.cfg.Concurrency, Logger: a.log}
	prog := newProgress(stderr)
	if prog != nil {
		a.observers = append(a.observers, prog.observe)
	}
	outcomes := s.Once(ctx)
	prog.finish()
	var problems []string
	if ctx.Err() != nil {
		// Exit 0 means everything was delivered; a stop makes no such
		// promise. What was delivered is recorded; the rest waits.
		problems = append(problems, "stopped by a signal before the run ended: what was delivered is recorded, the rest waits for the next run")
	}
	for _, o := range outcomes {
		name := o.Job.Account.Name
		switch {
		case o.Err != nil:
			problems = append(problems, withHint(o.Job.Account, o.Err))
		case o.Result.Skipped != worker.SkipNone:
			problems = append(problems, fmt.Sprintf("account %s: nothing fetched: %s", name, o.Result.Skip()))
		}
		for _, p := range o.Result.Problems {
			problems = append(problems, p.Line(name))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	fmt.Fprintf(stderr, "pophook once: %d problem(s):\n", len(problems))
	for _, p := range problems {
		first, rest, _ := strings.Cut(p, "\n")
		fmt.Fprintln(stderr, "  "+oneLine(first))
		if rest != "" {
			fmt.Fprintln(stderr, "  "+strings.TrimSpace(rest))
		}
	}
	return &exitError{code: 1, err: errors.New("not everything was delivered"), quiet: true}
}

// run is the daemon: schedules, health endpoints, graceful shutdown.
func (a *app) run(ctx context.Context) error {
	s := &worker.Scheduler{Jobs: a.jobs, Concurrency: a.cfg.Concurrency, Jitter: 5 * time.Second, Logger: a.log}
	var running atomic.Bool
	if a.cfg.HTTPAddr != "" {
		srv, err := a.serveHTTP(s, &running)
		if err != nil {
			return err
		}
		defer srv.Shutdown(context.Background())
	}
	a.log.Info("pophook started", "version", version, "accounts", len(a.jobs))
	ctx, halt := context.WithCancelCause(ctx)
	defer halt(nil)
	a.halt.Store(&halt)
	running.Store(true)
	err := s.Run(ctx)
	running.Store(false)
	if cause := context.Cause(ctx); errors.Is(cause, state.ErrCorrupt) {
		a.log.Error("stopped: the ledger is damaged", "err", cause)
		return cause
	}
	a.log.Info("pophook stopped")
	return err
}

// serveHTTP serves the health endpoints, metrics, the status page and the
// control API that pophook ledger uses while the daemon holds the ledger.
func (a *app) serveHTTP(s *worker.Scheduler, running *atomic.Bool) (*http.Server, error) {
	control, err := newControlAPI(a.cfg.DataDir, &ledgerService{l: a.ledger, accounts: withKeptServers(a.cfg.DataDir, a.cfg.Accounts)})
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var accounts []string
	for _, j := range a.jobs {
		accounts = append(accounts, j.Account.Name)
	}
	m := web.NewMetrics(reg, build(), accounts, sortedKeys(a.sinks))
	a.retries.Store(&m)
	h := web.New(web.Options{
		Version: version,
		Accounts: func() []worker.Status {
			out := make([]worker.Status, len(a.jobs))
			for i, j := range a.jobs {
				out[i] = j.Status()
				out[i].Account = j.Account.Name
			}
			return out
		},
		NextRuns: s.NextRuns,
		Rejected: a.rejected,
		Ready: func() error {
			if !running.Load() {
				return errors.New("the scheduler is not running")
			}
			return nil
		},
		Gatherer: reg,
		Extra:    control,
	})
	a.observers = append(a.observers, m.Observe, h.Observe)
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("POPHOOK_HTTP_ADDR: %w", err)}
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	a.log.Info("HTTP endpoints listening", "addr", ln.Addr().String())
	return srv, nil
}

// rejected lists the messages a sink rejected, for the status page.
func (a *app) rejected() ([]web.Rejected, error) {
	var out []web.Rejected
	for _, j := range a.jobs {
		err := a.ledger.Account(j.Account.LedgerID()).Each(func(e *state.Entry) error {
			if !e.DeletedAt.IsZero() {
				return nil
			}
			for _, name := range sortedKeys(e.Sinks) {
				if st := e.Sinks[name]; st.Permanent {
					out = append(out, web.Rejected{Account: j.Account.Name, UIDL: e.UIDL, Sink: name, LastError: st.LastError, NextAttempt: st.NextAttempt})
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// traceWriter sends the redacted POP3 trace to the debug log, a line at a
// time.
type traceWriter struct {
	log *slog.Logger
	buf []byte
}

func (t *traceWriter) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	for {
		i := bytes.IndexByte(t.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		t.log.Debug("pop3", "line", string(t.buf[:i]))
		t.buf = t.buf[i+1:]
	}
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " / ") }

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
