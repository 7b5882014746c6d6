package worker

// The clock jumping between runs (issue #13, point 3). Neither `pophook
// run` nor `once` can be given another clock, so these tests drive the job
// through its seam (Job.Now, the env's clock) against the in-process POP3
// server, one new Job per run as a new process would make. What must hold:
// a backwards jump never deletes a kept message early and never makes a
// wait (login back-off, the server's LOGIN-DELAY, a rejection's next
// attempt) last longer than its own maximum; a forward jump deletes only
// what KEEP allows.

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/faultrow"
	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/worker/pop3/pop3test"
)

const day = 24 * time.Hour

// clockServer is a TLS POP3 server holding n messages for alice.
func clockServer(t *testing.T, n int, opts pop3test.Options) *pop3test.Server {
	s := pop3test.NewTLSServer(opts)
	t.Cleanup(s.Close)
	s.SetMailbox("alice", messages(n, "Subject: clock %d\n\nbody\n"))
	return s
}

func dele(s *pop3test.Server) int {
	return strings.Count(strings.Join(s.Log(), "\n"), "DELE ")
}

func passes(s *pop3test.Server) int {
	return strings.Count(strings.Join(s.Log(), "\n"), "PASS ")
}

// TestClockKeep: KEEP=48h while the clock jumps.
func TestClockKeep(t *testing.T) {
	const keep = 48 * time.Hour

	t.Run("backwards and forwards", func(t *testing.T) {
		s := clockServer(t, 3, pop3test.Options{})
		rec := &recorder{}
		acct := fakeAccount(s)
		acct.Keep = Keep{After: keep}
		e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})
		t0 := e.clock
		if res := e.run(); res.Delivered != 3 || res.Deleted != 0 {
			t.Fatalf("first run: %+v", res)
		}
		// Back 30 days, then forward to just inside KEEP: nothing goes.
		for _, at := range []time.Duration{-30 * day, -time.Hour, 0, keep - time.Minute} {
			e.clock = t0.Add(at)
			e.newJob()
			if res := e.run(); res.Deleted != 0 {
				t.Fatalf("clock at first sight %+v: %d deleted, want none before KEEP (%s) has passed", at, res.Deleted, keep)
			}
		}
		if n := len(s.Messages("alice")); n != 3 || dele(s) != 0 {
			t.Fatalf("%d on the server, %d DELE sent: a kept message went early", n, dele(s))
		}
		// A message arrives now; the clock then jumps past KEEP for the
		// first three only: they go, it stays.
		e.clock = t0.Add(keep - time.Minute)
		s.AddMessages("alice", pop3test.Message{UID: "late", Data: []byte("Subject: late\n\nbody\n")})
		e.newJob()
		if res := e.run(); res.Delivered != 1 || res.Deleted != 0 {
			t.Fatalf("new message: %+v", res)
		}
		e.clock = t0.Add(keep + time.Minute)
		e.newJob()
		if res := e.run(); res.Deleted != 3 {
			t.Fatalf("past KEEP for the first three: %+v, want 3 deleted", res)
		}
		if got := s.Messages("alice"); len(got) != 1 || got[0].UID != "late" {
			t.Fatalf("left on the server: %d messages, want only the one first seen %s ago", len(got), 2*time.Minute)
		}
		// Far forward: it goes too; nothing was delivered twice.
		e.clock = t0.Add(365 * day)
		e.newJob()
		if res := e.run(); res.Deleted != 1 || len(s.Messages("alice")) != 0 {
			t.Fatalf("a year on: %+v", res)
		}
		for k, n := range rec.keys() {
			if n != 1 {
				t.Errorf("%s delivered %d times", k, n)
			}
		}
		faultrow.Report(t, faultrow.Row{Area: "process", Fault: "clock jumps backwards and forwards between runs with KEEP=48h",
			Injection: "job clock 30 days back, 1 h back, to KEEP-1min, KEEP+1min, a year on; in-process POP3 server",
			Rounds:    8, Messages: 4,
			Result: "no message deleted before it had been seen KEEP ago by the clock of the run; a forward jump deleted exactly the messages KEEP allowed"})
	})

	// A message first seen while the clock was behind (a board without an
	// RTC that boots with the time it saved at shutdown, before NTP steps
	// it) is recorded as older than it is. When the clock is corrected,
	// it is deleted at once although it has been on the server for an
	// hour: KEEP=48h deleted it early.
	t.Run("first seen while the clock was behind", func(t *testing.T) {
		s := clockServer(t, 0, pop3test.Options{})
		acct := fakeAccount(s)
		acct.Keep = Keep{After: keep}
		e := newEnv(t, acct, map[string]sinks.Sink{"hook": &recorder{}})
		t0 := e.clock
		e.run() // the ledger knows the account, and that it is t0
		e.clock = t0.Add(-14 * day)
		s.AddMessages("alice", pop3test.Message{UID: "while-behind", Data: []byte("Subject: behind\n\nbody\n")})
		e.newJob()
		if res := e.run(); res.Delivered != 1 || res.Deleted != 0 {
			t.Fatalf("clock 14 days behind: %+v", res)
		}
		e.clock = t0.Add(time.Hour) // NTP corrects it: an hour has passed
		e.newJob()
		res := e.run()
		if res.Deleted != 0 || len(s.Messages("alice")) != 1 {
			t.Errorf("deleted %d an hour after it arrived, with KEEP=%s: a message first seen while the clock was 14 days behind "+
				"counts as 14 days old once the clock is right (FirstSeen is the clock of that run; the ledger had seen %s before)",
				res.Deleted, keep, t0.Format(time.RFC3339))
		}
	})

}

