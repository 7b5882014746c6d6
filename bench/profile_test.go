//go:build linux

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// profile runs the cases of the scenarios selected (PHBENCH_ONLY) once
// more with a pprof build (bench/run.sh -profile DIR): once to a
// Maildir (maildir), once to the json webhook (webhook), the large idle
// poll (idle) and once over the many accounts (accounts). Each runs once
// with CPU and heap profiles (and the runtime's GC trace) and once under
// strace counting fsync and fdatasync, once counting all system calls;
// the accounts case also once under strace -y tracing file calls, to
// attribute syncs and opens to files. The tops of the profiles and the
// counts go into the report, everything else into the directory.
func (e *env) profile(w *strings.Builder, mainFiles []string, mainBytes int64, idleData map[string]string) {
	t := e.t
	dir := e.cfg.profileDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	strace, _ := exec.LookPath("strace")
	goTool, _ := exec.LookPath("go")
	type pcase struct {
		name     string
		msgs     int
		accounts int                       // > 0: also counts per account
		setup    func() []string           // prepares a run and returns pophook's environment
		verify   func(what string)         // checks a run's outcome (nil: not checked)
		mpop     func() (string, []string) // prepares mpop's run for the fsync comparison; its arguments
	}
	var cases []pcase
	if e.cfg.want("maildir") {
		cases = append(cases, pcase{name: "once-maildir", msgs: len(mainFiles), setup: func() []string {
			e.fill("alice", mainFiles)
			data, out := e.fresh("data"), e.fresh("out")
			return e.pophookEnv(data, []string{"alice"}, []string{"TYPE=maildir", "PATH=" + out})
		}, mpop: func() (string, []string) {
			e.fill("alice", mainFiles)
			mdir, out := e.fresh("mpop"), maildir(t, e.fresh("out"))
			rc := e.mpoprc(filepath.Join(mdir, "mpoprc"), []string{"alice"}, out, false, false, mdir)
			return "mpop-maildir", []string{"-C", rc, "--quiet", "alice"}
		}})
	}
	if e.cfg.want("webhook") {
		cases = append(cases, pcase{name: "once-json", msgs: len(mainFiles), setup: func() []string {
			e.fill("hook", mainFiles)
			data := e.fresh("data")
			return e.pophookEnv(data, []string{"hook"}, []string{"TYPE=webhook", "URL=" + e.hook.url, "FORMAT=json"}, accountVars([]string{"hook"}, "KEEP=true")...)
		}})
	}
	if data, ok := idleData["idle-big"]; ok {
		cases = append(cases, pcase{name: fmt.Sprintf("idle-%d", e.cfg.idleBig), setup: func() []string {
			out := maildir(t, filepath.Join(e.work, "idle-out-idle-big"))
			return e.pophookEnv(data, []string{"idle-big"}, []string{"TYPE=maildir", "PATH=" + out}, accountVars([]string{"idle-big"}, "KEEP=true", "SKIP_EXISTING=true")...)
		}})
	}
	if e.cfg.want("accounts") && e.cfg.accounts > 0 {
		// The same mailboxes as the accounts scenario (TestBench): users
		// u0000..., two small messages each, to a Maildir with DELE.
		users := make([]string, e.cfg.accounts)
		for i := range users {
			users[i] = fmt.Sprintf("u%04d", i)
		}
		two := []string{filepath.Join(e.work, "small", "000000.eml"), filepath.Join(e.work, "small", "000001.eml")}
		fillAll := func() {
			for _, u := range users {
				e.fill(u, two)
			}
		}
		var out string
		cases = append(cases, pcase{name: "accounts", msgs: 2 * len(users), accounts: len(users), setup: func() []string {
			fillAll()
			var data string
			data, out = e.fresh("data"), e.fresh("out")
			return e.pophookEnv(data, users, []string{"TYPE=maildir", "PATH=" + out})
		}, verify: func(what string) {
			e.check(what, "", out, 2*len(users))
			e.checkEmpty(what, users)
		}, mpop: func() (string, []string) {
			fillAll()
			mdir, mout := e.fresh("mpop"), maildir(t, e.fresh("out"))
			rc := e.mpoprc(filepath.Join(mdir, "mpoprc"), users, mout, false, false, mdir)
			return "mpop-accounts", []string{"-C", rc, "--quiet", "-a"}
		}})
	}

	fmt.Fprintf(w, "\nprofiles (pprof build; files in %s)\n", dir)
	for _, c := range cases {
		cpuProf, memProf := filepath.Join(dir, c.name+".cpu.pprof"), filepath.Join(dir, c.name+".heap.pprof")
		env := append(c.setup(), "PHBENCH_CPUPROFILE="+cpuProf, "PHBENCH_MEMPROFILE="+memProf, "GODEBUG=gctrace=1")
		s, out := e.pophook("pophook once (profile "+c.name+")", env, "once")
		if c.verify != nil {
			c.verify("pophook once (profile " + c.name + ")")
		}
		os.WriteFile(filepath.Join(dir, c.name+".gctrace.txt"), []byte(out), 0o644)
		fmt.Fprintf(w, "\n== %s: wall %.2fs, pophook cpu %.2fs (user+sys), dovecot cpu %.2fs, peak RSS %.1f MiB\n",
			c.name, s.wall.Seconds(), s.cpu.Seconds(), s.serverCPU.Seconds(), float64(s.rssKiB)/1024)
		if c.accounts > 0 {
			n := float64(c.accounts)
			fmt.Fprintf(w, "-- per account: wall %.2f ms, pophook cpu %.2f ms, dovecot cpu %.2f ms\n",
				s.wall.Seconds()*1e3/n, s.cpu.Seconds()*1e3/n, s.serverCPU.Seconds()*1e3/n)
		}
		fmt.Fprintf(w, "-- GC (GODEBUG=gctrace=1, in %s): %s\n", c.name+".gctrace.txt", gcSummary(out))
		if goTool != "" {
			for _, v := range []struct{ file, label, args string }{
				{cpuProf, "cpu, flat", "-top"},
				{cpuProf, "cpu, cumulative", "-top -cum"},
				{cpuProf, "cpu inside system calls, by call", "-top -cum -focus=linux.Syscall6$ -show=^syscall\\.[A-Z][A-Za-z0-9]*$ -hide=^syscall\\.(Raw)?Syscall6?$"},
				{memProf, "heap alloc_space, flat", "-top -sample_index=alloc_space"},
				{memProf, "heap alloc_space, cumulative", "-top -cum -sample_index=alloc_space"},
			} {
				args := append([]string{"tool", "pprof"}, strings.Fields(v.args)...)
				args = append(args, "-nodecount=40", e.bin, v.file)
				out, err := exec.Command(goTool, args...).CombinedOutput()
				name := filepath.Join(dir, c.name+"."+strings.NewReplacer(", ", "-", " ", "-").Replace(v.label)+".txt")
				os.WriteFile(name, out, 0o644)
				if err != nil {
					fmt.Fprintf(w, "-- %s: go tool pprof: %v\n", v.label, err)
					continue
				}
				fmt.Fprintf(w, "-- %s (top 15; all in %s)\n%s", v.label, filepath.Base(name), pprofHead(string(out), 15))
			}
		}
		if strace == "" {
			fmt.Fprintf(w, "-- strace is not installed (apt-get install strace): no fsync counts\n")
			continue
		}
		if c.mpop != nil {
			// The same count for mpop, for comparison.
			name, args := c.mpop()
			file := filepath.Join(dir, name+".strace-fsync.txt")
			cmd := exec.Command(strace, append([]string{"-f", "-c", "-w", "-o", file, "-e", "trace=fsync,fdatasync,sync_file_range,syncfs,msync",
				"/usr/bin/mpop"}, args...)...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + e.work}
			start := time.Now()
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("strace mpop: %v\n%s", err, b)
			}
			fmt.Fprintf(w, "-- mpop, for comparison: %s\n", fsyncLine(straceSummary(file), c.msgs, c.accounts, time.Since(start)))
		}
		runs := []struct{ suffix, filter string }{
			{"fsync", "trace=fsync,fdatasync,sync_file_range,syncfs,msync"},
			{"syscalls", ""},
		}
		if c.accounts > 0 {
			runs = append(runs, struct{ suffix, filter string }{"files", "trace=%file,fsync,fdatasync,flock,ftruncate,fcntl,connect"})
		}
		for _, v := range runs {
			out := filepath.Join(dir, c.name+".strace-"+v.suffix+".txt")
			env := c.setup()
			args := []string{"-f", "-c", "-w", "-o", out}
			if v.suffix == "files" {
				// A full trace, with paths for descriptors, to attribute
				// syncs and opens to files.
				args = []string{"-f", "-y", "-qq", "-o", out}
			}
			if v.filter != "" {
				args = append(args, "-e", v.filter)
			}
			cmd := exec.Command(strace, append(args, e.bin, "once")...)
			cmd.Env = env
			start := time.Now()
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("strace %s: %v\n%s", c.name, err, b)
			}
			took := time.Since(start)
			if c.verify != nil {
				c.verify("pophook once (strace " + v.suffix + " " + c.name + ")")
			}
			switch v.suffix {
			case "fsync":
				fmt.Fprintf(w, "-- pophook: %s\n", fsyncLine(straceSummary(out), c.msgs, c.accounts, took))
			case "syscalls":
				fmt.Fprintf(w, "-- syscalls by wall time (strace -f -c -w, %.2fs under strace; blocking waits of idle threads included):\n", took.Seconds())
				rows := straceSummary(out)
				for i, r := range rows {
					if i == 12 && c.accounts == 0 {
						break
					}
					per := ""
					if c.accounts > 0 {
						per = fmt.Sprintf(" %8.2f per account", float64(r.calls)/float64(c.accounts))
					}
					fmt.Fprintf(w, "   %-16s %8d calls %9.3fs%s\n", r.name, r.calls, r.seconds, per)
				}
			case "files":
				summary := straceFiles(out, e.work, c.accounts)
				sumFile := filepath.Join(dir, c.name+".strace-files-summary.txt")
				os.WriteFile(sumFile, []byte(summary), 0o644)
				fmt.Fprintf(w, "-- file calls by path (strace -f -y, %.2fs under strace; unique names as *, digits as #, the work dir as $W, its parent $D; all in %s):\n%s",
					took.Seconds(), filepath.Base(sumFile), headLines(summary, 40))
			}
		}
	}
}

