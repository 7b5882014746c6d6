package main

// Process faults (issue #13, point 3): SIGKILL timed to every phase of a
// run, SIGTERM during a large RETR and a slow webhook, two instances on
// one data dir, a damaged ledger, a read-only data dir, and a clock that
// jumps under an OAuth2 account. Each test runs the real binary (or, for
// the clock, the real job against Dovecot) and reports one faultrow row
// per fault once its checks pass.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/oauth"
	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/internal/testutil/faultrow"
	"github.com/pophook/pophook/internal/testutil/syncbuf"
	"github.com/pophook/pophook/sinks"
	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker"
	"github.com/pophook/pophook/worker/pop3"
)

// ---------------------------------------------------------------------
// A pophook process whose log the test reads while it is written.

type pfProc struct {
	cmd    *exec.Cmd
	log    syncbuf.Buffer
	onLine func(line string) // called for every log line, from the reader
	done   chan struct{}     // closed once the log hit EOF and Wait returned
	exited time.Time
	state  *os.ProcessState
}

// pfStart starts the binary with args; onLine (may be nil) sees each line
// of its combined output as it is written.
func pfStart(t *testing.T, env []string, onLine func(p *pfProc, line string), args ...string) *pfProc {
	t.Helper()
	p := &pfProc{done: make(chan struct{})}
	if onLine != nil {
		p.onLine = func(line string) { onLine(p, line) }
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(pophookBinary(t), args...)
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		t.Fatal(err)
	}
	pw.Close()
	go func() {
		br := bufio.NewReaderSize(pr, 1<<16)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				p.log.Write([]byte(line))
				if p.onLine != nil {
					p.onLine(strings.TrimRight(line, "\n"))
				}
			}
			if err != nil {
				break
			}
		}
		pr.Close()
		p.cmd.Wait()
		p.exited = time.Now()
		p.state = p.cmd.ProcessState
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *pfProc) signal(sig syscall.Signal) { p.cmd.Process.Signal(sig) }

