package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/worker/pop3"
	"github.com/pophook/pophook/worker/pop3/pop3test"
)

// The tests in this file each pin down a way the delivery promise broke
// (issue 7 of the tracker); the servers replay what popa3d and Courier
// really sent (testdata/transcripts/courier-popa3d.txt).

func messages(n int, format string) []pop3test.Message {
	var out []pop3test.Message
	for i := range n {
		out = append(out, pop3test.Message{UID: fmt.Sprintf("u%d", i), Data: []byte(fmt.Sprintf(format, i))})
	}
	return out
}

// newJob is a fresh Job on the same ledger and spool: what a new
// `pophook once` process makes of the same data dir.
func (e *env) newJob() {
	old := e.job
	e.job = &Job{Account: old.Account, Sinks: old.Sinks, SinkConfig: old.SinkConfig, Ledger: old.Ledger,
		SpoolDir: old.SpoolDir, Now: old.Now, OnEvent: old.OnEvent}
}

func (e *env) problems(kind ProblemKind) []Problem {
	var out []Problem
	for _, ev := range e.events {
		if ev.Kind == EventProblem && ev.Problem.Kind == kind {
			out = append(out, ev.Problem)
		}
	}
	return out
}

// Bug 1: a server that advertises PIPELINING but drops pipelined commands
// makes the job open a second session; when that login meets [IN-USE],
// the run used to carry on with an empty listing, initialize the account
// with nothing skipped and prune every entry, so SKIP_EXISTING's messages
// were later delivered and deleted.
func TestNoListingNoStateChange(t *testing.T) {
	var passes atomic.Int32
	s := pop3test.NewTLSServer(pop3test.Options{Pipelining: true, Faults: pop3test.Faults{
		BrokenPipelining: true,
		Hook: func(user, line string) (string, bool) {
			if strings.HasPrefix(line, "PASS") && passes.Add(1) == 2 {
				return "-ERR [IN-USE] mailbox locked by another session\r\n", true
			}
			return "", false
		},
	}})
	defer s.Close()
	s.SetMailbox("alice", messages(3, "Subject: old %d\n\nthere before pophook\n"))
	rec := &recorder{}
	acct := fakeAccount(s)
	acct.SkipExisting = true
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})

	res := e.run()
	if res.Skipped != SkipInUse {
		t.Fatalf("run %+v: want it skipped for the mailbox in use", res)
	}
	meta, err := e.ledger.Account(acct.LedgerID()).Meta()
	if err != nil {
		t.Fatal(err)
	}
	if !meta.Initialized.IsZero() {
		t.Fatal("the account was initialized without a listing")
	}
	if !meta.NoPipelining {
		t.Error("the broken pipelining was not remembered")
	}

	// The next run lists the mailbox (lock-step) and records the three as
	// existing; a message that arrives afterwards is the only one sent.
	e.clock = e.clock.Add(time.Minute)
	if res := e.run(); res.Delivered != 0 || res.Deleted != 0 || res.Skipped != SkipNone {
		t.Fatalf("second run %+v: want the existing messages recorded, none sent", res)
	}
	s.AddMessages("alice", pop3test.Message{UID: "new", Data: []byte("Subject: new\n\nafter\n")})
	e.clock = e.clock.Add(time.Minute)
	if res := e.run(); res.Delivered != 1 || res.Deleted != 1 {
		t.Fatalf("third run %+v: want only the new message", res)
	}
	left := s.Messages("alice")
	if len(left) != 3 || rec.count() != 1 {
		t.Errorf("%d messages left on the server (want the 3 old ones), %d delivered (want 1)", len(left), rec.count())
	}
}

// courierNotice is what Courier sends instead of a message with raw UTF-8
// in a header to a client that did not send UTF8.
var courierNotice = []byte("From: Mail Delivery Subsystem <postmaster>\nSubject: Cannot display Unicode content\n" +
	"Mime-Version: 1.0\nContent-Type: text/plain\n\n" + strings.Repeat("This E-mail message was determined to be Unicode-formatted\nbut your E-mail reader does not support Unicode E-mail.\n", 8))

