package worker

import (
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker/pop3/pop3test"
)

// A poll whose listing needs nothing done leaves an idle mark; the next
// poll with the same listing does nothing more. Everything that could
// change the plan ends it: a new message, a change to the ledger, the
// time a kept message comes due, a changed configuration, a clock that
// went back.
func TestIdleMark(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{Pipelining: true})
	defer s.Close()
	n := idleAbove + 50
	s.SetMailbox("alice", messages(n, "Subject: m%d\n\nbody\n"))
	rec := &recorder{}
	acct := fakeAccount(s)
	acct.Keep = Keep{After: 2 * time.Hour}
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})
	e.job.SinkConfig = map[string]string{"hook": "v1"}
	step := func(what string, wantUnchanged bool, delivered, deleted int) {
		t.Helper()
		res := e.run()
		if res.Unchanged != wantUnchanged || res.Delivered != delivered || res.Deleted != deleted {
			t.Fatalf("%s: %+v; want unchanged %t, %d delivered, %d deleted", what, res, wantUnchanged, delivered, deleted)
		}
	}
	step("first run", false, n, 0)
	step("first idle poll: planned, leaves the mark", false, 0, 0)
	step("second idle poll", true, 0, 0)
	step("third idle poll", true, 0, 0)

	s.AddMessages("alice", pop3test.Message{UID: "late", Data: []byte("Subject: late\n\nx\n")})
	step("a new message", false, 1, 0)
	step("idle again: planned", false, 0, 0)
	step("idle again: marked", true, 0, 0)

	// pophook ledger retry: the entry changes, the mark goes, the message
	// is sent again.
	ledger := e.ledger.Account(acct.LedgerID())
	if err := ledger.Update("u7", func(en *state.Entry) *state.Entry {
		en.Sink("hook").DeliveredAt = time.Time{}
		return en
	}); err != nil {
		t.Fatal(err)
	}
	step("after a change to the ledger", false, 1, 0)
	step("idle: planned", false, 0, 0)
	step("idle: marked", true, 0, 0)

	e.job.SinkConfig["hook"] = "v2"
	step("changed sink configuration", false, 0, 0)
	step("marked under the new configuration", true, 0, 0)

	e.clock = e.clock.Add(-time.Hour)
	step("clock went back", false, 0, 0)
	step("marked again", true, 0, 0)

	// The messages were first seen at 08:00 and come due for deletion
	// two hours later: a mark left at 09:30 holds at 09:50 and not past
	// 10:00, well within idleMaxSpan.
	first := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	e.clock = first.Add(90 * time.Minute)
	step("09:30: planned", false, 0, 0)
	e.clock = first.Add(110 * time.Minute)
	step("09:50: marked", true, 0, 0)
	e.clock = first.Add(2*time.Hour + time.Second)
	step("10:00:01: kept messages due", false, 0, n+1)
	if rec.count() != n+2 {
		t.Errorf("%d deliveries, want %d (each message once, u7 twice)", rec.count(), n+2)
	}
}

// Against a real Dovecot: the marked poll sends UIDL and QUIT only, and
// what it skips it does not lose: a message that arrives later is sent.
func TestIdleMarkDovecot(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	n := idleAbove + 10
	for i := range n {
		d.Deliver(t, "alice", []byte("Subject: m"+time.Duration(i).String()+"\n\nbody\n"))
	}
	rec := &recorder{}
	acct := dovecotAccount(t, d)
	acct.Keep = Keep{Forever: true}
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})
	for i, want := range []bool{false, false, true, true} {
		res := e.run()
		if res.Unchanged != want || res.Listed != n {
			t.Fatalf("poll %d: %+v, want unchanged %t and %d listed", i, res, want, n)
		}
	}
	d.Deliver(t, "alice", []byte("Subject: late\n\nx\n"))
	if res := e.run(); res.Unchanged || res.Delivered != 1 {
		t.Fatalf("poll after a new message: %+v", res)
	}
	if rec.count() != n+1 || d.Count(t, "alice") != n+1 {
		t.Errorf("%d deliveries, %d on the server; want %d and %d", rec.count(), d.Count(t, "alice"), n+1, n+1)
	}
}