// fsyncLine sums the rows of strace -c -w for the sync calls.
func fsyncLine(rows []straceRow, msgs, accounts int, took time.Duration) string {
	calls, secs := 0, 0.0
	var parts []string
	for _, r := range rows {
		calls += r.calls
		secs += r.seconds
		parts = append(parts, fmt.Sprintf("%s %d", r.name, r.calls))
	}
	per := "-"
	if msgs > 0 {
		per = fmt.Sprintf("%.2f", float64(calls)/float64(msgs))
	}
	if accounts > 0 {
		per += fmt.Sprintf(" per message, %.2f per account", float64(calls)/float64(accounts))
	} else {
		per += " per message"
	}
	return fmt.Sprintf("fsyncs (strace -f -c -w, a separate run of %.2fs under strace): %d calls (%s), %s, %.2fs wall inside them",
		took.Seconds(), calls, strings.Join(parts, ", "), per, secs)
}

var gcLine = regexp.MustCompile(`(?m)^gc (\d+) @([\d.]+)s (\d+)%: .*? (\d+)->(\d+)->(\d+) MB, (\d+) MB goal, (\d+) MB stacks`)

// gcSummary sums up the lines GODEBUG=gctrace=1 wrote: how many
// collections, the largest heap, live heap, goal and stacks, and the GC's
// share of the CPU at the last one (the runtime's cumulative figure).
func gcSummary(out string) string {
	m := gcLine.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return "no gctrace lines"
	}
	atoi := func(s string) int { n, _ := strconv.Atoi(s); return n }
	var heap, live, goal, stacks int
	for _, f := range m {
		heap = max(heap, atoi(f[4]), atoi(f[5]))
		live = max(live, atoi(f[6]))
		goal = max(goal, atoi(f[7]))
		stacks = max(stacks, atoi(f[8]))
	}
	last := m[len(m)-1]
	return fmt.Sprintf("%d collections; largest heap %d MB, live after GC %d MB, goal %d MB, stacks %d MB; GC %s%% of CPU by %ss",
		len(m), heap, live, goal, stacks, last[3], last[2])
}

