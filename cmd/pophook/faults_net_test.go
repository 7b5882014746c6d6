package main

// Network faults between pophook and its POP3 server (issue #13, point 1).
// A real Dovecot sits behind faultproxy; `pophook once` runs as a process,
// round after round, with new mail in between, and the proxy cuts, resets
// or stalls its connections at seeded offsets, or the test kills Dovecot
// and starts it again. The sinks are a Maildir and a real HTTP receiver
// (webhook, raw format) that keeps every request. After every round:
// nothing lost, nothing gone from the server that a sink lacks, every
// delivered message intact, one key per message and one message per key,
// no repeat at all (no pophook process is ever killed here, so nothing is
// in flight at a crash), and the run ended within the bound its faults
// allow. At the end, clean runs must deliver and delete what is left,
// each message exactly once to each sink. TestNetFaultChecks shows that
// each of these checks fails when its promise is broken.
//
// PHTEST_FAULT_SEED reproduces a run; PHTEST_FAULT_ROUNDS sets the rounds
// (faultrow.Rounds). The seed is logged at the start of each test. With
// -v and PHTEST_FAULT_TRACE set, each round is logged with its faults;
// when PHTEST_FAULT_TRACE names a directory, pophook's log of each round
// is written there.

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/internal/testutil/faultproxy"
	"github.com/pophook/pophook/internal/testutil/faultrow"
	"github.com/pophook/pophook/internal/testutil/testcorpus"
	"github.com/pophook/pophook/worker/pop3"
)

// pophook's timeouts, which bound a run: the greeting (and TLS handshake)
// timeout (pop3 defaultGreeting); the POP3 client's wait for progress
// (pop3.Options.Timeout, not configurable); DELE and QUIT together
// (worker.wrapUpTimeout); the webhook's budget per delivery, set here.
const (
	nfGreetingTimeout = 8 * time.Second
	nfPOP3Timeout     = 60 * time.Second
	nfWrapUpTimeout   = 30 * time.Second
	nfHookBudget      = 10 * time.Second
	nfSlack           = 15 * time.Second // a shared, loaded machine

	// nfQuickBound bounds a run of TestNetFaultRandom: its faults are
	// closes (seen at once) and pauses shorter than every timeout, so
	// no timeout may fire; its runs take a second or two.
	nfQuickBound = 2 * nfSlack
	// nfGreetingBound bounds a run whose connections stall in the TLS
	// handshake or before the greeting: one greeting timeout.
	nfGreetingBound = nfGreetingTimeout + nfSlack
	// nfStallBound bounds a run whose connections stall anywhere: one
	// fault per connection, one connection per account, accounts in
	// parallel: one wait for progress, then at worst DELE and QUIT and a
	// delivery.
	nfStallBound = nfPOP3Timeout + nfWrapUpTimeout + nfHookBudget + nfSlack
)

// nfCommands are the commands a plaintext round cuts after.
var nfCommands = []string{"CAPA", "UIDL", "LIST", "RETR", "DELE", "QUIT"}

