package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/internal/testutil/faultrow"
	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker/pop3"
	"github.com/pophook/pophook/worker/pop3/pop3test"
)

// Issue 13, point 5: authentication faults at the worker level, where the
// clock can be injected. A simulated day of `@every 1m` is 1440 ticks of
// the job against a real Dovecot that refuses the password; the login
// attempts are counted where the server sees them (a TCP proxy in front
// of it, cross-checked against Dovecot's own log).

// connCounter is a TCP proxy in front of a server that counts the
// connections made through it: every login attempt is one connection.
type connCounter struct {
	ln     net.Listener
	target string
	n      atomic.Int32
	wg     sync.WaitGroup
}

func startConnCounter(t *testing.T, target string) *connCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connCounter{ln: ln, target: target}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.n.Add(1)
			p.wg.Go(func() { p.forward(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *connCounter) forward(c net.Conn) {
	defer c.Close()
	s, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	defer s.Close()
	done := make(chan struct{}, 2)
	go func() { io.Copy(s, c); s.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, s); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

func (p *connCounter) port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// proxiedDovecotAccount is user on d, reached through p (the certificate
// is valid for 127.0.0.1 too).
func proxiedDovecotAccount(t *testing.T, d *dovecottest.Server, p *connCounter, user, pw string) *Account {
	t.Helper()
	cfg, err := pop3.TLSConfig("127.0.0.1", d.CAFile, false)
	if err != nil {
		t.Fatal(err)
	}
	return &Account{Name: "support", Host: "127.0.0.1", Port: p.port(), TLS: pop3.TLSImplicit, TLSConfig: cfg,
		Username: user, Credential: password(pw), Schedule: "@every 1m", Sinks: []string{"hook"}, MaxMessageSize: 64 << 20}
}

// dovecotRefusals counts Dovecot's "Password mismatch" lines for user,
// waiting (up to 10s) for the count to reach want: Dovecot's log process
// writes after the client has its answer.
func dovecotRefusals(t *testing.T, d *dovecottest.Server, user string, want int) int {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(d.LogFile)
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "passwd-file("+user+",") && strings.Contains(line, "Password mismatch") {
				n++
			}
		}
		if n >= want || time.Now().After(deadline) {
			return n
		}
	}
}

// daySim runs the job at every tick of a simulated day and records the
// minute of each login attempt the server saw.
type daySim struct {
	attempts []int // minutes of the day
	skipped  int   // ticks skipped for the back-off
	other    []string
}

// policyDay is the documented back-off (1 min doubling to ceiling) on a
// one-minute tick over a day: the minutes at which logins are allowed.
func policyDay(ceiling time.Duration) []int {
	var out []int
	for m, fails := 0, 0; m < 1440; {
		out = append(out, m)
		fails++
		wait := min(ceiling, time.Minute<<min(fails-1, 10))
		m += int(wait / time.Minute)
	}
	return out
}

func gaps(minutes []int) []int {
	var out []int
	for i := 1; i < len(minutes); i++ {
		out = append(out, minutes[i]-minutes[i-1])
	}
	return out
}

// simulateDay ticks every minute for a day. fresh makes every tick what a
// new `pophook once` process makes of the data dir: a new Job on a ledger
// opened again; otherwise one Job runs again and again, as the daemon's
// scheduler does (Scheduler.Run calls Job.Run at every tick).
func simulateDay(t *testing.T, acct *Account, attempts func() int, fresh bool) daySim {
	t.Helper()
	dir := t.TempDir()
	spool := filepath.Join(dir, "spool")
	if err := os.MkdirAll(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	start := time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)
	var clock time.Time
	newJob := func(l *state.Ledger) *Job {
		return &Job{Account: acct, Sinks: map[string]sinks.Sink{"hook": rec}, Ledger: l, SpoolDir: spool,
			Now: func() time.Time { return clock }}
	}
	var ledger *state.Ledger
	var job *Job
	open := func() {
		var err error
		if ledger, err = state.Open(dir, time.Second); err != nil {
			t.Fatal(err)
		}
		job = newJob(ledger)
	}
	open()
	defer func() { ledger.Close() }()
	var sim daySim
	for m := range 1440 {
		clock = start.Add(time.Duration(m) * time.Minute)
		if fresh && m > 0 {
			ledger.Close()
			open()
		}
		before := attempts()
		res, err := job.Run(context.Background())
		switch after := attempts(); {
		case after > before:
			sim.attempts = append(sim.attempts, m)
			if err == nil || !res.LoginRefused {
				sim.other = append(sim.other, fmt.Sprintf("minute %d: attempt not reported as refused: %+v, %v", m, res, err))
			}
			if want := clock.Add(min(loginBackoffMax, loginBackoffMin<<min(len(sim.attempts)-1, 10))); res.NextAttempt.After(want) {
				sim.other = append(sim.other, fmt.Sprintf("minute %d: next attempt %s, later than the policy's %s", m, res.NextAttempt, want))
			}
		case res.Skipped == SkipAuthBackoff && err == nil:
			sim.skipped++
		default:
			sim.other = append(sim.other, fmt.Sprintf("minute %d: neither an attempt nor a back-off: %+v, %v", m, res, err))
		}
	}
	if rec.count() != 0 {
		t.Errorf("%d deliveries with a wrong password", rec.count())
	}
	return sim
}