var (
	straceCall  = regexp.MustCompile(`^(?:\d+\s+)?([a-z0-9_]+)\((.*)$`)
	straceStr   = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"(?:, ([A-Z_|0-9]+))?`)
	straceFd    = regexp.MustCompile(`^(\d+)<([^>]*)>`)
	stracePort  = regexp.MustCompile(`sin_port=htons\((\d+)\)`)
	straceErr   = regexp.MustCompile(`= -1 ([A-Z]+)`)
	straceDigit = regexp.MustCompile(`[0-9]+`)
	// a file name made unique (a Maildir's, a temporary file's): long, with digits
	straceName = regexp.MustCompile(`/[^/ ]*[0-9][^/ ]*[^/ ]{16,}`)
)

// straceFiles counts the calls of a strace -f -y trace by call and file
// (work as $W, its parent as $D, unique file names as *, digits as #),
// largest first, with the count per account.
func straceFiles(path, work string, accounts int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error() + "\n"
	}
	counts := map[string]int{}
	for _, l := range strings.Split(string(b), "\n") {
		m := straceCall.FindStringSubmatch(l)
		if m == nil {
			continue // "<... resumed>", exits, signals
		}
		name, args := m[1], m[2]
		what := ""
		switch {
		case name == "connect":
			if p := stracePort.FindStringSubmatch(args); p != nil {
				what = "port " + p[1]
			}
		case straceFd.MatchString(args) && !strings.HasPrefix(name, "open"):
			what = straceFd.FindStringSubmatch(args)[2]
		default:
			if s := straceStr.FindStringSubmatch(args); s != nil {
				what = s[1]
				if s[2] != "" {
					what += " " + s[2]
				}
			}
		}
		what = strings.ReplaceAll(strings.ReplaceAll(what, work, "$W"), filepath.Dir(work), "$D")
		what = straceName.ReplaceAllString(what, "/*")
		what = straceDigit.ReplaceAllString(what, "#")
		if e := straceErr.FindStringSubmatch(l); e != nil {
			what += " = " + e[1]
		}
		counts[name+" "+what]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if counts[keys[i]] != counts[keys[j]] {
			return counts[keys[i]] > counts[keys[j]]
		}
		return keys[i] < keys[j]
	})
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "   %8d %8.2f/account  %s\n", counts[k], float64(counts[k])/float64(max(accounts, 1)), k)
	}
	return sb.String()
}