// TestNetFaultRandom: every connection of a round is faulted at random
// (cut or reset at a seeded offset in either direction, a pause shorter
// than the timeouts, or nothing). Round kinds:
//   - tls: implicit TLS, offsets in the handshake, just after it, and
//     log-uniform into listings and RETR bodies;
//   - stls: STARTTLS; half the faults right after a plaintext line
//     (greeting, STLS, +OK) or a little into the handshake after it;
//   - plain: TLS=none, so that the proxy sees the commands: a cut or
//     reset right after CAPA, UIDL, LIST, RETR, DELE or QUIT (the server
//     got the command, the client never gets the reply) or a few bytes
//     into the next command, or at an offset inside a RETR body;
//   - armed: implicit TLS; the receiver, on getting the last pending
//     message, arms the proxy to cut or reset the client's next bytes
//     (DELE, QUIT) or the server's replies, or to drop the reply to QUIT;
//   - restart: Dovecot killed (SIGKILL) and started again on the same
//     mail, after a random delay or when the receiver gets a given
//     message (so while the session is between RETRs, or at DELE).
func TestNetFaultRandom(t *testing.T) {
	rounds := faultrow.Rounds(t, 48)
	seed := nfSeed(t)
	t.Logf("rounds %d, seed %d (PHTEST_FAULT_SEED=%d reproduces)", rounds, seed, seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	w := nfStart(t, seed, 1, dovecottest.Options{AllowPlaintextAuth: true}) // for TLS=none
	a := w.accts[0]

	// A quarter of the faults in the TLS handshake (and greeting), a
	// quarter just after it (login, LIST/UIDL, the client's commands),
	// half in the server's stream after login: listings and RETR bodies
	// (up to 400 KB).
	hs := nfHandshakeBytes(t, w.d)
	planRng := rand.New(rand.NewPCG(seed, 1))
	weights := map[faultproxy.Action]int{faultproxy.Pass: 2, faultproxy.Cut: 4, faultproxy.Reset: 4, faultproxy.Stall: 1}
	mix := func(toServer float64, lo, hi [2]int64) faultproxy.Plan {
		return faultproxy.Random(planRng, faultproxy.Mix{Weights: weights, ToServer: toServer, MinOffset: lo, MaxOffset: hi,
			Stall: time.Second}) // shorter than every timeout: must be ridden out
	}
	early := mix(0.4, [2]int64{}, hs)
	late := mix(0.4, hs, [2]int64{faultproxy.ToServer: hs[0] + 600, faultproxy.ToClient: hs[1] + 2000})
	body := mix(0, [2]int64{faultproxy.ToClient: hs[1] + 700}, [2]int64{faultproxy.ToClient: hs[1] + 400_000})
	tlsPlan := func(n int) faultproxy.Fault {
		switch planRng.IntN(4) {
		case 0:
			return early(n)
		case 1:
			return late(n)
		}
		return body(n)
	}
	cutOrReset := func() faultproxy.Action {
		if planRng.IntN(2) == 0 {
			return faultproxy.Reset
		}
		return faultproxy.Cut
	}
	// After a plaintext line of STARTTLS: the server's greeting, its
	// reply to STLS, or the client's STLS.
	stlsPlan := func(n int) faultproxy.Fault {
		if planRng.IntN(2) == 0 {
			return tlsPlan(n)
		}
		lines := []struct {
			dir  faultproxy.Dir
			line string
		}{{faultproxy.ToClient, "+OK Dovecot"}, {faultproxy.ToClient, "+OK Begin TLS"}, {faultproxy.ToServer, "STLS"}}
		l := lines[planRng.IntN(len(lines))]
		f := faultproxy.Fault{Action: cutOrReset(), Dir: l.dir, AfterLine: l.line}
		if planRng.IntN(2) == 0 {
			f.Offset = int64(planRng.IntN(1500)) // into the TLS handshake
		}
		return f
	}
	// In clear text: right after a command, a little into the next one,
	// or into the first RETR body.
	plainPlan := func(int) faultproxy.Fault {
		x := planRng.IntN(len(nfCommands) + 2)
		if x >= len(nfCommands) {
			return faultproxy.Fault{Action: cutOrReset(), Dir: faultproxy.ToClient, AfterLine: "From: faults@pophook.test",
				Offset: nfLogUniform(planRng, 400_000)}
		}
		f := faultproxy.Fault{Action: cutOrReset(), Dir: faultproxy.ToServer, AfterLine: nfCommands[x]}
		switch planRng.IntN(6) {
		case 0:
			f.Action, f.Stall = faultproxy.Stall, time.Second
		case 1, 2:
			f.Offset = int64(planRng.IntN(40))
		}
		return f
	}

	for round := range rounds {
		kind := "tls"
		switch x := rng.IntN(100); {
		case round%12 == 5:
			kind = "restart"
		case x < 15:
			kind = "armed"
		case x < 35:
			kind = "stls"
		case x < 55:
			kind = "plain"
		}
		n := rng.IntN(5)
		if kind == "armed" || kind == "restart" || kind == "plain" {
			n++ // something to deliver, delete or break at
		}
		for range n {
			w.deliver(a, rng, false)
		}
		a.tls.SetPlan(nil)
		a.stls.SetPlan(nil)
		mode := "implicit"
		var during func(exited <-chan struct{}) string
		switch kind {
		case "tls":
			a.tls.SetPlan(tlsPlan)
		case "stls":
			a.stls.SetPlan(stlsPlan)
			mode = "starttls"
		case "plain":
			a.stls.SetPlan(plainPlan)
			mode = "none"
		case "armed":
			w.arm(a, nfArmedFault(rng))
		case "restart":
			during = w.restartDuring(a, rng)
		}
		w.round(round, kind, map[string]string{a.name: mode}, nfQuickBound, during)
		w.disarm()
		if t.Failed() {
			t.Fatalf("stopping at round %d (seed %d)", round, seed)
		}
	}
	w.finish()
	w.report(map[string]nfRowText{
		"cut": {"connection cut at an offset (FIN both ways)",
			"faultproxy Cut at a seeded offset into either direction of implicit TLS (or STARTTLS): a quarter in the handshake, a quarter just after it, half log-uniform into the server's listings and RETR bodies"},
		"reset": {"connection reset after the TLS handshake",
			"faultproxy Reset (SO_LINGER 0, RST both ways) at a seeded offset, landing after the handshake"},
		"handshake-reset": {"connection reset during the TLS handshake or greeting",
			"faultproxy Reset at a small offset, before the greeting was read"},
		"stls": {"STARTTLS connection cut or reset after a plaintext line or inside the STLS handshake",
			"faultproxy Cut/Reset at an offset after the greeting, the STLS command or its +OK, on Dovecot's port 110"},
		"command": {"connection cut or reset right after a POP3 command (CAPA, UIDL, LIST, RETR, DELE, QUIT) or inside a RETR body",
			"TLS=none through faultproxy, so that it finds the commands: Cut/Reset right after the first line the client sends starting with the command (the server got it, the reply is lost) or up to 40 bytes into what the client sends next, or log-uniform up to 400 KB after the first message's From: line"},
		"pause": {"connection paused for 1s (shorter than every timeout)",
			"faultproxy Stall for 1s at a seeded offset or after a command"},
		"dele-quit": {"connection cut or reset in DELE or QUIT, or the reply to QUIT lost",
			"the webhook receiver, on the last pending message, arms faultproxy: Cut/Reset of the client's next bytes (DELE, QUIT) or of the server's replies, or DropTail (QUIT applied, +OK dropped)"},
		"restart": {"Dovecot killed (SIGKILL) mid-run and started again on the same mail",
			"dovecottest Stop 5-300ms into the run or when the receiver gets a chosen pending message, then dovecot -F again on the same configuration, ports and Maildirs"},
	})
}

// TestNetFaultStall stalls connections for longer than pophook's timeouts:
// several accounts, each behind its own proxy, run in one `pophook once`
// so that their stalls overlap. Short: one run with every stall in the
// implicit-TLS handshake or greeting (the 8s greeting timeout). Long
// (PHTEST_FAULT_ROUNDS set): every other run stalls after the greeting
// (the 60s POP3 timeout; 30s for DELE and QUIT): login, LIST, RETR
// bodies, the STARTTLS handshake, and DELE and QUIT (armed by the
// receiver). Such a run lasts about a minute, so the runs are capped at 10.
func TestNetFaultStall(t *testing.T) {
	runs := faultrow.Rounds(t, 1)
	long := os.Getenv("PHTEST_FAULT_ROUNDS") != ""
	accounts := 4
	if long {
		runs, accounts = min(runs, 10), 12
	}
	seed := nfSeed(t)
	t.Logf("runs %d with %d accounts each, seed %d (PHTEST_FAULT_SEED=%d reproduces)", runs, accounts, seed, seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	w := nfStart(t, seed, accounts, dovecottest.Options{})
	const stall = 90 * time.Second // longer than every timeout

	// Where the handshake ends: stalls before these offsets hold the
	// client's handshake or the server's flight and greeting back.
	hs := nfHandshakeBytes(t, w.d)
	t.Logf("implicit TLS: the client sends %d bytes before the greeting, the server %d with it", hs[faultproxy.ToServer], hs[faultproxy.ToClient])
	stallAt := func(dir faultproxy.Dir, off int64) faultproxy.Fault {
		return faultproxy.Fault{Action: faultproxy.Stall, Dir: dir, Offset: off, Stall: stall}
	}
	for round := range runs {
		late := long && round%2 == 1 // past the greeting: the 60s timeout
		modes := map[string]string{}
		for i, a := range w.accts {
			w.deliver(a, rng, late)
			a.tls.SetPlan(nil)
			a.stls.SetPlan(nil)
			var f faultproxy.Fault
			switch {
			case !late && i%2 == 0: // the server's flight or greeting
				f = stallAt(faultproxy.ToClient, rng.Int64N(hs[faultproxy.ToClient]-1))
			case !late: // the client's handshake
				f = stallAt(faultproxy.ToServer, rng.Int64N(hs[faultproxy.ToServer]-1))
			case i%4 == 0: // DELE or QUIT: armed by the receiver
				w.arm(a, stallAt(faultproxy.Dir(rng.IntN(2)), rng.Int64N(60)))
				continue
			case i%4 == 1: // the server's side: CAPA, LIST/UIDL, RETR bodies
				f = stallAt(faultproxy.ToClient, hs[faultproxy.ToClient]+rng.Int64N(60_000))
			case i%4 == 2: // the client's side after the handshake: login, LIST, RETR
				f = stallAt(faultproxy.ToServer, hs[faultproxy.ToServer]+rng.Int64N(150))
			default: // STARTTLS: in the handshake after STLS (bounded by the 60s timeout, not the greeting's)
				modes[a.name] = "starttls"
				f = stallAt(faultproxy.ToClient, rng.Int64N(hs[faultproxy.ToClient]/2))
				f.AfterLine = "+OK Begin TLS"
				if rng.IntN(2) == 0 {
					f.Dir, f.AfterLine, f.Offset = faultproxy.ToServer, "STLS", rng.Int64N(hs[faultproxy.ToServer])
				}
				a.stls.SetPlan(faultproxy.Sequence(f))
				continue
			}
			a.tls.SetPlan(faultproxy.Sequence(f))
		}
		bound := nfGreetingBound
		if late {
			bound = nfStallBound
		}
		w.round(round, "stall", modes, bound, nil)
		w.disarm()
		if t.Failed() {
			t.Fatalf("stopping at round %d (seed %d)", round, seed)
		}
	}
	w.finish()
	w.report(map[string]nfRowText{
		"stall": {"connection stalled for longer than the client's timeouts",
			"faultproxy Stall (90s; torn down once the client gives up) in the implicit-TLS handshake or greeting; the long run also in login, LIST/UIDL, RETR bodies, the STARTTLS handshake and DELE/QUIT (armed); accounts in parallel"},
	})
}

// TestNetFaultChecks shows that the checks above can fail: it hands
// them a world in which each promise is broken once (without Dovecot or
// pophook) and wants each complaint.
func TestNetFaultChecks(t *testing.T) {
	dir := t.TempDir()
	d := &dovecottest.Server{Dir: dir, Users: map[string]string{"u0": "x"}}
	for _, sub := range []string{"new", "cur", "tmp"} {
		if err := os.MkdirAll(filepath.Join(d.MaildirPath("u0"), sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	rec := &nfRecorder{TB: t}
	w := nfNewWorld(rec, 1, d, 1)
	w.archive = filepath.Join(dir, "archive")
	a := w.accts[0]
	msg := func(i int) (string, []byte) {
		id := fmt.Sprintf("<check-%d@pophook.test>", i)
		return id, []byte(fmt.Sprintf("From: a@b\nMessage-ID: %s\n\nbody %d\n", id, i))
	}
	write := func(dir, name string, b []byte) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hook := func(key string, id string, body []byte) {
		w.hook.got = append(w.hook.got, nfDelivery{key: key, id: id, body: testcorpus.CRLF(body)})
	}
	for i := range 10 {
		id, b := msg(i)
		w.sent[id], w.owner[id] = b, a
		a.ids = append(a.ids, id)
		switch i {
		case 0: // on the server, nowhere else: fine
			write(filepath.Join(d.MaildirPath("u0"), "new"), "m0", b)
		case 1: // gone and nowhere: lost
		case 2: // gone, the webhook has it, the Maildir not: early DELE
			hook("k2", id, b)
		case 3: // twice under the same key
			hook("k3", id, b)
			hook("k3", id, b)
			write(filepath.Join(w.archive, "new"), "m3", b)
		case 4: // twice under two keys
			hook("k4", id, b)
			hook("k4b", id, b)
			write(filepath.Join(w.archive, "new"), "m4", b)
		case 5: // damaged at the receiver
			hook("k5", id, append(slices.Clone(b[:len(b)-2]), 'X', '\n'))
			write(filepath.Join(w.archive, "new"), "m5", b)
		case 6: // twice in the Maildir
			hook("k6", id, b)
			write(filepath.Join(w.archive, "new"), "m6a", b)
			write(filepath.Join(w.archive, "cur"), "m6b:2,S", b)
		case 7: // the key of another message
			hook("k6", id, b)
			write(filepath.Join(w.archive, "new"), "m7", b)
		case 8: // damaged in the Maildir
			hook("k8", id, b)
			write(filepath.Join(w.archive, "new"), "m8", append(slices.Clone(b[:len(b)-2]), 'X', '\n'))
		case 9: // delivered to both, deleted: fine
			hook("k9", id, b)
			write(filepath.Join(w.archive, "new"), "m9", b)
		}
	}
	// The receiver gets a message that is no longer on the server.
	w.serverIDs()
	id0, _ := msg(0)
	if w.serverFile[id0] != "m0" {
		t.Fatalf("serverIDs did not find m0: %v", w.serverFile)
	}
	w.onDeliver(id0)
	if len(w.goneEarly) != 0 {
		t.Fatalf("%s is on the server, yet the receiver says it was gone", id0)
	}
	id1, _ := msg(1)
	w.serverFile[id1] = "m1"
	w.onDeliver(id1)
	w.check("check", nil)
	// A run past its bound: a stand-in that sleeps.
	script := filepath.Join(dir, "slow")
	write(dir, "slow", []byte("#!/bin/sh\nexec sleep 30\n"))
	if err := os.Chmod(script, 0o755); err != nil {
		t.Fatal(err)
	}
	w.bin = script
	if _, _, took, _ := w.runOnce(nil, 300*time.Millisecond, nil); took > 10*time.Second {
		t.Errorf("runOnce let a run go on for %s past its bound of 300ms", took)
	}
	for _, want := range []string{
		"LOST: <check-1@",
		"EARLY DELE: <check-1@pophook.test> was gone from the server when the webhook (its last sink) got it",
		"EARLY DELE: <check-2@",
		"<check-3@pophook.test> reached the receiver again (key k3)",
		"<check-4@pophook.test> was delivered again under another key: k4, then k4b",
		"the receiver got <check-5@pophook.test> damaged",
		"the Maildir sink holds <check-6@pophook.test> 2 times",
		"key k6 was used for <check-6@pophook.test> and <check-7@pophook.test>",
		"the Maildir sink holds <check-8@pophook.test> damaged",
		"pophook once still running after 300ms",
	} {
		if !slices.ContainsFunc(rec.errs, func(e string) bool { return strings.Contains(e, want) }) {
			t.Errorf("no complaint %q; got:\n%s", want, strings.Join(rec.errs, "\n"))
		}
	}
	for _, e := range rec.errs {
		if strings.Contains(e, "check-0@") || strings.Contains(e, "check-9@") {
			t.Errorf("a complaint about a message that is fine: %s", e)
		}
	}
	if w.lost != 1 || w.early != 2 || w.repeated != 2 {
		t.Errorf("counted lost %d, early DELE %d, repeated %d; want 1, 2, 2", w.lost, w.early, w.repeated)
	}
}

// nfRecorder keeps the complaints of the checks instead of failing.
type nfRecorder struct {
	testing.TB
	errs []string
}

func (r *nfRecorder) Helper() {}
func (r *nfRecorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func nfSeed(t *testing.T) uint64 {
	if s := os.Getenv("PHTEST_FAULT_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("PHTEST_FAULT_SEED=%q: %v", s, err)
		}
		return n
	}
	return uint64(time.Now().UnixNano())
}

// nfArmedFault is a fault for DELE and QUIT, armed when the receiver has
// the last pending message, so offsets count from the client's first
// byte after it (DELE, or QUIT when nothing is to be deleted).
func nfArmedFault(rng *rand.Rand) faultproxy.Fault {
	switch rng.IntN(7) {
	case 0:
		return faultproxy.Fault{Action: faultproxy.Cut, Dir: faultproxy.ToServer}
	case 1:
		return faultproxy.Fault{Action: faultproxy.Reset, Dir: faultproxy.ToServer}
	case 2: // the DELE record is ~25-90 bytes: this reaches into QUIT too
		return faultproxy.Fault{Action: faultproxy.Cut, Dir: faultproxy.ToServer, Offset: 1 + int64(rng.IntN(120))}
	case 3:
		return faultproxy.Fault{Action: faultproxy.Reset, Dir: faultproxy.ToServer, Offset: 1 + int64(rng.IntN(120))}
	case 4:
		return faultproxy.Fault{Action: faultproxy.Cut, Dir: faultproxy.ToClient}
	case 5:
		return faultproxy.Fault{Action: faultproxy.Reset, Dir: faultproxy.ToClient, Offset: int64(rng.IntN(150))}
	}
	return faultproxy.Fault{Action: faultproxy.DropTail, Dir: faultproxy.ToClient}
}

// nfLogUniform is a log-uniform offset in [0, hi-1): as many in the first
// bytes as in the next thousands and in the hundreds of thousands after.
func nfLogUniform(rng *rand.Rand, hi int64) int64 {
	return int64(math.Exp(rng.Float64()*math.Log(float64(hi)))) - 1
}

// nfWorld is Dovecot behind the proxies, the sinks, and what was sent.
type nfWorld struct {
	t       testing.TB
	seed    uint64
	bin     string
	d       *dovecottest.Server
	again   *nfDovecot // Dovecot started again by the test; nil before
	accts   []*nfAccount
	hook    *nfHook
	hookURL string
	dataDir string
	archive string

	mu         sync.Mutex            // owner, serverFile and goneEarly, used by the receiver
	sent       map[string][]byte     // Message-ID -> message as delivered to Dovecot
	owner      map[string]*nfAccount // Message-ID -> account
	serverFile map[string]string     // Message-ID -> its file in the server's Maildir (without flags)
	goneEarly  []string              // messages already gone from the server when the receiver got them

	restartNow chan struct{} // the receiver got the message that restarts Dovecot
	restarts   int
	midRun     int
	runs       int
	longest    time.Duration
	obs        map[string]*nfObs // per row

	// what check has seen so far
	hookSeen              int               // deliveries checked
	archiveSeen           map[string]string // Maildir sink file -> Message-ID
	serverSeen            map[string]string // server Maildir file -> Message-ID
	hooked, archived      map[string]int    // deliveries per Message-ID
	idKey, keyID          map[string]string
	lost, early, repeated int
}

type nfAccount struct {
	name, user string
	tls, stls  *faultproxy.Proxy // in front of Dovecot's 995 and 110
	ids        []string          // in server order

	mu        sync.Mutex
	armID     string // the receiver arms armFault when it gets this message
	armFault  faultproxy.Fault
	restartID string // the receiver has Dovecot restarted when it gets this message
}

// nfObs is what one row observed.
type nfObs struct {
	runs     int
	messages map[string]bool
	phases   map[string]int
	longest  time.Duration
	bound    time.Duration // the largest bound of those runs
	lastRun  int           // the last run counted in runs
}

// nfStart starts Dovecot with the users u0, u1, ..., a pair of proxies
// per account (s0, s1, ...), and the webhook receiver.
func nfStart(t *testing.T, seed uint64, accounts int, opts dovecottest.Options) *nfWorld {
	t.Helper()
	opts.Users = map[string]string{}
	for i := range accounts {
		opts.Users[fmt.Sprintf("u%d", i)] = fmt.Sprintf("secret-%d", i)
	}
	d := dovecottest.Start(t, opts)
	w := nfNewWorld(t, seed, d, accounts)
	w.bin = pophookBinary(t)
	for _, a := range w.accts {
		var err error
		if a.tls, err = faultproxy.New(d.TLSAddr(), nil); err != nil {
			t.Fatal(err)
		}
		if a.stls, err = faultproxy.New(d.Addr(), nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.tls.Close(); a.stls.Close() })
	}
	srv := httptest.NewServer(w.hook)
	t.Cleanup(srv.Close)
	w.hookURL = srv.URL + "/mail"
	dir := t.TempDir()
	w.dataDir, w.archive = filepath.Join(dir, "data"), filepath.Join(dir, "archive")
	return w
}

// nfNewWorld is the bookkeeping of a world, without processes.
func nfNewWorld(t testing.TB, seed uint64, d *dovecottest.Server, accounts int) *nfWorld {
	w := &nfWorld{t: t, seed: seed, d: d, sent: map[string][]byte{}, owner: map[string]*nfAccount{}, serverFile: map[string]string{},
		restartNow: make(chan struct{}, 1),
		obs:        map[string]*nfObs{}, archiveSeen: map[string]string{}, serverSeen: map[string]string{},
		hooked: map[string]int{}, archived: map[string]int{}, idKey: map[string]string{}, keyID: map[string]string{}}
	for i := range accounts {
		w.accts = append(w.accts, &nfAccount{name: fmt.Sprintf("s%d", i), user: fmt.Sprintf("u%d", i)})
	}
	w.hook = &nfHook{onDeliver: w.onDeliver}
	return w
}

// env is pophook's environment; modes gives an account's TLS mode
// ("implicit" when missing): implicit goes through the proxy in front of
// 995, starttls and none through the one in front of 110.
func (w *nfWorld) env(modes map[string]string) []string {
	var names []string
	for _, a := range w.accts {
		names = append(names, a.name)
	}
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"POPHOOK_DATA_DIR=" + w.dataDir,
		"POPHOOK_HTTP_ADDR=",
		"POPHOOK_LOG_FORMAT=json",
		"POPHOOK_LOG_LEVEL=debug",
		"POPHOOK_CONCURRENCY=" + strconv.Itoa(len(w.accts)),
		"POPHOOK_ACCOUNTS=" + strings.Join(names, ","),
		"POPHOOK_SINKS=archive,hook",
		"POPHOOK_SINK_ARCHIVE_TYPE=maildir",
		"POPHOOK_SINK_ARCHIVE_PATH=" + w.archive,
		"POPHOOK_SINK_HOOK_TYPE=webhook",
		"POPHOOK_SINK_HOOK_URL=" + w.hookURL,
		"POPHOOK_SINK_HOOK_FORMAT=raw",
		"POPHOOK_SINK_HOOK_TIMEOUT=5s",
		"POPHOOK_SINK_HOOK_BUDGET=" + nfHookBudget.String(),
	}
	for _, a := range w.accts {
		p := "POPHOOK_ACCOUNT_" + strings.ToUpper(a.name) + "_"
		mode := cmp.Or(modes[a.name], "implicit")
		port := a.tls.Port()
		if mode != "implicit" {
			port = a.stls.Port()
		}
		env = append(env,
			p+"HOST=127.0.0.1", // the proxy; the certificate names 127.0.0.1 too
			p+"PORT="+strconv.Itoa(port),
			p+"TLS="+mode,
			p+"TLS_CA_FILE="+w.d.CAFile,
			p+"USERNAME="+a.user,
			p+"PASSWORD="+w.d.Users[a.user],
			p+"SINKS=archive,hook", // the webhook last: it arms DELE faults
		)
		if mode == "none" {
			env = append(env, p+"ALLOW_INSECURE=true")
		}
	}
	return env
}

// deliver puts a new message for a on the server: mostly small, one in
// five (or, with big, every one) between 100 and 400 KB, so offsets land
// in RETR bodies.
func (w *nfWorld) deliver(a *nfAccount, rng *rand.Rand, big bool) {
	id := fmt.Sprintf("<nf-%s-%d@pophook.test>", a.name, len(a.ids))
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: faults@pophook.test\nTo: %s@pophook.test\nSubject: network fault %s\nMessage-ID: %s\n\n", a.user, id, id)
	size := 200 + rng.IntN(2000)
	if big || rng.IntN(5) == 0 {
		size = 100_000 + rng.IntN(300_000)
	}
	for b.Len() < size {
		fmt.Fprintf(&b, "line %d of %s\n", b.Len(), id)
	}
	w.d.Deliver(w.t, a.user, b.Bytes())
	w.mu.Lock()
	w.sent[id] = b.Bytes()
	w.owner[id] = a
	w.mu.Unlock()
	a.ids = append(a.ids, id)
}

// pending is a's messages the receiver does not have, in server order.
func (w *nfWorld) pending(a *nfAccount) []string {
	have := w.hook.ids()
	var out []string
	for _, id := range a.ids {
		if have[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}

// arm makes the receiver arm f on a's implicit-TLS proxy when it gets
// a's last message not yet delivered (so the client's next bytes are DELE).
func (w *nfWorld) arm(a *nfAccount, f faultproxy.Fault) {
	p := w.pending(a)
	if len(p) == 0 {
		w.t.Fatalf("arm: nothing pending for %s", a.name)
	}
	a.mu.Lock()
	a.armID, a.armFault = p[len(p)-1], f
	a.mu.Unlock()
}

// restartDuring is a round's `during` that kills Dovecot and starts it
// again: after a random delay, or when the receiver gets one of a's
// pending messages (the last one: the session is at DELE and QUIT).
func (w *nfWorld) restartDuring(a *nfAccount, rng *rand.Rand) func(exited <-chan struct{}) string {
	var delay time.Duration
	if p := w.pending(a); len(p) > 0 && rng.IntN(2) == 0 {
		a.mu.Lock()
		a.restartID = p[rng.IntN(len(p))]
		a.mu.Unlock()
	} else {
		delay = time.Duration(5+rng.IntN(295)) * time.Millisecond
	}
	return func(exited <-chan struct{}) string {
		var timer <-chan time.Time
		if delay > 0 {
			timer = time.After(delay)
		}
		what := "mid-run"
		select {
		case <-w.restartNow:
		case <-timer:
		case <-exited:
			what = "between runs"
		}
		select {
		case <-exited:
			what = "between runs"
		default:
		}
		w.restartDovecot()
		return what
	}
}

func (w *nfWorld) disarm() {
	for _, a := range w.accts {
		a.mu.Lock()
		a.armID, a.restartID = "", ""
		a.mu.Unlock()
	}
	select {
	case <-w.restartNow:
	default:
	}
}

// onDeliver is the receiver's hook, called for every request after it
// was recorded and before it is answered.
func (w *nfWorld) onDeliver(id string) {
	w.mu.Lock()
	a, base := w.owner[id], w.serverFile[id]
	w.mu.Unlock()
	if a == nil {
		return
	}
	// The webhook is each account's last sink: when it gets a message,
	// the message must still be on the server (DELE takes effect at
	// QUIT, and no session of the account runs alongside this one).
	if base != "" && !w.onServer(a, base) {
		w.mu.Lock()
		w.goneEarly = append(w.goneEarly, id)
		w.mu.Unlock()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.armID == id {
		a.armID = ""
		a.tls.Arm(a.armFault)
	}
	if a.restartID == id {
		a.restartID = ""
		select {
		case w.restartNow <- struct{}{}:
		default:
		}
	}
}

// round runs `pophook once` once (during, if set, runs alongside and
// says what it did), then checks everything and records what happened.
// modes are the accounts' TLS modes (see env); the run must end within
// bound.
func (w *nfWorld) round(round int, kind string, modes map[string]string, bound time.Duration, during func(exited <-chan struct{}) string) {
	t := w.t
	t.Helper()
	pending := map[string][]string{} // account -> messages on the server
	onServer := w.serverIDs()
	for _, a := range w.accts {
		for _, id := range a.ids {
			if onServer[id] {
				pending[a.name] = append(pending[a.name], id)
			}
		}
	}
	start := map[*faultproxy.Proxy]int{}
	for _, a := range w.accts {
		start[a.tls], start[a.stls] = len(a.tls.Stats()), len(a.stls.Stats())
	}

	log, code, took, what := w.runOnce(w.env(modes), bound, during)
	w.runs++
	w.longest = max(w.longest, took)
	tag := fmt.Sprintf("round %d (%s, seed %d)", round, kind, w.seed)
	if code != 0 && code != 1 {
		t.Errorf("%s: pophook once exited %d after %s:\n%s", tag, code, took.Round(time.Millisecond), nfTail(log, 60))
	}
	if bytes.Contains(log, []byte("panic:")) || bytes.Contains(log, []byte("DATA RACE")) {
		t.Errorf("%s: panic:\n%s", tag, nfTail(log, 80))
	}
	if kind == "restart" {
		w.restarts++
		if what == "mid-run" {
			w.midRun++
		}
	}
	w.check(tag, log)

	phases, problems := nfPhases(log, modes)
	for _, a := range w.accts {
		failed := slices.ContainsFunc(problems, func(l string) bool {
			return strings.HasPrefix(l, "account "+a.name+":") || strings.HasPrefix(l, "account "+a.name+",")
		})
		// Connection k of the run is session k: where it ended.
		phase := func(k int) string {
			if !failed {
				return "none" // the run went through
			}
			if k < len(phases[a.name]) && phases[a.name][k] != "" {
				return phases[a.name][k]
			}
			if cmp.Or(modes[a.name], "implicit") == "implicit" {
				return "handshake"
			}
			return "greeting" // or, with STARTTLS, the plaintext before it
		}
		var conns []faultproxy.ConnStat
		for _, p := range []*faultproxy.Proxy{a.tls, a.stls} {
			conns = append(conns, p.Stats()[start[p]:]...)
		}
		type hit struct{ row, phase string }
		var hits []hit
		for k, s := range conns {
			if r := nfRow(kind, s, phase(k)); r != "" && s.Triggered {
				hits = append(hits, hit{r, phase(k)})
			}
		}
		if kind == "restart" && what == "mid-run" {
			hits = append(hits, hit{"restart", phase(0)})
		}
		seen := map[string]bool{}
		for _, h := range hits {
			o := w.obs[h.row]
			if o == nil {
				o = &nfObs{messages: map[string]bool{}, phases: map[string]int{}}
				w.obs[h.row] = o
			}
			o.phases[h.phase]++
			if seen[h.row] {
				continue
			}
			seen[h.row] = true
			if o.lastRun != w.runs { // once per run, whatever the accounts
				o.lastRun = w.runs
				o.runs++
			}
			o.longest = max(o.longest, took)
			o.bound = max(o.bound, bound)
			for _, id := range pending[a.name] {
				o.messages[id] = true
			}
		}
	}
	if testing.Verbose() && os.Getenv("PHTEST_FAULT_TRACE") != "" {
		var faults []string
		for _, a := range w.accts {
			for _, p := range []*faultproxy.Proxy{a.tls, a.stls} {
				for _, s := range p.Stats()[start[p]:] {
					faults = append(faults, fmt.Sprintf("%s#%d %v triggered=%v", a.name, s.N, s.Fault, s.Triggered))
				}
			}
		}
		t.Logf("%s: exit %d in %s; %s; sessions ended in %v; %s", tag, code, took.Round(time.Millisecond), what, phases, strings.Join(faults, ", "))
		if fi, err := os.Stat(os.Getenv("PHTEST_FAULT_TRACE")); err == nil && fi.IsDir() {
			os.WriteFile(filepath.Join(os.Getenv("PHTEST_FAULT_TRACE"), fmt.Sprintf("%s-round%03d.log", strings.ReplaceAll(t.Name(), "/", "_"), round)), log, 0o644)
		}
	}
}

// nfRow is the row a triggered fault belongs to.
func nfRow(kind string, s faultproxy.ConnStat, phase string) string {
	switch kind {
	case "armed":
		return "dele-quit"
	case "stall":
		return "stall"
	case "restart":
		return ""
	case "plain":
		if s.Fault.Action == faultproxy.Stall {
			return "pause"
		}
		return "command"
	case "stls":
		if s.Fault.AfterLine != "" || phase == "plaintext" {
			return "stls"
		}
	}
	switch s.Fault.Action {
	case faultproxy.Stall:
		return "pause"
	case faultproxy.Cut:
		return "cut"
	case faultproxy.Reset:
		if phase == "handshake" || phase == "greeting" {
			return "handshake-reset"
		}
		return "reset"
	}
	return ""
}

// runOnce runs `pophook once`, killing it at bound (a failure).
func (w *nfWorld) runOnce(env []string, bound time.Duration, during func(exited <-chan struct{}) string) (log []byte, code int, took time.Duration, what string) {
	t := w.t
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(w.bin, "once")
	cmd.Env = env
	cmd.Stderr = &out
	cmd.Stdout = &out
	begin := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	if during != nil {
		what = during(exited)
	}
	select {
	case <-exited:
	case <-time.After(bound - time.Since(begin)):
		cmd.Process.Signal(syscall.SIGQUIT) // Go prints every goroutine's stack
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		t.Errorf("pophook once still running after %s, the bound from its timeouts and faults (seed %d):\n%s", bound, w.seed, nfTail(out.Bytes(), 200))
	}
	took = time.Since(begin)
	code = cmd.ProcessState.ExitCode()
	if code < 0 {
		code = 128 // killed by a signal
	}
	return out.Bytes(), code, took, what
}

// check holds the promises after a run: every message sent is on the
// server or in both sinks (gone from the server only once both have it),
// every delivered copy is intact, one key per message and one message
// per key, and no delivery repeated (no pophook process is ever killed
// here, so nothing was in flight at a crash). Deliveries and Maildir
// files are checked once, as they appear.
func (w *nfWorld) check(tag string, log []byte) {
	t := w.t
	t.Helper()
	w.mu.Lock()
	gone := w.goneEarly
	w.goneEarly = nil
	w.mu.Unlock()
	for _, id := range gone {
		w.early++
		t.Errorf("%s: EARLY DELE: %s was gone from the server when the webhook (its last sink) got it; log:\n%s", tag, id, nfTail(log, 80))
	}
	hook := w.hook.all()
	for _, dl := range hook[w.hookSeen:] {
		msg, ok := w.sent[dl.id]
		switch {
		case !ok:
			t.Errorf("%s: the receiver got a message the test never sent (Message-ID %q, %d bytes)", tag, dl.id, len(dl.body))
			continue
		case !bytes.Equal(dl.body, testcorpus.CRLF(msg)):
			t.Errorf("%s: the receiver got %s damaged: %d bytes, want %d", tag, dl.id, len(dl.body), len(testcorpus.CRLF(msg)))
		}
		if prev, ok := w.keyID[dl.key]; ok && prev != dl.id {
			t.Errorf("%s: key %s was used for %s and %s", tag, dl.key, prev, dl.id)
		}
		w.keyID[dl.key] = dl.id
		if prev, ok := w.idKey[dl.id]; ok {
			w.repeated++
			if prev != dl.key {
				t.Errorf("%s: %s was delivered again under another key: %s, then %s", tag, dl.id, prev, dl.key)
			}
			t.Errorf("%s: %s reached the receiver again (key %s), though no pophook process was killed", tag, dl.id, dl.key)
		}
		w.idKey[dl.id] = dl.key
		w.hooked[dl.id]++
	}
	w.hookSeen = len(hook)
	for id, msgs := range w.maildir(w.archive, w.archiveSeen) {
		for _, got := range msgs {
			if !bytes.Equal(got, w.sent[id]) {
				t.Errorf("%s: the Maildir sink holds %s damaged: %d bytes, want %d", tag, id, len(got), len(w.sent[id]))
			}
			if w.archived[id]++; w.archived[id] > 1 {
				t.Errorf("%s: the Maildir sink holds %s %d times", tag, id, w.archived[id])
			}
		}
	}
	onServer := w.serverIDs()
	for id := range w.sent {
		if onServer[id] {
			continue
		}
		switch h, a := w.hooked[id], w.archived[id]; {
		case h == 0 && a == 0:
			w.lost++
			t.Errorf("%s: LOST: %s is gone from the server and reached no sink; log:\n%s", tag, id, nfTail(log, 80))
		case h == 0 || a == 0:
			w.early++
			t.Errorf("%s: EARLY DELE: %s is gone from the server but the webhook has it %d times, the Maildir %d; log:\n%s", tag, id, h, a, nfTail(log, 80))
		}
	}
}

// finish ends the faults, lets clean runs deliver and delete what is
// left, and checks that every message reached both sinks exactly once.
func (w *nfWorld) finish() {
	t := w.t
	t.Helper()
	w.disarm()
	for _, a := range w.accts {
		a.tls.SetPlan(nil)
		a.stls.SetPlan(nil)
	}
	var log []byte
	var code int
	for i := range 3 {
		log, code, _, _ = w.runOnce(w.env(nil), nfQuickBound, nil)
		w.check(fmt.Sprintf("final run %d (seed %d)", i, w.seed), log)
		if code == 0 && len(w.serverIDs()) == 0 {
			break
		}
	}
	if code != 0 {
		t.Errorf("the last clean run exited %d (seed %d):\n%s", code, w.seed, nfTail(log, 60))
	}
	if left := w.serverIDs(); len(left) != 0 {
		t.Errorf("%d messages still on the server after clean runs (seed %d):\n%s", len(left), w.seed, nfTail(log, 60))
	}
	for id := range w.sent {
		if w.hooked[id] != 1 || w.archived[id] != 1 {
			t.Errorf("%s: the webhook has it %d times, the Maildir %d; want once each (seed %d)", id, w.hooked[id], w.archived[id], w.seed)
		}
	}
	t.Logf("runs %d, longest %s, messages %d, Dovecot restarts %d (%d mid-run)",
		w.runs, w.longest.Round(time.Millisecond), len(w.sent), w.restarts, w.midRun)
}

type nfRowText struct{ fault, injection string }

// report logs a faultrow row per kind of fault the test injected, from
// what it observed: runs in which such a fault took effect, the messages
// on the server at the start of those runs, and where the sessions broke
// (one count per faulted connection).
func (w *nfWorld) report(rows map[string]nfRowText) {
	t := w.t
	t.Helper()
	if t.Failed() {
		return
	}
	names := make([]string, 0, len(rows))
	for r := range rows {
		names = append(names, r)
	}
	sort.Strings(names)
	for _, r := range names {
		o := w.obs[r]
		if o == nil {
			t.Logf("no row for %q: no such fault took effect in this run (seed %d; more rounds with PHTEST_FAULT_ROUNDS)", rows[r].fault, w.seed)
			continue
		}
		var phases []string
		for _, p := range []string{"handshake", "greeting", "plaintext", "login", "listing", "retr", "dele", "quit", "done", "none"} {
			if o.phases[p] > 0 {
				phases = append(phases, fmt.Sprintf("%s %d", p, o.phases[p]))
			}
		}
		faultrow.Report(t, faultrow.Row{
			Area: "network", Fault: rows[r].fault, Injection: rows[r].injection,
			Rounds: o.runs, Messages: len(o.messages),
			// Counted over the whole test (a failed test reports no row).
			Lost: w.lost, Repeated: w.repeated, EarlyDele: w.early,
			Result: fmt.Sprintf("no loss, no early DELE, no repeat; broke in: %s; every run ended within %s (bound %s)",
				strings.Join(phases, ", "), o.longest.Round(100*time.Millisecond), o.bound),
		})
	}
}

// serverIDs is the set of messages on the server (read from its Maildir).
func (w *nfWorld) serverIDs() map[string]bool {
	ids := map[string]bool{}
	for _, a := range w.accts {
		w.maildir(w.d.MaildirPath(a.user), w.serverSeen)
		for _, sub := range []string{"new", "cur"} {
			ents, err := os.ReadDir(filepath.Join(w.d.MaildirPath(a.user), sub))
			if err != nil {
				w.t.Fatal(err)
			}
			for _, e := range ents {
				id := w.serverSeen[nfBase(e.Name())]
				ids[id] = true
				w.mu.Lock()
				w.serverFile[id] = nfBase(e.Name())
				w.mu.Unlock()
			}
		}
	}
	return ids
}

// onServer reports whether a's server Maildir holds the file base (in new,
// or in cur with flags): Dovecot renames files from new to cur, so it
// looks more than once.
func (w *nfWorld) onServer(a *nfAccount, base string) bool {
	md := w.d.MaildirPath(a.user)
	for range 3 {
		if _, err := os.Stat(filepath.Join(md, "new", base)); err == nil {
			return true
		}
		if m, _ := filepath.Glob(filepath.Join(md, "cur", base+"*")); len(m) > 0 {
			return true
		}
	}
	return false
}

var nfMessageID = regexp.MustCompile(`(?m)^Message-ID: (<[^>]+>)\r?$`)

// maildir reads the messages in a Maildir's new and cur that seen does
// not know yet (by file name, without Maildir flags), notes their
// Message-ID in seen and returns them by Message-ID.
func (w *nfWorld) maildir(dir string, seen map[string]string) map[string][][]byte {
	t := w.t
	t.Helper()
	out := map[string][][]byte{}
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for _, e := range ents {
			if _, ok := seen[nfBase(e.Name())]; ok {
				continue
			}
			b, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			m := nfMessageID.FindSubmatch(b)
			if m == nil {
				t.Errorf("%s/%s has no Message-ID: %.80q", sub, e.Name(), b)
				continue
			}
			seen[nfBase(e.Name())] = string(m[1])
			out[string(m[1])] = append(out[string(m[1])], b)
		}
	}
	return out
}

// nfBase is a Maildir file name without its flags (":2,S").
func nfBase(name string) string {
	base, _, _ := strings.Cut(name, ":")
	return base
}

// nfHook is the webhook receiver: it keeps every request.
type nfHook struct {
	mu        sync.Mutex
	got       []nfDelivery
	onDeliver func(id string)
}

type nfDelivery struct {
	key, id string
	body    []byte
}

func (h *nfHook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(rw, "try again", http.StatusServiceUnavailable)
		return
	}
	id := ""
	if m := nfMessageID.FindSubmatch(body); m != nil {
		id = string(m[1])
	}
	h.mu.Lock()
	h.got = append(h.got, nfDelivery{key: r.Header.Get("Idempotency-Key"), id: id, body: body})
	h.mu.Unlock()
	h.onDeliver(id)
	rw.WriteHeader(http.StatusNoContent)
}

func (h *nfHook) all() []nfDelivery {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got)
}

func (h *nfHook) ids() map[string]int {
	n := map[string]int{}
	for _, d := range h.all() {
		n[d.id]++
	}
	return n
}

// nfPhases reads pophook's log: for each account, where each of its
// sessions was when it ended (from the redacted POP3 trace; a run starts
// another session after a RETR cut short, for example), and the problem
// lines of `once`. A session with no line of trace is left "": its TLS
// handshake or greeting failed. modes are the accounts' TLS modes.
func nfPhases(log []byte, modes map[string]string) (phases map[string][]string, problems []string) {
	type sess struct {
		tls, greeted, stlsSent, quitOK bool
		last                           string
		lines                          int
	}
	ss := map[string][]*sess{}
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if s, ok := bytes.CutPrefix(line, []byte("  account ")); ok {
			problems = append(problems, "account "+string(s))
			continue
		}
		var rec struct {
			Msg, Account, Line string
		}
		if json.Unmarshal(line, &rec) != nil || rec.Account == "" {
			continue
		}
		if ss[rec.Account] == nil || rec.Msg == "starting a new session for the rest of the mailbox" {
			ss[rec.Account] = append(ss[rec.Account], &sess{tls: cmp.Or(modes[rec.Account], "implicit") == "none"}) // no TLS to wait for
		}
		if rec.Msg != "pop3" {
			continue
		}
		s := ss[rec.Account][len(ss[rec.Account])-1]
		s.lines++
		switch l := rec.Line; {
		case strings.HasPrefix(l, "-- TLS"):
			s.tls = true
		case strings.HasPrefix(l, "S: +OK Dovecot"):
			s.greeted = true
		case strings.HasPrefix(l, "S: +OK Logging out"):
			s.quitOK = true
		case strings.HasPrefix(l, "C: "):
			cmd, _, _ := strings.Cut(l[3:], " ")
			s.last = cmd
			if cmd == "STLS" {
				s.stlsSent = true
			}
		}
	}
	phases = map[string][]string{}
	for name, list := range ss {
		for _, s := range list {
			p := ""
			switch {
			case s.lines == 0:
			case s.quitOK:
				p = "done"
			case !s.tls && s.greeted && !s.stlsSent:
				p = "plaintext"
			case !s.tls:
				p = "handshake"
			case !s.greeted:
				p = "greeting"
			default:
				switch s.last {
				case "LIST", "UIDL":
					p = "listing"
				case "RETR":
					p = "retr"
				case "DELE":
					p = "dele"
				case "QUIT":
					p = "quit"
				default:
					p = "login"
				}
			}
			phases[name] = append(phases[name], p)
		}
	}
	return phases, problems
}

func nfTail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// restartDovecot kills Dovecot (as dovecottest's Stop does: SIGKILL, open
// sessions drop, their DELEs are not applied) and starts it again on the
// same configuration, ports and Maildirs. dovecottest has no restart, so
// the test runs `dovecot -F -c` itself, in its own process group.
func (w *nfWorld) restartDovecot() {
	t := w.t
	if w.again != nil {
		w.again.stop(t)
	} else {
		w.d.Stop()
	}
	w.removeStaleLocks()
	w.again = nfStartDovecot(t, w.d)
}

// removeStaleLocks deletes the dotlocks (dovecot-uidlist.lock) that the
// killed Dovecot's pop3 processes held. The next session's pop3 process
// sends "+OK Logged in." and then, opening the mailbox, waits for such a
// lock before it answers anything, pophook's CAPA included: 2-3s until it
// reads the PID in the lock and finds it dead, and up to the lock's stale
// timeout (2 minutes) when the file is empty (the process was killed
// between creating it and writing its PID) or the PID still looks alive
// (a zombie not yet reaped); pophook then waits for its 60s timeout, past
// nfQuickBound. Every Dovecot process has been killed by now, so every
// lock is stale.
func (w *nfWorld) removeStaleLocks() {
	for _, a := range w.accts {
		locks, err := filepath.Glob(filepath.Join(w.d.MaildirPath(a.user), "*.lock"))
		if err != nil {
			w.t.Fatal(err)
		}
		for _, l := range locks {
			if err := os.Remove(l); err != nil && !os.IsNotExist(err) {
				w.t.Errorf("removing Dovecot's stale lock: %v", err)
			}
		}
	}
}

type nfDovecot struct {
	cmd  *exec.Cmd
	done chan struct{}
	once sync.Once
}

func nfStartDovecot(t testing.TB, d *dovecottest.Server) *nfDovecot {
	t.Helper()
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		bin = "/usr/sbin/dovecot"
	}
	out, err := os.OpenFile(filepath.Join(d.Dir, "dovecot.again.stderr"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		cmd := exec.Command(bin, "-F", "-c", filepath.Join(d.Dir, "dovecot.conf"))
		cmd.Dir = d.Dir
		cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
		cmd.Stdout, cmd.Stderr = out, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		p := &nfDovecot{cmd: cmd, done: make(chan struct{})}
		go func() { cmd.Wait(); close(p.done) }()
		t.Cleanup(func() { p.stop(t) })
		var perr error
		for time.Now().Before(deadline) {
			select {
			case <-p.done:
				perr = fmt.Errorf("dovecot exited: %s", nfTail(nfReadFile(filepath.Join(d.Dir, "dovecot.again.stderr")), 5))
			default:
				if perr = nfGreets(d.TLSAddr(), d.TLSConfig()); perr == nil {
					if perr = nfGreets(d.Addr(), nil); perr == nil {
						return p
					}
				}
				time.Sleep(10 * time.Millisecond)
				continue
			}
			break
		}
		p.stop(t)
		if time.Now().After(deadline) {
			t.Fatalf("restarting Dovecot: %v", perr)
		}
		time.Sleep(100 * time.Millisecond) // the old ports not yet free: try again
	}
}

// stop kills the whole process group and waits for the master.
func (p *nfDovecot) stop(t testing.TB) {
	p.once.Do(func() {
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("restarted dovecot (pid %d) did not die", p.cmd.Process.Pid)
		}
		// Children left behind would keep the ports.
		for range 1000 {
			if syscall.Kill(-p.cmd.Process.Pid, 0) != nil {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Errorf("processes of restarted dovecot (group %d) still alive", p.cmd.Process.Pid)
	})
}

// nfGreets dials addr (with TLS when cfg is set) and wants "+OK".
func nfGreets(addr string, cfg *tls.Config) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if cfg != nil {
		tc := tls.Client(c, cfg)
		if err := tc.Handshake(); err != nil {
			return err
		}
		c = tc
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+OK") {
		return fmt.Errorf("greeting %q", line)
	}
	fmt.Fprintf(c, "QUIT\r\n")
	return nil
}

func nfReadFile(path string) []byte {
	b, _ := os.ReadFile(path)
	return b
}

// nfHandshakeBytes measures, through a proxy that passes everything, how
// many bytes each side of an implicit-TLS connection sends up to and
// including the greeting, with the TLS configuration pophook uses.
func nfHandshakeBytes(t *testing.T, d *dovecottest.Server) [2]int64 {
	t.Helper()
	p, err := faultproxy.New(d.TLSAddr(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cfg, err := pop3.TLSConfig("127.0.0.1", d.CAFile, false)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, cfg)
	if _, err := bufio.NewReader(tc).ReadString('\n'); err != nil {
		t.Fatalf("greeting through the proxy: %v", err)
	}
	time.Sleep(50 * time.Millisecond) // anything else the server sends unasked
	b := p.Stats()[0].Bytes
	if b[0] < 100 || b[1] < 100 {
		t.Fatalf("handshake bytes %v: too few to be TLS", b)
	}
	return b
}
