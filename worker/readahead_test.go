package worker

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pophook/pophook/internal/testutil/dovecottest"
	"github.com/pophook/pophook/sinks"
)

// spoolFiles counts the files in the job's spool directory: the messages
// fetched and not yet released by delivery.
func spoolFiles(t *testing.T, dir string) int {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Error(err)
	}
	return len(entries)
}

// While a sink works on one message, the fetcher goes on reading the next
// ones into the spool, up to the read-ahead window and never beyond it;
// delivery stays in server order.
func TestReadAheadWhileSinkWorks(t *testing.T) {
	d := dovecottest.Start(t, dovecottest.Options{})
	n := readAheadMessages + 12
	for i := range n {
		d.Deliver(t, "alice", fmt.Appendf(nil, "Subject: %d\r\n\r\n%s\r\n", i, strings.Repeat("x", 1000)))
	}
	rec := &recorder{}
	var e *env
	peak := 0
	rec.fail = func(m *sinks.Message, raw []byte) error {
		if rec.calls == 1 {
			// Hold the first message until the fetcher has filled the
			// window behind it.
			deadline := time.Now().Add(20 * time.Second)
			for spoolFiles(t, e.job.SpoolDir) < readAheadMessages && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
		peak = max(peak, spoolFiles(t, e.job.SpoolDir))
		return nil
	}
	e = newEnv(t, dovecotAccount(t, d), map[string]sinks.Sink{"rec": rec})
	res := e.run()
	if res.Delivered != n || d.Count(t, "alice") != 0 {
		t.Fatalf("delivered %d of %d, %d left on the server", res.Delivered, n, d.Count(t, "alice"))
	}
	if peak != readAheadMessages {
		t.Errorf("at most %d messages spooled at once, want the window of %d filled and not passed", peak, readAheadMessages)
	}
	for i, got := range rec.got {
		if !strings.HasPrefix(string(got.raw), fmt.Sprintf("Subject: %d\r\n", i)) {
			t.Fatalf("delivery %d is %.12q: out of server order", i, got.raw)
		}
	}
}

// The window is bounded in octets too, and a message larger than the
// whole window still goes through, alone.
func TestReadAheadByteBound(t *testing.T) {
	defer func(n int, b int64) { readAheadMessages, readAheadBytes = n, b }(readAheadMessages, readAheadBytes)
	readAheadMessages, readAheadBytes = 8, 10_000
	d := dovecottest.Start(t, dovecottest.Options{})
	for i := range 6 {
		body := strings.Repeat("y", 4000)
		if i == 3 {
			body = strings.Repeat("z", 50_000) // alone larger than the window
		}
		d.Deliver(t, "alice", fmt.Appendf(nil, "Subject: %d\r\n\r\n%s\r\n", i, body))
	}
	rec := &recorder{}
	var e *env
	peak := 0
	rec.fail = func(*sinks.Message, []byte) error {
		time.Sleep(20 * time.Millisecond) // give the fetcher time to run ahead
		peak = max(peak, spoolFiles(t, e.job.SpoolDir))
		return nil
	}
	e = newEnv(t, dovecotAccount(t, d), map[string]sinks.Sink{"rec": rec})
	if res := e.run(); res.Delivered != 6 {
		t.Fatalf("delivered %d of 6", res.Delivered)
	}
	if peak > 2 {
		t.Errorf("%d messages of ~4 KB spooled at once with a 10 KB window", peak)
	}
}

// A stop during a fetch finishes the message in hand, then reads what was
// already requested for drainGrace at most: past that the connection is
// closed without DELE or QUIT (nothing is deleted in this run), and the
// next run deletes what was delivered without sending it again.
func TestStopCutsTheDrain(t *testing.T) {
	defer func(g time.Duration) { drainGrace = g }(drainGrace)
	drainGrace = time.Nanosecond // any drain at all is cut
	d := dovecottest.Start(t, dovecottest.Options{})
	const n = 5
	for i := range n {
		d.Deliver(t, "alice", fmt.Appendf(nil, "Subject: %d\r\n\r\n%s\r\n", i, strings.Repeat("z", 2<<20)))
	}
	rec := &recorder{}
	e := newEnv(t, dovecotAccount(t, d), map[string]sinks.Sink{"rec": rec})
	ctx, stop := context.WithCancel(context.Background())
	rec.fail = func(*sinks.Message, []byte) error {
		stop() // SIGTERM while the first message is in hand
		return nil
	}
	res, err := e.job.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Delivered != 1 || res.Deleted != 0 || d.Count(t, "alice") != n {
		t.Fatalf("stopped run: delivered %d, deleted %d, %d on the server; want 1, 0 (no QUIT), %d", res.Delivered, res.Deleted, d.Count(t, "alice"), n)
	}
	rec.fail = nil
	e.newJob()
	res = e.run()
	if res.Delivered != n-1 || res.Deleted != n || d.Count(t, "alice") != 0 {
		t.Fatalf("next run: delivered %d, deleted %d, %d left", res.Delivered, res.Deleted, d.Count(t, "alice"))
	}
	for k, c := range rec.keys() {
		if c != 1 {
			t.Errorf("%s delivered %d times", k, c)
		}
	}
}