// A wrong password never hammers the server: over a simulated day of
// `@every 1m`, the daemon's way (one job, run at every tick) and cron's
// way (a new `pophook once` every minute, the back-off read from the
// ledger) make the same few attempts, spaced as documented: 1 min doubling
// to 1 h. The attempts are counted at the server.
func TestAuthFaultWrongPasswordDay(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{Users: map[string]string{"alice": "alice-secret", "bob": "bob-secret"}})
	want := policyDay(loginBackoffMax)
	for _, tc := range []struct {
		name, user string
		fresh      bool
	}{{"run", "alice", false}, {"once", "bob", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d.Deliver(t, tc.user, []byte("Subject: waiting\n\nfor the right password\n"))
			p := startConnCounter(t, d.TLSAddr())
			acct := proxiedDovecotAccount(t, d, p, tc.user, "Wrong-Password-1")
			sim := simulateDay(t, acct, func() int { return int(p.n.Load()) }, tc.fresh)
			for _, o := range sim.other {
				t.Error(o)
			}
			t.Logf("%s: %d login attempts in 1440 ticks at minutes %v; gaps %v min; %d ticks skipped",
				tc.name, len(sim.attempts), sim.attempts, gaps(sim.attempts), sim.skipped)
			if fmt.Sprint(sim.attempts) != fmt.Sprint(want) {
				t.Errorf("attempts at minutes %v\nwant (1 min doubling to 1 h) %v", sim.attempts, want)
			}
			if got := dovecotRefusals(t, d, tc.user, len(sim.attempts)); got != len(sim.attempts) {
				t.Errorf("Dovecot logged %d refused logins for %s, the proxy saw %d connections", got, tc.user, len(sim.attempts))
			}
			if n := d.Count(t, tc.user); n != 1 {
				t.Errorf("%d messages on the server, want 1", n)
			}
			if t.Failed() {
				return
			}
			faultrow.Report(t, faultrow.Row{Area: "auth", Fault: "wrong password, `@every 1m` for a simulated day (" + map[bool]string{false: "daemon: one job at every tick", true: "cron: a new `once` job and ledger open every minute"}[tc.fresh] + ")",
				Injection: "Dovecot refuses the password; 1440 ticks on an injected clock; attempts counted by a proxy and in Dovecot's log",
				Rounds:    1440, Messages: 1,
				Result: fmt.Sprintf("%d login attempts per day (gaps %v min); %d ticks skipped; message kept on the server", len(sim.attempts), gaps(sim.attempts)[:7], sim.skipped)})
		})
	}
}

// A refusal without any reason (popa3d's bare "-ERR", which it also sends
// for a mailbox it cannot open) backs off too, capped at 10 minutes.
func TestAuthFaultVagueRefusalDay(t *testing.T) {
	var passes atomic.Int32
	s := pop3test.NewTLSServer(pop3test.Options{NoCAPA: true, Faults: pop3test.Faults{
		Hook: func(user, line string) (string, bool) {
			if strings.HasPrefix(line, "PASS") {
				passes.Add(1)
				return "-ERR\r\n", true
			}
			return "", false
		},
	}})
	defer s.Close()
	s.SetMailbox("alice", messages(1, "Subject: %d\n\nbody\n"))
	acct := fakeAccount(s)
	acct.Sinks = []string{"hook"}
	sim := simulateDayVague(t, acct, func() int { return int(passes.Load()) })
	want := policyDay(vagueBackoffMax)
	t.Logf("bare -ERR: %d login attempts in 1440 ticks; gaps %v min", len(sim.attempts), gaps(sim.attempts))
	if fmt.Sprint(sim.attempts) != fmt.Sprint(want) {
		t.Errorf("attempts at minutes %v\nwant (1 min doubling to 10 min) %v", sim.attempts, want)
	}
	for _, o := range sim.other {
		t.Error(o)
	}
	faultrow.Report(t, faultrow.Row{Area: "auth", Fault: "login refused without a reason (bare -ERR, as popa3d)",
		Injection: "pop3test answers every PASS with \"-ERR\"; 1440 one-minute ticks on an injected clock",
		Rounds:    1440, Messages: 1,
		Result: fmt.Sprintf("%d login attempts per day (gaps %v min, capped at 10)", len(sim.attempts), gaps(sim.attempts)[:6])})
}

