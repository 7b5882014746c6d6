//go:build linux

package bench

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
)

// sample is what one timed run of one contender measured.
type sample struct {
	wall      time.Duration
	cpu       time.Duration // the contender's user+sys (its process tree, or this process for in-process floors)
	serverCPU time.Duration // Dovecot's user+sys during the run (all its processes)
	rssKiB    int64         // peak RSS of the contender's process (0: in-process, not measured)
}

// env is the shared state of one benchmark run.
type env struct {
	t       *testing.T
	cfg     config
	d       *dovecottest.Server
	bin     string
	work    string // scratch space on the same file system as the mail
	mailUID int
	mailGID int
	stamp   time.Time // last Maildir name time handed out
	seq     int
	hook    *receiver
}

// timeRun runs cmd under GNU time -v and measures it: wall time here,
// CPU and peak RSS from time's report (the child's own rusage, unlike
// the rusage a large Go parent sees after vfork), Dovecot's CPU from
// /proc. Dirty pages are written out first, so that a run does not pay
// for the write-back of what was set up before it.
func (e *env) timeRun(name string, cmd *exec.Cmd) (sample, string) {
	e.t.Helper()
	report := filepath.Join(e.work, "time-report")
	wrapped := exec.Command("/usr/bin/time", append([]string{"-v", "-o", report, cmd.Path}, cmd.Args[1:]...)...)
	wrapped.Env, wrapped.Stdin, wrapped.Dir = cmd.Env, cmd.Stdin, cmd.Dir
	var out bytes.Buffer
	wrapped.Stdout, wrapped.Stderr = &out, &out
	if cmd.Stdout != nil {
		wrapped.Stdout = cmd.Stdout
	}
	syscall.Sync()
	srv0 := e.dovecotCPU()
	start := time.Now()
	err := wrapped.Run()
	wall := time.Since(start)
	srv1 := e.settledDovecotCPU()
	if err != nil {
		e.t.Fatalf("%s: %v\n%s", name, err, tailString(out.String(), 3000))
	}
	rep, rerr := os.ReadFile(report)
	if rerr != nil {
		e.t.Fatalf("%s: GNU time's report: %v", name, rerr)
	}
	s := sample{wall: wall, serverCPU: srv1 - srv0}
	for _, line := range strings.Split(string(rep), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ": ")
		if !ok {
			continue
		}
		switch k {
		case "User time (seconds)", "System time (seconds)":
			f, _ := strconv.ParseFloat(v, 64)
			s.cpu += time.Duration(f * float64(time.Second))
		case "Maximum resident set size (kbytes)":
			s.rssKiB, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return s, out.String()
}

// inProcess measures f, which runs in this process (the Go floors).
func (e *env) inProcess(f func()) sample {
	syscall.Sync()
	srv0 := e.dovecotCPU()
	cpu0 := selfCPU()
	start := time.Now()
	f()
	wall := time.Since(start)
	cpu := selfCPU() - cpu0
	return sample{wall: wall, cpu: cpu, serverCPU: e.settledDovecotCPU() - srv0}
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// clockTick is USER_HZ, the unit of the CPU times in /proc/PID/stat; 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// dovecotCPU is the CPU time used so far by this Dovecot: every process
// under its master, living or reaped (cutime/cstime hold what a process's
// waited-for children used).
func (e *env) dovecotCPU() time.Duration {
	master := e.dovecotMaster()
	if master == 0 {
		return 0
	}
	children := map[int][]int{}
	stats := map[int][4]int64{}
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		ppid, times, ok := procTimes(pid)
		if !ok {
			continue
		}
		children[ppid] = append(children[ppid], pid)
		stats[pid] = times
	}
	var ticks int64
	var walk func(int)
	walk = func(pid int) {
		t := stats[pid]
		ticks += t[0] + t[1] + t[2] + t[3]
		for _, c := range children[pid] {
			walk(c)
		}
	}
	walk(master)
	return time.Duration(ticks) * clockTick
}

// settledDovecotCPU waits until Dovecot's per-connection processes have
// gone (a client's QUIT returns before its pop3 process has exited and
// been reaped) and then reads dovecotCPU.
func (e *env) settledDovecotCPU() time.Duration {
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && e.dovecotBusy() {
		time.Sleep(5 * time.Millisecond)
	}
	return e.dovecotCPU()
}

// dovecotBusy reports whether a pop3 or pop3-login process of this
// Dovecot is still running.
func (e *env) dovecotBusy() bool {
	master := e.dovecotMaster()
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile("/proc/" + ent.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(data)
		i, j := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if i < 0 || j < i {
			continue
		}
		comm := s[i+1 : j]
		f := strings.Fields(s[j+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		if ppid == master && pid != master && (comm == "pop3" || comm == "pop3-login") {
			return true
		}
	}
	return false
}

var masterCache sync.Map // conf path -> pid

func (e *env) dovecotMaster() int {
	conf := filepath.Join(e.d.Dir, "dovecot.conf")
	if v, ok := masterCache.Load(conf); ok {
		return v.(int)
	}
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + ent.Name() + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) >= 4 && strings.HasSuffix(args[0], "dovecot") && slices.Contains(args, conf) {
			masterCache.Store(conf, pid)
			return pid
		}
	}
	return 0
}

// procTimes reads ppid and utime, stime, cutime, cstime of a process.
func procTimes(pid int) (ppid int, times [4]int64, ok bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, times, false
	}
	s := string(data)
	j := strings.LastIndexByte(s, ')')
	if j < 0 {
		return 0, times, false
	}
	f := strings.Fields(s[j+1:])
	// f[0] is the state (field 3); utime is field 14, so f[11].
	if len(f) < 15 {
		return 0, times, false
	}
	ppid, _ = strconv.Atoi(f[1])
	for k := range times {
		times[k], _ = strconv.ParseInt(f[11+k], 10, 64)
	}
	return ppid, times, true
}