// Bug 2: Courier substituted a notice for every message with raw UTF-8 in
// a header, pophook delivered the notice and deleted the original.
func TestCourierUTF8Substitute(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{Pipelining: true, UTF8Substitute: courierNotice,
		Capabilities: []string{"IMPLEMENTATION Courier Mail Server"}})
	defer s.Close()
	originals := []pop3test.Message{
		{UID: "a", Data: []byte("Subject: plain\n\nascii\n")},
		{UID: "b", Data: []byte("From: 张三 <zhang@example.cn>\nSubject: 报价单\n\n请查收\n")},
		{UID: "c", Data: []byte("Subject: Grüße aus Köln\n\nHallo\n")},
	}
	s.SetMailbox("alice", originals)
	rec := &recorder{}
	e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"hook": rec})
	if res := e.run(); res.Delivered != 3 || res.Deleted != 3 || len(res.Problems) != 0 {
		t.Fatalf("run %+v", res)
	}
	for i, d := range rec.got {
		if !bytes.Equal(d.raw, originals[i].Wire()) {
			t.Errorf("message %s delivered as %q, want the original", d.uidl, d.raw)
		}
	}
}

// A server that still sends something far from the size it listed (a
// substitute, whatever the reason) gets its message delivered as sent,
// never deleted automatically, and reported with both sizes.
func TestSizeMismatchIsKept(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{})
	defer s.Close()
	s.SetMailbox("alice", []pop3test.Message{
		{UID: "fine", Data: []byte("Subject: fine\n\nok\n"), ListSize: 20}, // LF-counting server: off by the line count
		{UID: "odd", Data: courierNotice, ListSize: 116},
	})
	rec := &recorder{}
	e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"hook": rec})
	res := e.run()
	if res.Delivered != 2 || res.Deleted != 1 {
		t.Fatalf("run %+v: want both delivered, only the plausible one deleted", res)
	}
	p := e.problems(ProblemSizeMismatch)
	want := fmt.Sprintf("RETR gave %d octets, LIST said 116", len(pop3test.Message{Data: courierNotice}.Wire()))
	if len(p) != 1 || p[0].UIDL != "odd" || !strings.Contains(p[0].Error(), want) {
		t.Fatalf("problems %v, want one size mismatch saying %q", p, want)
	}
	e.events = nil
	if res := e.run(); res.Delivered != 0 || res.Deleted != 0 || len(s.Messages("alice")) != 1 {
		t.Errorf("second run %+v, %d on the server: the suspect message must stay and not be sent again", res, len(s.Messages("alice")))
	}
}