// simulateDayVague is simulateDay for the vague refusal (its next attempt
// follows the 10-minute ceiling).
func simulateDayVague(t *testing.T, acct *Account, attempts func() int) daySim {
	t.Helper()
	rec := &recorder{}
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})
	start := e.clock
	var sim daySim
	for m := range 1440 {
		e.clock = start.Add(time.Duration(m) * time.Minute)
		before := attempts()
		res, err := e.job.Run(context.Background())
		var pe *pop3.Error
		switch {
		case attempts() > before:
			sim.attempts = append(sim.attempts, m)
			if !res.LoginRefused || !errors.As(err, &pe) || !pe.Vague || !strings.Contains(err.Error(), "without saying why") {
				sim.other = append(sim.other, fmt.Sprintf("minute %d: %+v, %v: want a vague refusal", m, res, err))
			}
		case res.Skipped == SkipAuthBackoff && err == nil:
			sim.skipped++
		default:
			sim.other = append(sim.other, fmt.Sprintf("minute %d: %+v, %v", m, res, err))
		}
	}
	return sim
}

// [IN-USE] from Dovecot with pop3_lock_session = yes (set through
// Options.ExtraConfig): the job skips the run as "mailbox in use", records
// no back-off, and the next tick (one minute later on the job's clock)
// fetches once the other session has gone.
func TestAuthFaultInUseDovecotLockSession(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{ExtraConfig: "protocol pop3 {\n  pop3_lock_session = yes\n}\n"})
	d.Deliver(t, "alice", []byte("Subject: locked\n\nbody\n"))
	p := startConnCounter(t, d.TLSAddr())
	rec := &recorder{}
	acct := proxiedDovecotAccount(t, d, p, "alice", d.Users["alice"])
	e := newEnv(t, acct, map[string]sinks.Sink{"hook": rec})

	// Another client holds the POP3 session (it never deletes anything).
	ctx := context.Background()
	other, err := pop3.Dial(ctx, d.TLSAddr(), pop3.Options{TLSConfig: d.TLSConfig()})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Authenticate(ctx, pop3.MechAuto, "alice", d.Users["alice"]); err != nil {
		t.Fatal(err)
	}
	// pophook's run while the session is held: Dovecot waits about 10s
	// for the lock, then answers the login with -ERR [IN-USE].
	res, err := e.job.Run(ctx)
	t.Logf("run while another session holds the mailbox: skipped %q, err %v", res.Skip(), err)
	if err != nil || res.Skipped != SkipInUse || res.LoginRefused || !strings.Contains(res.SkipDetail, "[IN-USE]") {
		t.Fatalf("run while locked: %+v, %v; want skipped as mailbox in use, not refused", res, err)
	}
	meta, err := e.ledger.Account(acct.LedgerID()).Meta()
	if err != nil {
		t.Fatal(err)
	}
	if meta.Login.Failures != 0 || !meta.Login.NotBefore.IsZero() || res.LoginFailures != 0 || !res.NextAttempt.IsZero() {
		t.Errorf("after [IN-USE]: ledger %+v, result %+v; want no back-off", meta.Login, res)
	}
	// The other client leaves (QUIT with nothing marked deletes nothing);
	// a lock still held for a moment is waited for by Dovecot.
	if err := other.Quit(ctx); err != nil {
		t.Fatal(err)
	}
	e.clock = e.clock.Add(time.Minute) // the next tick
	res, err = e.job.Run(ctx)
	if err != nil || res.Skipped != SkipNone || res.Delivered != 1 || res.Deleted != 1 {
		t.Fatalf("next run after the other session left: %+v, %v; want the message fetched", res, err)
	}
	if rec.count() != 1 || d.Count(t, "alice") != 0 {
		t.Errorf("%d delivered, %d on the server", rec.count(), d.Count(t, "alice"))
	}
	if got := p.n.Load(); got != 2 {
		t.Errorf("pophook made %d connections, want 2 (one locked out, one fetching)", got)
	}
	faultrow.Report(t, faultrow.Row{Area: "auth", Fault: "[IN-USE]: another POP3 session holds the mailbox",
		Injection: "Dovecot with pop3_lock_session = yes and a second client logged in",
		Rounds:    2, Messages: 1,
		Result: "skipped as \"" + string(SkipInUse) + "\", no back-off recorded; fetched at the next tick; " + strconv.Itoa(int(p.n.Load())) + " logins"})
}