// fill empties user's Maildir on the server and links files into new/,
// in order, under names whose time part increases (Dovecot numbers new
// mail by that). The files must belong to Dovecot's mail user already;
// linking instead of copying keeps the refill between runs cheap and
// free of write-back.
func (e *env) fill(user string, files []string) {
	e.t.Helper()
	md := e.d.MaildirPath(user)
	for _, sub := range []string{"new", "cur", "tmp"} {
		ents, err := os.ReadDir(filepath.Join(md, sub))
		if err != nil {
			e.t.Fatal(err)
		}
		for _, ent := range ents {
			if err := os.Remove(filepath.Join(md, sub, ent.Name())); err != nil {
				e.t.Fatal(err)
			}
		}
	}
	pid := os.Getpid()
	for _, f := range files {
		now := time.Now().Truncate(time.Microsecond)
		if !now.After(e.stamp) {
			now = e.stamp.Add(time.Microsecond)
		}
		e.stamp = now
		e.seq++
		name := fmt.Sprintf("%d.M%06dP%dQ%d.bench", now.Unix(), now.Nanosecond()/1000, pid, e.seq)
		if err := os.Link(f, filepath.Join(md, "new", name)); err != nil {
			e.t.Fatal(err)
		}
	}
}

// writeFiles writes messages into dir as files owned by Dovecot's mail
// user and returns their paths and total size.
func (e *env) writeFiles(dir string, n int, msg func(i int) []byte) ([]string, int64) {
	e.t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	paths := make([]string, n)
	var total int64
	for i := range n {
		m := msg(i)
		total += int64(len(m))
		paths[i] = filepath.Join(dir, fmt.Sprintf("%06d.eml", i))
		if err := os.WriteFile(paths[i], m, 0o600); err != nil {
			e.t.Fatal(err)
		}
		if err := os.Lchown(paths[i], e.mailUID, e.mailGID); err != nil {
			e.t.Fatal(err)
		}
	}
	return paths, total
}

// count returns the number of messages in a Maildir (new and cur).
func count(t *testing.T, maildir string) int {
	t.Helper()
	n := 0
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(maildir, sub))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, ent := range ents {
			if !strings.HasPrefix(ent.Name(), ".") {
				n++
			}
		}
	}
	return n
}

// fresh returns a new, empty directory under the work dir, removing an
// older one of the same name.
func (e *env) fresh(name string) string {
	e.t.Helper()
	dir := filepath.Join(e.work, name)
	if err := os.RemoveAll(dir); err != nil {
		e.t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		e.t.Fatal(err)
	}
	return dir
}

