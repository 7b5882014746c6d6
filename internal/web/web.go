// Package web is the daemon's HTTP side: /healthz, /readyz, /metrics
// (Prometheus) and a status page at /, with an optional control API under
// /api/. It only reads: what jobs report through their event hook (see
// Metrics.Observe and Handler.Observe) and what the callbacks in Options
// return. Every string that came from a mail server, a sink or a message
// is untrusted and is escaped by html/template; metric labels carry only
// configured names and fixed values.
package web

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pophook/pophook/worker"
)

// Options is what the handler shows and how it finds out. Every func may
// be nil; each is called on every request that needs it, from the
// request's goroutine, and must not block for long.
type Options struct {
	Version string // shown on the status page

	// Accounts gives every account's state, in the order to show them.
	Accounts func() []worker.Status
	// NextRuns gives each account's next scheduled run
	// (worker.Scheduler.NextRuns); it may return nil.
	NextRuns func() map[string]time.Time
	// Rejected lists the messages a sink has rejected, for the status
	// page (with the command that retries each at once).
	Rejected func() ([]Rejected, error)
	// Ready returns nil when the ledger is open and the scheduler
	// running, else an error a human can act on. The handler adds the
	// rule that not every account may have failed since start.
	Ready func() error

	// Gatherer is served at /metrics; nil: no /metrics.
	Gatherer prometheus.Gatherer
	// Extra, if set, serves every path under /api/ (the path is passed on
	// unchanged). Unsafe methods from another origin in a browser are
	// refused before it sees them (http.CrossOriginProtection).
	Extra http.Handler

	Now func() time.Time // nil: time.Now
}

// Rejected is a message a sink rejected; it stays on the server and is
// offered again at NextAttempt, or at once with
// `pophook ledger retry ACCOUNT UIDL`.
type Rejected struct {
	Account, UIDL, Sink string
	LastError           string
	NextAttempt         time.Time
}

// Handler serves the endpoints. Create it with New.
type Handler struct {
	opts Options
	mux  *http.ServeMux

	mu   sync.Mutex
	runs map[string]bool    // account -> a run since start was not failing; absent: none finished yet
	last map[string]lastRun // account -> the last run observed
}

type lastRun struct {
	res *worker.Result
	err error
}

// New returns the handler for opts:
//
//	GET /healthz   200 "ok": the process is alive
//	GET /readyz    200 "ready", or 503 and one line saying why not
//	GET /metrics   Prometheus exposition of opts.Gatherer
//	GET /          the status page (HTML, refreshes itself every 30 s)
//	    /api/...   opts.Extra
func New(opts Options) *Handler {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &Handler{opts: opts, mux: http.NewServeMux(), runs: map[string]bool{}, last: map[string]lastRun{}}
	h.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		plain(w)
		io.WriteString(w, "ok\n")
	})
	h.mux.HandleFunc("GET /readyz", h.readyz)
	h.mux.HandleFunc("GET /{$}", h.status)
	if opts.Gatherer != nil {
		h.mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{
			ErrorHandling:       promhttp.ContinueOnError,
			MaxRequestsInFlight: 4,
			Timeout:             30 * time.Second,
		}))
	}
	if opts.Extra != nil {
		h.mux.Handle("/api/", http.NewCrossOriginProtection().Handler(opts.Extra))
	}
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

func plain(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
}

func (h *Handler) readyz(w http.ResponseWriter, _ *http.Request) {
	plain(w)
	if err := h.Ready(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, oneLine(err.Error(), 1000)+"\n")
		return
	}
	io.WriteString(w, "ready\n")
}

// Observe is a worker.Job OnEvent hook that lets readiness know of every
// finished run. Without it readiness only learns of the runs it sees in
// Options.Accounts when asked, and may miss a success between two asks.
func (h *Handler) Observe(e worker.Event) {
	if e.Kind != worker.EventRunDone {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.noteRun(e.Account, e.Result, e.Err)
	h.last[e.Account] = lastRun{e.Result, e.Err}
}

// noteRun records a finished run; h.mu is held.
func (h *Handler) noteRun(account string, r *worker.Result, err error) {
	h.runs[account] = h.runs[account] || !failing(r, err)
}

// failing says whether a run counts against readiness: it failed, or the
// server refused the login, or it was skipped because of a login back-off.
// A mailbox in use or the server's login delay is not a failure.
func failing(r *worker.Result, err error) bool {
	return err != nil || r == nil || r.LoginRefused || r.Skipped == worker.SkipAuthBackoff
}

// Ready returns nil when the daemon is ready: Options.Ready says so, and
// not every account has failed since start. That is, it is not ready once
// every account has finished at least one run and none of those runs went
// well; the error then names each account and what went wrong.
func (h *Handler) Ready() error {
	if h.opts.Ready != nil {
		if err := h.opts.Ready(); err != nil {
			return err
		}
	}
	if h.opts.Accounts == nil {
		return nil
	}
	accounts := slices.Clone(h.opts.Accounts())
	if len(accounts) == 0 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, s := range accounts {
		if s.Last != nil {
			h.noteRun(s.Account, s.Last, s.LastErr)
		} else if l, ok := h.last[s.Account]; ok {
			accounts[i].Last, accounts[i].LastErr = l.res, l.err
		}
	}
	for _, s := range accounts {
		ok, finished := h.runs[s.Account]
		if !finished || ok {
			return nil
		}
	}
	now := h.opts.Now()
	var reasons []string
	for _, s := range accounts {
		reasons = append(reasons, "account "+s.Account+": "+failure(s, now))
	}
	prefix := ""
	if len(accounts) > 1 {
		prefix = "every account has failed since start: "
	}
	return fmt.Errorf("%s%s", prefix, strings.Join(reasons, "; "))
}

// failure says in a few words what is wrong with an account whose runs
// fail.
func failure(s worker.Status, now time.Time) string {
	r := s.Last
	if r == nil {
		r = &worker.Result{}
	}
	next := ""
	if !r.NextAttempt.IsZero() {
		next = "; next attempt " + clock(r.NextAttempt, now)
	}
	switch {
	case (r.LoginRefused || r.Skipped == worker.SkipAuthBackoff) && r.LoginFailures > 0:
		return fmt.Sprintf("authentication failed %d %s%s", r.LoginFailures, plural(r.LoginFailures, "time", "times"), next)
	case r.LoginRefused || r.Skipped == worker.SkipAuthBackoff:
		return "authentication failed" + next
	case s.LastErr != nil:
		return oneLine(strings.TrimPrefix(s.LastErr.Error(), "account "+s.Account+": "), 300)
	}
	return "failed" + next
}

// clock gives t as a wall clock time in UTC, with the date unless t is
// within a day of now.
func clock(t, now time.Time) string {
	t = t.UTC()
	if d := t.Sub(now); d > -24*time.Hour && d < 24*time.Hour {
		return t.Format("15:04 UTC")
	}
	return t.Format("2006-01-02 15:04 UTC")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// oneLine folds s onto one line without control characters (it may come
// from a server and end up on a terminal) and cuts it to at most limit
// bytes on a rune boundary.
func oneLine(s string, limit int) string {
	s = strings.Map(func(r rune) rune {
		if !unicode.IsPrint(r) {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) <= limit {
		return s
	}
	cut := limit - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
