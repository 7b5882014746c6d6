//go:build linux

package bench

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
)

// config is read from the environment (bench/run.sh sets it).
type config struct {
	messages   int     // PHBENCH_MESSAGES: the main mailbox
	mb         float64 // PHBENCH_MB: its target size
	rounds     int     // PHBENCH_ROUNDS
	seed       uint64  // PHBENCH_SEED
	idleSmall  int     // PHBENCH_IDLE_SMALL: kept messages, first idle poll
	idleBig    int     // PHBENCH_IDLE_BIG: kept messages, second idle poll
	accounts   int     // PHBENCH_ACCOUNTS: mailboxes of two messages each
	bigMiB     int     // PHBENCH_BIG_MIB: the single large message
	lag        int     // PHBENCH_LAG: messages for the schedule-lag run; 0 skips it
	conc       int     // POPHOOK_CONCURRENCY, as pophook reads it
	profileDir string  // PHBENCH_PROFILE_DIR: write profiles and strace counts here
	only       string  // PHBENCH_ONLY: comma-separated scenario names
	out        string  // PHBENCH_OUT: also write the report here
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		t.Fatalf("%s=%q: want a number", name, s)
	}
	return n
}

func readConfig(t *testing.T) config {
	c := config{
		messages:   envInt(t, "PHBENCH_MESSAGES", 2000),
		rounds:     max(1, envInt(t, "PHBENCH_ROUNDS", 3)),
		seed:       uint64(envInt(t, "PHBENCH_SEED", 20260101)),
		idleSmall:  envInt(t, "PHBENCH_IDLE_SMALL", 2000),
		idleBig:    envInt(t, "PHBENCH_IDLE_BIG", 100_000),
		accounts:   envInt(t, "PHBENCH_ACCOUNTS", 1000),
		bigMiB:     envInt(t, "PHBENCH_BIG_MIB", 25),
		lag:        envInt(t, "PHBENCH_LAG", 0),
		conc:       envInt(t, "POPHOOK_CONCURRENCY", 4),
		profileDir: os.Getenv("PHBENCH_PROFILE_DIR"),
		only:       os.Getenv("PHBENCH_ONLY"),
		out:        os.Getenv("PHBENCH_OUT"),
	}
	c.mb = float64(envInt(t, "PHBENCH_MB", 160))
	return c
}

func (c config) want(scenario string) bool {
	return c.only == "" || slices.Contains(strings.Split(c.only, ","), scenario)
}

// contender is one program (or floor) in a scenario.
type contender struct {
	name    string
	run     func(round int) sample
	bytes   int64 // what it moves, when not the scenario's bytes
	samples []sample
}

// scenario is one comparison: its contenders run alternately in every
// round, and ratios are taken against ref.
type scenario struct {
	name       string
	what       string
	msgs       int
	bytes      int64
	ref        string
	contenders []*contender
}

