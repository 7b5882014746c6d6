package web

import (
	"bytes"
	"context"
	"errors"
	"image/color"
	"image/png"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// chromiumTimeout bounds one Chromium run.
const chromiumTimeout = 60 * time.Second

// TestStatusPageInChromium renders the status page in a real headless
// Chromium, checks what it shows and keeps a screenshot of it (a phone's
// width) in the test's temporary directory; PHTEST_SCREENSHOT names a file
// to copy it to.
func TestStatusPageInChromium(t *testing.T) {
	bin := chromium(t)
	srv := httptest.NewServer(New(realistic()))
	defer srv.Close()
	url := srv.URL + "/"
	dir := t.TempDir()

	dom := runChromium(t, bin, dir, "dom", "--dump-dom", url)
	// What a reader sees: the accounts, their states, the retry commands.
	got := text(string(dom))
	for _, want := range []string{
		"Ready",
		"support ok",
		"billing skipped backing off after refused logins",
		"login allowed 2026-12-03T12:40:00Z (in 25 min)",
		"sales running",
		"last error account sales: RETR 3",
		"Rejected messages (2)",
		"pophook ledger retry support 000001a4f3e2",
		`pophook ledger retry sales 'UID7'\''$(reboot)'`,
		hostileError, // as text
	} {
		if !strings.Contains(got, want) {
			t.Errorf("Chromium's DOM does not say %q", want)
		}
	}
	if bytes.Contains(bytes.ToLower(dom), []byte("<script")) || bytes.Contains(bytes.ToLower(dom), []byte("<img")) {
		t.Error("Chromium's DOM holds an element from a hostile string")
	}

	shot := filepath.Join(dir, "status.png")
	runChromium(t, bin, dir, "screenshot", "--window-size=390,900", "--hide-scrollbars", "--screenshot="+shot, url)
	t.Logf("screenshot: %s", shot)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("Chromium wrote no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	b := img.Bounds()
	if b.Dx() < 300 || b.Dy() < 600 {
		t.Errorf("the screenshot is %dx%d, want about 390x900", b.Dx(), b.Dy())
	}
	// Not blank, and styled: the page's background and the colours of the
	// state badges are there.
	colours := map[color.RGBA]int{}
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), 0xff}]++
		}
	}
	if len(colours) < 2 {
		t.Fatalf("the screenshot is blank: one colour")
	}
	for name, c := range map[string]color.RGBA{
		"page background": {0xf4, 0xf6, 0xf8, 0xff},
		"ok badge":        {0x1a, 0x7f, 0x37, 0xff},
		"failing badge":   {0xc6, 0x28, 0x28, 0xff},
		"running badge":   {0x09, 0x69, 0xda, 0xff},
	} {
		if colours[c] < 20 {
			t.Errorf("the screenshot has %d pixels of the %s colour %v: is the style sheet applied?", colours[c], name, c)
		}
	}
	t.Logf("the screenshot is %dx%d with %d colours", b.Dx(), b.Dy(), len(colours))
	if keep := os.Getenv("PHTEST_SCREENSHOT"); keep != "" {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(f)
		if err == nil {
			err = os.WriteFile(keep, data, 0o644)
		}
		if err != nil {
			t.Errorf("PHTEST_SCREENSHOT: %v", err)
		}
	}
}

// chromium finds the browser, or skips (fails under CI=true).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	msg := "no chromium or chromium-browser in PATH; on Debian: apt-get install --no-install-recommends chromium"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// runChromium runs one headless Chromium with a profile, home and
// output files of its own under dir, bounded by chromiumTimeout, and
// returns its standard output. Chromium starts helpers (zygotes, the
// crash handler); they share its process group, which is killed once it
// exits, and the test fails if any process using the profile outlives it.
func runChromium(t *testing.T, bin, dir, name string, args ...string) []byte {
	t.Helper()
	profile := filepath.Join(dir, name+"-profile")
	home := filepath.Join(dir, name+"-home")
	for _, d := range []string{profile, home} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// Files, not pipes: a helper that keeps a pipe open cannot hold up Wait.
	stdout, err := os.Create(filepath.Join(dir, name+".out"))
	if err != nil {
		t.Fatal(err)
	}
	defer stdout.Close()
	stderr, err := os.Create(filepath.Join(dir, name+".err"))
	if err != nil {
		t.Fatal(err)
	}
	defer stderr.Close()

	ctx, cancel := context.WithTimeout(t.Context(), chromiumTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
		"--user-data-dir=" + profile,
	}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_CACHE_HOME="+home)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	start := time.Now()
	err = cmd.Start()
	if err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	// Every process of this run (the crash handler too, which leaves the
	// process group) has profile or home in its command line.
	defer reap(t, cmd.Process.Pid, filepath.Join(dir, name+"-"))
	err = cmd.Wait()
	t.Logf("chromium %s: %v", name, time.Since(start).Round(time.Millisecond))
	if err != nil || ctx.Err() != nil {
		log, _ := os.ReadFile(stderr.Name())
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			err = errors.New("timed out after " + chromiumTimeout.String())
		}
		t.Fatalf("chromium %s: %v\n%s", name, err, tail(log, 4000))
	}
	out, err := os.ReadFile(stdout.Name())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// reap kills what is left of Chromium's process group and any other
// process whose command line mentions prefix, and fails the test if one
// survives.
func reap(t *testing.T, pgid int, prefix string) {
	t.Helper()
	syscall.Kill(-pgid, syscall.SIGKILL)
	var left []int
	for deadline := time.Now().Add(5 * time.Second); ; {
		left = processesUsing(prefix)
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		t.Logf("killing Chromium helpers still running: %v", left)
		for _, pid := range left {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(left) > 0 {
		t.Errorf("Chromium processes outlived the test: %v", left)
	}
}

// processesUsing lists the live processes whose command line mentions s.
func processesUsing(s string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 { // gone, or a zombie
			continue
		}
		if bytes.Contains(cmdline, []byte(s)) {
			pids = append(pids, pid)
		}
	}
	return pids
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