// headLines keeps the first n lines of s.
func headLines(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "")
}

// pprofHead keeps the header and the first n rows of go tool pprof -top.
func pprofHead(s string, n int) string {
	lines := strings.Split(s, "\n")
	var out []string
	rows := -1
	for _, l := range lines {
		if rows >= 0 {
			if rows == n || l == "" {
				break
			}
			rows++
		}
		if strings.HasPrefix(strings.TrimSpace(l), "flat") {
			rows = 0
		}
		if strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") || strings.HasPrefix(l, "Duration:") || strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") {
			continue
		}
		out = append(out, "   "+l)
	}
	return strings.Join(out, "\n") + "\n"
}

type straceRow struct {
	name    string
	calls   int
	seconds float64
}

// straceSummary reads the table strace -c writes, ordered by time.
func straceSummary(path string) []straceRow {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var rows []straceRow
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		// % time, seconds, usecs/call, calls, [errors,] syscall
		if len(f) < 5 || strings.HasPrefix(l, "%") || strings.HasPrefix(l, "-") || f[len(f)-1] == "total" {
			continue
		}
		secs, err1 := strconv.ParseFloat(f[1], 64)
		calls, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			continue
		}
		rows = append(rows, straceRow{name: f[len(f)-1], calls: calls, seconds: secs})
	}
	return rows
}