// TestBench is the end-to-end benchmark; see bench/run.sh. It skips
// unless PHBENCH_BIN names the pophook binary to measure.
func TestBench(t *testing.T) {
	bin := os.Getenv("PHBENCH_BIN")
	if bin == "" {
		t.Skip("the end-to-end benchmark runs from bench/run.sh (PHBENCH_BIN names the pophook binary)")
	}
	for _, tool := range []string{"/usr/bin/time", "/usr/bin/mpop"} {
		if _, err := os.Stat(tool); err != nil {
			t.Fatalf("%s is needed: apt-get install time mpop", tool)
		}
	}
	cfg := readConfig(t)
	users := map[string]string{}
	const pw = "bench-secret"
	for _, u := range []string{"alice", "hook", "idle-small", "idle-big", "big-one", "big-four", "lag"} {
		users[u] = pw
	}
	var acctUsers []string
	for i := range cfg.accounts {
		u := fmt.Sprintf("u%04d", i)
		users[u] = pw
		acctUsers = append(acctUsers, u)
	}
	started := time.Now()
	d := dovecottest.Start(t, dovecottest.Options{Users: users})
	fi, err := os.Stat(d.MaildirPath("alice"))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	e := &env{t: t, cfg: cfg, d: d, bin: bin, work: filepath.Join(d.Dir, "bench"), mailUID: int(st.Uid), mailGID: int(st.Gid)}
	if err := os.Mkdir(e.work, 0o711); err != nil {
		t.Fatal(err)
	}
	e.hook = startReceiver(t)
	load0 := loadavg()

	// The message sets, written once; mailboxes are filled by hard links.
	corpus := NewCorpus(cfg.seed, cfg.messages, int64(cfg.mb*1e6))
	mainFiles, mainBytes := e.writeFiles(filepath.Join(e.work, "corpus"), corpus.Len(), corpus.Message)
	small := NewSmallCorpus(cfg.seed+1, 64)
	smallFiles, _ := e.writeFiles(filepath.Join(e.work, "small"), small.Len(), small.Message)
	t.Logf("corpus: %d messages, %.1f MB (written in %s); Dovecot on %s", len(mainFiles), float64(mainBytes)/1e6, time.Since(started).Round(time.Millisecond), d.TLSAddr())

	var scenarios []*scenario
	add := func(s *scenario) { scenarios = append(scenarios, s) }

	// 1. pophook once to a Maildir, deleting, against mpop.
	if cfg.want("maildir") {
		s := &scenario{name: "maildir", what: fmt.Sprintf("%d messages to a Maildir, with DELE", len(mainFiles)), msgs: len(mainFiles), bytes: mainBytes, ref: "mpop"}
		s.contenders = []*contender{
			{name: "pophook once", run: func(int) sample {
				e.fill("alice", mainFiles)
				data, out := e.fresh("data"), e.fresh("out")
				sm, _ := e.pophook("pophook once (maildir)", e.pophookEnv(data, []string{"alice"}, []string{"TYPE=maildir", "PATH=" + out}), "once")
				e.check("pophook once (maildir)", "alice", out, len(mainFiles))
				return sm
			}},
			{name: "mpop", run: func(int) sample {
				e.fill("alice", mainFiles)
				dir, out := e.fresh("mpop"), maildir(t, e.fresh("out"))
				rc := e.mpoprc(filepath.Join(dir, "mpoprc"), []string{"alice"}, out, false, false, dir)
				sm, _ := e.mpop("mpop (maildir)", rc, "alice")
				e.check("mpop (maildir)", "alice", out, len(mainFiles))
				return sm
			}},
		}
		add(s)
	}

	// 2 and 3. pophook once to the webhook, json and raw, against the
	// floors: the mailbox stays (KEEP=true, a new ledger every run), as
	// the floors do not delete either.
	if cfg.want("webhook") {
		e.fill("hook", mainFiles)
		s := &scenario{name: "webhook", what: fmt.Sprintf("%d messages to a local webhook, kept on the server", len(mainFiles)), msgs: len(mainFiles), bytes: mainBytes, ref: "floor: openssl s_client"}
		hookRun := func(format string) func(int) sample {
			return func(int) sample {
				data := e.fresh("data")
				before, bytes0 := e.hook.requests.Load(), e.hook.bytes.Load()
				sm, _ := e.pophook("pophook once ("+format+")", e.pophookEnv(data, []string{"hook"},
					[]string{"TYPE=webhook", "URL=" + e.hook.url, "FORMAT=" + format}, accountVars([]string{"hook"}, "KEEP=true")...), "once")
				if got := e.hook.requests.Load() - before; got != int64(len(mainFiles)) {
					t.Fatalf("pophook once (%s): the receiver got %d requests, want %d", format, got, len(mainFiles))
				}
				// A raw body is the message (CRLF or LF); JSON carries
				// the attachments in base64, so it is not smaller either.
				if got := e.hook.bytes.Load() - bytes0; got < mainBytes {
					t.Fatalf("pophook once (%s): the receiver got %d bytes, want at least %d", format, got, mainBytes)
				}
				if left := e.d.Count(t, "hook"); left != len(mainFiles) {
					t.Fatalf("pophook once (%s): %d messages on the server, want %d kept", format, left, len(mainFiles))
				}
				return sm
			}
		}
		s.contenders = []*contender{
			{name: "pophook once json", run: hookRun("json")},
			{name: "pophook once raw", run: hookRun("raw")},
			{name: "floor: openssl s_client", run: func(int) sample { return e.sClientFloor("hook", len(mainFiles), mainBytes) }},
			{name: "floor: Go crypto/tls", run: func(int) sample { return e.goFloor("hook", len(mainFiles), mainBytes) }},
		}
		add(s)
	}

	// 4. Idle polls: everything kept and already recorded.
	var idleData = map[string]string{}
	idle := func(user string, files []string) *scenario {
		e.fill(user, files)
		data := filepath.Join(e.work, "idle-data-"+user)
		uidls := filepath.Join(e.work, "idle-mpop-"+user)
		nothing := maildir(t, filepath.Join(e.work, "idle-out-"+user))
		for _, dir := range []string{data, uidls} {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
		}
		idleData[user] = data
		penv := e.pophookEnv(data, []string{user}, []string{"TYPE=maildir", "PATH=" + nothing}, accountVars([]string{user}, "KEEP=true", "SKIP_EXISTING=true")...)
		// The first runs record what is there, delivering nothing:
		// SKIP_EXISTING for pophook, killsize 0 with keep for mpop.
		p, _ := e.pophook("pophook once (recording "+user+")", penv, "once")
		rc := e.mpoprc(filepath.Join(uidls, "mpoprc"), []string{user}, nothing, true, true, uidls)
		m, _ := e.mpop("mpop (recording "+user+")", rc, "--killsize=0", user)
		t.Logf("idle %s: %d messages recorded by pophook in %s, by mpop in %s", user, len(files), p.wall.Round(time.Millisecond), m.wall.Round(time.Millisecond))
		e.check("recording "+user, "", nothing, 0)
		e.kept("recording "+user, user, len(files))
		s := &scenario{name: "idle-" + strconv.Itoa(len(files)), what: fmt.Sprintf("idle poll, %d kept messages already recorded", len(files)), ref: "mpop"}
		s.contenders = []*contender{
			{name: "pophook once", run: func(int) sample {
				sm, _ := e.pophook("pophook once (idle)", penv, "once")
				e.check("pophook once (idle "+user+")", "", nothing, 0)
				e.kept("pophook once (idle "+user+")", user, len(files))
				return sm
			}},
			{name: "mpop", run: func(int) sample {
				sm, _ := e.mpop("mpop (idle)", rc, user)
				e.check("mpop (idle "+user+")", "", nothing, 0)
				e.kept("mpop (idle "+user+")", user, len(files))
				return sm
			}},
		}
		return s
	}
	if cfg.want("idle") {
		if cfg.idleSmall > 0 {
			files := mainFiles
			for len(files) < cfg.idleSmall {
				files = append(files, mainFiles...)
			}
			add(idle("idle-small", files[:cfg.idleSmall]))
		}
		if cfg.idleBig > 0 {
			files := make([]string, cfg.idleBig)
			for i := range files {
				files[i] = smallFiles[i%len(smallFiles)]
			}
			add(idle("idle-big", files))
		}
	}

	// 5. Many accounts with two small messages each.
	if cfg.want("accounts") && cfg.accounts > 0 {
		two := smallFiles[:2]
		var twoBytes int64
		for _, f := range two {
			fi, _ := os.Stat(f)
			twoBytes += fi.Size()
		}
		fillAll := func() {
			for _, u := range acctUsers {
				e.fill(u, two)
			}
		}
		s := &scenario{name: "accounts", what: fmt.Sprintf("%d accounts x 2 small messages, with DELE (POPHOOK_CONCURRENCY=%d)", len(acctUsers), cfg.conc),
			msgs: 2 * len(acctUsers), bytes: int64(len(acctUsers)) * twoBytes, ref: "mpop -a"}
		accEnv := func(data, out string) []string {
			return e.pophookEnv(data, acctUsers, []string{"TYPE=maildir", "PATH=" + out})
		}
		s.contenders = []*contender{
			{name: "pophook once", run: func(int) sample {
				fillAll()
				data, out := e.fresh("data"), e.fresh("out")
				sm, _ := e.pophook("pophook once (accounts)", accEnv(data, out), "once")
				e.check("pophook once (accounts)", "", out, 2*len(acctUsers))
				e.checkEmpty("pophook once (accounts)", acctUsers)
				return sm
			}},
			{name: "mpop -a", run: func(int) sample {
				fillAll()
				dir, out := e.fresh("mpop"), maildir(t, e.fresh("out"))
				rc := e.mpoprc(filepath.Join(dir, "mpoprc"), acctUsers, out, false, false, dir)
				sm, _ := e.mpop("mpop -a", rc, "-a")
				e.check("mpop -a", "", out, 2*len(acctUsers))
				e.checkEmpty("mpop -a", acctUsers)
				return sm
			}},
			{name: fmt.Sprintf("floor: bare logins x%d", cfg.conc), run: func(int) sample {
				fillAll()
				return e.loginFloor(acctUsers, cfg.conc, len(two))
			}},
		}
		add(s)
	}

	// Peak RSS for one large message, to a Maildir and as JSON.
	var bigBytes [2]int64
	if cfg.want("big") && cfg.bigMiB > 0 {
		for i, b := range []struct {
			user  string
			parts int
		}{{"big-one", 1}, {"big-four", 4}} {
			files, n := e.writeFiles(filepath.Join(e.work, b.user), 1, func(int) []byte { return BigMessage(cfg.seed, cfg.bigMiB<<20, b.parts) })
			bigBytes[i] = n
			e.fill(b.user, files)
		}
		s := &scenario{name: "big", what: fmt.Sprintf("one %d MiB message (kept): one attachment (over INLINE_LIMIT) or four (inlined in JSON)", cfg.bigMiB), msgs: 1, bytes: bigBytes[0]}
		bigRun := func(user, sink string) func(int) sample {
			return func(int) sample {
				data, out := e.fresh("data"), e.fresh("out")
				spec := []string{"TYPE=maildir", "PATH=" + out}
				if sink == "json" {
					spec = []string{"TYPE=webhook", "URL=" + e.hook.url, "FORMAT=json"}
				}
				before := e.hook.requests.Load()
				sm, _ := e.pophook("pophook once ("+user+", "+sink+")", e.pophookEnv(data, []string{user}, spec, accountVars([]string{user}, "KEEP=true")...), "once")
				if sink == "maildir" {
					e.check("pophook once ("+user+")", "", out, 1)
				} else if got := e.hook.requests.Load() - before; got != 1 {
					t.Fatalf("pophook once (%s, json): the receiver got %d requests, want 1", user, got)
				}
				e.kept("pophook once ("+user+", "+sink+")", user, 1)
				return sm
			}
		}
		s.contenders = []*contender{
			{name: "1 attachment -> Maildir", run: bigRun("big-one", "maildir")},
			{name: "1 attachment -> json", run: bigRun("big-one", "json")},
			{name: "4 attachments -> Maildir", run: bigRun("big-four", "maildir"), bytes: bigBytes[1]},
			{name: "4 attachments -> json", run: bigRun("big-four", "json"), bytes: bigBytes[1]},
		}
		add(s)
	}

	// The rounds: every scenario in each, its contenders in an order that
	// rotates from round to round.
	for round := range cfg.rounds {
		for _, s := range scenarios {
			k := len(s.contenders)
			for j := range k {
				c := s.contenders[(j+round)%k]
				sm := c.run(round)
				c.samples = append(c.samples, sm)
				t.Logf("round %d/%d %-11s %-28s %7.2fs  cpu %6.2fs  dovecot %6.2fs  rss %6.1f MiB",
					round+1, cfg.rounds, s.name, c.name, sm.wall.Seconds(), sm.cpu.Seconds(), sm.serverCPU.Seconds(), float64(sm.rssKiB)/1024)
			}
		}
	}

	var lag *lagResult
	if cfg.lag > 0 {
		lag = e.scheduleLag(cfg.lag, small)
	}
	load1 := loadavg()

	var rep strings.Builder
	report(&rep, cfg, scenarios, lag, mainBytes, load0, load1, time.Since(started))
	// The table first, so that a failure while profiling does not lose it.
	fmt.Print("\n" + rep.String())
	e.writeReport(rep.String())
	if cfg.profileDir != "" {
		n := rep.Len()
		e.profile(&rep, mainFiles, mainBytes, idleData)
		fmt.Print(rep.String()[n:])
		e.writeReport(rep.String())
	}
}