// TestClockLoginWaitsBounded: a login back-off, and the server's
// LOGIN-DELAY, recorded before the clock jumped back must not keep the
// account waiting longer than the back-off's own maximum (1 h; the
// delay itself for LOGIN-DELAY); a forward jump ends them.
func TestClockLoginWaitsBounded(t *testing.T) {
	t.Run("refused login, clock a day back", func(t *testing.T) {
		s := clockServer(t, 1, pop3test.Options{})
		acct := fakeAccount(s)
		acct.Credential = password("wrong")
		e := newEnv(t, acct, map[string]sinks.Sink{"hook": &recorder{}})
		t0 := e.clock
		if _, err := e.job.Run(context.Background()); err == nil {
			t.Fatal("a wrong password was accepted")
		}
		e.clock = t0.Add(-day)
		e.newJob()
		res, err := e.job.Run(context.Background())
		if err == nil && res.Skipped != SkipNone {
			if wait := res.NextAttempt.Sub(e.clock); wait > loginBackoffMax {
				t.Errorf("after one refused login and the clock a day back, the account waits %s (until %s), longer than the back-off's maximum %s: "+
					"a clock set back a year would stop fetching for a year",
					wait, res.NextAttempt.Format(time.RFC3339), loginBackoffMax)
			}
		}
	})
	t.Run("LOGIN-DELAY, clock a day back", func(t *testing.T) {
		s := clockServer(t, 1, pop3test.Options{Capabilities: []string{"LOGIN-DELAY 900"}})
		e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"hook": &recorder{}})
		t0 := e.clock
		e.run()
		e.clock = t0.Add(-day)
		e.newJob()
		res := e.run()
		if res.Skipped != SkipNone {
			if wait := res.NextAttempt.Sub(e.clock); wait > 900*time.Second {
				t.Errorf("the server asked for 15 minutes between logins; with the clock a day back the account waits %s (until %s)",
					wait, res.NextAttempt.Format(time.RFC3339))
			}
		}
	})
	t.Run("refused login, clock forward", func(t *testing.T) {
		s := clockServer(t, 1, pop3test.Options{})
		acct := fakeAccount(s)
		acct.Credential = password("wrong")
		e := newEnv(t, acct, map[string]sinks.Sink{"hook": &recorder{}})
		t0 := e.clock
		for i := range 4 { // four refusals: the back-off has grown to 8 min
			e.clock = t0.Add(time.Duration(i) * 2 * time.Hour)
			e.newJob()
			e.job.Run(context.Background())
		}
		before := passes(s)
		if before != 4 {
			t.Fatalf("%d logins for 4 runs 2 h apart, want 4", before)
		}
		// Same wrong password, clock far forward: the back-off is over,
		// so the next run tries (and is refused) instead of waiting.
		e.clock = t0.Add(400 * day)
		e.newJob()
		res, err := e.job.Run(context.Background())
		if err == nil || res.Skipped != SkipNone || passes(s) != before+1 {
			t.Errorf("clock forward during a back-off: %+v, %v, %d new logins; want one attempt", res, err, passes(s)-before)
		}
		faultrow.Report(t, faultrow.Row{Area: "process", Fault: "clock jumps forward during a login back-off",
			Injection: "four refused logins, then the job clock 400 days on; in-process POP3 server",
			Rounds:    5, Messages: 1, Result: "the back-off ended with the jump: the next run tried to log in at once"})
	})
}