// Bug 3: LIST under-reports a size, RETR runs past MAX_MESSAGE_SIZE and
// the client closes the connection. That used to leave the message
// unmarked, the DELEs unsent and every later run stuck at the same place.
func TestUnderreportedOversizeDoesNotBlock(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{Pipelining: true})
	defer s.Close()
	big := append([]byte("Subject: big\n\n"), bytes.Repeat([]byte("0123456789abcdef\n"), 2000)...)
	msgs := messages(5, "Subject: small %d\n\nfine\n")
	msgs = append(msgs[:2], append([]pop3test.Message{{UID: "big", Data: big, ListSize: 900}}, msgs[2:]...)...)
	s.SetMailbox("alice", msgs)
	rec := &recorder{}
	acct := fakeAccount(s)
	acct.MaxMessageSize = 10_000
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})

	res, err := e.job.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 5 || res.Deleted != 5 {
		t.Fatalf("run %+v: want the 5 small ones delivered and deleted in one run", res)
	}
	if p := e.problems(ProblemTooLarge); len(p) != 1 || p[0].UIDL != "big" {
		t.Fatalf("too-large problems %v", p)
	}
	left := s.Messages("alice")
	if len(left) != 1 || left[0].UID != "big" {
		t.Fatalf("left on the server: %v", left)
	}
	// Later runs leave it alone without fetching it.
	before := strings.Count(strings.Join(s.Log(), "\n"), "RETR")
	e.clock = e.clock.Add(time.Minute)
	res, err = e.job.Run(context.Background())
	if err != nil || res.Delivered != 0 || len(res.Problems) != 1 || res.Problems[0].Kind != ProblemTooLarge {
		t.Fatalf("second run %+v, %v", res, err)
	}
	if after := strings.Count(strings.Join(s.Log(), "\n"), "RETR"); after != before {
		t.Errorf("the oversized message was fetched again")
	}
	// With a higher limit it is fetched and delivered, but this server
	// sends far more than it lists, so it stays on the server too.
	acct.MaxMessageSize = 1 << 20
	e.clock = e.clock.Add(time.Minute)
	if res := e.run(); res.Delivered != 1 || res.Deleted != 0 || len(res.Problems) != 1 || res.Problems[0].Kind != ProblemSizeMismatch {
		t.Errorf("after raising the limit: %+v", res)
	}
}

// Bug 5: a refused login backed off in memory only, so `pophook once` from
// cron hammered the server every minute. Each Run below is on a fresh Job,
// as a new process would be.
func TestLoginBackoffSurvivesRestart(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{})
	defer s.Close()
	logins := func() int { return strings.Count(strings.Join(s.Log(), "\n"), "PASS ") }
	acct := fakeAccount(s)
	acct.Credential = password("wrong")
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": &recorder{}})
	if _, err := e.job.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "check the user name and password") {
		t.Fatalf("err = %v", err)
	}
	e.newJob()
	e.clock = e.clock.Add(30 * time.Second)
	res, err := e.job.Run(context.Background())
	if err != nil || res.Skipped != SkipAuthBackoff || logins() != 1 {
		t.Fatalf("new process during the back-off: %+v, %v, %d logins", res, err, logins())
	}
	if !res.NextAttempt.Equal(e.clock.Add(30*time.Second)) || !strings.Contains(res.Skip(), "next attempt at") {
		t.Errorf("skip %q, next attempt %s", res.Skip(), res.NextAttempt)
	}
	// A changed password is tried at once.
	acct.Credential = password("secret")
	e.newJob()
	if res := e.run(); res.Skipped != SkipNone || logins() != 2 {
		t.Errorf("after the password changed: %+v, %d logins", res, logins())
	}
}

// The server's LOGIN-DELAY (RFC 2449) is honoured across processes too.
func TestLoginDelaySurvivesRestart(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{Capabilities: []string{"LOGIN-DELAY 900"}})
	defer s.Close()
	e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"hook": &recorder{}})
	e.run()
	e.newJob()
	e.clock = e.clock.Add(5 * time.Minute)
	res := e.run()
	if res.Skipped != SkipLoginDelay || !res.NextAttempt.Equal(e.clock.Add(10*time.Minute)) {
		t.Fatalf("run 5 minutes later: %+v", res)
	}
	e.clock = e.clock.Add(11 * time.Minute)
	if res := e.run(); res.Skipped != SkipNone {
		t.Errorf("run after the delay: %+v", res)
	}
}

