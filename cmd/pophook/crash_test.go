package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
)

// TestCrashSafety runs `pophook once` as a real process and kills it with
// SIGKILL at random moments, round after round, with new mail arriving in
// between; then lets it finish. No message may be lost, and every repeated
// delivery must be one that was in flight (handed to the sink, not yet
// recorded in the ledger) when a process was killed.
//
// PHTEST_CRASH_ROUNDS sets the rounds (default 12; hundreds for a long
// run) and PHTEST_CRASH_SEED the random seed.
func TestCrashSafety(t *testing.T) {
	rounds := envInt(t, "PHTEST_CRASH_ROUNDS", 12)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("PHTEST_CRASH_SEED"); s != "" {
		seed = uint64(envInt(t, "PHTEST_CRASH_SEED", 0))
	}
	t.Logf("rounds %d, seed %d (PHTEST_CRASH_SEED=%d reproduces)", rounds, seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))

	bin := pophookBinary(t)
	d := dovecottest.Start(t, dovecottest.Options{})
	dir := t.TempDir()
	mdir := filepath.Join(dir, "Maildir")
	env := dovecotEnv(d, filepath.Join(dir, "data"), mdir, "POPHOOK_LOG_FORMAT=json", "POPHOOK_LOG_LEVEL=debug")

	sent := 0
	inFlight := map[string]bool{} // keys handed to the sink and not recorded when a process died
	var repeats []string
	killed := 0
	for round := 0; round < rounds; round++ {
		for range 1 + rng.IntN(8) {
			d.Deliver(t, "alice", crashMessage(sent, rng))
			sent++
		}
		// Mostly early kills (login, fetch, delivery), some late enough
		// to land in DELE and QUIT or to let the run finish.
		delay := time.Duration(rng.IntN(100_000)) * time.Microsecond
		if rng.IntN(3) == 0 {
			delay = time.Duration(rng.IntN(400_000)) * time.Microsecond
		}
		log, wasKilled := runOnce(t, bin, env, delay)
		rep, flight := readLog(t, log)
		repeats = append(repeats, rep...)
		if wasKilled {
			killed++
			for k := range flight {
				inFlight[k] = true
			}
		}
	}
	// Let it finish: a clean run must deliver everything that is left.
	var final []byte
	for range 3 {
		var wasKilled bool
		final, wasKilled = runOnce(t, bin, env, 0)
		if wasKilled {
			t.Fatal("final run was killed")
		}
		rep, _ := readLog(t, final)
		repeats = append(repeats, rep...)
		if d.Count(t, "alice") == 0 {
			break
		}
	}
	if n := d.Count(t, "alice"); n != 0 {
		t.Fatalf("%d messages still on the server after a clean run; last log:\n%s", n, final)
	}

	// No loss: every message sent is in the Maildir, once.
	got := maildirIDs(t, mdir)
	for i := 0; i < sent; i++ {
		id := fmt.Sprintf("<crash-%d@pophook.test>", i)
		if got[id] != 1 {
			t.Errorf("%s is in the Maildir %d times, want once", id, got[id])
		}
	}
	if len(got) != sent {
		t.Errorf("Maildir holds %d distinct messages, %d were sent", len(got), sent)
	}
	// Repeats only for what was in flight.
	for _, k := range repeats {
		if !inFlight[k] {
			t.Errorf("delivery %s was repeated but was not in flight at any crash", k)
		}
	}
	t.Logf("rounds %d, killed %d, messages %d, lost 0, repeated deliveries %d (all in flight at a crash)", rounds, killed, sent, len(repeats))
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

// crashMessage is message i: mostly small, sometimes a few hundred KiB, so
// kills land in every phase (fetch, delivery, commit, DELE, QUIT).
func crashMessage(i int, rng *rand.Rand) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: crash@pophook.test\nSubject: crash %d\nMessage-ID: <crash-%d@pophook.test>\n\n", i, i)
	size := 200 + rng.IntN(2000)
	if rng.IntN(5) == 0 {
		size = 100_000 + rng.IntN(300_000)
	}
	for b.Len() < size {
		fmt.Fprintf(&b, "line %d of message %d\n", b.Len(), i)
	}
	return b.Bytes()
}

// runOnce starts `pophook once` and, if delay > 0, SIGKILLs it after
// delay. It returns the process's log and whether it was killed.
func runOnce(t *testing.T, bin string, env []string, delay time.Duration) ([]byte, bool) {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "once")
	cmd.Env = env
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if delay > 0 {
		timer := time.AfterFunc(delay, func() { cmd.Process.Signal(syscall.SIGKILL) })
		defer timer.Stop()
	}
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return stderr.Bytes(), true
	}
	if err != nil && delay == 0 {
		t.Fatalf("pophook once: %v\n%s", err, stderr.Bytes())
	}
	return stderr.Bytes(), false
}

// readLog returns the keys a process found already delivered (repeats)
// and the keys it handed to a sink without recording the result.
func readLog(t *testing.T, log []byte) (repeats []string, inFlight map[string]bool) {
	inFlight = map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(log))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var rec struct {
			Msg string `json:"msg"`
			Key string `json:"key"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue // the last line of a killed process may be cut
		}
		switch rec.Msg {
		case "delivering":
			inFlight[rec.Key] = true
		case "recorded":
			delete(inFlight, rec.Key)
		case "message already in maildir, not stored again":
			repeats = append(repeats, rec.Key)
		}
	}
	return repeats, inFlight
}

var messageID = regexp.MustCompile(`(?m)^Message-ID: (<[^>]+>)$`)

func maildirIDs(t *testing.T, dir string) map[string]int {
	t.Helper()
	ids := map[string]int{}
	for _, sub := range []string{"new", "cur"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(dir, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			m := messageID.FindSubmatch(b)
			if m == nil {
				t.Errorf("%s has no Message-ID: %.80q", e.Name(), b)
				continue
			}
			ids[strings.TrimSpace(string(m[1]))]++
		}
	}
	return ids
}
