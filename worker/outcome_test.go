package worker

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/syncbuf"
	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/worker/pop3/pop3test"
)

func TestLogEvents(t *testing.T) {
	var buf syncbuf.Buffer
	log := LogEvents(slog.New(slog.NewTextHandler(&buf, nil)))
	p := Problem{Kind: ProblemRejected, UIDL: "u7", Sink: "helpdesk", Err: errors.New("HTTP 422")}
	log(Event{Kind: EventProblem, Account: "support", Problem: p})
	log(Event{Kind: EventDelivered, Account: "support", UIDL: "u8", Key: "ph1_x", Size: 42})
	log(Event{Kind: EventRunDone, Account: "support", Result: &Result{Listed: 3, Delivered: 1, Problems: []Problem{p}}})
	log(Event{Kind: EventRunDone, Account: "support", Result: &Result{Skipped: SkipAuthBackoff, NextAttempt: time.Date(2026, 12, 3, 13, 0, 0, 0, time.UTC)}})
	log(Event{Kind: EventRunDone, Account: "support", Result: &Result{}, Err: errors.New("dial: refused")})
	out := buf.String()
	for _, want := range []string{
		`level=WARN msg="sink helpdesk rejected it; it stays on the server and is offered again later" account=support kind=rejected uidl=u7 sink=helpdesk err="HTTP 422"`,
		`level=INFO msg=delivered account=support uidl=u8 key=ph1_x size=42`,
		`msg="fetch done" account=support duration=0s listed=3 delivered=1 deleted=0 problems=1`,
		`level=WARN msg="fetch skipped" account=support duration=0s reason="backing off after refused logins; next attempt at 2026-12-03T13:00:00Z"`,
		`level=ERROR msg="fetch failed" account=support duration=0s err="dial: refused"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s\n%s", want, out)
		}
	}
	if got := p.Line("support"); got != "account support, message u7: sink helpdesk rejected it; it stays on the server and is offered again later: HTTP 422" {
		t.Errorf("Line = %q", got)
	}
}

// The job reports each fetch and each sink's outcome, for metrics.
func TestFetchAndSinkEvents(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{})
	defer s.Close()
	s.SetMailbox("alice", messages(2, "Subject: %d\n\nbody\n"))
	rec := &recorder{fail: func(m *sinks.Message, _ []byte) error {
		if m.UIDL == "u1" {
			return sinks.Reject(errors.New("HTTP 422"))
		}
		return nil
	}}
	e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"hook": rec})
	e.run()
	var fetched, delivered, rejected int
	for _, ev := range e.events {
		switch {
		case ev.Kind == EventFetched && ev.Size > 0:
			fetched++
		case ev.Kind == EventSinkDone && ev.Sink == "hook" && ev.Outcome == sinks.OutcomeDelivered && ev.UIDL == "u0":
			delivered++
		case ev.Kind == EventSinkDone && ev.Sink == "hook" && ev.Outcome == sinks.OutcomeRejected && ev.UIDL == "u1":
			rejected++
		}
	}
	if fetched != 2 || delivered != 1 || rejected != 1 {
		t.Errorf("fetched %d, delivered %d, rejected %d events; want 2, 1, 1", fetched, delivered, rejected)
	}
}
