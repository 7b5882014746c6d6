//go:build linux

package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
)

const (
	benchDefaultMessages = 2000
	benchMinDefaultBytes = 150_000_000 // what the default set must add up to
	benchSeed            = 20260101
)

// BenchmarkOnceVsMpop moves the same N mixed-size messages (default 2000,
// about 200 MB; PHTEST_BENCH_MESSAGES changes N) from a private Dovecot
// over implicit TLS into a fresh Maildir, deleting them from the server,
// first with "pophook once" and then with Debian's mpop, in the same run.
// Before each tool the identical messages are delivered again, and after
// each the mailbox must be empty and the Maildir must hold N files.
//
// It reports each tool's wall time and peak RSS (the child's own
// ru_maxrss) and pophook's time relative to mpop's; ns/op is the two wall
// times together (delivery and checks are not timed; dirty pages are
// synced before each tool starts). Absolute times vary a lot from run to
// run with the disk and with how many files were deleted recently (ext4
// skips recently freed inodes when it allocates new ones, which costs
// CPU); compare the two tools within one run. Run it once:
//
//	go test ./cmd/pophook/ -run '^$' -bench OnceVsMpop -benchtime=1x -timeout 30m
func BenchmarkOnceVsMpop(b *testing.B) {
	mpopBin, err := exec.LookPath("mpop")
	if err != nil {
		b.Skip("mpop is not installed; install it with: apt-get install mpop")
	}
	n := benchMessageCount(b)
	bin := pophookBinary(b)
	d := dovecottest.Start(b, dovecottest.Options{})
	work := b.TempDir()

	var (
		total     int64
		pop, mpop measurement // summed over the iterations; peak RSS is the largest
		iters     int
	)
	for b.Loop() {
		b.StopTimer()
		iters++
		dir, err := os.MkdirTemp(work, "iter-")
		if err != nil {
			b.Fatal(err)
		}

		// (a) pophook once, default configuration: delete after delivery.
		total = deliverBenchMail(b, d, n)
		if n == benchDefaultMessages && total < benchMinDefaultBytes {
			b.Fatalf("the default message set is only %d bytes, want at least %d", total, benchMinDefaultBytes)
		}
		popMaildir := filepath.Join(dir, "pophook-maildir")
		cmd := exec.Command(bin, "once")
		cmd.Env = dovecotEnv(d, filepath.Join(dir, "pophook-data"), popMaildir, "POPHOOK_LOG_LEVEL=warn")
		m := runMeasured(b, "pophook once", cmd)
		if s := strings.TrimSpace(m.out); s != "" {
			b.Logf("pophook once said:\n%s", s)
		}
		pop.add(m)
		checkBenchResult(b, d, "pophook once", popMaildir, n)

		// (b) mpop on the same mailbox contents.
		deliverBenchMail(b, d, n)
		mpopMaildir := filepath.Join(dir, "mpop-maildir")
		for _, sub := range []string{"", "tmp", "new", "cur"} {
			if err := os.MkdirAll(filepath.Join(mpopMaildir, sub), 0o700); err != nil {
				b.Fatal(err)
			}
		}
		conf := writeMpopConfig(b, d, dir, mpopMaildir)
		cmd = exec.Command(mpopBin, "-C", conf, "--quiet", "bench")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}
		mpop.add(runMeasured(b, "mpop", cmd))
		checkBenchResult(b, d, "mpop", mpopMaildir, n)

		if err := os.RemoveAll(dir); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}

	it := float64(iters)
	popS, mpopS := pop.wall.Seconds()/it, mpop.wall.Seconds()/it
	mb := float64(total) / 1e6
	b.ReportMetric(popS, "pophook-s")
	b.ReportMetric(mpopS, "mpop-s")
	b.ReportMetric(float64(pop.rssKiB)/1024, "pophook-peakRSS-MiB")
	b.ReportMetric(float64(mpop.rssKiB)/1024, "mpop-peakRSS-MiB")
	b.ReportMetric(popS/mpopS, "pophook/mpop-time")
	b.ReportMetric(mb, "MB")
	b.Logf("%d messages, %.1f MB, TLS, with delete: pophook once %.2fs (%.1f MB/s; CPU %.2fs user + %.2fs sys), peak RSS %.1f MiB; mpop %.2fs (%.1f MB/s; CPU %.2fs user + %.2fs sys), peak RSS %.1f MiB; pophook/mpop time %.2f",
		n, mb,
		popS, mb/popS, pop.user.Seconds()/it, pop.sys.Seconds()/it, float64(pop.rssKiB)/1024,
		mpopS, mb/mpopS, mpop.user.Seconds()/it, mpop.sys.Seconds()/it, float64(mpop.rssKiB)/1024,
		popS/mpopS)
}