// TestClockRejectionRetryBounded: a message a sink rejected is offered
// again after 1 h doubling to 24 h. A clock set back must not push the
// next attempt beyond 24 h from now; a clock set forward offers it at
// once.
func TestClockRejectionRetryBounded(t *testing.T) {
	setup := func(t *testing.T) (*env, *recorder, *pop3test.Server, *bool) {
		s := clockServer(t, 1, pop3test.Options{})
		reject := true
		rec := &recorder{fail: func(*sinks.Message, []byte) error {
			if reject {
				return sinks.Reject(errors.New("HTTP 422"))
			}
			return nil
		}}
		e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"hook": rec})
		if res := e.run(); len(res.Problems) != 1 || res.Problems[0].Kind != ProblemRejected {
			t.Fatalf("first run: %+v", res)
		}
		reject = false
		return e, rec, s, &reject
	}
	t.Run("clock 30 days back", func(t *testing.T) {
		e, rec, _, _ := setup(t)
		e.clock = e.clock.Add(-30 * day)
		e.newJob()
		res := e.run()
		if rec.count() == 1 {
			return // offered again at once: fine
		}
		for _, p := range res.Problems {
			if p.Kind != ProblemWaiting {
				continue
			}
			next := nextAttempt(t, p)
			if wait := next.Sub(e.clock); wait > rejectRetryMax {
				t.Errorf("a rejected message waits %s for its next attempt after the clock went 30 days back, longer than the retry maximum %s (%v)",
					wait.Round(time.Hour), rejectRetryMax, p)
			}
		}
	})
	t.Run("clock forward", func(t *testing.T) {
		e, rec, s, _ := setup(t)
		e.clock = e.clock.Add(90 * day)
		e.newJob()
		if res := e.run(); res.Delivered != 1 || res.Deleted != 1 || rec.count() != 1 || len(s.Messages("alice")) != 0 {
			t.Errorf("clock 90 days forward: %+v, %d deliveries", res, rec.count())
		}
		faultrow.Report(t, faultrow.Row{Area: "process", Fault: "clock jumps forward while a rejected message waits",
			Injection: "a sink rejects a message, then the job clock 90 days on; in-process POP3 server",
			Rounds:    2, Messages: 1, Result: "offered again at once, delivered once and deleted"})
	})
}

// nextAttempt reads the time from a waiting problem ("...; next attempt
// 2026-...").
func nextAttempt(t *testing.T, p Problem) time.Time {
	t.Helper()
	msg := p.Error()
	i := strings.LastIndex(msg, "next attempt ")
	if i < 0 {
		t.Fatalf("problem does not say when: %v", p)
	}
	at, err := time.Parse(time.RFC3339, strings.Fields(msg[i+len("next attempt "):])[0])
	if err != nil {
		t.Fatalf("problem %q: %v", msg, err)
	}
	return at
}
