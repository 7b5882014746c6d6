package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pophook/pophook/internal/config"
	"github.com/pophook/pophook/sinks/maildir"
	"github.com/pophook/pophook/sinks/webhook"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage:
  pophook [run]              fetch on every account's schedule until SIGTERM
  pophook once [ACCOUNT...]  one pass over the accounts (all by default) and exit;
                             exit status 1 if any account or message failed
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
		fmt.Fprintln(stdout, "pophook", version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	case "run", "once":
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

	app, err := setUp(cfg, logger)
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

type app struct {
	cfg    *config.Config
	log    *slog.Logger
	ledger *state.Ledger
	jobs   []*worker.Job
}

func setUp(cfg *config.Config, log *slog.Logger) (*app, error) {
	ledger, err := state.Open(cfg.DataDir, 2*time.Second)
	if err != nil {
		return nil, err
	}
	a := &app{cfg: cfg, log: log, ledger: ledger}
	spool := filepath.Join(cfg.DataDir, "spool")
	if err := cleanSpool(spool); err != nil {
		a.close()
		return nil, err
	}
	built := map[string]worker.Sink{}
	for name, sc := range cfg.Sinks {
		s, err := newSink(sc, spool, log.With("sink", name))
		if err != nil {
			a.close()
			return nil, err
		}
		built[name] = s
	}
	for _, acct := range cfg.Accounts {
		j := &worker.Job{Account: acct, Sinks: map[string]worker.Sink{}, Ledger: ledger, SpoolDir: spool, Logger: log}
		for _, s := range acct.Sinks {
			j.Sinks[s] = built[s]
		}
		if log.Enabled(context.Background(), slog.LevelDebug) {
			j.Trace = &traceWriter{log: log.With("account", acct.Name)}
		}
		a.jobs = append(a.jobs, j)
	}
	return a, nil
}

func (a *app) close() { a.ledger.Close() }

// newSink wires one configured sink; each is named here explicitly.
// Request bodies are staged in the spool, which is cleaned at start-up.
func newSink(sc *config.Sink, spool string, log *slog.Logger) (worker.Sink, error) {
	switch sc.Type {
	case config.SinkMaildir:
		return maildir.New(sc.Path, log)
	case config.SinkWebhook:
		inline := sc.InlineLimit
		if inline == 0 {
			inline = -1 // INLINE_LIMIT=0: no attachment content at all
		}
		return webhook.New(webhook.Options{
			Name: sc.Name, URL: sc.URL, Format: sc.Format, Secret: source(sc.Secret), Headers: source(sc.Headers),
			Timeout: sc.Timeout, Budget: sc.Budget, FormField: sc.FormField, FormFilename: sc.FormFilename, FormFields: sc.FormFields, AcceptHTML: sc.AcceptHTML,
			InlineLimit: inline, IncludeRaw: sc.IncludeRaw,
			TempDir: spool, UserAgent: "pophook/" + version, Logger: log,
		})
	}
	return nil, &exitError{code: 2, err: fmt.Errorf("POPHOOK_SINK_%s_TYPE: sink type %q is not available in this version of pophook", strings.ToUpper(sc.Name), sc.Type)}
}

// source reads a configured secret at every use; nil when it is not set.
func source(s config.Secret) webhook.Source {
	if !s.IsSet() {
		return nil
	}
	return s.Reveal
}

// cleanSpool makes the spool directory and removes what a killed process
// left in it: spool files are only ever needed by the run that wrote them.
func cleanSpool(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	return nil
}

// once runs the named accounts (all by default) once and reports every
// problem, one line each.
func (a *app) once(ctx context.Context, names []string, stderr io.Writer) error {
	jobs := a.jobs
	if len(names) > 0 {
		jobs = nil
		for _, n := range names {
			i := slices.IndexFunc(a.jobs, func(j *worker.Job) bool { return j.Account.Name == n })
			if i < 0 {
				return &exitError{code: 2, err: fmt.Errorf("once: no account %q in POPHOOK_ACCOUNTS", n)}
			}
			jobs = append(jobs, a.jobs[i])
		}
	}
	s := &worker.Scheduler{Jobs: jobs, Concurrency: a.cfg.Concurrency, Logger: a.log}
	var problems []string
	for _, o := range s.Once(ctx) {
		name := o.Job.Account.Name
		switch {
		case o.Err != nil:
			problems = append(problems, o.Err.Error())
		case o.Result.Skipped != "":
			problems = append(problems, fmt.Sprintf("account %s: nothing fetched: %s", name, o.Result.Skipped))
		}
		problems = append(problems, o.Result.Problems...)
	}
	if len(problems) == 0 {
		return nil
	}
	fmt.Fprintf(stderr, "pophook once: %d problem(s):\n", len(problems))
	for _, p := range problems {
		fmt.Fprintln(stderr, "  "+oneLine(p))
	}
	return &exitError{code: 1, err: errors.New("not everything was delivered"), quiet: true}
}

// run is the daemon: schedules, health endpoints, graceful shutdown.
func (a *app) run(ctx context.Context) error {
	if a.cfg.HTTPAddr != "" {
		srv, err := a.serveHTTP()
		if err != nil {
			return err
		}
		defer srv.Shutdown(context.Background())
	}
	a.log.Info("pophook started", "version", version, "accounts", len(a.jobs))
	s := &worker.Scheduler{Jobs: a.jobs, Concurrency: a.cfg.Concurrency, Jitter: 5 * time.Second, Logger: a.log}
	err := s.Run(ctx)
	a.log.Info("pophook stopped")
	return err
}

func (a *app) serveHTTP() (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	ln, err := net.Listen("tcp", a.cfg.HTTPAddr)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("POPHOOK_HTTP_ADDR: %w", err)}
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	a.log.Info("HTTP endpoints listening", "addr", ln.Addr().String())
	return srv, nil
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
