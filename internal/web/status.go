package web

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pophook/pophook/worker"
)

const (
	// refreshSeconds is how often the status page reloads itself.
	refreshSeconds = 30
	// maxProblems and maxRejected bound what one page lists.
	maxProblems = 10
	maxRejected = 100
)

var (
	//go:embed status.css
	statusCSS string
	//go:embed status.tmpl
	statusTmpl string

	statusPage = template.Must(template.New("status").Parse(statusTmpl))

	// statusCSP allows the page's own style sheet and nothing else: no
	// script, no image, no request to anywhere, even if something got
	// past the escaping.
	statusCSP = func() string {
		sum := sha256.Sum256([]byte(statusCSS))
		return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) +
			"'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	}()
)

// page is what status.tmpl shows.
type page struct {
	CSS      template.CSS
	Refresh  int
	Version  string
	Now      stamp
	NotReady string // why not; "" when ready
	Accounts []accountView

	ShowRejected  bool // Options.Rejected is set
	Rejected      []rejectedView
	RejectedTotal int
	RejectedMore  int
	RejectedErr   string
}

type accountView struct {
	Name       string
	State      string // running, ok, failed, skipped, waiting
	Class      string // CSS class of the state: ok, warn, bad, run, idle
	Reason     string // why skipped
	Running    bool
	RunStarted stamp
	LastState  string // the last finished run's state, while running
	HasLast    bool
	Skipped    bool // the last run did nothing: no counts to show
	LastRun    stamp
	Took       string
	NextRun    stamp
	// NextAttempt is when a back-off or the server's login delay ends.
	NextAttempt                        stamp
	Listed, Delivered, Deleted, Probls int
	Problems                           []string
	MoreProblems                       int
	Error                              string
}

type rejectedView struct {
	Account, UIDL, Sink, LastError string
	NextAttempt                    stamp
	Command                        string
}

// stamp is a time as the page shows it: UTC RFC 3339 and how long ago or
// ahead.
type stamp struct {
	Set      bool
	RFC3339  string
	Relative string
}

func stampOf(t, now time.Time) stamp {
	if t.IsZero() {
		return stamp{}
	}
	return stamp{Set: true, RFC3339: t.UTC().Format(time.RFC3339), Relative: relative(t, now)}
}

// relative says how far t is from now in one rounded unit: "12 s ago",
// "3 min ago", "in 25 min", "5 h ago", "3 d ago".
func relative(t, now time.Time) string {
	d := now.Sub(t)
	ahead := d < 0
	if ahead {
		d = -d
	}
	var s string
	switch {
	case d < time.Second:
		return "now"
	case d < time.Minute:
		s = strconv.Itoa(int(d/time.Second)) + " s"
	case d < time.Hour:
		s = strconv.Itoa(int(d/time.Minute)) + " min"
	case d < 48*time.Hour:
		s = strconv.Itoa(int(d/time.Hour)) + " h"
	default:
		s = strconv.Itoa(int(d/(24*time.Hour))) + " d"
	}
	if ahead {
		return "in " + s
	}
	return s + " ago"
}

// took formats a run's duration for people.
func took(d time.Duration) string {
	switch {
	case d < time.Second:
		return strconv.Itoa(int(d/time.Millisecond)) + " ms"
	case d < time.Minute:
		return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) + " s"
	}
	return d.Round(time.Second).String()
}

// RetryCommand is the command that offers a rejected message again at
// once, quoted for a POSIX shell (a UIDL comes from the server and may
// hold anything).
func RetryCommand(account, uidl string) string {
	return "pophook ledger retry " + shellQuote(account) + " " + shellQuote(uidl)
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (h *Handler) status(w http.ResponseWriter, _ *http.Request) {
	now := h.opts.Now()
	p := page{
		CSS:     template.CSS(statusCSS),
		Refresh: refreshSeconds,
		Version: h.opts.Version,
		Now:     stampOf(now, now),
	}
	if err := h.Ready(); err != nil {
		p.NotReady = oneLine(err.Error(), 2000)
	}
	var next map[string]time.Time
	if h.opts.NextRuns != nil {
		next = h.opts.NextRuns()
	}
	if h.opts.Accounts != nil {
		for _, s := range h.opts.Accounts() {
			p.Accounts = append(p.Accounts, accountOf(s, next[s.Account], now))
		}
	}
	if h.opts.Rejected != nil {
		p.ShowRejected = true
		rej, err := h.opts.Rejected()
		if err != nil {
			p.RejectedErr = err.Error()
		}
		p.RejectedTotal = len(rej)
		if len(rej) > maxRejected {
			p.RejectedMore = len(rej) - maxRejected
			rej = rej[:maxRejected]
		}
		for _, r := range rej {
			p.Rejected = append(p.Rejected, rejectedView{
				Account: r.Account, UIDL: r.UIDL, Sink: r.Sink, LastError: r.LastError,
				NextAttempt: stampOf(r.NextAttempt, now),
				Command:     RetryCommand(r.Account, r.UIDL),
			})
		}
	}

	var buf bytes.Buffer
	if err := statusPage.Execute(&buf, p); err != nil {
		http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Content-Security-Policy", statusCSP)
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.Write(buf.Bytes())
}

func accountOf(s worker.Status, next, now time.Time) accountView {
	v := accountView{Name: s.Account, NextRun: stampOf(next, now)}
	state, class, reason := lastState(s)
	v.Reason = reason
	if s.Running {
		v.State, v.Class = "running", "run"
		v.Running, v.RunStarted = true, stampOf(s.RunStarted, now)
		if s.Last != nil {
			v.LastState = state
		}
	} else {
		v.State, v.Class = state, class
	}
	if s.LastErr != nil {
		v.Error = s.LastErr.Error()
	}
	r := s.Last
	if r == nil {
		return v
	}
	v.HasLast, v.Skipped = true, r.Skipped != worker.SkipNone
	v.LastRun, v.Took = stampOf(r.Started, now), took(r.Duration)
	if r.NextAttempt.After(now) {
		v.NextAttempt = stampOf(r.NextAttempt, now)
	}
	v.Listed, v.Delivered, v.Deleted, v.Probls = r.Listed, r.Delivered, r.Deleted, len(r.Problems)
	for i, pr := range r.Problems {
		if i == maxProblems {
			v.MoreProblems = len(r.Problems) - i
			break
		}
		line := pr.Error()
		if pr.UIDL != "" {
			line = "message " + pr.UIDL + ": " + line
		}
		v.Problems = append(v.Problems, line)
	}
	return v
}

// lastState classifies the last finished run: its state, the CSS class
// that colours it, and why it was skipped.
func lastState(s worker.Status) (state, class, reason string) {
	r := s.Last
	switch {
	case r == nil:
		return "waiting", "idle", "no run has finished yet"
	case s.LastErr != nil:
		return "failed", "bad", ""
	case r.Skipped != worker.SkipNone:
		class = "warn"
		if r.Skipped == worker.SkipAuthBackoff {
			class = "bad"
		}
		return "skipped", class, r.Skip()
	case len(r.Problems) > 0:
		return "ok", "warn", ""
	}
	return "ok", "ok", ""
}
