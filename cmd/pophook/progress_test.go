package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/internal/testutil/syncbuf"
	"github.com/pophook/pophook/worker"
)

func TestProgress(t *testing.T) {
	var buf syncbuf.Buffer
	p := &progress{w: &buf, acct: map[string]*fetchProgress{}}
	p.observe(worker.Event{Kind: worker.EventPlanned, Account: "support", Count: 2, Size: 3_000_000})
	p.observe(worker.Event{Kind: worker.EventPlanned, Account: "billing", Count: 1, Size: 1000})
	p.last = p.last.AddDate(-1, 0, 0) // let the next fetch redraw
	p.observe(worker.Event{Kind: worker.EventFetched, Account: "support", Size: 1_500_000})
	out := buf.String()
	if !strings.Contains(out, "\rbilling 0/1 messages, 0.0 MB/0.0 MB · support 1/2 messages, 1.5 MB/3.0 MB") {
		t.Errorf("progress line: %q", out)
	}
	p.observe(worker.Event{Kind: worker.EventRunDone, Account: "support"})
	p.observe(worker.Event{Kind: worker.EventRunDone, Account: "billing"})
	p.finish()
	if !strings.HasSuffix(buf.String(), "\r") {
		t.Errorf("the line is not blanked at the end: %q", buf.String())
	}
	var none *progress // not a terminal
	none.observe(worker.Event{Kind: worker.EventPlanned})
	none.finish()
	if newProgress(&buf) != nil {
		t.Error("progress on a buffer, which is not a terminal")
	}
}

// On a terminal, once shows the progress line; script(1) gives it one.
func TestProgressOnATerminal(t *testing.T) {
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script(1) is not installed (util-linux)")
	}
	d := dovecottest.Start(t, dovecottest.Options{})
	for range 3 {
		d.Deliver(t, "alice", []byte("Subject: p\n\nbody\n"))
	}
	dir := t.TempDir()
	cmd := exec.Command(script, "-qefc", pophookBinary(t)+" once", "/dev/null")
	cmd.Env = dovecotEnv(d, filepath.Join(dir, "data"), filepath.Join(dir, "Maildir"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if !strings.Contains(string(out), "\rsupport 0/3 messages") {
		t.Errorf("no progress line on a terminal:\n%q", out)
	}
	// Off a terminal: none.
	plain, _ := runBin(t, cmd.Env, "once")
	if strings.Contains(plain, "messages,") {
		t.Errorf("progress off a terminal: %q", plain)
	}
}