// Bug 8: after a rejection, fixing the sink's configuration did not help:
// the message waited hours. A rejection recorded under one configuration
// is offered again when it changes, and only then.
func TestChangedSinkConfigReoffersRejection(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{})
	defer s.Close()
	s.SetMailbox("alice", messages(1, "Subject: %d\n\nbody\n"))
	reject := true
	rec := &recorder{fail: func(*sinks.Message, []byte) error {
		if reject {
			return sinks.Reject(errors.New("HTTP 400 Bad Request"))
		}
		return nil
	}}
	e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"hook": rec})
	e.job.SinkConfig = map[string]string{"hook": "config-A"}
	e.run()
	reject = false
	e.clock = e.clock.Add(time.Minute)
	if res := e.run(); res.Delivered != 0 || rec.calls != 1 {
		t.Fatalf("same configuration: %+v, %d calls; want it still waiting", res, rec.calls)
	}
	e.job.SinkConfig = map[string]string{"hook": "config-B"}
	e.clock = e.clock.Add(time.Minute)
	if res := e.run(); res.Delivered != 1 || res.Deleted != 1 {
		t.Errorf("changed configuration: %+v; want it offered again at once", res)
	}
}

// Bug 9: popa3d answers a bare -ERR to PASS when it cannot open the
// mailbox; that is not certainly a wrong password, and it backs off less.
func TestVagueLoginRefusal(t *testing.T) {
	for _, tc := range []struct {
		reply, says string
		ceiling     time.Duration
	}{
		{"-ERR\r\n", "without saying why", vagueBackoffMax},
		{"-ERR Authentication failed (bad password?)\r\n", "check the user name and password", loginBackoffMax},
	} {
		s := pop3test.NewServer(pop3test.Options{NoCAPA: true, Faults: pop3test.Faults{
			Hook: func(_, line string) (string, bool) {
				if strings.HasPrefix(line, "PASS") {
					return tc.reply, true
				}
				return "", false
			},
		}})
		e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"hook": &recorder{}})
		var waits []time.Duration
		for range 8 {
			_, err := e.job.Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("%q: err = %v, want it to say %q", tc.reply, err, tc.says)
			}
			meta, _ := e.ledger.Account(e.job.Account.LedgerID()).Meta()
			waits = append(waits, meta.Login.NotBefore.Sub(e.clock))
			e.clock = meta.Login.NotBefore
		}
		if waits[0] != loginBackoffMin || waits[7] != tc.ceiling {
			t.Errorf("%q: back-offs %v, want from %s up to %s", tc.reply, waits, loginBackoffMin, tc.ceiling)
		}
		s.Close()
	}
}

// Bug 10: with no CAPA (popa3d) AUTH=plain was sent anyway and its -ERR
// reported as a wrong password. auto uses USER/PASS; an explicit SASL
// mechanism is a configuration error that says so.
func TestNoCAPAServer(t *testing.T) {
	s := pop3test.NewServer(pop3test.Options{NoCAPA: true})
	defer s.Close()
	s.SetMailbox("alice", messages(2, "Subject: %d\n\nbody\n"))
	acct := fakeAccount(s)
	acct.Mechanism = pop3.MechPlain
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": &recorder{}})
	_, err := e.job.Run(context.Background())
	if !errors.Is(err, pop3.ErrMechanism) || strings.Contains(err.Error(), "password") || !strings.Contains(err.Error(), "no CAPA") {
		t.Fatalf("AUTH=plain on a server without CAPA: %v", err)
	}
	if log := strings.Join(s.Log(), "\n"); strings.Contains(log, "AUTH") || strings.Contains(log, "PASS") {
		t.Errorf("credentials were sent: %s", log)
	}
	acct.Mechanism = pop3.MechAuto
	e.newJob() // the mechanism changed: the credential fingerprint differs
	if res := e.run(); res.Delivered != 2 {
		t.Errorf("auto: %+v", res)
	}
}