// wait waits up to d for the process to end and reports whether it did.
func (p *pfProc) wait(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// killed reports whether the process died of a signal.
func (p *pfProc) killed() bool {
	ws, ok := p.state.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}

func (p *pfProc) code() int { return p.state.ExitCode() }

// pfLogRec is the part of a JSON log line the tests look at.
type pfLogRec struct {
	Msg  string `json:"msg"`
	Key  string `json:"key"`
	Line string `json:"line"` // the POP3 trace
}

func pfParse(line string) (pfLogRec, bool) {
	var r pfLogRec
	if !strings.HasPrefix(line, "{") || json.Unmarshal([]byte(line), &r) != nil {
		return r, false
	}
	return r, true
}

// pfIDs collects the Message-IDs in Maildirs (new and cur). Files are read
// once per path (a message file never changes; Dovecot renames it into
// cur, which is a new path), only their first 4 KiB; files that vanish
// while being read are skipped.
type pfIDs struct{ seen map[string]string }

var pfMessageID = regexp.MustCompile(`(?m)^Message-ID: (<[^>]+>)\r?$`)

func (c *pfIDs) read(t *testing.T, dirs ...string) map[string]int {
	t.Helper()
	if c.seen == nil {
		c.seen = map[string]string{}
	}
	ids := map[string]int{}
	for _, dir := range dirs {
		for _, sub := range []string{"new", "cur"} {
			ents, _ := os.ReadDir(filepath.Join(dir, sub))
			for _, e := range ents {
				path := filepath.Join(dir, sub, e.Name())
				id, ok := c.seen[path]
				if !ok {
					f, err := os.Open(path)
					if err != nil {
						continue // moved or expunged meanwhile
					}
					head := make([]byte, 4096)
					n, _ := io.ReadFull(f, head)
					f.Close()
					m := pfMessageID.FindSubmatch(head[:n])
					if m == nil {
						t.Errorf("%s has no Message-ID in its first 4 KiB: %.80q", path, head[:n])
						continue
					}
					id = string(m[1])
					c.seen[path] = id
				}
				ids[id]++
			}
		}
	}
	return ids
}

// missing returns the ids found in none of dirs, trying again for a while
// so that a file renamed from new to cur between two directory reads is
// not taken for a lost one.
func (c *pfIDs) missing(t *testing.T, want []string, dirs ...string) []string {
	t.Helper()
	var out []string
	for attempt := 0; attempt < 20; attempt++ {
		have := c.read(t, dirs...)
		out = out[:0]
		for _, id := range want {
			if have[id] == 0 {
				out = append(out, id)
			}
		}
		if len(out) == 0 {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return out
}

// ---------------------------------------------------------------------
// 1. SIGKILL at chosen moments: login, fetch and delivery, DELE, QUIT,
// after the run.

// pfTrigger says when a round's SIGKILL is sent: after delay, or when a
// log line matches (then after a jitter of up to 3 ms, none for the last
// two lines of a run).
type pfTrigger struct {
	name  string
	delay func(rng *mrand.Rand) time.Duration // time triggers
	// match is a line trigger; deliveries counts the "delivering" lines so
	// far, nth is the round's pick for the "nth delivery" trigger.
	match func(r pfLogRec, deliveries, nth int) bool
}

var pfTriggers = []pfTrigger{
	{name: "early time", delay: func(rng *mrand.Rand) time.Duration { return time.Duration(rng.IntN(40_000)) * time.Microsecond }},
	{name: "nth delivery", match: func(r pfLogRec, deliveries, nth int) bool { return r.Msg == "delivering" && deliveries == nth }},
	{name: "C: DELE", match: func(r pfLogRec, _, _ int) bool { return r.Msg == "pop3" && strings.HasPrefix(r.Line, "C: DELE ") }},
	{name: "C: QUIT", match: func(r pfLogRec, _, _ int) bool { return r.Msg == "pop3" && r.Line == "C: QUIT" }},
	{name: "QUIT answered", match: func(r pfLogRec, _, _ int) bool {
		return r.Msg == "pop3" && strings.HasPrefix(r.Line, "S: +OK") && strings.Contains(strings.ToLower(r.Line), "logging out")
	}},
	{name: "fetch done", match: func(r pfLogRec, _, _ int) bool { return r.Msg == "fetch done" }},
	{name: "late time", delay: func(rng *mrand.Rand) time.Duration {
		return 40*time.Millisecond + time.Duration(rng.IntN(160_000))*time.Microsecond
	}},
}

// pfPhases name where a kill landed, judged from what the process had
// logged when it died.
const (
	phaseLogin   = "start and login"
	phaseFetch   = "fetch and delivery"
	phaseDele    = "DELE and QUIT"
	phaseAfter   = "after the run"
	phaseMissed  = "exited before the kill"
	phaseUnknown = "unknown"
)

func pfPhase(log string, killed bool) string {
	if !killed {
		return phaseMissed
	}
	loggedIn, wrapUp, done := false, false, false
	for _, line := range strings.Split(log, "\n") {
		r, ok := pfParse(line)
		if !ok {
			continue
		}
		switch {
		case r.Msg == "logged in":
			loggedIn = true
		case r.Msg == "pop3" && (strings.HasPrefix(r.Line, "C: DELE ") || r.Line == "C: QUIT"):
			wrapUp = true
		case r.Msg == "fetch done" || r.Msg == "fetch failed" || r.Msg == "fetch skipped":
			done = true
		}
	}
	switch {
	case done:
		return phaseAfter
	case wrapUp:
		return phaseDele
	case loggedIn:
		return phaseFetch
	}
	return phaseLogin
}

// TestProcessFaultSIGKILLPhases is TestCrashSafety with the kills aimed:
// each round picks a trigger (a moment, the nth "delivering", the DELE or
// QUIT command, QUIT's answer, the end of the run) and SIGKILLs `pophook
// once` there. After every round, each message must be on the server or
// in the Maildir (a message gone from both was deleted early); at the end
// a clean run must leave every message in the Maildir once, and every
// repeated delivery must have been in flight at a kill. The rounds are
// counted by the phase the kill landed in, judged from the log the process
// wrote before it died.
//
// PHTEST_FAULT_ROUNDS sets the rounds (default 21); PHTEST_CRASH_SEED the
// seed.
func TestProcessFaultSIGKILLPhases(t *testing.T) {
	rounds := faultrow.Rounds(t, 21)
	seed := uint64(time.Now().UnixNano())
	if os.Getenv("PHTEST_CRASH_SEED") != "" {
		seed = uint64(envInt(t, "PHTEST_CRASH_SEED", 0))
	}
	t.Logf("rounds %d, seed %d (PHTEST_CRASH_SEED=%d reproduces the choices, not the timing)", rounds, seed, seed)
	rng := mrand.New(mrand.NewPCG(seed, 0x2545f4914f6cdd1d))

	d := dovecottest.Start(t, dovecottest.Options{})
	dir := t.TempDir()
	mdir := filepath.Join(dir, "Maildir")
	env := dovecotEnv(d, filepath.Join(dir, "data"), mdir, "POPHOOK_LOG_FORMAT=json", "POPHOOK_LOG_LEVEL=debug")
	server := d.MaildirPath("alice")

	var (
		ids       pfIDs
		sent      []string
		inFlight  = map[string]bool{}
		repeats   []string
		phases    = map[string]int{}
		byTrigger = map[string]map[string]int{}
		earlyDele = map[string]bool{}
	)
	for round := 0; round < rounds; round++ {
		for range 1 + rng.IntN(5) {
			d.Deliver(t, "alice", crashMessage(len(sent), rng))
			sent = append(sent, fmt.Sprintf("<crash-%d@pophook.test>", len(sent)))
		}
		trig := pfTriggers[round%len(pfTriggers)]
		jitter := time.Duration(rng.IntN(3000)) * time.Microsecond
		if trig.name == "QUIT answered" || trig.name == "fetch done" {
			jitter = 0 // the process ends within milliseconds of these
		}
		var fired atomic.Bool
		deliveries := 0
		nth := 1 + rng.IntN(3)
		var onLine func(p *pfProc, line string)
		if trig.match != nil {
			onLine = func(p *pfProc, line string) {
				r, ok := pfParse(line)
				if !ok {
					return
				}
				if r.Msg == "delivering" {
					deliveries++
				}
				if trig.match(r, deliveries, nth) && fired.CompareAndSwap(false, true) {
					time.Sleep(jitter)
					p.signal(syscall.SIGKILL)
				}
			}
		}
		p := pfStart(t, env, onLine, "once")
		timer := time.AfterFunc(time.Hour, func() {})
		if trig.delay != nil {
			timer = time.AfterFunc(trig.delay(rng), func() { p.signal(syscall.SIGKILL) })
		}
		ok := p.wait(60 * time.Second)
		timer.Stop()
		if !ok {
			t.Fatalf("round %d: pophook once still running after 60s:\n%s", round, p.log.String())
		}
		log := p.log.String()
		killed := p.killed()
		if !killed && p.code() != 0 && !strings.Contains(log, "mailbox in use") {
			t.Fatalf("round %d: pophook once exited %d without being killed:\n%s", round, p.code(), log)
		}
		phase := pfPhase(log, killed)
		phases[phase]++
		if byTrigger[trig.name] == nil {
			byTrigger[trig.name] = map[string]int{}
		}
		byTrigger[trig.name][phase]++
		rep, flight := readLog(t, []byte(log))
		repeats = append(repeats, rep...)
		if killed {
			for k := range flight {
				inFlight[k] = true
			}
		}
		// Never neither: what left the server is in the Maildir.
		for _, id := range ids.missing(t, sent, server, mdir) {
			if !earlyDele[id] {
				earlyDele[id] = true
				t.Errorf("round %d (%s, %s): %s is neither on the server nor in the Maildir", round, trig.name, phase, id)
			}
		}
	}

	// A clean run delivers what is left.
	var final []byte
	for range 3 {
		var wasKilled bool
		final, wasKilled = runOnce(t, pophookBinary(t), env, 0)
		if wasKilled {
			t.Fatal("the clean run was killed")
		}
		rep, _ := readLog(t, final)
		repeats = append(repeats, rep...)
		if d.Count(t, "alice") == 0 {
			break
		}
	}
	if n := d.Count(t, "alice"); n != 0 {
		t.Fatalf("%d messages still on the server after clean runs; last log:\n%s", n, final)
	}
	got := ids.read(t, mdir)
	lost := 0
	for _, id := range sent {
		switch got[id] {
		case 1:
		case 0:
			lost++
			t.Errorf("%s was lost: not in the Maildir and not on the server", id)
		default:
			t.Errorf("%s is in the Maildir %d times", id, got[id])
		}
	}
	if len(got) != len(sent) {
		t.Errorf("the Maildir holds %d distinct messages, %d were sent", len(got), len(sent))
	}
	for _, k := range repeats {
		if !inFlight[k] {
			t.Errorf("delivery %s was repeated but was not in flight at any kill", k)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(byTrigger)) {
		t.Logf("trigger %-14s -> %v", name, byTrigger[name])
	}
	summary := fmt.Sprintf("%s %d, %s %d, %s %d, %s %d, %s %d", phaseLogin, phases[phaseLogin], phaseFetch, phases[phaseFetch],
		phaseDele, phases[phaseDele], phaseAfter, phases[phaseAfter], phaseMissed, phases[phaseMissed])
	t.Logf("rounds %d, messages %d, lost %d, early DELE %d, repeated deliveries %d (all in flight at a kill); kills by phase: %s",
		rounds, len(sent), lost, len(earlyDele), len(repeats), summary)
	// Every phase the test aims at must have been hit, or it did not test
	// what it says.
	if rounds >= 2*len(pfTriggers) {
		for _, ph := range []string{phaseLogin, phaseFetch, phaseDele} {
			if phases[ph] == 0 {
				t.Errorf("no kill landed in %s in %d rounds", ph, rounds)
			}
		}
	}
	faultrow.Report(t, faultrow.Row{
		Area: "process", Fault: "SIGKILL at login, during fetch and delivery, DELE, QUIT and after the run",
		Injection: "pophook once against Dovecot (Maildir sink), SIGKILLed 0-40 ms or 40-200 ms after start, or on a debug log line (the nth delivering, C: DELE, C: QUIT, plus 0-3 ms; QUIT's +OK, fetch done); 1-5 new messages a round, a fifth of them 100-400 KB",
		Rounds:    rounds, Messages: len(sent), Lost: lost, Repeated: len(repeats), EarlyDele: len(earlyDele),
		Result: "no loss, no early DELE, repeats only of deliveries in flight; kills landed: " + summary,
	})
}

// ---------------------------------------------------------------------
// A webhook receiver (raw format) that counts deliveries by key and by
// Message-ID, tells the test when a request arrives and can hold it.

type pfReceiver struct {
	mu      sync.Mutex
	byKey   map[string]int
	byID    map[string]int
	keyOf   map[string]string // Message-ID -> key
	entered chan string       // Message-ID of each request, once its body is read
	// hold says how long to hold a request before answering; a negative
	// duration holds it until gate is closed.
	hold func(id string) time.Duration
	gate chan struct{}
}

func newPFReceiver(t *testing.T) (*pfReceiver, string) {
	t.Helper()
	rc := &pfReceiver{byKey: map[string]int{}, byID: map[string]int{}, keyOf: map[string]string{}, entered: make(chan string, 1024),
		gate: make(chan struct{})}
	srv := httptest.NewUnstartedServer(rc)
	srv.Listener.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return rc, srv.URL + "/in"
}

func (rc *pfReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	head := make([]byte, 4096)
	n, _ := io.ReadFull(r.Body, head)
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		http.Error(w, "short body", http.StatusBadRequest)
		return
	}
	id := "?"
	if m := pfMessageID.FindSubmatch(head[:n]); m != nil {
		id = string(m[1])
	}
	key := r.Header.Get("Idempotency-Key")
	rc.mu.Lock()
	rc.byKey[key]++
	rc.byID[id]++
	rc.keyOf[id] = key
	hold := time.Duration(0)
	if rc.hold != nil {
		hold = rc.hold(id)
	}
	rc.mu.Unlock()
	select {
	case rc.entered <- id:
	default:
	}
	switch {
	case hold < 0:
		select {
		case <-rc.gate:
		case <-r.Context().Done():
		}
	case hold > 0:
		select {
		case <-time.After(hold):
		case <-r.Context().Done():
		}
	}
	w.WriteHeader(http.StatusAccepted)
}

func (rc *pfReceiver) setHold(f func(id string) time.Duration) {
	rc.mu.Lock()
	rc.hold = f
	rc.mu.Unlock()
}

func (rc *pfReceiver) counts() (byID, byKey map[string]int, keyOf map[string]string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return maps.Clone(rc.byID), maps.Clone(rc.byKey), maps.Clone(rc.keyOf)
}

// pfWebhookEnv is the environment for account "support" on d delivering
// raw messages to url.
func pfWebhookEnv(d *dovecottest.Server, dataDir, url string, extra ...string) []string {
	return dovecotEnv(d, dataDir, filepath.Join(filepath.Dir(dataDir), "unused-Maildir"), append([]string{
		"POPHOOK_SINKS=hook", "POPHOOK_ACCOUNT_SUPPORT_SINKS=hook",
		"POPHOOK_SINK_HOOK_TYPE=webhook", "POPHOOK_SINK_HOOK_URL=" + url, "POPHOOK_SINK_HOOK_FORMAT=raw",
		"POPHOOK_SINK_HOOK_TIMEOUT=15s", "POPHOOK_SINK_HOOK_BUDGET=20s",
		"POPHOOK_LOG_FORMAT=json", "POPHOOK_LOG_LEVEL=debug",
		"POPHOOK_ACCOUNT_SUPPORT_SCHEDULE=@every 1h",
	}, extra...)...)
}

// pfBig is a message of about size octets with the given Message-ID.
func pfBig(id string, size int) []byte {
	var b bytes.Buffer
	b.Grow(size + 200)
	fmt.Fprintf(&b, "From: big@pophook.test\nSubject: big\nMessage-ID: %s\n\n", id)
	line := strings.Repeat("0123456789abcdef", 4) + "\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}

func pfSmall(id string) []byte {
	return fmt.Appendf(nil, "From: small@pophook.test\nSubject: small\nMessage-ID: %s\n\nbody of %s\n", id, id)
}

// shutdownBound is how long pophook may take to stop after SIGTERM in
// these tests: the message in hand may take the sink's BUDGET (20s here),
// DELE and QUIT are bounded by the worker's wrapUpTimeout (30s), plus
// slack for a busy machine. The deploy files allow 120s.
const shutdownBound = 20*time.Second + 30*time.Second + 15*time.Second

// pfBodies counts the message bodies the process read from the server
// (the trace's "S: [N octets of message body]" lines) and their octets.
func pfBodies(log string) (n int, octets int64) {
	re := regexp.MustCompile(`^S: \[(\d+) octets of message body\]$`)
	for _, line := range strings.Split(log, "\n") {
		r, ok := pfParse(line)
		if !ok || r.Msg != "pop3" {
			continue
		}
		if m := re.FindStringSubmatch(r.Line); m != nil {
			v, _ := strconv.ParseInt(m[1], 10, 64)
			n++
			octets += v
		}
	}
	return n, octets
}

// pfCheckClean runs `pophook once` until the server is empty and checks
// that the receiver then holds every id, each once, except those in
// mayRepeat (in flight at a kill), which may have come twice under the
// same key. It returns how many deliveries were repeats.
func pfCheckClean(t *testing.T, d *dovecottest.Server, env []string, rc *pfReceiver, ids []string, mayRepeat map[string]bool) (repeated, lost int) {
	t.Helper()
	rc.setHold(nil)
	for range 3 {
		out, code := runBin(t, env, "once")
		if code != 0 {
			t.Errorf("clean run: exit %d:\n%s", code, pfTail(out, 30))
		}
		if d.Count(t, "alice") == 0 {
			break
		}
	}
	if n := d.Count(t, "alice"); n != 0 {
		t.Errorf("%d messages on the server after clean runs", n)
	}
	byID, byKey, keyOf := rc.counts()
	for _, id := range ids {
		switch n := byID[id]; {
		case n == 0:
			lost++
			t.Errorf("%s never reached the receiver", id)
		case n == 1:
		case mayRepeat[id] && n == 2 && byKey[keyOf[id]] == 2:
			repeated++
		default:
			t.Errorf("%s reached the receiver %d times (its key %d times)", id, n, byKey[keyOf[id]])
		}
	}
	return repeated, lost
}

func pfTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ---------------------------------------------------------------------
// 2. SIGTERM during a large RETR and during a slow webhook.

// TestProcessFaultSIGTERM: the first SIGTERM finishes the message in hand
// (or leaves it undelivered on the server), deletes only what is recorded,
// QUITs and exits within the bound; a second one exits at once. Each case
// runs the daemon (`run`) and `once` in turn and ends with a clean run
// that must deliver everything exactly once.
func TestProcessFaultSIGTERM(t *testing.T) {
	// Each round moves over 100 MiB; a long run gets at most 8 of them.
	rounds := min(faultrow.Rounds(t, 2), 8)
	modes := func(round int) string { return []string{"once", "run"}[round%2] }
	// What the large RETR rounds saw, for the checks after them.
	var (
		drained   []string // rounds that read bodies after the stop and dropped them
		onceZero  []string // once rounds that exited 0 with mail left on the server
		bigRounds int
	)

	t.Run("large RETR", func(t *testing.T) {
		const big = 40 << 20
		d := dovecottest.Start(t, dovecottest.Options{})
		rc, url := newPFReceiver(t)
		var (
			all         []string
			midRetr     int
			took        []time.Duration
			codes       []string
			discarded   int
			discardedMB int64
		)
		for round := range rounds {
			mode := modes(round)
			var ids []string
			for i := range 3 {
				bid := fmt.Sprintf("<term-big-%d-%d@pophook.test>", round, i)
				sid := fmt.Sprintf("<term-small-%d-%d@pophook.test>", round, i)
				d.Deliver(t, "alice", pfBig(bid, big))
				d.Deliver(t, "alice", pfSmall(sid))
				ids = append(ids, bid, sid)
			}
			all = append(all, ids...)
			data := filepath.Join(t.TempDir(), "data")
			env := pfWebhookEnv(d, data, url)
			p := pfStart(t, env, nil, mode)
			// SIGTERM while the first large message is coming in: its
			// spool file has some of it but not all.
			spool := filepath.Join(data, "spool")
			var sentAt time.Time
			var seen int64
			deadline := time.Now().Add(30 * time.Second)
			for sentAt.IsZero() && time.Now().Before(deadline) {
				ents, _ := os.ReadDir(spool)
				for _, e := range ents {
					if fi, err := e.Info(); err == nil && fi.Size() > 1<<20 {
						seen = fi.Size()
						sentAt = time.Now()
						p.signal(syscall.SIGTERM)
						break
					}
				}
				time.Sleep(500 * time.Microsecond)
			}
			if sentAt.IsZero() {
				t.Fatalf("%s: no spool file grew past 1 MiB within 30s:\n%s", mode, pfTail(p.log.String(), 30))
			}
			if seen < big-(1<<20) {
				midRetr++
			}
			if !p.wait(shutdownBound) {
				t.Fatalf("%s: still running %s after SIGTERM (bound: the sink's BUDGET plus the 30s wrap-up):\n%s",
					mode, shutdownBound, pfTail(p.log.String(), 40))
			}
			took = append(took, p.exited.Sub(sentAt))
			log := p.log.String()
			if p.killed() {
				t.Fatalf("%s: died of a signal after SIGTERM: %v", mode, p.state)
			}
			byID, _, _ := rc.counts()
			delivered := 0
			for _, id := range ids {
				delivered += min(byID[id], 1)
			}
			left := d.Count(t, "alice")
			codes = append(codes, fmt.Sprintf("%s exit %d (%d delivered, %d left)", mode, p.code(), delivered, left))
			switch {
			case mode == "run" && p.code() != 0:
				t.Errorf("run: exit %d after SIGTERM, want 0:\n%s", p.code(), pfTail(log, 20))
			case mode == "once" && p.code() != 0 && p.code() != 1:
				t.Errorf("once: exit %d after SIGTERM, want 0 or 1:\n%s", p.code(), pfTail(log, 20))
			}
			// Only the message in hand may have been delivered, and what
			// was delivered is deleted (recorded, then DELE), the rest is
			// on the server.
			if delivered > 1 {
				t.Errorf("%s: %d messages delivered after SIGTERM during the first RETR; want at most the message in hand", mode, delivered)
			}
			if left != len(ids)-delivered {
				t.Errorf("%s: %d messages on the server, %d delivered of %d: a delivered message was not deleted, or an undelivered one was", mode, left, delivered, len(ids))
			}
			n, octets := pfBodies(log)
			if n > delivered {
				discarded += n - delivered
				discardedMB += octets >> 20
			}
			bigRounds++
			if n > delivered+1 {
				drained = append(drained, fmt.Sprintf("%s read %d bodies (%d MiB) and delivered %d", mode, n, octets>>20, delivered))
			}
			if mode == "once" && p.code() == 0 && left > 0 {
				onceZero = append(onceZero, fmt.Sprintf("exit 0 with %d of %d messages still on the server", left, len(ids)))
			}
			t.Logf("%s: SIGTERM with %d MiB of the first message spooled; exit %d after %s; bodies read %d (%d MiB), delivered %d",
				mode, seen>>20, p.code(), p.exited.Sub(sentAt).Round(time.Millisecond), n, octets>>20, delivered)
			if !strings.Contains(log, "stopping") && !strings.Contains(log, "pophook stopped") {
				t.Logf("%s: the log does not say it stopped early:\n%s", mode, pfTail(log, 10))
			}
			// A clean run finishes the job.
			rep, lost := pfCheckClean(t, d, env, rc, ids, nil)
			if rep != 0 || lost != 0 {
				t.Errorf("%s: repeated %d, lost %d", mode, rep, lost)
			}
		}
		if midRetr == 0 {
			t.Errorf("no SIGTERM landed while a large message was being fetched")
		}
		t.Logf("exit statuses: %s; bodies read after the stop and dropped: %d (%d MiB)", strings.Join(codes, "; "), discarded, discardedMB)
		faultrow.Report(t, faultrow.Row{
			Area: "process", Fault: "SIGTERM during a 40 MiB RETR",
			Injection: "pophook run or once against Dovecot (raw webhook); SIGTERM once the first message's spool file holds over 1 MiB; then a clean once",
			Rounds:    rounds, Messages: len(all), Lost: 0, Repeated: 0, EarlyDele: 0,
			Result: fmt.Sprintf("no loss or repeat; exited within %s of SIGTERM (bound %s); %d of %d signals landed mid-RETR; %s",
				slices.Max(took).Round(time.Millisecond), shutdownBound, midRetr, rounds, strings.Join(codes, "; ")),
		})
	})

	// After SIGTERM nothing but the message in hand should come from the
	// server: the RETRs already pipelined are read to the end and dropped
	// (up to the pipelining window, 16 messages of up to MAX_MESSAGE_SIZE),
	// which on a slow link takes far longer than any stop timeout.
	t.Run("large RETR: nothing more read after SIGTERM", func(t *testing.T) {
		if bigRounds == 0 {
			t.Fatal("the large RETR rounds did not run")
		}
		for _, d := range drained {
			t.Errorf("after SIGTERM during the first RETR, pophook %s: the pipelined RETRs were read to the end and dropped before QUIT, so the time to stop grows with the size of the mailbox", d)
		}
	})
	// README: "pophook once exits 0 when everything was delivered, 1 with
	// one line per problem otherwise".
	t.Run("large RETR: once stopped early does not exit 0", func(t *testing.T) {
		if bigRounds == 0 {
			t.Fatal("the large RETR rounds did not run")
		}
		for _, z := range onceZero {
			t.Errorf("pophook once stopped by SIGTERM: %s; a cron job or CI step takes that for a complete pass", z)
		}
	})

	t.Run("slow webhook", func(t *testing.T) {
		const hold = 5 * time.Second
		d := dovecottest.Start(t, dovecottest.Options{})
		rc, url := newPFReceiver(t)
		var (
			all   []string
			took  []time.Duration
			codes []string
		)
		for round := range rounds {
			mode := modes(round)
			var ids []string
			for i := range 4 {
				id := fmt.Sprintf("<term-slow-%d-%d@pophook.test>", round, i)
				d.Deliver(t, "alice", pfSmall(id))
				ids = append(ids, id)
			}
			all = append(all, ids...)
			first := ids[0]
			rc.setHold(func(id string) time.Duration {
				if id == first {
					return hold
				}
				return 0
			})
			for len(rc.entered) > 0 {
				<-rc.entered
			}
			data := filepath.Join(t.TempDir(), "data")
			env := pfWebhookEnv(d, data, url)
			p := pfStart(t, env, nil, mode)
			var sentAt time.Time
			select {
			case id := <-rc.entered:
				if id != first {
					t.Fatalf("%s: first request was for %s, want %s", mode, id, first)
				}
				sentAt = time.Now()
				p.signal(syscall.SIGTERM)
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: no webhook request within 30s:\n%s", mode, pfTail(p.log.String(), 30))
			}
			if !p.wait(shutdownBound) {
				t.Fatalf("%s: still running %s after SIGTERM:\n%s", mode, shutdownBound, pfTail(p.log.String(), 40))
			}
			elapsed := p.exited.Sub(sentAt)
			took = append(took, elapsed)
			log := p.log.String()
			if p.killed() {
				t.Fatalf("%s: died of a signal after SIGTERM: %v", mode, p.state)
			}
			byID, _, _ := rc.counts()
			left := d.Count(t, "alice")
			codes = append(codes, fmt.Sprintf("%s exit %d (%d left of 4)", mode, p.code(), left))
			if mode == "run" && p.code() != 0 || mode == "once" && p.code() != 0 && p.code() != 1 {
				t.Errorf("%s: exit %d after SIGTERM:\n%s", mode, p.code(), pfTail(log, 20))
			}
			// The message in hand was finished (the receiver answered
			// after hold), recorded and deleted; nothing else started.
			if byID[first] != 1 {
				t.Errorf("%s: the message in hand reached the receiver %d times", mode, byID[first])
			}
			for _, id := range ids[1:] {
				if byID[id] != 0 {
					t.Errorf("%s: %s was delivered after SIGTERM", mode, id)
				}
			}
			if left != 3 {
				t.Errorf("%s: %d on the server, want 3 (the finished message deleted, the others kept)", mode, left)
			}
			if elapsed < hold-time.Second {
				t.Errorf("%s: exited %s after SIGTERM, before the receiver answered (%s): the message in hand was abandoned", mode, elapsed, hold)
			}
			t.Logf("%s: exit %d %s after SIGTERM (the receiver held the request %s)", mode, p.code(), elapsed.Round(time.Millisecond), hold)
			rep, lost := pfCheckClean(t, d, env, rc, ids, nil)
			if rep != 0 || lost != 0 {
				t.Errorf("%s: repeated %d, lost %d", mode, rep, lost)
			}
		}
		faultrow.Report(t, faultrow.Row{
			Area: "process", Fault: "SIGTERM while a webhook takes 5 s to answer",
			Injection: "pophook run or once against Dovecot; SIGTERM when the receiver gets the first message, which it answers 5 s later; then a clean once",
			Rounds:    rounds, Messages: len(all),
			Result: fmt.Sprintf("the message in hand finished, recorded and deleted, nothing else started; exited at most %s after SIGTERM (bound %s); %s",
				slices.Max(took).Round(time.Millisecond), shutdownBound, strings.Join(codes, "; ")),
		})
	})

	t.Run("second signal", func(t *testing.T) {
		const hold = 30 * time.Second
		d := dovecottest.Start(t, dovecottest.Options{})
		rc, url := newPFReceiver(t)
		var (
			all      []string
			repeated int
			took     []time.Duration
		)
		for round := range rounds {
			mode := modes(round)
			var ids []string
			for i := range 3 {
				id := fmt.Sprintf("<term-twice-%d-%d@pophook.test>", round, i)
				d.Deliver(t, "alice", pfSmall(id))
				ids = append(ids, id)
			}
			all = append(all, ids...)
			first := ids[0]
			rc.setHold(func(id string) time.Duration {
				if id == first {
					return hold
				}
				return 0
			})
			for len(rc.entered) > 0 {
				<-rc.entered
			}
			data := filepath.Join(t.TempDir(), "data")
			env := pfWebhookEnv(d, data, url)
			p := pfStart(t, env, nil, mode)
			select {
			case <-rc.entered:
			case <-time.After(30 * time.Second):
				t.Fatalf("%s: no webhook request within 30s:\n%s", mode, pfTail(p.log.String(), 30))
			}
			sentAt := time.Now()
			p.signal(syscall.SIGTERM)
			// The second SIGTERM must be a second one: sent before the
			// child took the first (a loaded machine may not schedule it
			// for a while), the two merge into one pending signal, a
			// graceful stop that waits out hold. pophook logs nothing when
			// it takes the first signal while a delivery is in hand (once
			// mode), so SIGTERM goes again every 300 ms until the child
			// exits: the first that arrives after the first was taken is
			// the second signal. "A second one exits at once": well before
			// the receiver answers.
			sends := 1
			resend := time.NewTicker(300 * time.Millisecond)
			giveUp := time.After(300*time.Millisecond + hold/2)
			for exited := false; !exited; {
				select {
				case <-p.done:
					exited = true
				case <-resend.C:
					p.signal(syscall.SIGTERM)
					sends++
				case <-giveUp:
					resend.Stop()
					t.Fatalf("%s: still running %s after the second SIGTERM (%d sent, 300 ms apart):\n%s",
						mode, hold/2, sends, pfTail(p.log.String(), 20))
				}
			}
			resend.Stop()
			t.Logf("%s: exit %d %s after the first SIGTERM, %d sent", mode, p.code(), p.exited.Sub(sentAt).Round(time.Millisecond), sends)
			took = append(took, p.exited.Sub(sentAt))
			if p.killed() || p.code() != 130 || !strings.Contains(p.log.String(), "second signal") {
				t.Errorf("%s: after two SIGTERMs: %v, want exit 130 saying so:\n%s", mode, p.state, pfTail(p.log.String(), 10))
			}
			if n := d.Count(t, "alice"); n != 3 {
				t.Errorf("%s: %d on the server after the second signal, want all 3 (nothing recorded, nothing deleted)", mode, n)
			}
			// The interrupted delivery may come again, under its key.
			rep, lost := pfCheckClean(t, d, env, rc, ids, map[string]bool{first: true})
			repeated += rep
			if lost != 0 {
				t.Errorf("%s: lost %d", mode, lost)
			}
		}
		faultrow.Report(t, faultrow.Row{
			Area: "process", Fault: "a second SIGTERM while a webhook holds the message in hand",
			Injection: "pophook run or once; SIGTERM, then SIGTERM again every 0.3 s until it exits, while the receiver holds the first request for 30 s; then a clean once",
			Rounds:    rounds, Messages: len(all), Repeated: repeated,
			Result: fmt.Sprintf("exit 130 within %s of the first signal; the interrupted delivery repeated under the same Idempotency-Key, nothing lost",
				slices.Max(took).Round(time.Millisecond)),
		})
	})
}

// ---------------------------------------------------------------------
// 3. Two instances on one data dir.

// TestProcessFaultTwoInstances: while a daemon holds the ledger (and is
// in the middle of a delivery), a second `once`, `run` or `ledger list`
// on the same data dir stops with "ledger is in use", naming the file,
// within a bound; it logs in nowhere and leaves the first one's spool and
// the ledger alone. Afterwards everything is delivered exactly once.
func TestProcessFaultTwoInstances(t *testing.T) {
	rounds := min(faultrow.Rounds(t, 3), 30)
	d := dovecottest.Start(t, dovecottest.Options{})
	rc, url := newPFReceiver(t)
	var ids []string
	for i := range 3 {
		id := fmt.Sprintf("<twice-%d@pophook.test>", i)
		d.Deliver(t, "alice", pfSmall(id))
		ids = append(ids, id)
	}
	rc.setHold(func(id string) time.Duration {
		if id == ids[0] {
			return -1 // until the gate opens, after the second instances
		}
		return 0
	})
	data := filepath.Join(t.TempDir(), "data")
	env := pfWebhookEnv(d, data, url)
	first := pfStart(t, env, nil, "run")
	select {
	case <-rc.entered:
	case <-time.After(30 * time.Second):
		t.Fatalf("the daemon made no delivery within 30s:\n%s", pfTail(first.log.String(), 30))
	}
	ledgerPath := filepath.Join(data, state.FileName)
	spoolBefore, _ := os.ReadDir(filepath.Join(data, "spool"))
	var slowest time.Duration
	cmds := [][]string{{"once"}, {"run"}, {"ledger", "list"}}
	for round := range rounds {
		args := cmds[round%len(cmds)]
		start := time.Now()
		second := pfStart(t, env, nil, args...)
		if !second.wait(30 * time.Second) {
			t.Fatalf("second %v still running 30s after start: it waits for the ledger instead of refusing", args)
		}
		took := second.exited.Sub(start)
		slowest = max(slowest, took)
		out := second.log.String()
		switch {
		case second.killed() || second.code() == 0:
			t.Errorf("second %v: %v, want a non-zero exit:\n%s", args, second.state, out)
		case args[0] == "ledger" && !strings.Contains(out, "in use by a running pophook"):
			// ledger asks the daemon over HTTP; with none it says so.
			t.Errorf("second %v: exit %d without saying the ledger is in use:\n%s", args, second.code(), out)
		case args[0] != "ledger" && (!strings.Contains(out, "ledger is in use by another pophook") || !strings.Contains(out, ledgerPath)):
			t.Errorf("second %v: exit %d without saying the ledger %s is in use:\n%s", args, second.code(), ledgerPath, out)
		case strings.Contains(out, `"msg":"logged in"`):
			t.Errorf("second %v logged in to the server:\n%s", args, out)
		}
		if round < len(cmds) {
			t.Logf("second %v: exit %d after %s: %s", args, second.code(), took.Round(time.Millisecond), strings.TrimSpace(pfTail(out, 1)))
		}
		spool, _ := os.ReadDir(filepath.Join(data, "spool"))
		if len(spool) < len(spoolBefore) {
			t.Errorf("second %v removed the first instance's spool files (%d -> %d)", args, len(spoolBefore), len(spool))
		}
	}
	// The receiver answers the held delivery; the daemon finishes its
	// run (or, after SIGTERM, the message in hand) and stops.
	rc.setHold(nil)
	close(rc.gate)
	first.signal(syscall.SIGTERM)
	if !first.wait(shutdownBound) {
		t.Fatalf("the daemon did not stop within %s of SIGTERM", shutdownBound)
	}
	if first.killed() || first.code() != 0 {
		t.Errorf("daemon: %v after SIGTERM:\n%s", first.state, pfTail(first.log.String(), 20))
	}
	// The ledger is intact: listed, and a clean run repeats nothing.
	if out, code := runBin(t, env, "ledger", "list"); code != 0 {
		t.Errorf("ledger list after both: exit %d:\n%s", code, out)
	}
	rep, lost := pfCheckClean(t, d, env, rc, ids, nil)
	faultrow.Report(t, faultrow.Row{
		Area: "process", Fault: "a second pophook (once, run, ledger list) on the data dir of a running daemon",
		Injection: "pophook run in the middle of a webhook delivery; the second process started against the same POPHOOK_DATA_DIR",
		Rounds:    rounds, Messages: len(ids), Lost: lost, Repeated: rep,
		Result: fmt.Sprintf("once and run refused with \"ledger is in use by another pophook\" naming ledger.db, ledger list with \"in use by a running pophook ... set POPHOOK_HTTP_ADDR, or stop the daemon\"; all within %s (the lock waits 2s), none logged in; the ledger worked afterwards",
			slowest.Round(time.Millisecond)),
	})
}

// ---------------------------------------------------------------------
// 4. A damaged ledger.

// pfPageSize reads the page size from a bbolt file's first meta page.
func pfPageSize(b []byte) int {
	const metaOffset = 16 // page header
	if len(b) >= metaOffset+12 {
		if ps := int(binary.LittleEndian.Uint32(b[metaOffset+8:])); ps >= 512 && ps <= 1<<16 {
			return ps
		}
	}
	return 4096
}

func pfGarbage(b []byte, off, n int) {
	g := make([]byte, n)
	rand.Read(g)
	copy(b[off:], g)
}

func pfSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

// TestProcessFaultDamagedLedger: a ledger.db truncated to half, with
// garbage over the pages holding the records or over its meta pages, or
// of zero length. pophook (once, run, ledger list) must refuse with a
// message naming the file and saying what to do, exit non-zero, deliver
// nothing again and leave the file byte for byte as it was. The accounts
// keep their mail (KEEP=true), so a silently emptied ledger would show as
// every message delivered again.
func TestProcessFaultDamagedLedger(t *testing.T) {
	var uidls []string // of the messages on the server, read from a good ledger
	type damage struct {
		name string
		do   func(t *testing.T, b []byte) []byte
		// mayRecover: bbolt keeps two meta pages; with one damaged it
		// uses the other, an older but consistent state. Then pophook may
		// run, as long as it delivers nothing again.
		mayRecover bool
	}
	damages := []damage{
		{name: "truncated to half", do: func(t *testing.T, b []byte) []byte { return b[:len(b)/2] }},
		{name: "truncated inside the records", do: func(t *testing.T, b []byte) []byte {
			// Cut through the last page that holds a listed message's
			// UIDL, so that live records are gone for certain.
			ps := pfPageSize(b)
			cut := 0
			for off := 2 * ps; off+ps <= len(b); off += ps {
				if slices.ContainsFunc(uidls, func(u string) bool { return bytes.Contains(b[off:off+ps], []byte(u)) }) {
					cut = off + ps/2
				}
			}
			if cut == 0 {
				t.Fatal("no page holds a ledger record")
			}
			return b[:cut]
		}},
		{name: "zero length", do: func(t *testing.T, b []byte) []byte { return b[:0] }},
		{name: "garbage over the record pages", do: func(t *testing.T, b []byte) []byte {
			// Every page (past the two meta pages) that holds a listed
			// message's UIDL: the live leaf is among them, whatever the
			// encoding of the records.
			ps := pfPageSize(b)
			hit := 0
			for off := 2 * ps; off+ps <= len(b); off += ps {
				if slices.ContainsFunc(uidls, func(u string) bool { return bytes.Contains(b[off:off+ps], []byte(u)) }) {
					pfGarbage(b, off, ps)
					hit++
				}
			}
			if hit == 0 {
				t.Fatal("no page holds a ledger record")
			}
			return b
		}},
		{name: "garbage over both meta pages", do: func(t *testing.T, b []byte) []byte {
			ps := pfPageSize(b)
			pfGarbage(b, 0, 2*ps)
			return b
		}},
		{name: "garbage over one meta page", mayRecover: true, do: func(t *testing.T, b []byte) []byte {
			ps := pfPageSize(b)
			pfGarbage(b, ps, ps)
			return b
		}},
	}
	rounds := min(faultrow.Rounds(t, 1), 5)
	d := dovecottest.Start(t, dovecottest.Options{})
	const nmsg = 6
	for i := range nmsg {
		d.Deliver(t, "alice", pfSmall(fmt.Sprintf("<ledger-%d@pophook.test>", i)))
	}
	for _, dm := range damages {
		t.Run(dm.name, func(t *testing.T) {
			refused, recovered, runs := 0, 0, 0
			var message string
			for range rounds {
				dir := t.TempDir()
				data, mdir := filepath.Join(dir, "data"), filepath.Join(dir, "Maildir")
				env := dovecotEnv(d, data, mdir, "POPHOOK_ACCOUNT_SUPPORT_KEEP=true", "POPHOOK_LOG_FORMAT=json")
				if out, code := runBin(t, env, "once"); code != 0 {
					t.Fatalf("first run: exit %d:\n%s", code, out)
				}
				path := filepath.Join(data, state.FileName)
				if uidls == nil {
					l, err := state.Open(data, time.Second)
					if err != nil {
						t.Fatal(err)
					}
					l.Account(state.AccountID(d.Host, "alice")).Each(func(e *state.Entry) error {
						uidls = append(uidls, e.UIDL)
						return nil
					})
					l.Close()
					if len(uidls) != nmsg {
						t.Fatalf("the ledger holds %d entries, want %d", len(uidls), nmsg)
					}
				}
				good, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				bad := dm.do(t, slices.Clone(good))
				if err := os.WriteFile(path, bad, 0o600); err != nil {
					t.Fatal(err)
				}
				want := pfSum(bad)
				for _, args := range [][]string{{"once"}, {"run"}, {"ledger", "list"}} {
					// Each command meets the same damage.
					if err := os.WriteFile(path, bad, 0o600); err != nil {
						t.Fatal(err)
					}
					runs++
					p := pfStart(t, env, nil, args...)
					if !p.wait(10 * time.Second) {
						p.signal(syscall.SIGTERM)
						p.wait(shutdownBound)
						out := p.log.String()
						delivered := strings.Count(out, `"msg":"delivered"`)
						if dm.mayRecover && delivered == 0 && args[0] == "run" {
							recovered++
							continue // the daemon started on the recovered ledger and delivered nothing again
						}
						t.Errorf("%v on a ledger %s: still running after 10s (delivered %d again):\n%s", args, dm.name, delivered, pfTail(out, 20))
						continue
					}
					out := p.log.String()
					after, err := os.ReadFile(path)
					if err != nil {
						t.Errorf("%v: the ledger is gone: %v", args, err)
						continue
					}
					if n := strings.Count(out, `"msg":"delivered"`); n > 0 {
						t.Errorf("%v on a ledger %s delivered %d messages again: the ledger was taken for an empty one:\n%s", args, dm.name, n, pfTail(out, 20))
					}
					if dm.mayRecover && p.code() == 0 {
						recovered++
						continue // read the older meta page; delivered nothing again (checked above)
					}
					if p.killed() || p.code() == 0 {
						t.Errorf("%v on a ledger %s: %v, want a refusal (non-zero exit):\n%s", args, dm.name, p.state, pfTail(out, 20))
						continue
					}
					refused++
					msg := strings.TrimSpace(pfTail(out, 3))
					if message == "" {
						// The refusal without the log lines, the temp dir
						// left out.
						var plain []string
						for _, l := range strings.Split(out, "\n") {
							if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "{") {
								plain = append(plain, l)
							}
						}
						message = "says: " + strings.ReplaceAll(strings.Join(plain, " "), data, "DATA_DIR")
						t.Logf("%v: exit %d: %s", args, p.code(), msg)
					}
					if got := pfSum(after); got != want {
						t.Errorf("%v on a ledger %s changed the file (%d -> %d octets): a damaged ledger must be left as it is", args, dm.name, len(bad), len(after))
					}
					if strings.Contains(out, "goroutine ") || strings.Contains(out, "panic:") {
						t.Errorf("%v on a ledger %s: pophook panicked instead of refusing:\n%s", args, dm.name, pfTail(out, 40))
						continue
					}
					if !strings.Contains(out, path) {
						t.Errorf("%v on a ledger %s: the refusal does not name %s:\n%s", args, dm.name, path, msg)
					}
					if !regexp.MustCompile(`(?i)corrupt|damaged|unreadable|invalid`).MatchString(out) {
						t.Errorf("%v on a ledger %s: the refusal does not say the ledger is damaged:\n%s", args, dm.name, msg)
					}
					if !regexp.MustCompile(`(?i)restore|backup|move it|rename it|remove it|delete it|set it aside`).MatchString(out) {
						t.Errorf("%v on a ledger %s: the refusal does not say what to do (restore a backup, or move the file aside knowing kept mail is then sent again):\n%s", args, dm.name, msg)
					}
				}
				if n := d.Count(t, "alice"); n != nmsg {
					t.Fatalf("%d on the server, want all %d kept (KEEP=true)", n, nmsg)
				}
			}
			faultrow.Report(t, faultrow.Row{
				Area: "process", Fault: "ledger.db " + dm.name,
				Injection: "after a complete once with KEEP=true, the file is damaged; then once, run and ledger list on it",
				Rounds:    runs, Messages: nmsg,
				Result: strings.TrimSuffix(fmt.Sprintf("%d of %d refused with the file unchanged, %d ran on the intact meta page; nothing delivered again; %s",
					refused, runs, recovered, message), "; "),
			})
		})
	}
}

// ---------------------------------------------------------------------
// 5. A data dir pophook cannot write.

// pfROScript runs in a private mount namespace (exec with CLONE_NEWNS;
// Go makes "/" private, so nothing leaks): it makes $1 read-only, by a
// read-only bind mount of itself or a read-only tmpfs, checks that it is,
// and runs the rest of the arguments.
const pfROScript = `set -e
how=$1 d=$2
shift 2
if [ "$how" = bind ]; then
  mount -n --bind "$d" "$d" || exit 97
  mount -n -o remount,bind,ro "$d" || exit 97
else
  mount -n -t tmpfs -o ro,size=64k tmpfs "$d" || exit 97
fi
if touch "$d/.probe" 2>/dev/null; then exit 98; fi
exec "$@"
`

// pfUnavailable skips, or fails under CI=true.
func pfUnavailable(t *testing.T, reason string) {
	t.Helper()
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatal(reason + " (CI=true: a skip counts as a failure)")
	}
	t.Skip(reason)
}

// TestProcessFaultReadOnlyDataDir: pophook against a data dir it cannot
// write must say so (naming the directory and what to change), exit
// non-zero, and fetch and delete nothing: it must not even log in.
// As root, permission bits are not enforced, so the read-only cases use a
// read-only bind mount or tmpfs in a private mount namespace, and the
// permission cases run the binary as nobody (65534).
func TestProcessFaultReadOnlyDataDir(t *testing.T) {
	root := os.Geteuid() == 0
	bin := pophookBinary(t)
	d := dovecottest.Start(t, dovecottest.Options{})
	seq := 0
	// prepare makes a data dir that has seen one complete run, and puts
	// two new messages on the server.
	prepare := func(t *testing.T, base string) (data, mdir string, ids []string) {
		data, mdir = filepath.Join(base, "data"), filepath.Join(base, "Maildir")
		d.Deliver(t, "alice", pfSmall(fmt.Sprintf("<ro-old-%d@pophook.test>", seq)))
		if out, code := runBin(t, dovecotEnv(d, data, mdir), "once"); code != 0 {
			t.Fatalf("first run: exit %d:\n%s", code, out)
		}
		for i := range 2 {
			id := fmt.Sprintf("<ro-%d-%d@pophook.test>", seq, i)
			d.Deliver(t, "alice", pfSmall(id))
			ids = append(ids, id)
		}
		seq++
		return data, mdir, ids
	}
	// check runs cmd and checks the refusal; nothing fetched or deleted.
	check := func(t *testing.T, cmd *exec.Cmd, data, mdir string, ids []string, want ...string) string {
		t.Helper()
		onServer := d.Count(t, "alice")
		inSink := len(maildirIDs(t, mdir))
		var out syncbuf.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		if err := cmd.Start(); err != nil {
			pfUnavailable(t, fmt.Sprintf("cannot start %v: %v", cmd.Args, err))
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(60 * time.Second):
			cmd.Process.Kill()
			<-done
			t.Fatalf("still running after 60s:\n%s", out.String())
		}
		code := cmd.ProcessState.ExitCode()
		if code == 97 || code == 98 {
			pfUnavailable(t, fmt.Sprintf("cannot make a read-only mount (exit %d: 97 mount refused, 98 still writable): %s", code, out.String()))
		}
		text := out.String()
		t.Logf("exit %d after %s: %s", code, time.Since(start).Round(time.Millisecond), strings.TrimSpace(pfTail(text, 2)))
		if err == nil {
			t.Errorf("pophook once succeeded with a data dir it cannot write:\n%s", text)
		}
		for _, w := range want {
			if !strings.Contains(text, w) {
				t.Errorf("the error does not say %q:\n%s", w, text)
			}
		}
		if strings.Contains(text, "corrupt") {
			t.Errorf("a data dir it cannot write is reported as a corrupt ledger:\n%s", text)
		}
		if strings.Contains(text, "logged in") || strings.Contains(text, "fetch done") {
			t.Errorf("pophook logged in although it cannot record anything:\n%s", text)
		}
		if n := d.Count(t, "alice"); n != onServer {
			t.Errorf("%d on the server, was %d: something was deleted", n, onServer)
		}
		if n := len(maildirIDs(t, mdir)); n != inSink {
			t.Errorf("%d in the Maildir, was %d: something was delivered", n, inSink)
		}
		return text
	}
	nsCmd := func(how, dir string, env []string, args ...string) *exec.Cmd {
		cmd := exec.Command("/bin/sh", append([]string{"-c", pfROScript, "pophook-ro", how, dir, bin}, args...)...)
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		return cmd
	}
	// nobody makes the tree under base usable by uid 65534 and returns the
	// credential to run the binary as that user.
	nobody := func(t *testing.T, base string) *syscall.SysProcAttr {
		t.Helper()
		if !root {
			return nil
		}
		for _, p := range []string{filepath.Dir(bin), filepath.Dir(base), base} {
			if err := os.Chmod(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		err := filepath.WalkDir(base, func(p string, _ os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, 65534, 65534)
		})
		if err != nil {
			t.Fatal(err)
		}
		return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}

	t.Run("read-only bind mount of a used data dir", func(t *testing.T) {
		if !root {
			pfUnavailable(t, "a read-only mount needs root (CAP_SYS_ADMIN)")
		}
		data, mdir, ids := prepare(t, t.TempDir())
		out := check(t, nsCmd("bind", data, dovecotEnv(d, data, mdir), "once"), data, mdir, ids, "read-only file system", "POPHOOK_DATA_DIR")
		faultrow.Report(t, faultrow.Row{Area: "process", Rounds: 1, Messages: 2, Fault: "data dir on a read-only mount (ledger.db present)",
			Injection: "read-only bind mount of the data dir in a private mount namespace; pophook once", Result: strings.ReplaceAll(pfTail(out, 1), data, "DATA_DIR")})
	})
	t.Run("new data dir on a read-only file system", func(t *testing.T) {
		if !root {
			pfUnavailable(t, "a read-only mount needs root (CAP_SYS_ADMIN)")
		}
		base := t.TempDir()
		_, mdir, ids := prepare(t, base)
		mnt := filepath.Join(base, "ro")
		if err := os.Mkdir(mnt, 0o700); err != nil {
			t.Fatal(err)
		}
		data := filepath.Join(mnt, "data")
		out := check(t, nsCmd("tmpfs", mnt, dovecotEnv(d, data, mdir), "once"), data, mdir, ids, "read-only file system", "POPHOOK_DATA_DIR")
		faultrow.Report(t, faultrow.Row{Area: "process", Rounds: 1, Messages: 2, Fault: "data dir to be created on a read-only file system",
			Injection: "POPHOOK_DATA_DIR under a read-only tmpfs in a private mount namespace; pophook once", Result: strings.ReplaceAll(pfTail(out, 1), data, "DATA_DIR")})
	})
	t.Run("chmod 0500 data dir and spool, ledger 0400", func(t *testing.T) {
		base := t.TempDir()
		data, mdir, ids := prepare(t, base)
		attr := nobody(t, base)
		for p, mode := range map[string]os.FileMode{data: 0o500, filepath.Join(data, "spool"): 0o500, filepath.Join(data, state.FileName): 0o400} {
			if err := os.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { os.Chmod(data, 0o700); os.Chmod(filepath.Join(data, "spool"), 0o700) })
		cmd := exec.Command(bin, "once")
		cmd.Env, cmd.SysProcAttr = dovecotEnv(d, data, mdir), attr
		out := check(t, cmd, data, mdir, ids, "permission denied", "POPHOOK_DATA_DIR")
		faultrow.Report(t, faultrow.Row{Area: "process", Rounds: 1, Messages: 2, Fault: "data dir, spool and ledger.db without write permission",
			Injection: "chmod 0500 data dir and spool, 0400 ledger.db; pophook once as their owner (nobody when the tests run as root)", Result: strings.ReplaceAll(pfTail(out, 1), data, "DATA_DIR")})
	})
	t.Run("chmod 0500 data dir only", func(t *testing.T) {
		// ledger.db and spool/ stay writable: pophook writes nothing
		// else in the data dir itself (no HTTP token, no OAuth2), so it
		// may work; if it does, it must deliver and delete correctly.
		base := t.TempDir()
		data, mdir, ids := prepare(t, base)
		attr := nobody(t, base)
		if err := os.Chmod(data, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(data, 0o700) })
		var out bytes.Buffer
		cmd := exec.Command(bin, "once")
		cmd.Env, cmd.SysProcAttr, cmd.Stdout, cmd.Stderr = dovecotEnv(d, data, mdir), attr, &out, &out
		err := cmd.Run()
		got := maildirIDs(t, mdir)
		result := ""
		if err == nil {
			for _, id := range ids {
				if got[id] != 1 {
					t.Errorf("%s is in the Maildir %d times after a successful run", id, got[id])
				}
			}
			result = "works: only ledger.db and spool/ are written, both still writable; delivered and deleted as usual"
		} else {
			text := out.String()
			if !strings.Contains(text, "permission denied") || strings.Contains(text, "corrupt") {
				t.Errorf("failed without saying permission denied:\n%s", text)
			}
			for _, id := range ids {
				if got[id] != 0 {
					t.Errorf("%s delivered although the run failed", id)
				}
			}
			result = pfTail(text, 1)
		}
		t.Logf("result: %s", result)
		faultrow.Report(t, faultrow.Row{Area: "process", Rounds: 1, Messages: 2, Fault: "data dir itself without write permission (0500)",
			Injection: "chmod 0500 on the data dir only, after a first run; pophook once as its owner", Result: result})
	})
}

// ---------------------------------------------------------------------
// 6. The clock jumping under an OAuth2 account.

// pfClock is a settable clock for the job and the token source.
type pfClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *pfClock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *pfClock) Set(t time.Time)     { c.mu.Lock(); c.now = t; c.mu.Unlock() }
func (c *pfClock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// pfTokens is a token endpoint that issues access tokens valid for an
// hour of real time, and tells Dovecot's introspection about them.
type pfTokens struct {
	mu     sync.Mutex
	in     *dovecottest.Introspection
	issued []string
}

func (p *pfTokens) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	p.mu.Lock()
	defer p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if r.Form.Get("refresh_token") != "refresh-0" {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant"})
		return
	}
	access := fmt.Sprintf("access-%d", len(p.issued)+1)
	p.issued = append(p.issued, access)
	p.in.SetToken(access, "alice")
	json.NewEncoder(w).Encode(map[string]any{"access_token": access, "token_type": "Bearer", "expires_in": 3600})
}

func (p *pfTokens) count() int { p.mu.Lock(); defer p.mu.Unlock(); return len(p.issued) }

// pfSink counts deliveries by key.
type pfSink struct {
	mu   sync.Mutex
	keys map[string]int
}

func (s *pfSink) Deliver(_ context.Context, m *sinks.Message) error {
	if _, err := io.Copy(io.Discard, m.Reader()); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.keys == nil {
		s.keys = map[string]int{}
	}
	s.keys[m.Key]++
	return nil
}

// TestProcessFaultClockOAuth: the job and its OAuth2 token source share a
// clock that jumps. No process-level clock seam exists (Job.Now and
// oauth.Config.Now are not reachable from the environment), so this runs
// the real job and token source in this process against Dovecot's oauth2
// passdb, one new job and source per run as a new process would make.
// A backwards jump makes an expired token look valid: the server refuses
// it, the job gets one fresh token and logs in, with no back-off. A
// forward jump makes a valid token look expired: it is refreshed early.
// Neither costs a message or a back-off.
func TestProcessFaultClockOAuth(t *testing.T) {
	in := dovecottest.StartIntrospection(t, nil)
	d := dovecottest.Start(t, dovecottest.Options{OAuth2: in.OAuth2Options("post")})
	tokens := &pfTokens{in: in}
	srv := httptest.NewServer(tokens)
	defer srv.Close()
	dir := t.TempDir()
	ledger, err := state.Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ledger.Close()
	spool := filepath.Join(dir, "spool")
	if err := os.MkdirAll(spool, 0o700); err != nil {
		t.Fatal(err)
	}
	tlsConfig, err := pop3.TLSConfig(d.Host, d.CAFile, false)
	if err != nil {
		t.Fatal(err)
	}
	clock := &pfClock{now: time.Now()}
	sink := &pfSink{}
	var acct *worker.Account
	// run makes what a new process would (token source, job) and runs it.
	run := func(what string) worker.Result {
		t.Helper()
		src := oauth.New(oauth.Config{
			Account: "support", TokenURL: srv.URL + "/token", ClientID: "client-1",
			RefreshToken: func() (string, error) { return "refresh-0", nil },
			StorePath:    filepath.Join(dir, "oauth.json"), Now: clock.Now,
		})
		acct = &worker.Account{Name: "support", Host: d.Host, Port: d.TLSPort, TLS: pop3.TLSImplicit, TLSConfig: tlsConfig,
			Username: "alice", Credential: src, Mechanism: pop3.MechXOAUTH2, Sinks: []string{"rec"}}
		job := &worker.Job{Account: acct, Sinks: map[string]sinks.Sink{"rec": sink}, Ledger: ledger, SpoolDir: spool, Now: clock.Now}
		res, err := job.Run(context.Background())
		if err != nil || res.Skipped != worker.SkipNone || res.LoginRefused {
			t.Fatalf("%s: %+v, %v", what, res, err)
		}
		meta, err := ledger.Account(acct.LedgerID()).Meta()
		if err != nil || meta.Login.Failures != 0 || !meta.Login.NotBefore.IsZero() {
			t.Errorf("%s: login state %+v (%v): want no back-off", what, meta.Login, err)
		}
		return res
	}
	msgs := 0
	deliver := func() {
		d.Deliver(t, "alice", pfSmall(fmt.Sprintf("<clock-%d@pophook.test>", msgs)))
		msgs++
	}
	deliver()
	if res := run("first run"); res.Delivered != 1 || tokens.count() != 1 {
		t.Fatalf("first run: %+v, %d tokens", res, tokens.count())
	}
	// The provider's hour passes (the token is revoked), but the clock
	// jumps back two hours: the kept token looks valid for three more.
	in.Revoke("access-1")
	clock.Add(-2 * time.Hour)
	deliver()
	if res := run("clock 2h back, token expired"); res.Delivered != 1 || tokens.count() != 2 {
		t.Errorf("clock back: %+v, %d tokens issued; want one fresh token after the refusal", res, tokens.count())
	}
	refused := 0
	for _, r := range in.Requests() {
		if !r.Active {
			refused++
			if r.Token != "access-1" {
				t.Errorf("the server refused %q, want only the expired access-1", r.Token)
			}
		}
	}
	if refused != 1 {
		t.Errorf("the server refused %d logins, want exactly one: the kept token that only looked valid", refused)
	}
	// Forward ten days: the (valid) token looks expired and is replaced.
	clock.Add(10 * 24 * time.Hour)
	deliver()
	if res := run("clock 10 days forward"); res.Delivered != 1 || tokens.count() != 3 {
		t.Errorf("clock forward: %+v, %d tokens issued; want one early refresh", res, tokens.count())
	}
	// A year back with a token the server still takes: reused, fine.
	clock.Add(-365 * 24 * time.Hour)
	deliver()
	if res := run("clock a year back, token valid"); res.Delivered != 1 || tokens.count() != 3 {
		t.Errorf("clock a year back: %+v, %d tokens issued; want the kept token reused", res, tokens.count())
	}
	if n := d.Count(t, "alice"); n != 0 {
		t.Errorf("%d on the server", n)
	}
	repeated := 0
	for _, n := range sink.keys {
		repeated += n - 1
	}
	if len(sink.keys) != msgs || repeated != 0 {
		t.Errorf("sink got %d distinct messages (%d repeats), want %d once each", len(sink.keys), repeated, msgs)
	}
	faultrow.Report(t, faultrow.Row{
		Area: "process", Fault: "clock jumps under an OAuth2 (XOAUTH2) account",
		Injection: "the job's and token source's clock moved 2 h back (kept token expired at the provider), 10 days forward, a year back; Dovecot oauth2 passdb",
		Rounds:    4, Messages: msgs, Repeated: repeated,
		Result: "backwards: the expired token is refused once and replaced in the same run, no back-off; forward: refreshed early; every message delivered once",
	})
}