// writeReport writes the report to PHBENCH_OUT, if set.
func (e *env) writeReport(s string) {
	if e.cfg.out == "" {
		return
	}
	if err := os.WriteFile(e.cfg.out, []byte(s), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// check fails the benchmark unless the Maildir out holds want messages
// and, when user is set, the server has none left for that user.
func (e *env) check(what, user, out string, want int) {
	e.t.Helper()
	if got := count(e.t, out); got != want {
		e.t.Fatalf("%s: the Maildir holds %d messages, want %d", what, got, want)
	}
	if user != "" {
		if left := e.d.Count(e.t, user); left != 0 {
			e.t.Fatalf("%s: %d messages left on the server", what, left)
		}
	}
}

// kept fails the benchmark unless the server still holds want messages
// for user.
func (e *env) kept(what, user string, want int) {
	e.t.Helper()
	if got := e.d.Count(e.t, user); got != want {
		e.t.Fatalf("%s: %d messages on the server for %s, want %d", what, got, user, want)
	}
}

func (e *env) checkEmpty(what string, users []string) {
	e.t.Helper()
	for _, u := range users {
		if left := e.d.Count(e.t, u); left != 0 {
			e.t.Fatalf("%s: %d messages left on the server for %s", what, left, u)
		}
	}
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (c *contender) med(f func(sample) time.Duration) time.Duration {
	var ds []time.Duration
	for _, s := range c.samples {
		ds = append(ds, f(s))
	}
	return median(ds)
}

func (c *contender) peakRSS() int64 {
	var m int64
	for _, s := range c.samples {
		m = max(m, s.rssKiB)
	}
	return m
}

func (s *scenario) find(name string) *contender {
	for _, c := range s.contenders {
		if c.name == name {
			return c
		}
	}
	return nil
}

func wall(s sample) time.Duration { return s.wall }

// report writes the table and the issue-#12 targets.
func report(w *strings.Builder, cfg config, scenarios []*scenario, lag *lagResult, mainBytes int64, load0, load1 string, took time.Duration) {
	host, _ := os.Hostname()
	fmt.Fprintf(w, "pophook end-to-end benchmark: %d round(s), medians; %d CPUs; load average %s at start, %s at end; %s on %s\n",
		cfg.rounds, nproc(), load0, load1, took.Round(time.Second), host)
	if v := os.Getenv("PHBENCH_TREE"); v != "" {
		fmt.Fprintf(w, "pophook built from %s\n", v)
	}
	fmt.Fprintf(w, "main mailbox: %d messages, %.1f MB (seed %d); MB are message bytes as stored (LF), 1 MB = 10^6 bytes\n", cfg.messages, float64(mainBytes)/1e6, cfg.seed)
	fmt.Fprintf(w, "wall: the median over the rounds (min-max: the range); cpu: the contender's user+sys (in-process floors: this test process); dovecot: the server's CPU in the same run; RSS: the largest over the rounds\n\n")
	fmt.Fprintf(w, "%-11s %-28s %9s %15s %7s %9s %8s %8s %8s %9s\n", "scenario", "contender", "wall s", "min-max s", "ratio", "msgs/s", "MB/s", "cpu s", "dovecot", "RSS MiB")
	for _, s := range scenarios {
		fmt.Fprintf(w, "-- %s\n", s.what)
		ref := s.find(s.ref)
		for _, c := range s.contenders {
			if len(c.samples) == 0 {
				continue
			}
			med := c.med(wall)
			ratio := "-"
			if ref != nil && len(ref.samples) > 0 {
				ratio = fmt.Sprintf("%.2f", med.Seconds()/ref.med(wall).Seconds())
				if c == ref {
					ratio = "ref"
				}
			}
			msgs, mbs := "-", "-"
			if s.msgs > 1 {
				msgs = fmt.Sprintf("%.0f", float64(s.msgs)/med.Seconds())
			}
			if b := cmp.Or(c.bytes, s.bytes); b > 0 {
				mbs = fmt.Sprintf("%.1f", float64(b)/1e6/med.Seconds())
			}
			rss := "-"
			if r := c.peakRSS(); r > 0 {
				rss = fmt.Sprintf("%.1f", float64(r)/1024)
			}
			lo, hi := c.samples[0].wall, c.samples[0].wall
			for _, sm := range c.samples {
				lo, hi = min(lo, sm.wall), max(hi, sm.wall)
			}
			fmt.Fprintf(w, "%-11s %-28s %9.3f %15s %7s %9s %8s %8.2f %8.2f %9s\n", s.name, c.name, med.Seconds(), fmt.Sprintf("%.2f-%.2f", lo.Seconds(), hi.Seconds()), ratio, msgs, mbs,
				c.med(func(s sample) time.Duration { return s.cpu }).Seconds(), c.med(func(s sample) time.Duration { return s.serverCPU }).Seconds(), rss)
		}
	}
	if lag != nil {
		fmt.Fprintf(w, "-- schedule lag, pophook run with @every 10s to the json webhook: %d messages delivered at random moments\n", len(lag.lags))
		fmt.Fprintf(w, "lag         arrival -> webhook receipt: median %.2fs, max %.2fs, min %.2fs (all: %s)\n", median(lag.lags).Seconds(), slices.Max(lag.lags).Seconds(), slices.Min(lag.lags).Seconds(), lag.all())
	}

	// The targets of issue #12.
	fmt.Fprintf(w, "\nissue #12 targets (this run):\n")
	ratio := func(sn, a, b string) (float64, bool) {
		for _, s := range scenarios {
			if s.name != sn {
				continue
			}
			ca, cb := s.find(a), s.find(b)
			if ca == nil || cb == nil || len(ca.samples) == 0 || len(cb.samples) == 0 {
				return 0, false
			}
			return ca.med(wall).Seconds() / cb.med(wall).Seconds(), true
		}
		return 0, false
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	if r, ok := ratio("maildir", "pophook once", "mpop"); ok {
		fmt.Fprintf(w, "  Maildir <= 0.75x mpop:              %.2fx  %s\n", r, verdict(r <= 0.75))
	}
	if r, ok := ratio("webhook", "pophook once json", "floor: openssl s_client"); ok {
		r2, _ := ratio("webhook", "pophook once json", "floor: Go crypto/tls")
		fmt.Fprintf(w, "  json <= 2.5x raw floor:             %.2fx s_client (%.2fx Go floor)  %s\n", r, r2, verdict(r <= 2.5))
	}
	for _, s := range scenarios {
		if s.name == "idle-"+strconv.Itoa(cfg.idleBig) {
			p, m := s.find("pophook once"), s.find("mpop")
			pw, mw := p.med(wall).Seconds(), m.med(wall).Seconds()
			fmt.Fprintf(w, "  idle %d <= mpop and < 1 s:      %.3fs vs mpop %.3fs (%.2fx)  %s\n", cfg.idleBig, pw, mw, pw/mw, verdict(pw <= mw && pw < 1))
		}
	}
	if r, ok := ratio("accounts", "pophook once", "mpop -a"); ok {
		r2, _ := ratio("accounts", "pophook once", fmt.Sprintf("floor: bare logins x%d", cfg.conc))
		fmt.Fprintf(w, "  %d accounts <= 0.5x mpop -a or <= 1.2x floor: %.2fx mpop -a, %.2fx floor  %s\n", cfg.accounts, r, r2, verdict(r <= 0.5 || r2 <= 1.2))
	}
	if lag != nil {
		mx := slices.Max(lag.lags).Seconds()
		fmt.Fprintf(w, "  schedule lag max <= 11 s:           %.2fs  %s\n", mx, verdict(mx <= 11))
	}
	for _, s := range scenarios {
		if s.name != "big" {
			continue
		}
		for _, c := range s.contenders {
			limit := 32.0
			if strings.HasSuffix(c.name, "json") {
				limit = 64
			}
			r := float64(c.peakRSS()) / 1024
			fmt.Fprintf(w, "  peak RSS %d MiB, %-24s %.1f MiB (<= %.0f)  %s\n", cfg.bigMiB, c.name+":", r, limit, verdict(r <= limit))
		}
	}
}

func nproc() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "\nprocessor") + 1
}

type lagResult struct{ lags []time.Duration }

func (l *lagResult) all() string {
	var s []string
	for _, d := range l.lags {
		s = append(s, fmt.Sprintf("%.1f", d.Seconds()))
	}
	return strings.Join(s, " ")
}

// scheduleLag runs "pophook run" with @every 10s to the json webhook and
// delivers n messages at random moments, measuring from the moment each
// is in the mailbox to the moment the receiver sees it.
func (e *env) scheduleLag(n int, small *Corpus) *lagResult {
	t := e.t
	e.fill("lag", nil)
	data := e.fresh("lag-data")
	env := e.pophookEnv(data, []string{"lag"}, []string{"TYPE=webhook", "URL=" + e.hook.url, "FORMAT=json"}, accountVars([]string{"lag"}, "SCHEDULE=@every 10s")...)
	cmd := exec.Command(e.bin, "run")
	cmd.Env = env
	logf, err := os.Create(filepath.Join(e.work, "lag.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	e.hook.track.Store(true)
	defer e.hook.track.Store(false)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	r := rand.New(rand.NewPCG(e.cfg.seed, 99))
	sent := map[string]time.Time{}
	time.Sleep(time.Second)
	for i := range n {
		time.Sleep(time.Duration(500+r.IntN(13_500)) * time.Millisecond)
		id := fmt.Sprintf("<lag-%d-%d@bench.example>", i, time.Now().UnixNano())
		msg := small.Message(i % small.Len())
		msg = []byte(strings.Replace(string(msg), "Message-ID: <", "Message-ID: "+id+"\nX-Old-Message-ID: <", 1))
		e.d.Deliver(t, "lag", msg)
		sent[id] = time.Now()
	}
	deadline := time.Now().Add(30 * time.Second)
	res := &lagResult{}
	for {
		e.hook.mu.Lock()
		got := 0
		for id := range sent {
			if _, ok := e.hook.arrived[id]; ok {
				got++
			}
		}
		e.hook.mu.Unlock()
		if got == len(sent) {
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf.Name())
			t.Fatalf("schedule lag: %d of %d messages reached the webhook within 30s of the last delivery\n%s", got, len(sent), tailString(string(log), 3000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.hook.mu.Lock()
	for id, at := range sent {
		res.lags = append(res.lags, e.hook.arrived[id].Sub(at))
	}
	e.hook.mu.Unlock()
	slices.Sort(res.lags)
	return res
}