// measurement is what runMeasured finds out about one run of a command.
type measurement struct {
	wall, user, sys time.Duration
	rssKiB          int64 // peak RSS of the process itself (ru_maxrss, KiB on Linux)
	out             string
}

func (m *measurement) add(o measurement) {
	m.wall += o.wall
	m.user += o.user
	m.sys += o.sys
	m.rssKiB = max(m.rssKiB, o.rssKiB)
}

// runMeasured runs cmd with the benchmark timer running only around it
// and fails the benchmark unless it exits 0. Dirty pages are written out
// first (sync), so that the command does not pay for writing back what
// the delivery before it left in the page cache.
func runMeasured(b *testing.B, name string, cmd *exec.Cmd) measurement {
	b.Helper()
	var out bytes.Buffer
	cmd, peakRSS := withPeakRSS(b, cmd)
	cmd.Stdout = &out
	cmd.Stderr = &out
	syscall.Sync()
	b.StartTimer()
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatalf("%s: %v\n%s", name, err, out.String())
	}
	return measurement{wall: wall, user: cmd.ProcessState.UserTime(), sys: cmd.ProcessState.SystemTime(), out: out.String(), rssKiB: peakRSS()}
}

// withPeakRSS runs cmd under GNU time, which reports the peak RSS of the
// command alone. The rusage a Go parent gets from wait4 is no good for
// this: the child starts as a vfork sharing the parent's memory, and exec
// carries that memory's high-water mark into the child's ru_maxrss, so a
// large test process would show up as a large pophook.
func withPeakRSS(tb testing.TB, cmd *exec.Cmd) (*exec.Cmd, func() int64) {
	tb.Helper()
	timeBin, err := exec.LookPath("time")
	if _, statErr := os.Stat("/usr/bin/time"); statErr == nil {
		timeBin, err = "/usr/bin/time", nil
	}
	if err != nil {
		tb.Fatal("GNU time is needed to measure peak RSS: apt-get install time")
	}
	report := filepath.Join(tb.TempDir(), "rss")
	wrapped := exec.Command(timeBin, append([]string{"-f", "%M", "-o", report, cmd.Path}, cmd.Args[1:]...)...)
	wrapped.Env = cmd.Env
	return wrapped, func() int64 {
		b, err := os.ReadFile(report)
		if err != nil {
			tb.Fatalf("peak RSS report: %v", err)
		}
		fields := strings.Fields(string(b))
		if len(fields) == 0 {
			tb.Fatalf("peak RSS report is empty")
		}
		kib, err := strconv.ParseInt(fields[len(fields)-1], 10, 64)
		if err != nil {
			tb.Fatalf("peak RSS report %q: %v", b, err)
		}
		return kib
	}
}

// benchMessageCount is N: PHTEST_BENCH_MESSAGES, or the default.
func benchMessageCount(b *testing.B) int {
	s := os.Getenv("PHTEST_BENCH_MESSAGES")
	if s == "" {
		return benchDefaultMessages
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		b.Fatalf("PHTEST_BENCH_MESSAGES=%q: want a positive number of messages", s)
	}
	return n
}

// checkBenchResult fails the benchmark unless the server mailbox is empty
// and maildir holds n messages.
func checkBenchResult(b *testing.B, d *dovecottest.Server, tool, maildir string, n int) {
	b.Helper()
	if left := d.Count(b, "alice"); left != 0 {
		b.Fatalf("%s: %d message(s) left on the server, want 0", tool, left)
	}
	got := 0
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(maildir, sub))
		if err != nil {
			b.Fatalf("%s: %v", tool, err)
		}
		for _, e := range ents {
			if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
				got++
			}
		}
	}
	if got != n {
		b.Fatalf("%s: the Maildir holds %d message(s), want %d", tool, got, n)
	}
}

