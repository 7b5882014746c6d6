//go:build linux

package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// profile runs three cases once more with a pprof build (bench/run.sh
// -profile DIR): once to a Maildir, once to the json webhook and the
// large idle poll. Each runs once with CPU and heap profiles and once
// under strace counting fsync and fdatasync; the tops of the profiles and
// the counts go into the report, everything else into the directory.
func (e *env) profile(w *strings.Builder, mainFiles []string, mainBytes int64, idleData map[string]string) {
	t := e.t
	dir := e.cfg.profileDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	strace, _ := exec.LookPath("strace")
	goTool, _ := exec.LookPath("go")
	type pcase struct {
		name  string
		msgs  int
		setup func() []string // prepares a run and returns pophook's environment
	}
	var cases []pcase
	cases = append(cases, pcase{"once-maildir", len(mainFiles), func() []string {
		e.fill("alice", mainFiles)
		data, out := e.fresh("data"), e.fresh("out")
		return e.pophookEnv(data, []string{"alice"}, []string{"TYPE=maildir", "PATH=" + out})
	}})
	cases = append(cases, pcase{"once-json", len(mainFiles), func() []string {
		e.fill("hook", mainFiles)
		data := e.fresh("data")
		return e.pophookEnv(data, []string{"hook"}, []string{"TYPE=webhook", "URL=" + e.hook.url, "FORMAT=json"}, accountVars([]string{"hook"}, "KEEP=true")...)
	}})
	if data, ok := idleData["idle-big"]; ok {
		cases = append(cases, pcase{fmt.Sprintf("idle-%d", e.cfg.idleBig), 0, func() []string {
			out := maildir(t, filepath.Join(e.work, "idle-out-idle-big"))
			return e.pophookEnv(data, []string{"idle-big"}, []string{"TYPE=maildir", "PATH=" + out}, accountVars([]string{"idle-big"}, "KEEP=true", "SKIP_EXISTING=true")...)
		}})
	}

	fmt.Fprintf(w, "\nprofiles (pprof build; files in %s)\n", dir)
	for _, c := range cases {
		cpuProf, memProf := filepath.Join(dir, c.name+".cpu.pprof"), filepath.Join(dir, c.name+".heap.pprof")
		env := append(c.setup(), "PHBENCH_CPUPROFILE="+cpuProf, "PHBENCH_MEMPROFILE="+memProf)
		s, _ := e.pophook("pophook once (profile "+c.name+")", env, "once")
		fmt.Fprintf(w, "\n== %s: wall %.2fs, pophook cpu %.2fs (user+sys), dovecot cpu %.2fs, peak RSS %.1f MiB\n",
			c.name, s.wall.Seconds(), s.cpu.Seconds(), s.serverCPU.Seconds(), float64(s.rssKiB)/1024)
		if goTool != "" {
			for _, v := range []struct{ file, label, args string }{
				{cpuProf, "cpu, flat", "-top"},
				{cpuProf, "cpu, cumulative", "-top -cum"},
				{cpuProf, "cpu inside system calls, by call", "-top -cum -focus=linux.Syscall6$ -show=^syscall\\.[A-Z][A-Za-z0-9]*$ -hide=^syscall\\.(Raw)?Syscall6?$"},
				{memProf, "heap alloc_space, flat", "-top -sample_index=alloc_space"},
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
		if c.name == "once-maildir" {
			// The same count for mpop, for comparison.
			e.fill("alice", mainFiles)
			mdir, out := e.fresh("mpop"), maildir(t, e.fresh("out"))
			rc := e.mpoprc(filepath.Join(mdir, "mpoprc"), []string{"alice"}, out, false, false, mdir)
			file := filepath.Join(dir, "mpop-maildir.strace-fsync.txt")
			cmd := exec.Command(strace, "-f", "-c", "-w", "-o", file, "-e", "trace=fsync,fdatasync,sync_file_range,syncfs,msync",
				"/usr/bin/mpop", "-C", rc, "--quiet", "alice")
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + e.work}
			start := time.Now()
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("strace mpop: %v\n%s", err, b)
			}
			fmt.Fprintf(w, "-- mpop, for comparison: %s\n", fsyncLine(straceSummary(file), c.msgs, time.Since(start)))
		}
		for _, v := range []struct{ suffix, filter string }{
			{"fsync", "trace=fsync,fdatasync,sync_file_range,syncfs,msync"},
			{"syscalls", ""},
		} {
			out := filepath.Join(dir, c.name+".strace-"+v.suffix+".txt")
			env := c.setup()
			args := []string{"-f", "-c", "-w", "-o", out}
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
			rows := straceSummary(out)
			if v.suffix == "fsync" {
				fmt.Fprintf(w, "-- pophook: %s\n", fsyncLine(rows, c.msgs, took))
			} else {
				fmt.Fprintf(w, "-- syscalls by wall time (strace -f -c -w, %.2fs under strace; blocking waits of idle threads included):\n", took.Seconds())
				for i, r := range rows {
					if i == 12 {
						break
					}
					fmt.Fprintf(w, "   %-16s %8d calls %9.3fs\n", r.name, r.calls, r.seconds)
				}
			}
		}
	}
}

// fsyncLine sums the rows of strace -c -w for the sync calls.
func fsyncLine(rows []straceRow, msgs int, took time.Duration) string {
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
	return fmt.Sprintf("fsyncs (strace -f -c -w, a separate run of %.2fs under strace): %d calls (%s), %s per message, %.2fs wall inside them",
		took.Seconds(), calls, strings.Join(parts, ", "), per, secs)
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
