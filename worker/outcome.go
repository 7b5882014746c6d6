package worker

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pophook/pophook/sinks"
)

// Result is what one run of a job did.
type Result struct {
	Account  string
	Started  time.Time
	Duration time.Duration

	Listed    int // messages on the server at the last listing
	Delivered int // messages newly delivered to all their sinks
	Deleted   int // deletions confirmed by QUIT
	// Unchanged is set when the listing was the one the last poll found
	// nothing to do for, so the ledger was not read (see idle.go).
	Unchanged bool
	// Problems are what went wrong with single messages or sinks; the
	// run itself may have succeeded.
	Problems []Problem
	// Skipped says why the run did nothing; SkipNone when it ran.
	Skipped SkipReason
	// NextAttempt is when a skipped run may try again (back-off, login
	// delay); zero when at the next tick.
	NextAttempt time.Time
	// SkipDetail is what the server said, for a skipped run.
	SkipDetail string
	// LoginRefused is set when the server refused the login (wrong
	// credentials, or a mechanism it does not offer).
	LoginRefused bool
	// LoginFailures counts refused logins in a row, as the ledger keeps
	// them; 0 after a login succeeded.
	LoginFailures int
}

// SkipReason says why a run did nothing.
type SkipReason string

const (
	SkipNone        SkipReason = ""
	SkipInUse       SkipReason = "mailbox in use by another session"
	SkipLoginDelay  SkipReason = "the server asks for a delay between logins"
	SkipAuthBackoff SkipReason = "backing off after refused logins"
)

// Skip describes a skipped run in one line.
func (r *Result) Skip() string {
	if r.Skipped == SkipNone {
		return ""
	}
	s := string(r.Skipped)
	if r.SkipDetail != "" {
		s += " (" + r.SkipDetail + ")"
	}
	if !r.NextAttempt.IsZero() {
		s += "; next attempt at " + r.NextAttempt.Format(time.RFC3339)
	}
	return s
}

// ProblemKind classifies a Problem.
type ProblemKind string

const (
	// ProblemRejected: a sink rejected the message; it stays on the server
	// and is offered again on a slow schedule.
	ProblemRejected ProblemKind = "rejected"
	// ProblemWaiting: a rejected message whose next attempt is not due.
	ProblemWaiting ProblemKind = "waiting"
	// ProblemSinkFailed: a sink failed temporarily and is not used again
	// in this run.
	ProblemSinkFailed ProblemKind = "sink_failed"
	// ProblemSinkUnavailable: a sink cannot work until someone fixes it.
	ProblemSinkUnavailable ProblemKind = "sink_unavailable"
	// ProblemTooLarge: over MAX_MESSAGE_SIZE; left on the server.
	ProblemTooLarge ProblemKind = "too_large"
	// ProblemRetr: the server refused to send the message.
	ProblemRetr ProblemKind = "retr_failed"
	// ProblemSizeMismatch: RETR gave a size far from LIST's; delivered
	// as served and never deleted automatically.
	ProblemSizeMismatch ProblemKind = "size_mismatch"
	// ProblemDele: the server refused to delete a delivered message.
	ProblemDele ProblemKind = "dele_refused"
)

// Problem is one thing that went wrong with a message or a sink.
type Problem struct {
	Kind ProblemKind
	UIDL string // "" when it concerns a sink as a whole
	Sink string // "" when no sink is involved
	Err  error
}

func (p Problem) Error() string {
	if p.Err == nil {
		return p.Summary()
	}
	return p.Summary() + ": " + p.Err.Error()
}

// Summary says what happened in words, without the underlying error.
func (p Problem) Summary() string {
	var s string
	switch p.Kind {
	case ProblemRejected:
		s = fmt.Sprintf("sink %s rejected it; it stays on the server and is offered again later", p.Sink)
	case ProblemWaiting:
		s = fmt.Sprintf("sink %s rejected it earlier", p.Sink)
	case ProblemSinkFailed:
		s = fmt.Sprintf("sink %s failed; it is not used again in this run", p.Sink)
	case ProblemSinkUnavailable:
		s = fmt.Sprintf("sink %s is unavailable until its problem is fixed; its messages stay on the server", p.Sink)
	case ProblemTooLarge:
		s = "too large; left on the server"
	case ProblemRetr:
		s = "the server did not send it"
	case ProblemSizeMismatch:
		s = "delivered, but kept on the server"
	case ProblemDele:
		s = "the server refused to delete it"
	default:
		s = string(p.Kind)
	}
	return s
}