// writeMpopConfig writes an mpop configuration (mode 0600, as mpop
// demands) for alice on d over implicit TLS, verified against d's CA,
// deleting what it delivered into maildir. The UIDL file stays in dir.
func writeMpopConfig(b *testing.B, d *dovecottest.Server, dir, maildir string) string {
	b.Helper()
	pw := d.Users["alice"]
	for _, s := range []string{pw, d.CAFile, maildir, dir} {
		if strings.ContainsAny(s, " \t\n\"#\\") {
			b.Fatalf("cannot put %q into an mpop configuration unquoted", s)
		}
	}
	conf := fmt.Sprintf(`defaults
tls on
tls_starttls off
tls_trust_file %s
keep off
only_new off
uidls_file %s

account bench
host %s
port %d
auth plain
user alice
password %s
delivery maildir %s
`, d.CAFile, filepath.Join(dir, "mpop-uidls"), d.Host, d.TLSPort, pw, maildir)
	path := filepath.Join(dir, "mpoprc")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// deliverBenchMail drops the n benchmark messages into alice's mailbox,
// which must be empty, and returns their total size. The messages are the
// same every time.
func deliverBenchMail(b *testing.B, d *dovecottest.Server, n int) int64 {
	b.Helper()
	if left := d.Count(b, "alice"); left != 0 {
		b.Fatalf("the mailbox holds %d message(s) before delivery, want 0", left)
	}
	var buf bytes.Buffer
	var total int64
	for i := range n {
		buf.Reset()
		benchMessage(&buf, i)
		total += int64(buf.Len())
		d.Deliver(b, "alice", buf.Bytes())
	}
	return total
}

// benchMessage writes message i of the benchmark set, deterministically:
// roughly one in a hundred is 2–5 MB with a base64 attachment, one in five
// is 100–500 KB with one, the rest are 2–20 KB of text (with some lines
// that need dot-stuffing). With 2000 messages that is about 200 MB.
func benchMessage(buf *bytes.Buffer, i int) {
	r := rand.New(rand.NewPCG(benchSeed, uint64(i)))
	var size int
	switch {
	case i%100 == 3:
		size = 2_000_000 + r.IntN(3_000_001)
	case i%5 == 2:
		size = 100_000 + r.IntN(400_001)
	default:
		size = 2_000 + r.IntN(18_001)
	}
	date := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute)
	fmt.Fprintf(buf, "Return-Path: <sender%d@example.org>\n", i%37)
	fmt.Fprintf(buf, "From: Sender %d <sender%d@example.org>\n", i%37, i%37)
	buf.WriteString("To: Support <support@example.com>\n")
	fmt.Fprintf(buf, "Subject: benchmark message %d of class %d\n", i, size/100_000)
	fmt.Fprintf(buf, "Date: %s\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(buf, "Message-ID: <bench-%d-%x@example.org>\n", i, r.Uint64())
	buf.WriteString("MIME-Version: 1.0\n")
	if size < 100_000 {
		buf.WriteString("Content-Type: text/plain; charset=us-ascii\n\n")
		benchText(buf, r, size)
		return
	}
	const boundary = "=_bench_boundary"
	fmt.Fprintf(buf, "Content-Type: multipart/mixed; boundary=%q\n\n", boundary)
	fmt.Fprintf(buf, "--%s\nContent-Type: text/plain; charset=us-ascii\n\n", boundary)
	benchText(buf, r, buf.Len()+1_000+r.IntN(3_000))
	fmt.Fprintf(buf, "\n--%s\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; filename=\"file%d.bin\"\n\n", boundary, i)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	var line [77]byte
	line[76] = '\n'
	for buf.Len() < size-len(boundary)-8 {
		for j := 0; j < 76; j += 10 {
			v := r.Uint64()
			for k := j; k < min(j+10, 76); k++ {
				line[k] = alphabet[v&63]
				v >>= 6
			}
		}
		buf.Write(line[:])
	}
	fmt.Fprintf(buf, "--%s--\n", boundary)
}

var benchWords = strings.Fields(`the a support ticket order invoice shipment
delayed refund please customer account password reset thanks regards hello
urgent request update status number reference attached see below yesterday
today tomorrow meeting agenda notes review question answer problem fixed`)

// benchText writes lines of words until buf holds size bytes; about one
// line in forty starts with a dot.
func benchText(buf *bytes.Buffer, r *rand.Rand, size int) {
	for buf.Len() < size {
		width := 20 + r.IntN(60)
		start := buf.Len()
		if r.IntN(40) == 0 {
			buf.WriteByte('.')
		}
		for buf.Len()-start < width {
			if buf.Len() > start {
				buf.WriteByte(' ')
			}
			buf.WriteString(benchWords[r.IntN(len(benchWords))])
		}
		buf.WriteByte('\n')
	}
}