// maildir makes dir a Maildir (mpop wants tmp, new and cur to exist).
func maildir(t *testing.T, dir string) string {
	t.Helper()
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// pophookEnv is the environment for pophook with the given accounts
// (Dovecot users) delivering to one sink "out" described by sink
// (TYPE=..., PATH=..., ...). extra entries are appended as they are.
func (e *env) pophookEnv(dataDir string, users []string, sink []string, extra ...string) []string {
	names := make([]string, len(users))
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"POPHOOK_DATA_DIR=" + dataDir,
		"POPHOOK_HTTP_ADDR=",
		"POPHOOK_LOG_LEVEL=warn",
		"POPHOOK_SINKS=out",
	}
	for i, u := range users {
		names[i] = strings.ReplaceAll(u, "-", "_")
		p := "POPHOOK_ACCOUNT_" + strings.ToUpper(names[i]) + "_"
		env = append(env,
			p+"HOST="+e.d.Host,
			p+"PORT="+strconv.Itoa(e.d.TLSPort),
			p+"TLS_CA_FILE="+e.d.CAFile,
			p+"USERNAME="+u,
			p+"PASSWORD="+e.d.Users[u],
			p+"SINKS=out",
		)
	}
	env = append(env, "POPHOOK_ACCOUNTS="+strings.Join(names, ","))
	for _, s := range sink {
		env = append(env, "POPHOOK_SINK_OUT_"+s)
	}
	// Always explicit: the login floor runs at this concurrency.
	env = append(env, "POPHOOK_CONCURRENCY="+strconv.Itoa(e.cfg.conc))
	return append(env, extra...)
}

// accountVars returns "POPHOOK_ACCOUNT_<U>_k=v" for every user.
func accountVars(users []string, kv ...string) []string {
	var out []string
	for _, u := range users {
		p := "POPHOOK_ACCOUNT_" + strings.ToUpper(strings.ReplaceAll(u, "-", "_")) + "_"
		for _, s := range kv {
			out = append(out, p+s)
		}
	}
	return out
}

// pophook runs "pophook ARGS" with env and measures it.
func (e *env) pophook(name string, env []string, args ...string) (sample, string) {
	cmd := exec.Command(e.bin, args...)
	cmd.Env = env
	return e.timeRun(name, cmd)
}

// mpoprc writes an mpop configuration, mode 0600, for the users on the
// server, delivering into mdir; keep and onlyNew set those commands. The
// UIDL files live in uidlDir, one per user.
func (e *env) mpoprc(path string, users []string, mdir string, keep, onlyNew bool, uidlDir string) string {
	e.t.Helper()
	onOff := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "defaults\ntls on\ntls_starttls off\ntls_trust_file %s\nhost %s\nport %d\nauth plain\ntimeout 120\nkeep %s\nonly_new %s\nuidls_file %s\ndelivery maildir %s\n",
		e.d.CAFile, e.d.Host, e.d.TLSPort, onOff(keep), onOff(onlyNew), filepath.Join(uidlDir, "%U.uidls"), mdir)
	for _, u := range users {
		fmt.Fprintf(&b, "\naccount %s\nuser %s\npassword %s\n", u, u, e.d.Users[u])
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return path
}

// mpop runs mpop with the configuration rc and the arguments.
func (e *env) mpop(name, rc string, args ...string) (sample, string) {
	cmd := exec.Command("/usr/bin/mpop", append([]string{"-C", rc, "--quiet"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + e.work}
	return e.timeRun(name, cmd)
}

// receiver is the local webhook endpoint: it reads and discards every
// body and answers 200 with a small JSON body. With track set it decodes
// each JSON payload and notes when each Message-ID arrived.
type receiver struct {
	srv      *http.Server
	url      string
	requests atomic.Int64
	bytes    atomic.Int64
	track    atomic.Bool
	mu       sync.Mutex
	arrived  map[string]time.Time
}

func startReceiver(t *testing.T) *receiver {
	rc := &receiver{arrived: map[string]time.Time{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc.url = "http://" + l.Addr().String() + "/hook"
	rc.srv = &http.Server{Handler: rc, ReadHeaderTimeout: 10 * time.Second}
	go rc.srv.Serve(l)
	t.Cleanup(func() { rc.srv.Close() })
	return rc
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	at := time.Now()
	var n int64
	if rc.track.Load() {
		var p struct {
			Data struct {
				MessageID string `json:"message_id"`
			} `json:"data"`
		}
		body, _ := io.ReadAll(r.Body)
		n = int64(len(body))
		if json.Unmarshal(body, &p) == nil {
			rc.mu.Lock()
			if _, dup := rc.arrived[p.Data.MessageID]; !dup {
				rc.arrived[p.Data.MessageID] = at
			}
			rc.mu.Unlock()
		}
	} else {
		n, _ = io.Copy(io.Discard, r.Body)
	}
	rc.requests.Add(1)
	rc.bytes.Add(n)
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"ok":true}`+"\n")
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