func (p Problem) Unwrap() error { return p.Err }

// Line is the problem in one line, naming the account and the message.
// The UIDL and the error text can come from the server, and the line ends
// up on a terminal: anything not printable is written as an escape.
func (p Problem) Line(account string) string {
	if p.UIDL == "" {
		return fmt.Sprintf("account %s: %s", account, escapeUnprintable(p.Error()))
	}
	return fmt.Sprintf("account %s, message %s: %s", account, escapeUnprintable(p.UIDL), escapeUnprintable(p.Error()))
}

// escapeUnprintable writes control characters, bytes that are not UTF-8
// and other unprintable runes as Go escapes (\x1b, \n, \xff), leaving
// the rest, CJK included, as it is.
func escapeUnprintable(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case !unicode.IsPrint(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// EventKind says what an Event reports.
type EventKind int

const (
	// EventDelivered: a message reached all its sinks.
	EventDelivered EventKind = iota
	// EventProblem: a Problem, as it happened.
	EventProblem
	// EventRunDone: a run ended; Result and Err are set.
	EventRunDone
	// EventFetched: a message was retrieved into the spool (UIDL, Size).
	EventFetched
	// EventSinkDone: one sink was handed one message (UIDL, Key, Sink,
	// Outcome, Took), whatever the outcome.
	EventSinkDone
	// EventPlanned: a session is about to fetch Count messages of Size
	// octets in all (as listed), for progress displays.
	EventPlanned
)

// Event is what a job reports as it goes, to logs now and to metrics and
// the status page: one hook for all of them.
type Event struct {
	Kind    EventKind
	Account string
	At      time.Time

	UIDL, Key string // EventDelivered, EventFetched, EventSinkDone
	Size      int64
	Count     int           // EventPlanned
	Sink      string        // EventSinkDone
	Outcome   sinks.Outcome // EventSinkDone
	Took      time.Duration // EventSinkDone: how long Deliver took
	Problem   Problem       // EventProblem
	Result    *Result       // EventRunDone
	Err       error         // EventRunDone: the run failed as a whole
}

// LogEvents returns an event hook that logs: each delivery at info, each
// problem at warn, and a line per run.
func LogEvents(log *slog.Logger) func(Event) {
	return func(e Event) {
		l := log.With("account", e.Account)
		switch e.Kind {
		case EventDelivered:
			l.Info("delivered", "uidl", e.UIDL, "key", e.Key, "size", e.Size)
		case EventProblem:
			attrs := []any{"kind", string(e.Problem.Kind)}
			if e.Problem.UIDL != "" {
				attrs = append(attrs, "uidl", e.Problem.UIDL)
			}
			if e.Problem.Sink != "" {
				attrs = append(attrs, "sink", e.Problem.Sink)
			}
			if e.Problem.Err != nil {
				attrs = append(attrs, "err", e.Problem.Err)
			}
			l.Warn(e.Problem.Summary(), attrs...)
		case EventRunDone:
			r := e.Result
			l = l.With("duration", r.Duration.Round(time.Millisecond))
			switch {
			case e.Err != nil:
				l.Error("fetch failed", "err", e.Err)
			case r.Skipped != SkipNone:
				level := slog.LevelInfo
				if r.Skipped == SkipAuthBackoff {
					level = slog.LevelWarn
				}
				l.Log(context.Background(), level, "fetch skipped", "reason", r.Skip())
			default:
				l.Info("fetch done", "listed", r.Listed, "delivered", r.Delivered, "deleted", r.Deleted, "problems", len(r.Problems))
			}
		}
	}
}

// Status is a job's state for the status page and readiness, readable
// while a run holds the job.
type Status struct {
	Account    string
	Running    bool
	RunStarted time.Time // of the run under way, or of the last one
	Last       *Result   // the last finished run; nil before the first
	LastErr    error
}