// The status of a job can be read while a run holds it.
func TestStatusDuringRun(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{})
	defer s.Close()
	s.SetMailbox("alice", messages(1, "Subject: %d\n\nbody\n"))
	inside, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	rec := &recorder{fail: func(*sinks.Message, []byte) error {
		once.Do(func() { close(inside) })
		<-release
		return nil
	}}
	e := newEnv(t, fakeAccount(s), map[string]sinks.Sink{"hook": rec})
	done := make(chan Result)
	go func() {
		res, _ := e.job.Run(context.Background())
		done <- res
	}()
	<-inside
	got := make(chan Status)
	go func() { got <- e.job.Status() }()
	select {
	case st := <-got:
		if !st.Running || st.Account != "support" || st.Last != nil {
			t.Errorf("status during the first run: %+v", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Status blocked while a run held the job")
	}
	close(release)
	res := <-done
	if st := e.job.Status(); st.Running || st.Last == nil || st.Last.Delivered != res.Delivered {
		t.Errorf("status after the run: %+v", st)
	}
}

// The worker's boundary: no MIME, HTTP or configuration package is linked
// into it.
func TestWorkerDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep == "net/http" || strings.HasPrefix(dep, "mime") || strings.Contains(dep, "go-message") ||
			strings.Contains(dep, "internal/config") || strings.Contains(dep, "golang.org/x/text") {
			t.Errorf("worker depends on %s", dep)
		}
	}
}

// tokenCred is an OAuth2-like credential: its secret changes by itself,
// Invalidate makes the next one fresh, and it is fingerprinted by what is
// configured.
type tokenCred struct {
	tokens []string // handed out in turn; Invalidate moves on
	i      int
	calls  int
	err    error
}

func (c *tokenCred) Secret(context.Context) (string, error) {
	c.calls++
	if c.err != nil {
		return "", c.err
	}
	return c.tokens[min(c.i, len(c.tokens)-1)], nil
}
func (c *tokenCred) Invalidate()         { c.i++ }
func (c *tokenCred) Fingerprint() string { return "client-1" }

// An XOAUTH2 refusal gets one fresh token before it counts.
func TestXOAUTH2RefreshesOnceBeforeFailing(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{SASL: []string{"XOAUTH2"}, NoUser: true, Tokens: map[string]string{"alice": "fresh"}})
	defer s.Close()
	s.SetMailbox("alice", messages(1, "Subject: %d\n\nbody\n"))
	cred := &tokenCred{tokens: []string{"stale", "fresh"}}
	acct := fakeAccount(s)
	acct.Mechanism, acct.Credential = pop3.MechXOAUTH2, cred
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": &recorder{}})
	if res := e.run(); res.Delivered != 1 || cred.i != 1 {
		t.Fatalf("run %+v after %d invalidations; want the message delivered with the second token", res, cred.i)
	}
	// Both tokens refused: one retry, then an authentication failure.
	cred2 := &tokenCred{tokens: []string{"stale", "revoked"}}
	acct.Credential = cred2
	e.newJob()
	_, err := e.job.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "check the user name and password") || cred2.i != 1 {
		t.Errorf("refused twice: %v after %d invalidations", err, cred2.i)
	}
}

// A credential refused before any login (a revoked refresh token) backs
// off like a wrong password, and the back-off spares the token endpoint.
func TestCredentialRefusedBacksOff(t *testing.T) {
	s := pop3test.NewTLSServer(pop3test.Options{})
	defer s.Close()
	cred := &tokenCred{err: fmt.Errorf("oauth support: the refresh token was revoked: %w", ErrCredentialRefused)}
	acct := fakeAccount(s)
	acct.Mechanism, acct.Credential = pop3.MechXOAUTH2, cred
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": &recorder{}})
	res, err := e.job.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "revoked") || !res.LoginRefused {
		t.Fatalf("run: %+v, %v", res, err)
	}
	if len(s.Log()) != 0 {
		t.Errorf("the server was contacted: %q", s.Log())
	}
	e.newJob()
	e.clock = e.clock.Add(30 * time.Second)
	res, err = e.job.Run(context.Background())
	if err != nil || res.Skipped != SkipAuthBackoff || cred.calls != 1 {
		t.Errorf("within the back-off: %+v, %v, %d token requests (want 1 in all)", res, err, cred.calls)
	}
}
